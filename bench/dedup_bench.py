"""Dedup on real Chinese headlines and reviews: what the canonical form, shingle size, threshold and
min_chars_for_near catch, with example pairs, and how fast signatures and the global step are.

Reads ../shared/data (TNEWS unlabeled headlines, online-shopping reviews, ChnSentiCorp hotel reviews),
prints figures and example pairs, and writes bench/results/dedup_<date>.json.
Run: python bench/dedup_bench.py [--data ../shared/data] [--datasketch-docs 20000]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import time
import tracemalloc
import unicodedata
import zipfile
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.config import DedupConfig
from pipeline.dedup import ContentHashStage, MinHasher, canonical_texts, find_duplicates
from pipeline.dedup.minhash import connected_components, estimated_jaccard, lsh_bands, near_pairs, signature_array

THRESHOLDS = (0.7, 0.8, 0.9)
NGRAMS = (3, 4, 5)
MIN_CHARS = (10, 20, 30, 50)
EXAMPLES = 4
RESULTS = Path(__file__).parent / "results"


@dataclass
class Corpus:
    ids: list[str]
    sources: list[str]
    texts: list[str]

    @property
    def megabytes(self) -> float:
        return sum(len(t.encode("utf-8")) for t in self.texts) / 1e6


def light_normalize(text: str) -> str:
    """Stands in for the normalize stage here: NFKC, BOM removed, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text.replace("\ufeff", "")).split())


def load_corpus(data: Path) -> Corpus:
    rows: list[tuple[str, str]] = []
    with open(data / "news" / "tnews_unlabeled.json", encoding="utf-8") as lines:
        rows += [("tnews", json.loads(line)["sentence"]) for line in lines if line.strip()]
    with zipfile.ZipFile(data / "comments" / "online_shopping_10_cats.zip") as archive:
        with archive.open("online_shopping_10_cats.csv") as raw:
            reader = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8-sig"))
            rows += [("shopping", row["review"] or "") for row in reader]
    with open(data / "comments" / "ChnSentiCorp_htl_all.csv", encoding="utf-8-sig", newline="") as handle:
        rows += [("hotel", row["review"] or "") for row in csv.DictReader(handle)]
    kept = [(source, light_normalize(text)) for source, text in rows]
    kept = [(source, text) for source, text in kept if text]
    return Corpus(
        ids=[f"{source}-{i:06d}" for i, (source, _) in enumerate(kept)],
        sources=[source for source, _ in kept],
        texts=[text for _, text in kept],
    )


def exact_figures(corpus: Corpus) -> dict[str, object]:
    """Duplicates (rows beyond the first of each group) under three canonical forms, per source and overall."""
    forms = {
        "raw": corpus.texts,
        "casefold_no_space": ["".join(t.casefold().split()) for t in corpus.texts],
        "canonical": canonical_texts(corpus.texts),
    }
    figures: dict[str, object] = {}
    for name, keys in forms.items():
        per_source = {s: _duplicate_count([k for k, src in zip(keys, corpus.sources) if src == s])
                      for s in sorted(set(corpus.sources))}
        figures[name] = {"all": _duplicate_count(keys), **per_source}
        print(f"exact duplicates ({name:18s}): {figures[name]}")
    raw_groups = {t for t, c in Counter(corpus.texts).items() if c > 1}
    extra = _extra_canonical_pairs(corpus, forms["canonical"], raw_groups)
    print("pairs merged by the canonical form but not by raw equality (first examples):")
    for a, b in extra[:8]:
        print(f"    {a[:60]!r}\n  = {b[:60]!r}")
    figures["canonical_extra_examples"] = extra[:8]
    return figures


def _duplicate_count(keys: list[str]) -> int:
    return len(keys) - len(set(keys))


def _extra_canonical_pairs(corpus: Corpus, canonical: list[str], raw_groups: set[str]) -> list[tuple[str, str]]:
    first_text: dict[str, str] = {}
    extra: list[tuple[str, str]] = []
    for text, key in zip(corpus.texts, canonical):
        if key in first_text and first_text[key] != text and text not in raw_groups:
            extra.append((first_text[key], text))
        first_text.setdefault(key, text)
    return extra


def keys_table(corpus: Corpus, signatures: np.ndarray, has_signature: np.ndarray) -> pa.Table:
    batch = pa.RecordBatch.from_pydict({"text": corpus.texts})
    hashes = ContentHashStage()(batch).batch.column("content_hash")
    source_rank = {"tnews": 0, "shopping": 1, "hotel": 2}
    return pa.table(
        {
            "id": corpus.ids,
            "source": corpus.sources,
            "lang": ["zh"] * len(corpus.ids),
            "content_hash": hashes,
            "minhash": signature_array(signatures, has_signature),
            "rank": pa.array([source_rank[s] for s in corpus.sources], pa.int32()),
        }
    )


def near_figures(corpus: Corpus, rng: random.Random) -> tuple[list[dict[str, object]], dict[int, tuple]]:
    """Near duplicates (beyond exact ones) for every shingle size and threshold, with example pairs."""
    text_of = dict(zip(corpus.ids, corpus.texts))
    results: list[dict[str, object]] = []
    signatures_by_ngram: dict[int, tuple] = {}
    for ngram in NGRAMS:
        config = DedupConfig(zh_char_ngram=ngram, min_chars_for_near=0)
        started = time.perf_counter()
        signatures, has_signature = MinHasher.from_config(config).signatures(corpus.texts, ["zh"] * len(corpus.texts))
        signature_seconds = time.perf_counter() - started
        signatures_by_ngram[ngram] = (signatures, has_signature)
        keys = keys_table(corpus, signatures, has_signature)
        lengths = np.array([len(form) for form in canonical_texts(corpus.texts)])
        for threshold in THRESHOLDS:
            for min_chars in MIN_CHARS:
                config = DedupConfig(zh_char_ngram=ngram, threshold=threshold, min_chars_for_near=min_chars)
                short_nulled = _null_short(keys.column("minhash"), lengths, min_chars)
                sub = keys.set_column(keys.column_names.index("minhash"), "minhash", short_nulled)
                started = time.perf_counter()
                duplicates = find_duplicates(sub, config)
                seconds = time.perf_counter() - started
                near = duplicates.filter(pa.compute.equal(duplicates.column("kind"), "near")).to_pylist()
                per_source = Counter(row["id"].split("-")[0] for row in near)
                examples = _examples(near, text_of, rng)
                results.append({"ngram": ngram, "threshold": threshold, "min_chars_for_near": min_chars,
                                "near_duplicates": len(near), "per_source": dict(per_source),
                                "global_step_s": round(seconds, 2), "signature_s": round(signature_seconds, 2),
                                "examples": examples})
                print(f"\nchar {ngram}-grams, threshold {threshold}, min_chars {min_chars}: {len(near)} near "
                      f"duplicates {dict(per_source)} (global step {seconds:.2f} s)")
                for example in examples:
                    print(f"  sim {example['similarity']:.2f}: {example['text'][:70]!r}\n"
                          f"            of {example['representative'][:70]!r}")
    return results, signatures_by_ngram


def _null_short(column: pa.ChunkedArray, lengths: np.ndarray, min_chars: int) -> pa.Array:
    array = column.combine_chunks()
    mask = pa.array(~array.is_valid().to_numpy(zero_copy_only=False) | (lengths < min_chars))
    return pa.FixedSizeListArray.from_arrays(array.values, array.type.list_size, mask=mask)


def _examples(near: list[dict], text_of: dict[str, str], rng: random.Random) -> list[dict[str, object]]:
    """The least similar pairs (where a false merge would show) and a few random ones."""
    by_similarity = sorted(near, key=lambda row: (row["similarity"], row["id"]))
    chosen = by_similarity[: EXAMPLES // 2] + rng.sample(by_similarity, min(len(near), EXAMPLES - EXAMPLES // 2))
    return [{"similarity": round(row["similarity"], 3), "text": text_of[row["id"]],
             "representative": text_of[row["duplicate_of"]]} for row in chosen]


def speed_figures(corpus: Corpus, docs: int) -> dict[str, object]:
    """numpy MinHasher vs datasketch on the same texts (char 5-grams, 128 permutations, one core)."""
    from datasketch import MinHash

    texts = random.Random(1).sample(corpus.texts, min(docs, len(corpus.texts)))  # headlines and reviews
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    config = DedupConfig(min_chars_for_near=0)
    started = time.perf_counter()
    ours, _ = MinHasher.from_config(config).signatures(texts, ["zh"] * len(texts))
    numpy_s = time.perf_counter() - started

    started = time.perf_counter()
    theirs = np.zeros_like(ours)
    n = config.zh_char_ngram
    for row, chars in enumerate(canonical_texts(texts)):
        shingles = [chars[i : i + n].encode("utf-8") for i in range(max(1, len(chars) - n + 1))]
        sketch = MinHash(num_perm=config.num_perm, seed=config.seed)
        sketch.update_batch(shingles)
        theirs[row] = sketch.hashvalues.astype(np.uint32)
    datasketch_s = time.perf_counter() - started

    started = time.perf_counter()
    batch = pa.RecordBatch.from_pydict({"text": texts})
    ContentHashStage()(batch)
    content_hash_s = time.perf_counter() - started

    agreement = _pair_agreement(ours, theirs, config.threshold)
    figures = {"docs": len(texts), "megabytes": round(megabytes, 2), "numpy_s": round(numpy_s, 2),
               "datasketch_s": round(datasketch_s, 2), "speedup": round(datasketch_s / numpy_s, 1),
               "content_hash_s": round(content_hash_s, 2),
               "content_hash_mb_per_s": round(megabytes / content_hash_s, 1), **agreement}
    print(f"\nsignatures for {len(texts)} docs ({megabytes:.1f} MB): numpy {numpy_s:.2f} s, datasketch "
          f"{datasketch_s:.2f} s ({figures['speedup']}x); content hash {content_hash_s:.2f} s; "
          f"near pairs at {config.threshold}: {agreement}")
    return figures


def _pair_agreement(ours: np.ndarray, theirs: np.ndarray, threshold: float) -> dict[str, int]:
    ours_pairs = set(zip(*(a.tolist() for a in near_pairs(ours, threshold))))
    theirs_pairs = set(zip(*(a.tolist() for a in near_pairs(theirs, threshold))))
    return {"pairs_numpy": len(ours_pairs), "pairs_datasketch": len(theirs_pairs),
            "pairs_both": len(ours_pairs & theirs_pairs)}


def recall_figures(signatures: np.ndarray, has_signature: np.ndarray, sample: int) -> dict[str, object]:
    """LSH banding against brute force on a sample: how many pairs >= threshold the bands find."""
    rows = np.sort(np.random.default_rng(1).choice(np.flatnonzero(has_signature), sample, replace=False))
    sample_signatures = signatures[rows]
    figures: dict[str, object] = {"sample": len(rows)}
    all_left, all_right = np.triu_indices(len(rows), k=1)
    similarity = np.concatenate([
        estimated_jaccard(sample_signatures, all_left[i : i + 2_000_000], all_right[i : i + 2_000_000])
        for i in range(0, len(all_left), 2_000_000)
    ])
    for threshold in THRESHOLDS:
        truth = set(zip(all_left[similarity >= threshold].tolist(), all_right[similarity >= threshold].tolist()))
        left, right = near_pairs(sample_signatures, threshold)
        found = set(zip(left.tolist(), right.tolist()))
        bands, band_rows = lsh_bands(threshold, signatures.shape[1], 0.8)
        figures[str(threshold)] = {"bands": bands, "rows": band_rows, "true_pairs": len(truth),
                                   "found": len(found & truth)}
    print(f"\nLSH recall vs brute force on {len(rows)} docs: {figures}")
    return figures


def scale_figures(signatures: np.ndarray, has_signature: np.ndarray, copies: int) -> dict[str, object]:
    """The global step's near part on the signatures repeated with noise, as a stand-in for a bigger build."""
    rng = np.random.default_rng(0)
    base = signatures[has_signature]
    # each extra copy differs from the original in ~30% of the minima: mostly below the threshold
    noisy = [base ^ (rng.random(base.shape) < 0.3).astype(np.uint32) for _ in range(copies - 1)]
    stacked = np.concatenate([base, *noisy])
    tracemalloc.start()
    started = time.perf_counter()
    left, right = near_pairs(stacked, 0.8)
    labels = connected_components(len(stacked), left, right)
    seconds = time.perf_counter() - started
    peak_mb = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    figures = {"docs": len(stacked), "signatures_mb": round(stacked.nbytes / 1e6), "pairs": len(left),
               "merged": int((labels != np.arange(len(labels))).sum()), "near_step_s": round(seconds, 2),
               "near_step_peak_extra_mb": round(peak_mb)}
    print(f"\nnear step on {len(stacked)} signatures ({figures['signatures_mb']} MB): {seconds:.2f} s, "
          f"{len(left)} verified pairs, peak extra memory {peak_mb:.0f} MB")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--datasketch-docs", type=int, default=20_000)
    parser.add_argument("--recall-sample", type=int, default=10_000)
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"shared data not found at {args.data}; pass --data")
    rng = random.Random(0)
    corpus = load_corpus(args.data)
    print(f"{len(corpus.texts)} documents, {corpus.megabytes:.1f} MB: {dict(Counter(corpus.sources))}")
    lengths = np.array([len(form) for form in canonical_texts(corpus.texts)])
    print(f"canonical length percentiles 10/50/90: {np.percentile(lengths, [10, 50, 90]).tolist()}")
    results: dict[str, object] = {"date": date.today().isoformat(), "documents": len(corpus.texts)}
    results["exact"] = exact_figures(corpus)
    results["near"], signatures_by_ngram = near_figures(corpus, rng)
    results["speed"] = speed_figures(corpus, args.datasketch_docs)
    results["recall"] = recall_figures(*signatures_by_ngram[5], args.recall_sample)
    results["scale"] = scale_figures(*signatures_by_ngram[5], copies=2)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"dedup_{date.today().isoformat()}.json"
    out.write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
