"""Precision of every filter rule, judged by hand, per rule and per source kind, on the public data.

1. Runs the text stages up to the quality signals over the public data (cached under runs/filter_audit/,
   keyed by the code and the config sections they depend on), then the quality filter of the current
   config over the signals, so a retuned threshold is re-audited in seconds.
2. Samples up to --per-rule drops per (reason, kind), deterministically (pipeline.drop_sample: lowest
   sha256 of the record id), into runs/filter_audit/to_judge.jsonl, with any judgement already given.
3. Reads bench/filter_audit_judgements.json (record id -> {"reason", "verdict": "junk" | "keep", "why"}),
   and writes per rule and kind: drops, judged, precision (junk / judged) and examples of each verdict,
   plus the drop rate per label of every labelled source (pipeline.label_skew), to
   bench/results/filter_audit-<date>.json, and prints the table.

    python bench/filter_audit.py [--data ../shared/data] [--per-rule 40]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.steps.provenance import code_version
from pipeline.config import CorpusflowConfig, parse_config
from pipeline.drop_sample import sample_rows
from pipeline.label_skew import drop_rates_by_label, label_skews
from pipeline.schema import Ledger, rejects_from_documents
from pipeline.sources import expand_uri, plan_partitions, read_partition
from pipeline.stages import run_stages
from pipeline.text import build_text_stages
from pipeline.text.quality import QualityFilter

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "runs" / "filter_audit"
JUDGEMENTS = REPO / "bench" / "filter_audit_judgements.json"
SIGNAL_SECTIONS = ("normalize", "script", "pii", "langid", "segment")  # what the cached signals depend on
TARGET_PRECISION, TARGET_MIN_DROPS, TARGET_KINDS = 0.9, 20, ("comments", "news")


def headed_copy(tsv: Path) -> Path:
    """The `sentence<TAB>label` files have no header; the sources read CSV with one."""
    out = WORK / "inputs" / f"{tsv.stem}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tsv.open(encoding="utf-8") as src, out.open("w", encoding="utf-8", newline="") as dst:
        writer = csv.writer(dst)
        writer.writerow(["text", "label"])
        for line in src:
            if line.strip():
                text, _, label = line.rstrip("\n").rpartition("\t")
                writer.writerow([text, label.strip()])
    return out


def audit_config(data: Path) -> CorpusflowConfig:
    sentiment = {"1": "positive", "0": "negative"}
    table = {"format": "csv", "fields": {"text": "text", "label": "label"}, "label_map": sentiment}
    sources = [
        {"name": "chnsenticorp", "kind": "comments", "lang": "zh", "format": "csv",
         "uri": str(data / "comments" / "ChnSentiCorp_htl_all.csv"),
         "fields": {"text": "review", "label": "label"}, "label_map": sentiment},
        {"name": "online_shopping", "kind": "comments", "lang": "zh", "format": "csv",
         "uri": str(data / "comments" / "online_shopping_10_cats.zip"),
         "fields": {"text": "review", "label": "label"}, "label_map": sentiment},
        {"name": "yelp", "kind": "comments", "lang": "en", "uri": str(headed_copy(data / "comments" / "yelp_labelled.txt")), **table},
        {"name": "amazon", "kind": "comments", "lang": "en",
         "uri": str(headed_copy(data / "comments" / "amazon_cells_labelled.txt")), **table},
        {"name": "tnews", "kind": "news", "lang": "zh", "format": "jsonl",
         "uri": str(data / "news" / "tnews_unlabeled.json"), "fields": {"text": "sentence", "id": "id"}},
        {"name": "ag_news", "kind": "news", "lang": "en", "format": "csv", "uri": str(data / "news" / "ag_news_test.csv"),
         "fields": {"text": "description", "title": "title", "label": "label"},
         "label_map": {"1": "world", "2": "sports", "3": "business", "4": "sci_tech"}},
        {"name": "enwiki", "kind": "wiki", "lang": "en", "format": "mediawiki", "pages_per_partition": 50,
         "uri": str(data / "wiki" / "enwiki-pages-articles-excerpt.xml.bz2")},
    ]
    return parse_config({"dataset": "audit", "run_dir": str(WORK), "sources": sources})


def signals_of(config: CorpusflowConfig, source_index: int) -> tuple[pa.Table, pa.Table]:
    """The source's documents with quality signals, and what earlier steps dropped; cached."""
    source = config.sources[source_index]
    key = hashlib.sha256(json.dumps([code_version(), config.section_hash(*SIGNAL_SECTIONS),
                                     source.model_dump(mode="json")]).encode()).hexdigest()[:16]
    kept_path, dropped_path = WORK / f"{source.name}-{key}.arrow", WORK / f"{source.name}-{key}-rejects.arrow"
    if not kept_path.exists():
        for stale in WORK.glob(f"{source.name}-*.arrow"):  # signals of older code or config
            stale.unlink()
        stages = build_text_stages(config)[:-1]  # all but the quality filter
        kept, dropped = [], []
        for partition in plan_partitions(source, expand_uri(source)):
            for read in read_partition(source, partition):
                dropped.append(pa.Table.from_batches([read.rejects]))
                chain = run_stages(stages, read.documents, Ledger())
                kept.append(pa.Table.from_batches([chain.kept]).drop_columns(["words"]))
                dropped += chain.rejects
        _write(kept_path, pa.concat_tables(kept, promote_options="permissive"))
        _write(dropped_path, pa.concat_tables(dropped, promote_options="permissive"))
    return _read(kept_path), _read(dropped_path)


def _write(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(path.with_suffix(".tmp")), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    path.with_suffix(".tmp").rename(path)


def _read(path: Path) -> pa.Table:
    with pa.OSFile(str(path), "rb") as source:
        return pa.ipc.open_stream(source).read_all()


def filter_drops(config: CorpusflowConfig, documents: pa.Table) -> tuple[pa.Table, pa.Table]:
    """The quality filter of `config` over documents with signals: (kept, dropped as reject rows)."""
    quality = QualityFilter(config.quality)
    kept, dropped = [], []
    for batch in documents.combine_chunks().to_batches(max_chunksize=5000):
        reasons = quality(batch).drop_reasons
        if reasons is None:
            kept.append(pa.Table.from_batches([batch]))
            continue
        mask = pc.is_valid(reasons)
        kept.append(pa.Table.from_batches([batch.filter(pc.invert(mask))]))
        dropped.append(rejects_from_documents(batch.filter(mask), outcome="filtered",
                                              reasons=reasons.filter(mask).to_pylist(), stage="quality_filter"))
    return pa.concat_tables(kept), pa.concat_tables(dropped) if dropped else None


def audit(config: CorpusflowConfig, per_rule: int) -> dict:
    kept_all, dropped_all, read_by_kind = [], [], Counter()
    for index, source in enumerate(config.sources):
        documents, earlier = signals_of(config, index)
        kept, dropped = filter_drops(config, documents)
        earlier = earlier.filter(pc.equal(earlier.column("outcome"), "filtered"))
        kept_all.append(kept.select(["source", "label"]))
        dropped_all += [t for t in (earlier, dropped) if t is not None and t.num_rows]
        read_by_kind[source.kind] += documents.num_rows + earlier.num_rows
    drops = pa.concat_tables(dropped_all, promote_options="permissive")
    judgements = json.loads(JUDGEMENTS.read_text(encoding="utf-8")) if JUDGEMENTS.exists() else {}
    rules, to_judge = {}, []
    groups = drops.select(["reason", "kind"]).group_by(["reason", "kind"]).aggregate([]).to_pylist()
    for group in sorted(groups, key=lambda g: (g["reason"], g["kind"])):
        rows = drops.filter(pc.and_(pc.equal(drops.column("reason"), group["reason"]),
                                    pc.equal(drops.column("kind"), group["kind"])))
        sample = sample_rows(rows, per_rule).select(["id", "source", "kind", "label", "reason", "text"]).to_pylist()
        to_judge += [{**row, **judgements.get(row["id"], {})} for row in sample]
        rules.setdefault(group["reason"], {})[group["kind"]] = _rule_figures(rows.num_rows, sample, judgements)
    WORK.mkdir(parents=True, exist_ok=True)
    with (WORK / "to_judge.jsonl").open("w", encoding="utf-8") as out:
        for row in to_judge:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    rates = drop_rates_by_label(kept_all, [drops])
    return {
        "date": dt.date.today().isoformat(),
        "read_by_kind": dict(read_by_kind),
        "target": {"precision": TARGET_PRECISION, "for_rules_with_drops_over": TARGET_MIN_DROPS,
                   "kinds": list(TARGET_KINDS)},
        "rules": rules,
        "drop_rate_by_label": [{"source": r.source, "label": r.label, "read": r.read, "dropped": r.dropped,
                                "rate": round(r.rate, 4)} for r in rates],
        "label_skews": [s.message() for s in label_skews(rates)],
        "unjudged": sum(1 for row in to_judge if "verdict" not in row),
    }


def _rule_figures(drops: int, sample: list[dict], judgements: dict) -> dict:
    verdicts = [(row, judgements[row["id"]]) for row in sample if row["id"] in judgements]
    junk = [(row, j) for row, j in verdicts if j["verdict"] == "junk"]
    keep = [(row, j) for row, j in verdicts if j["verdict"] == "keep"]

    def examples(pairs: list) -> list[dict]:
        return [{"id": row["id"], "text": (row["text"] or "")[:80], "why": j["why"]} for row, j in pairs[:3]]

    return {"drops": drops, "judged": len(verdicts),
            "precision": round(len(junk) / len(verdicts), 3) if verdicts else None,
            "junk_examples": examples(junk), "keep_examples": examples(keep)}


def print_table(results: dict) -> None:
    print(f"{'rule':34s} {'kind':9s} {'drops':>6s} {'judged':>6s} {'precision':>9s}")
    for reason, kinds in results["rules"].items():
        for kind, figures in kinds.items():
            precision = "-" if figures["precision"] is None else f"{figures['precision']:.2f}"
            print(f"{reason:34s} {kind:9s} {figures['drops']:6d} {figures['judged']:6d} {precision:>9s}")
    for skew in results["label_skews"]:
        print("label skew:", skew)
    print("unjudged samples:", results["unjudged"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--per-rule", type=int, default=40)
    args = parser.parse_args()
    results = audit(audit_config(args.data), args.per_rule)
    print_table(results)
    out = REPO / "bench" / "results" / f"filter_audit-{results['date']}.json"
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"written {out}; samples to judge: {WORK / 'to_judge.jsonl'}")


if __name__ == "__main__":
    main()
