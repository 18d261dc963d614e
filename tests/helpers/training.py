"""A small dataset version in the real shard format, for the training tests.

`write_dataset(root)` writes Arrow IPC stream shards and a `manifest.json` the way the corpus build does:
documents with `words` (segmented words: jieba-style for Chinese, word tokens for English), `n_words` and
`split`. The text is generated from phrase lists written for these tests, so it has enough structure for a
tiny model's loss to fall within a few dozen steps, and the word segmentation is known by construction.
`tiny_train_config()` is a model and loop small enough for a test on two CPU cores.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pyarrow as pa

from pipeline.config import ModelConfig, PretrainConfig, TokenizerConfig, TrainConfig
from pipeline.schema import DOCUMENT_SCHEMA, Manifest, ShardRecord, document_id

SHARD_SCHEMA = (
    DOCUMENT_SCHEMA.append(pa.field("content_hash", pa.string()))
    .append(pa.field("words", pa.list_(pa.string())))
    .append(pa.field("n_words", pa.int32()))
    .append(pa.field("split", pa.string()))
)

# A marker that only the quarantined shard contains: a test can assert it never reaches training.
QUARANTINE_MARKER = "隔离标记"

_ZH_SUBJECTS = ["我们", "他", "她", "老师", "学生", "经理", "游客", "医生", "工程师", "记者", "朋友", "客人"]
_ZH_TIMES = ["今天", "昨天", "明天", "周末", "早上", "晚上", "去年", "上午"]
_ZH_PLACES = ["酒店", "学校", "公司", "北京", "上海", "医院", "图书馆", "火车站", "博物馆", "餐厅"]
_ZH_ACTIONS = [
    ["吃", "晚饭"], ["看", "电影"], ["写", "报告"], ["讨论", "问题"], ["参观", "展览"],
    ["预订", "房间"], ["学习", "数学"], ["准备", "会议"], ["阅读", "新闻"], ["购买", "车票"],
]
_ZH_TOPICS = ["房间", "服务", "早餐", "价格", "位置", "环境", "设施", "前台"]
_ZH_DEGREES = ["很", "非常", "比较", "特别", "有点"]
_ZH_ADJECTIVES = ["干净", "方便", "安静", "热情", "一般", "便宜", "舒服", "满意"]

_EN_SUBJECTS = ["the teacher", "our guest", "the manager", "a student", "the doctor", "my friend", "the reporter"]
_EN_VERBS = ["visited", "booked", "discussed", "described", "reviewed", "cleaned", "recommended"]
_EN_OBJECTS = ["the museum", "a quiet room", "the new report", "the station", "the hotel", "the market"]
_EN_TIMES = ["yesterday", "this morning", "last week", "on sunday", "in the evening"]
_EN_TOPICS = ["the room", "the service", "the breakfast", "the price", "the location", "the staff"]
_EN_ADJECTIVES = ["clean", "friendly", "expensive", "convenient", "quiet", "excellent", "noisy"]


def _zh_sentence(rng: random.Random) -> list[str]:
    if rng.random() < 0.5:
        return [rng.choice(_ZH_TIMES), rng.choice(_ZH_SUBJECTS), "在", rng.choice(_ZH_PLACES), *rng.choice(_ZH_ACTIONS), "。"]
    return [rng.choice(_ZH_TOPICS), rng.choice(_ZH_DEGREES), rng.choice(_ZH_ADJECTIVES), "，", "我们", "很", "满意", "。"]


def _en_sentence(rng: random.Random) -> list[str]:
    if rng.random() < 0.5:
        words = f"{rng.choice(_EN_SUBJECTS)} {rng.choice(_EN_VERBS)} {rng.choice(_EN_OBJECTS)} {rng.choice(_EN_TIMES)}"
    else:
        words = f"{rng.choice(_EN_TOPICS)} was {rng.choice(_EN_ADJECTIVES)} and {rng.choice(_EN_TOPICS)} was {rng.choice(_EN_ADJECTIVES)}"
    tokens = words.split()
    tokens[0] = tokens[0].capitalize()
    return [*tokens, "."]


def generated_document(rng: random.Random, lang: str, n_sentences: int) -> tuple[str, list[str]]:
    """Text and its words; Chinese words join without spaces, English tokens with spaces (no space before '.')."""
    words: list[str] = []
    for _ in range(n_sentences):
        words += _zh_sentence(rng) if lang == "zh" else _en_sentence(rng)
    if lang == "zh":
        return "".join(words), words
    text = " ".join(words).replace(" .", ".")
    return text, words


def _rows(split: str, lang: str, count: int, rng: random.Random, marker: str | None = None) -> list[dict]:
    rows = []
    for i in range(count):
        text, words = generated_document(rng, lang, rng.randint(1, 6))
        if marker:
            text, words = marker + text, [marker, *words]
        rows.append(
            {
                "id": document_id(f"fixture_{lang}", f"{split}-{marker or ''}-{i}"),
                "source": f"fixture_{lang}",
                "kind": "comment",
                "lang": lang,
                "text": text,
                "meta": "{}",
                "words": words,
                "n_words": len(words),
                "split": split,
            }
        )
    return rows


def write_shard(path: Path, rows: list[dict]) -> None:
    """Rows (dicts with SHARD_SCHEMA's fields; missing ones null, the content hash that of the text) as an
    Arrow IPC stream file."""
    rows = [{**row, "content_hash": hashlib.sha256(row["text"].encode()).hexdigest()} for row in rows]
    table = pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)
    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, SHARD_SCHEMA) as writer:
        writer.write_table(table, max_chunksize=64)


def shard_record(root: Path, relative: str, rows: list[dict], split: str, lang: str, usable: bool = True) -> ShardRecord:
    path = root / relative
    return ShardRecord(
        path=relative,
        split=split,
        source=rows[0]["source"],
        lang=lang,
        rows=len(rows),
        bytes=path.stat().st_size,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        usable=usable,
        contract={"suite": "documents.v1", "success": usable},
    )


def write_dataset(
    root: Path,
    docs_per_split: dict[str, int] | None = None,
    shards_per_split: int = 2,
    seed: int = 0,
    with_quarantined: bool = True,
) -> Path:
    """Write a dataset version under `root`; returns the manifest path.

    Each split gets `shards_per_split` shards per language (zh and en, zh twice as many documents).
    With `with_quarantined`, one extra train shard whose documents start with QUARANTINE_MARKER is listed
    as unusable, the way a shard that failed its contract is.
    """
    docs_per_split = docs_per_split or {"train": 600, "validation": 60, "test": 60}
    rng = random.Random(seed)
    shards: list[ShardRecord] = []
    for split, count in docs_per_split.items():
        for lang, share in (("zh", 2 / 3), ("en", 1 / 3)):
            per_shard = max(1, round(count * share / shards_per_split))
            for part in range(shards_per_split):
                rows = _rows(split, lang, per_shard, rng)
                relative = f"{split}/fixture-{lang}-{part:05d}.arrow"
                write_shard(root / relative, rows)
                shards.append(shard_record(root, relative, rows, split, lang, usable=True))
    if with_quarantined:
        rows = _rows("train", "zh", 50, rng, marker=QUARANTINE_MARKER)
        relative = "train/fixture-zh-quarantined.arrow"
        write_shard(root / relative, rows)
        shards.append(shard_record(root, relative, rows, "train", "zh", usable=False))
    return write_manifest(root, shards)


def write_manifest(root: Path, shards: list[ShardRecord]) -> Path:
    """manifest.json for shards written under `root`; unusable shards are also listed as quarantined."""
    usable = [s for s in shards if s.usable]
    manifest = Manifest(
        dataset="fixture",
        config_hash="0" * 64,
        code_version="test",
        libraries={"pyarrow": pa.__version__},
        inputs=[],
        shards=shards,  # readers must rely on usable_shards(), so the unusable one is listed here too
        rejects=[],
        quarantined=[s for s in shards if not s.usable],
        ledger_totals={"kept": sum(s.rows for s in usable)},
        ledger_by_source={},
    )
    manifest = manifest.model_copy(update={"version": manifest.content_hash()})
    path = root / "manifest.json"
    path.write_text(json.dumps(manifest.model_dump(mode="json"), ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def tiny_train_config(kind: str = "wordpiece", arch: str = "bert", **pretrain: object) -> TrainConfig:
    """Hidden 64, 2 layers, sequences of 64: a few steps take well under a second on CPU."""
    objective = "clm" if arch == "llama" else "mlm"
    defaults: dict[str, object] = {
        "objective": objective,
        "batch_size": 8,
        "max_steps": 20,
        "lr": 2e-3,
        "warmup_steps": 4,
        "checkpoint_every": 10,
        "log_every": 5,
    }
    return TrainConfig(
        tokenizer=TokenizerConfig(kind=kind, vocab_size=600, min_frequency=1),
        model=ModelConfig(arch=arch, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, max_seq_len=64),
        pretrain=PretrainConfig(**{**defaults, **pretrain}),
    )
