"""Data contracts: every corruption is caught by the expectation meant for it, and bad suites fail loudly."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline import contracts
from pipeline.config import ContractsConfig
from pipeline.contracts import ContractError
from pipeline.schema import DOCUMENT_SCHEMA, REJECT_SCHEMA, document_id

REPO = Path(__file__).resolve().parents[1]
CONTRACTS = REPO / "data_contracts"
ZH_TEXTS = ["这家酒店的服务很好，房间也干净", "物流很快，包装完好，质量不错", "屏幕有点暗，但是价格便宜", "客服态度差，再也不买了"]
EN_TEXTS = ["The room was clean and the staff were kind", "Battery life is short but the screen is great"]

SHARD_SCHEMA = pa.schema(
    list(DOCUMENT_SCHEMA)
    + [
        pa.field("lang_score", pa.float32()),
        pa.field("pii", pa.string()),
        pa.field("words", pa.list_(pa.string())),
        pa.field("n_words", pa.int32()),
        pa.field("n_chars", pa.int32()),
        pa.field("cjk_ratio", pa.float32()),
        pa.field("content_hash", pa.string()),
        pa.field("split", pa.string()),
    ]
)


def _document(index: int, text: str, lang: str) -> dict:
    words = list(text) if lang == "zh" else text.split()
    cjk = sum("\u4e00" <= ch <= "\u9fff" for ch in text) / len(text)
    return {
        "id": document_id("test", str(index)), "source": "test", "kind": "comments", "lang": lang,
        "title": None, "text": text, "url": None, "published_at": None, "label": None,
        "meta": json.dumps({"file": "test.csv", "position": index}), "lang_score": 0.95, "pii": "{}",
        "words": words, "n_words": len(words), "n_chars": len(text), "cjk_ratio": cjk,
        "content_hash": hashlib.sha256(text.encode()).hexdigest(), "split": "train",
    }


@pytest.fixture(scope="module")
def clean_documents() -> pa.Table:
    rows = [_document(i, t, "zh") for i, t in enumerate(ZH_TEXTS)]
    rows += [_document(len(rows) + i, t, "en") for i, t in enumerate(EN_TEXTS)]
    return pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)


@pytest.fixture(scope="module")
def clean_rejects() -> pa.Table:
    reasons = [("filtered", "redirect"), ("filtered", "lang:other"), ("filtered", "quality:min_chars"),
               ("duplicate", "exact"), ("duplicate", "near"), ("rejected", "invalid_utf8"),
               ("rejected", "malformed_json"), ("rejected", "bad_csv_row"), ("rejected", "not_html"),
               ("rejected", "http_error"), ("rejected", "empty_extraction"), ("rejected", "truncated_record"),
               ("rejected", "input:binary"), ("rejected", "input:empty"), ("rejected", "input:missing_columns")]
    rows = [{"id": document_id("test", f"r{i}"), "source": "test", "kind": "comments", "lang": None, "title": None,
             "text": "x", "outcome": outcome, "reason": reason, "stage": "read",
             "duplicate_of": document_id("test", "0") if outcome == "duplicate" else None,
             "file": "test.csv", "position": str(i), "meta": "{}"}
            for i, (outcome, reason) in enumerate(reasons)]
    return pa.Table.from_pylist(rows, schema=REJECT_SCHEMA)


def write_stream(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return path


def replace(table: pa.Table, name: str, values: list) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(index, table.schema.field(index), pa.array(values, table.schema.field(index).type))


def failed(summary: dict) -> dict[tuple[str, str | None], str]:
    """(expectation type, column) -> severity, for every expectation that failed."""
    return {(e["type"], e["column"]): e["severity"] for e in summary["expectations"] if not e["success"]}


def validate_documents(table: pa.Table, tmp_path: Path) -> dict:
    shard = write_stream(table, tmp_path / "data" / "train" / "test-zh-00000.arrow")
    return contracts.validate_shard(shard, "documents.v1", CONTRACTS)


# ---- clean data passes ----------------------------------------------------------------------------------


def test_clean_shard_passes_documents_suite(clean_documents: pa.Table, tmp_path: Path) -> None:
    summary = validate_documents(clean_documents, tmp_path)
    assert summary["success"], failed(summary)
    assert summary["critical_failed"] is False
    assert (summary["suite"], summary["version"], summary["rows"]) == ("documents.v1", "1", clean_documents.num_rows)
    declared = json.loads((CONTRACTS / "documents.v1.json").read_text(encoding="utf-8"))["expectations"]
    assert len(summary["expectations"]) == len(declared)
    json.dumps(summary)  # goes into the manifest and Prefect results as it is


def test_clean_rejects_pass_rejects_suite(clean_rejects: pa.Table) -> None:
    summary = contracts.validate_table(clean_rejects, "rejects.v1", CONTRACTS)
    assert summary["success"], failed(summary)


def test_clean_task_data_passes_task_suite() -> None:
    table = pa.table({"text": ["很好", "太差了"], "label": ["positive", "negative"]})
    summary = contracts.validate_task_table(table, ["negative", "positive"], ContractsConfig(directory=str(CONTRACTS)))
    assert summary["success"], failed(summary)


# ---- each corruption, caught by its expectation -----------------------------------------------------------


def test_null_text(clean_documents: pa.Table, tmp_path: Path) -> None:
    texts = clean_documents.column("text").to_pylist()
    summary = validate_documents(replace(clean_documents, "text", [None] + texts[1:]), tmp_path)
    assert failed(summary) == {("expect_column_values_to_not_be_null", "text"): "critical"}
    assert summary["critical_failed"]


def test_duplicate_ids(clean_documents: pa.Table, tmp_path: Path) -> None:
    ids = clean_documents.column("id").to_pylist()
    summary = validate_documents(replace(clean_documents, "id", [ids[0]] + ids[:-1]), tmp_path)
    assert failed(summary) == {("expect_column_values_to_be_unique", "id"): "critical"}
    unique = next(e for e in summary["expectations"] if e["type"] == "expect_column_values_to_be_unique"
                  and e["column"] == "id")
    assert unique["unexpected_count"] == 2 and unique["unexpected_sample"] == [ids[0], ids[0]]


def test_wrong_lang_code(clean_documents: pa.Table, tmp_path: Path) -> None:
    langs = clean_documents.column("lang").to_pylist()
    summary = validate_documents(replace(clean_documents, "lang", langs[:-1] + ["eng"]), tmp_path)
    assert failed(summary) == {("expect_column_values_to_be_in_set", "lang"): "critical"}


def test_zh_rows_without_cjk(clean_documents: pa.Table, tmp_path: Path) -> None:
    is_zh = pc.equal(clean_documents.column("lang"), "zh")
    ratios = pc.if_else(is_zh, pa.scalar(0.0, pa.float32()), clean_documents.column("cjk_ratio"))
    summary = validate_documents(replace(clean_documents, "cjk_ratio", ratios.to_pylist()), tmp_path)
    assert failed(summary) == {("expect_column_values_to_be_between", "cjk_ratio"): "critical"}
    bad = [e for e in summary["expectations"] if not e["success"]]
    assert bad[0]["row_condition"]["parameter"] == "zh"  # the zh-only bound, not the 0..1 range of all rows
    assert bad[0]["unexpected_count"] == len(ZH_TEXTS)


def test_empty_words(clean_documents: pa.Table, tmp_path: Path) -> None:
    n = clean_documents.num_rows
    table = replace(clean_documents, "words", [[]] + clean_documents.column("words").to_pylist()[1:])
    table = replace(table, "n_words", [0] + table.column("n_words").to_pylist()[1:])
    summary = validate_documents(table, tmp_path)
    assert failed(summary) == {("expect_column_values_to_be_between", "n_words"): "critical"}
    check = next(e for e in summary["expectations"] if not e["success"])
    assert check["unexpected_count"] == 1 and check["unexpected_percent"] == pytest.approx(100 / n)


def test_stale_word_count_only_warns(clean_documents: pa.Table, tmp_path: Path) -> None:
    table = replace(clean_documents, "n_words", [99] + clean_documents.column("n_words").to_pylist()[1:])
    summary = validate_documents(table, tmp_path)
    assert failed(summary) == {("expect_column_pair_values_to_be_equal", "words,n_words"): "warning"}
    assert not summary["success"] and not summary["critical_failed"]


def test_tampered_content_hash(clean_documents: pa.Table, tmp_path: Path) -> None:
    hashes = clean_documents.column("content_hash").to_pylist()
    summary = validate_documents(replace(clean_documents, "content_hash", [hashes[0].upper()] + hashes[1:]), tmp_path)
    assert failed(summary) == {("expect_column_values_to_match_regex", "content_hash"): "critical"}


def test_missing_column(clean_documents: pa.Table, tmp_path: Path) -> None:
    summary = validate_documents(clean_documents.drop_columns(["content_hash"]), tmp_path)
    columns_check = ("expect_table_columns_to_match_set", None)
    assert failed(summary)[columns_check] == "critical"
    assert summary["critical_failed"]
    detail = next(e for e in summary["expectations"] if e["type"] == columns_check[0])
    assert detail["mismatched"]["missing"] == ["content_hash"]
    # the checks of the missing column fail too, with GX's error rather than a crash
    on_hash = [e for e in summary["expectations"] if e["column"] == "content_hash"]
    assert on_hash and all(not e["success"] and e.get("error") for e in on_hash)


def test_unknown_reject_reason(clean_rejects: pa.Table) -> None:
    reasons = clean_rejects.column("reason").to_pylist()
    summary = contracts.validate_table(replace(clean_rejects, "reason", reasons[:-1] + ["gremlins"]), "rejects.v1", CONTRACTS)
    assert failed(summary) == {("expect_column_values_to_match_regex_list", "reason"): "critical"}
    check = next(e for e in summary["expectations"] if not e["success"])
    assert check["unexpected_sample"] == ["gremlins"]


def test_unknown_outcome(clean_rejects: pa.Table) -> None:
    outcomes = clean_rejects.column("outcome").to_pylist()
    summary = contracts.validate_table(replace(clean_rejects, "outcome", ["kept"] + outcomes[1:]), "rejects.v1", CONTRACTS)
    assert failed(summary) == {("expect_column_values_to_be_in_set", "outcome"): "critical"}


def test_task_label_outside_declared_set() -> None:
    table = pa.table({"text": ["很好", "太差了", "   "], "label": ["positive", "neutral", "negative"]})
    summary = contracts.validate_task_table(table, ["negative", "positive"], ContractsConfig(directory=str(CONTRACTS)))
    assert failed(summary) == {("expect_column_values_to_be_in_set", "label"): "critical",
                               ("expect_column_values_to_match_regex", "text"): "critical"}


def test_task_suite_without_its_labels_raises() -> None:
    with pytest.raises(ContractError, match="labels"):
        contracts.validate_table(pa.table({"text": ["a"], "label": ["b"]}), "tasks.v1", CONTRACTS)


# ---- suites that cannot be trusted fail loudly ----------------------------------------------------------


def _suite_copy(tmp_path: Path, edit) -> Path:
    directory = tmp_path / "contracts"
    directory.mkdir()
    data = json.loads((CONTRACTS / "documents.v1.json").read_text(encoding="utf-8"))
    edit(data)
    (directory / "documents.v1.json").write_text(json.dumps(data), encoding="utf-8")
    return directory


def test_misspelled_expectation_type_raises(tmp_path: Path) -> None:
    def misspell(data: dict) -> None:
        data["expectations"][3]["type"] = "expect_column_values_to_be_uniqe"

    directory = _suite_copy(tmp_path, misspell)
    with pytest.raises(ContractError, match=r"documents\.v1\.json.*#3 \(expect_column_values_to_be_uniqe"):
        contracts.load_suite(directory, "documents.v1")


def test_misspelled_argument_raises(tmp_path: Path) -> None:
    def misspell(data: dict) -> None:
        data["expectations"][2]["kwargs"] = {"colum": "id"}

    directory = _suite_copy(tmp_path, misspell)
    with pytest.raises(ContractError, match=r"#2 \(expect_column_values_to_not_be_null"):
        contracts.load_suite(directory, "documents.v1")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["expectations"][0]["meta"].pop("severity"), "meta.severity"),
        (lambda d: d["expectations"][0]["meta"].update(severity="fatal"), "meta.severity"),
        (lambda d: d["meta"].update(version="2"), "meta.version"),
        (lambda d: d["expectations"][0].update(kwarg={}), "unknown key"),
    ],
)
def test_suite_file_mistakes_raise(tmp_path: Path, edit, message: str) -> None:
    directory = _suite_copy(tmp_path, edit)
    with pytest.raises(ContractError, match=message):
        contracts.load_suite(directory, "documents.v1")


def test_loaded_suite_has_every_expectation_with_its_severity() -> None:
    declared = json.loads((CONTRACTS / "documents.v1.json").read_text(encoding="utf-8"))["expectations"]
    suite = contracts.load_suite(CONTRACTS, "documents.v1")
    assert [e.expectation_type for e in suite.expectations] == [e["type"] for e in declared]
    assert [e.severity.value for e in suite.expectations] == [e["meta"]["severity"] for e in declared]


def test_suite_versions_for_the_manifest() -> None:
    versions = contracts.suite_versions(ContractsConfig(directory=str(CONTRACTS)))
    assert versions == {"documents.v1": "1", "rejects.v1": "1"}


def test_contract_folder_holds_only_versioned_suites() -> None:
    for path in CONTRACTS.iterdir():
        assert contracts.SUITE_NAME.match(path.stem) and path.suffix == ".json", path
        contracts.load_suite(CONTRACTS, path.stem)


# ---- paths, docs and threads ----------------------------------------------------------------------------


def test_validate_path_picks_suite_by_place_and_writes_data_docs(
    clean_documents: pa.Table, clean_rejects: pa.Table, tmp_path: Path
) -> None:
    root = tmp_path / "dataset"
    write_stream(clean_documents, root / "data" / "train" / "test-zh-00000.arrow")
    write_stream(clean_rejects, root / "rejects" / "test-00000.arrow")
    docs = tmp_path / "docs"
    summaries = contracts.validate_path(root, ContractsConfig(directory=str(CONTRACTS)), data_docs_dir=docs)
    assert [(Path(s["shard"]).name, s["suite"], s["success"]) for s in summaries] == [
        ("test-zh-00000.arrow", "documents.v1", True), ("test-00000.arrow", "rejects.v1", True)]
    index = Path(summaries[0]["data_docs"])
    assert index == (docs / "index.html").resolve() and index.is_file()
    html = index.read_text(encoding="utf-8")
    assert "train-test-zh-00000" in html and "rejects-test-00000" in html  # one index lists every shard


def test_validate_path_rejects_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="no shard"):
        contracts.validate_path(tmp_path / "nowhere")


def test_parallel_validations_keep_their_own_counts(clean_documents: pa.Table, tmp_path: Path) -> None:
    ids = clean_documents.column("id").to_pylist()
    shards = []
    for copies in range(1, 5):  # shard k has k rows sharing one id
        table = replace(clean_documents, "id", [ids[0]] * copies + ids[copies:])
        shards.append(write_stream(table, tmp_path / f"dup{copies}" / "shard.arrow"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        summaries = list(pool.map(lambda p: contracts.validate_shard(p, "documents.v1", CONTRACTS), shards))
    counts = [next(e["unexpected_count"] for e in s["expectations"]
                   if e["type"] == "expect_column_values_to_be_unique" and e["column"] == "id") for s in summaries]
    assert counts == [0, 2, 3, 4]


def test_parallel_validations_share_one_data_docs_folder(clean_documents: pa.Table, tmp_path: Path) -> None:
    shards = [write_stream(clean_documents, tmp_path / f"part{i}" / "shard.arrow") for i in range(3)]
    docs = tmp_path / "docs"
    with ThreadPoolExecutor(max_workers=3) as pool:
        summaries = list(pool.map(lambda p: contracts.validate_shard(p, "documents.v1", CONTRACTS, docs), shards))
    assert all(s["success"] for s in summaries)
    html = (docs / "index.html").read_text(encoding="utf-8")
    assert all(f"part{i}-shard" in html for i in range(3))


def test_unreadable_shard_is_one_failed_result(tmp_path: Path) -> None:
    path = tmp_path / "broken.arrow"
    path.write_bytes(b"not arrow")
    result = contracts.validate_shard(path, "documents.v1", CONTRACTS)
    assert result["critical_failed"] and not result["success"] and result["rows"] == 0
    assert "broken.arrow" in result["error"] and "not a readable Arrow file" in result["error"]


def test_list_columns_reach_gx_as_lengths(clean_documents: pa.Table) -> None:
    frame = contracts.scalar_frame(clean_documents)
    assert frame["words"].tolist() == clean_documents.column("n_words").to_pylist()
    assert not any(isinstance(v, list) for v in frame.iloc[0].tolist())


def test_gx_gets_only_what_the_suite_reads(clean_documents: pa.Table) -> None:
    expectations = contracts.read_suite_file(CONTRACTS, "documents.v1")["expectations"]
    frame = contracts.scalar_frame(clean_documents, expectations)
    assert frame["text"].tolist() == [len(t.encode()) for t in clean_documents.column("text").to_pylist()]
    assert set(frame["title"].tolist()) == {0} and set(frame["url"].tolist()) == {0}  # named by no expectation
    assert frame["id"].tolist() == clean_documents.column("id").to_pylist()  # checked for pattern and uniqueness
    assert frame["lang"].tolist() == clean_documents.column("lang").to_pylist()  # read by a row condition
    assert list(frame.columns) == list(contracts.scalar_frame(clean_documents).columns)


def test_a_string_row_condition_keeps_every_column_whole(clean_documents: pa.Table) -> None:
    expectations = [{"type": "expect_column_values_to_not_be_null",
                     "kwargs": {"column": "text", "row_condition": 'lang=="zh"', "condition_parser": "pandas"}}]
    frame = contracts.scalar_frame(clean_documents, expectations)
    assert frame.equals(contracts.scalar_frame(clean_documents))


@pytest.mark.parametrize("suite, broken", [
    ("documents.v1", {"text": lambda v: [None, *v[1:]], "lang": lambda v: ["fr", *v[1:]],
                      "cjk_ratio": lambda v: [0.0] * len(v), "id": lambda v: [v[0], *v[:-1]]}),
    ("rejects.v1", {"reason": lambda v: ["mystery", *v[1:]], "duplicate_of": lambda v: [None] * len(v),
                    "text": lambda v: [None] * len(v)}),
])
def test_what_gx_is_not_given_changes_no_verdict(
    clean_documents: pa.Table, clean_rejects: pa.Table, suite: str, broken: dict, monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = clean_documents if suite == "documents.v1" else clean_rejects
    for name, edit in broken.items():
        table = replace(table, name, edit(table.column(name).to_pylist()))
    projected = contracts.validate_table(table, suite, CONTRACTS)
    whole_frame = contracts.scalar_frame
    monkeypatch.setattr(contracts, "scalar_frame", lambda t, expectations=None: whole_frame(t))
    whole = contracts.validate_table(table, suite, CONTRACTS)
    assert not projected["success"]
    verdicts = [(e["type"], e["column"], e["success"], e["unexpected_count"]) for e in projected["expectations"]]
    assert verdicts == [(e["type"], e["column"], e["success"], e["unexpected_count"]) for e in whole["expectations"]]


def test_deferred_data_docs_render_once_for_many_results(clean_documents: pa.Table, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shards = [write_stream(clean_documents, tmp_path / f"part{i}" / "shard.arrow") for i in range(3)]
    checks = [contracts.ShardCheck(str(p), "documents.v1") for p in shards]
    summaries = contracts.validate_shards(checks, CONTRACTS, docs, batch_rows=1, render_docs=False)
    assert all(s["success"] and s["docs_key"] for s in summaries)
    assert not (docs / "index.html").exists()  # stored, not drawn
    index = contracts.render_data_docs(docs, [s["docs_key"] for s in summaries])
    assert index == summaries[0]["data_docs"]
    html = Path(index).read_text(encoding="utf-8")
    assert all(f"part{i}-shard" in html for i in range(3))
    pages = [p for p in docs.rglob("*.html") if "validations" in p.parts]
    assert len(pages) == 3



def test_switched_off_contracts_leave_shards_unvalidated_and_in_place(tmp_path: Path) -> None:
    from pipeline.steps.writing import AssembledDataset
    from pipeline.steps.manifest import apply_contracts
    from pipeline.schema import ShardRecord

    shard = ShardRecord(path="data/train/s-zh-00000.arrow", split="train", source="s", lang="zh", rows=1, bytes=1,
                        sha256="0" * 64)
    assembled = AssembledDataset(staging=str(tmp_path), shards=[shard], rejects=[], ledger_rows=[], notes_by_source={},
                                 label_drop_rates=[])
    assert apply_contracts(assembled, [None], []).shards == [shard]


def test_scipy_stats_loads_only_when_an_expectation_uses_it() -> None:
    """Great Expectations imports scipy.stats for its distribution expectations; it is loaded on first use,
    and GX's reference to it works then."""
    script = (
        "import sys\n"
        "from pipeline import contracts\n"
        "contracts.warm_up()\n"
        "print(type(sys.modules['scipy.stats']).__name__)\n"
        "from great_expectations.expectations.core import expect_column_kl_divergence_to_be_less_than as kl\n"
        "print(round(float(kl.stats.entropy([0.5, 0.5])), 4), type(sys.modules['scipy.stats']).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["_LazyModule", "0.6931", "module"]
