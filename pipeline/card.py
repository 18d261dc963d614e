"""The dataset card: a version directory's README.md, for people and for `datasets.load_dataset`.

The card has the shape of a Hugging Face dataset card. Its YAML header names every usable shard under
`configs[0].data_files`, split by split, so `load_dataset(<version dir>)` loads exactly the manifest's
train/validation/test shards (never rejects, quarantined shards or the ledger); `language`, `license`,
`size_categories` and `task_categories` describe it for a hub. The body is the build's own account:
sources and their fingerprints, the ledger, drops by reason, contract results, the pictures, and how to
check and reproduce the version.

The card is not part of the version's content: the manifest does not list it and the version id does not
hash it, and the `card` config section is left out of the config hash. So rewording the license or the
card's layout never changes a version id, and `corpusflow verify` checks shards, not the card. The card is
written once, into the staging directory before publishing; an identical rebuild keeps the card the
version was first published with.
"""

from __future__ import annotations


import pyarrow as pa
import yaml

from pipeline import plots, storage, versions
from pipeline.config import CorpusflowConfig
from pipeline.schema import Manifest, ShardRecord

CARD = "README.md"
OUTCOMES = ("read", "kept", "filtered", "duplicate", "rejected")
SPLIT_ORDER = ("train", "validation", "test")
# The Hub's size buckets, by number of rows: (upper bound, label).
SIZE_BUCKETS = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (10**9, "100M<n<1B"), (10**10, "1B<n<10B"),
                (10**11, "10B<n<100B"), (10**12, "100B<n<1T"))


def write_card(version_dir: str, manifest: Manifest, config: CorpusflowConfig) -> str:
    """Write README.md beside the manifest and ledger; returns the card. It shows the pictures
    `plots.plot_dataset` draws into reports/ (a step of its own, in a worker: matplotlib is slow)."""
    pictures = list(plots.DATASET_PICTURES)
    ledger = storage.read_arrow_table(storage.join(str(version_dir), versions.LEDGER))
    card = "\n".join([
        "---", yaml.safe_dump(card_metadata(manifest, config), sort_keys=False, allow_unicode=True).rstrip(), "---",
        "", *_summary(manifest, config),
        "", *_splits(manifest),
        "", *_sources(manifest, config),
        "", *_ledger(manifest),
        "", *_drops(ledger),
        "", *_contracts(manifest),
        "", *_pictures(pictures),
        "", *_reproduce(manifest),
    ]) + "\n"
    path = storage.join(str(version_dir), CARD)
    storage.write_text(path, card)
    return path


def card_metadata(manifest: Manifest, config: CorpusflowConfig) -> dict:
    """The YAML header: what a hub indexes, and the data files each split is made of."""
    rows = sum(s.rows for s in manifest.shards)
    return {
        "pretty_name": f"{manifest.dataset} {manifest.version}",
        "language": sorted({s.lang for s in manifest.shards}),
        "license": config.card.license,
        "size_categories": [size_category(rows)],
        "task_categories": list(config.card.task_categories),
        "configs": [{
            "config_name": "default",
            "data_files": [{"split": split, "path": [s.path for s in shards]}
                           for split, shards in _shards_by_split(manifest).items()],
        }],
    }


def size_category(rows: int) -> str:
    for bound, label in SIZE_BUCKETS:
        if rows < bound:
            return label
    return "n>1T"


def _shards_by_split(manifest: Manifest) -> dict[str, list[ShardRecord]]:
    splits = sorted({s.split for s in manifest.shards}, key=lambda n: ((SPLIT_ORDER + (n,)).index(n), n))
    return {split: sorted(manifest.usable_shards(split), key=lambda s: s.path) for split in splits}


def _table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]


def _summary(manifest: Manifest, config: CorpusflowConfig) -> list[str]:
    totals = manifest.ledger_totals
    return [
        f"# Dataset `{manifest.dataset}`, version `{manifest.version}`",
        "",
        f"Built by corpusflow from {len(config.sources)} source(s): {totals['read']:,} records read, "
        f"{totals['kept']:,} kept, {totals['filtered']:,} filtered, {totals['duplicate']:,} duplicates, "
        f"{totals['rejected']:,} rejected. Documents are Arrow IPC streams with the columns of the document "
        "schema (`id`, `source`, `kind`, `lang`, `title`, `text`, `url`, `published_at`, `label`, `meta`, `words`, "
        "...); every dropped record is in `rejects/` with its reason.",
        "",
        f"License: `{config.card.license}`" + ("; per source below." if config.card.source_licenses else "."),
        "",
        "```python",
        "from datasets import load_dataset",
        "dataset = load_dataset(\"<this directory>\")  # the splits below, from the header of this file",
        "```",
    ]


def _splits(manifest: Manifest) -> list[str]:
    rows = [(split, len(shards), sum(s.rows for s in shards), sum(s.bytes for s in shards))
            for split, shards in _shards_by_split(manifest).items()]
    return ["## Splits", "", *_table(("split", "shards", "rows", "bytes"), rows)]


def _sources(manifest: Manifest, config: CorpusflowConfig) -> list[str]:
    kinds = {s.name: s for s in config.sources}
    rows = [(i.source, kinds[i.source].kind, kinds[i.source].lang, f"`{i.uri}`", f"`{i.fingerprint}`",
             config.card.source_licenses.get(i.source, config.card.license))
            for i in manifest.inputs]
    return ["## Sources", "", *_table(("source", "kind", "lang", "input", "fingerprint", "license"), rows)]


def _ledger(manifest: Manifest) -> list[str]:
    rows = [(source, *(totals[k] for k in OUTCOMES)) for source, totals in manifest.ledger_by_source.items()]
    rows.append(("**all**", *(manifest.ledger_totals[k] for k in OUTCOMES)))
    return ["## Ledger", "", "Every record read ends in exactly one outcome.", "",
            *_table(("source", *OUTCOMES), rows)]


def _drops(ledger: pa.Table) -> list[str]:
    counts: dict[tuple[str, str], int] = {}
    for row in ledger.select(["outcome", "reason", "count"]).to_pylist():
        if row["outcome"] != "kept":
            key = (row["outcome"], row["reason"])
            counts[key] = counts.get(key, 0) + row["count"]
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    rows = [(outcome, reason, count) for (outcome, reason), count in ranked]
    return ["## Drops by reason", "", *(_table(("outcome", "reason", "count"), rows) if rows else ["None."])]


def _contracts(manifest: Manifest) -> list[str]:
    suites = ", ".join(f"`{name}` v{version}" for name, version in sorted(manifest.contracts.items()))
    checked = manifest.shards + manifest.quarantined
    passed = sum(1 for s in checked if (s.contract or {}).get("success"))
    lines = ["## Contracts", "", f"Suites: {suites or 'none'}. {passed} of {len(checked)} document shards passed "
             f"every expectation; {len(manifest.quarantined)} quarantined (under `quarantine/`, with their report, "
             "never in a split)."]
    failed = [(s.path, "quarantined" if not s.usable else "kept (no critical expectation failed)",
               ", ".join(f"{f['type']}({f.get('column') or ''}): {f.get('unexpected_count')}"
                         for f in (s.contract or {}).get("failed", [])))
              for s in checked if (s.contract or {}).get("failed")]
    header = ("shard", "status", "failed expectations (unexpected rows)")
    return lines + (["", *_table(header, failed)] if failed else [])


def _pictures(pictures: list[str]) -> list[str]:
    names = [uri.rsplit("/", 1)[-1] for uri in pictures]
    return ["## Pictures", "", "\n\n".join(f"![{name.removesuffix('.png')}](reports/{name})" for name in names)]


def _reproduce(manifest: Manifest) -> list[str]:
    libraries = ", ".join(f"{name} {version}" for name, version in sorted(manifest.libraries.items()))
    return [
        "## Provenance and reproduction", "",
        f"- config hash `{manifest.config_hash}` (the resolved config is `config.json`); code version "
        f"`{manifest.code_version}`; {libraries}",
        "- every shard's rows, bytes and sha256 are in `manifest.json`; the version id is the hash of that content",
        "- `corpusflow verify <this directory>` checks every stored file against its sha256, then rebuilds from "
        "`config.json` in a scratch directory and names any shard that differs (`--no-rebuild`: the check alone)",
        "- this card is not part of the version id: rewriting it changes no data and no hash",
    ]
