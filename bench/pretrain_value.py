"""The value of pretraining: the same encoder fine-tuned from random init and from a pretrained checkpoint.

For one train config (tokenizer, model shape, pretraining loop) the benchmark
1. builds a pretraining corpus from ../shared/data: TNEWS headlines (unlabelled + labelled train), the
   ChnSentiCorp and online-shopping reviews; every document that matches an evaluation item (the dev and
   test items of the four tasks, exactly after normalisation or by a shared 13-character n-gram) is left
   out, so no test item is seen in pretraining; the documents are segmented with jieba (the `words` column
   whole-word masking uses) and written as a dataset version in the shard format (manifest + Arrow IPC);
2. trains one tokenizer on it, used by both arms;
3. arm "random": the model built from config with the seed, saved untouched; arm "pretrained": the model
   pretrained for `pretrain.max_steps` steps (its cost recorded: steps, tokens, wall and CPU seconds);
4. fine-tunes both arms with the same task settings and seeds on TNEWS (news topic), ChnSentiCorp and
   online-shopping (sentiment) and MSRA NER, each capped to the same number of examples per split;
5. reports per task the primary metric of each arm (mean and spread over seeds), the per-seed delta with
   its mean and spread, the masked-LM perplexity of both arms on the corpus's validation split, and appends
   the run under its label to the results JSON.

Everything lands under --work (corpus, tokenizer, pretrained models per settings hash, fine-tuned models);
a rerun with the same settings reuses the corpus, the tokenizer and the finished pretraining.

    python bench/pretrain_value.py --label recipe [-c CONFIG] [--set train.pretrain.lr=2e-3 ...]
        [--seeds 0 1 2 3 4] [--examples 1000] [--tasks tnews chnsenticorp online_shopping msra_ner] [--data DIR]
    python bench/pretrain_value.py --table          # the results file as a markdown table
    python bench/pretrain_value.py --label L --head-speed   # step time, MLM head on all vs masked tokens
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import platform
import shutil
import statistics
import sys
import time
import unicodedata
import zipfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers.training import shard_record, write_manifest, write_shard  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from pipeline.config import TaskConfig, TrainConfig, load_config  # noqa: E402
from pipeline.schema import document_id  # noqa: E402
from pipeline.versions import load_manifest  # noqa: E402
from pipeline.text.segment import SegmenterSpec, segment_zh, zh_cutter  # noqa: E402
from pipeline.train.evaluate import evaluate_lm, ngrams  # noqa: E402
from pipeline.train.finetune import finetune  # noqa: E402
from pipeline.train.data import PackedStream, mask_for_mlm, plan_mix, shard_urls  # noqa: E402
from pipeline.train.pretrain import SparseMaskedLM, _layout, build_model, pretrain, save_random_init  # noqa: E402
from pipeline.train.tasks import item_text, load_task  # noqa: E402
from pipeline.train.tokenizer import train_tokenizer  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / f"pretrain_value-{date.today().isoformat()}.json"
CONTAMINATION_N = 13
SHARD_ROWS = 20_000
CORPUS_DIR = "corpus-by-source"  # shards of one source each (runs before 2026-12 read mixed shards)
VALIDATION_EVERY = 100  # one corpus document in this many goes to the validation split (LM perplexity)
ALL_TASKS = ("tnews", "chnsenticorp", "online_shopping", "msra_ner")
# Fine-tuning settings shared by every task and both arms (override with --set finetune.<key>=<value>). The
# task head trains at 10x the encoder's rate: it lifted the pretrained arm by 2.7 points on TNEWS and 3.3 on
# NER (0.3 on sentiment), and moved the random-init arm by -1.3 on TNEWS and at most 0.4 elsewhere (README).
FINETUNE = {"epochs": 4, "batch_size": 32, "lr": 5e-4, "head_lr_scale": 10, "patience": 2, "max_seq_len": 64}

log = logging.getLogger("pretrain_value")


# ---------------------------------------------------------------- tasks


def task_configs(data: Path, finetune_settings: dict[str, Any], examples: int) -> dict[str, TaskConfig]:
    """The four evaluation tasks on the public files; fine-tuning settings are the same for every task."""
    common = {"lang": "zh", "max_examples": examples, **finetune_settings}
    news = data / "news"
    return {
        "tnews": TaskConfig(
            name="tnews", type="sequence_classification", format="jsonl", train=str(news / "tnews_train_few_all.json"),
            validation=str(news / "tnews_dev_few_all.json"), test=str(news / "tnews_test_public.json"),
            fields={"text": "sentence", "label": "label_desc", "id": "id"}, primary_metric="accuracy", **common),
        "chnsenticorp": TaskConfig(
            name="chnsenticorp", type="sequence_classification", train=str(data / "comments/ChnSentiCorp_htl_all.csv"),
            fields={"text": "review", "label": "label"}, primary_metric="accuracy", **common),
        "online_shopping": TaskConfig(
            name="online_shopping", type="sequence_classification", format="zip_csv",
            train=str(data / "comments/online_shopping_10_cats.zip"), fields={"text": "review", "label": "label"},
            primary_metric="accuracy", **common),
        "msra_ner": TaskConfig(
            name="msra_ner", type="token_classification", format="zip_conll", train=str(data / "ner/dh_msra.zip"),
            primary_metric="entity_f1", **common),
    }


# ---------------------------------------------------------------- corpus


def _normalized(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKC", text).lower() if c.isalnum())


class Decontaminator:
    """Evaluation items (dev and test of every task, before any cap) and their character 13-grams."""

    def __init__(self, tasks: list[TaskConfig]) -> None:
        self.exact: set[str] = set()
        self.grams: set[str] = set()
        for task in tasks:
            uncapped = load_task(task.model_copy(update={"max_examples": None}))
            for split in (uncapped.validation, uncapped.test):
                for row in split:
                    text = item_text(row, task.lang)
                    self.exact.add(_normalized(text))
                    self.grams |= ngrams(text, task.lang, CONTAMINATION_N)
        self.exact.discard("")

    def contaminated(self, text: str) -> bool:
        return _normalized(text) in self.exact or not self.grams.isdisjoint(ngrams(text, "zh", CONTAMINATION_N))


def _corpus_texts(data: Path) -> Iterator[tuple[str, str, str]]:
    """(source, native id, text) of the headlines and reviews the corpus is made of."""
    for name in ("tnews_unlabeled.json", "tnews_train_few_all.json"):
        with open(data / "news" / name, encoding="utf-8") as lines:
            for number, line in enumerate(lines):
                row = json.loads(line)
                yield "tnews", f"{name}:{number}", row["sentence"]
    import csv
    import io

    with open(data / "comments/ChnSentiCorp_htl_all.csv", encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle)):
            yield "chnsenticorp", str(number), row["review"] or ""
    with zipfile.ZipFile(data / "comments/online_shopping_10_cats.zip") as archive:
        (member,) = [n for n in archive.namelist() if n.endswith(".csv")]
        with archive.open(member) as raw:
            for number, row in enumerate(csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8-sig", newline=""))):
                yield "online_shopping", str(number), row["review"] or ""


def build_corpus(data: Path, tasks: list[TaskConfig], out: Path) -> tuple[Path, dict[str, int]]:
    """The decontaminated, deduplicated, segmented corpus as a dataset version; returns (manifest, counts)."""
    manifest = out / "manifest.json"
    counts_file = out / "counts.json"
    if manifest.exists() and counts_file.exists():
        return manifest, json.loads(counts_file.read_text())
    shutil.rmtree(out, ignore_errors=True)
    decontaminator = Decontaminator(tasks)
    cut = zh_cutter(SegmenterSpec(hmm=True, user_dicts=(), engine="jieba"))
    counts = {"read": 0, "empty": 0, "duplicate": 0, "contaminated": 0, "kept": 0, "chars": 0}
    seen: set[str] = set()
    rows: dict[str, list[dict]] = {"train": [], "validation": []}
    for source, native_id, raw in _corpus_texts(data):
        counts["read"] += 1
        text = unicodedata.normalize("NFKC", raw.replace("\ufeff", "")).strip()
        key = _normalized(text)
        if not key:
            counts["empty"] += 1
            continue
        if key in seen:
            counts["duplicate"] += 1
            continue
        seen.add(key)
        if decontaminator.contaminated(text):
            counts["contaminated"] += 1
            continue
        counts["kept"] += 1
        counts["chars"] += len(text)
        split = "validation" if counts["kept"] % VALIDATION_EVERY == 0 else "train"
        words = segment_zh(text, cut)
        rows[split].append({
            "id": document_id(source, native_id), "source": source, "kind": "news" if source == "tnews" else "comment",
            "lang": "zh", "text": text, "meta": "{}", "words": words, "n_words": len(words), "split": split,
        })
    records = []
    for split, split_rows in rows.items():
        # one source per shard, as the corpus build writes them: the pretraining mix reads sources by shard
        for source in sorted({row["source"] for row in split_rows}):
            source_rows = [row for row in split_rows if row["source"] == source]
            for part, start in enumerate(range(0, len(source_rows), SHARD_ROWS)):
                chunk = source_rows[start : start + SHARD_ROWS]
                relative = f"data/{split}/{source}-{part:05d}.arrow"
                write_shard(out / relative, chunk)
                records.append(shard_record(out, relative, chunk, split, "zh"))
    write_manifest(out, records)
    counts_file.write_text(json.dumps(counts))
    return manifest, counts


# ---------------------------------------------------------------- arms


def _settings_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _random_init(config: TrainConfig, tokenizer_dir: Path, out: Path, seed: int) -> Path:
    return out if (out / "config.json").exists() else save_random_init(config.model, tokenizer_dir, out, seed)


def pretrained_model(manifest: Path, config: TrainConfig, tokenizer_dir: Path, out: Path) -> dict[str, Any]:
    cost_file = out / "cost.json"
    if cost_file.exists():
        return json.loads(cost_file.read_text())
    started, started_cpu = time.perf_counter(), time.process_time()
    result = pretrain(str(manifest), tokenizer_dir, config, out,
                      on_log=lambda r: log.info("pretrain step %d loss %.3f (%.0f tokens/s)", r["step"], r["loss"], r["tokens_per_s"]))
    tokens = result.steps * config.pretrain.batch_size * config.pretrain.grad_accum * config.model.max_seq_len
    cost = {
        "model_dir": str(result.model_dir), "steps": result.steps, "tokens": tokens,
        "seconds": round(time.perf_counter() - started, 1), "cpu_seconds": round(time.process_time() - started_cpu, 1),
        "tokens_per_s": round(result.tokens_per_s, 1),
        "first_loss": result.losses[0][1] if result.losses else None, "final_loss": result.final_loss,
    }
    cost_file.write_text(json.dumps(cost))
    return cost


def finetuned_score(task: TaskConfig, model_dir: Path, out: Path, seed: int) -> float:
    """The test score of one fine-tuning run; kept in out/score.json so a rerun of the same settings reuses it."""
    score_file = out / "score.json"
    if score_file.exists():
        return json.loads(score_file.read_text())["score"]
    started = time.perf_counter()
    result = finetune(task, model_dir, out / "model", seed=seed)
    score = result.metrics[task.primary_metric]
    log.info("%s from %s, seed %d: %s %.4f (best epoch %d, %.0f s)", task.name, model_dir.name, seed,
             task.primary_metric, score, result.best_epoch, time.perf_counter() - started)
    shutil.rmtree(out / "model", ignore_errors=True)
    score_file.write_text(json.dumps({"score": score, "best_epoch": result.best_epoch, "history": result.history}))
    return score


def head_speed(config: TrainConfig, tokenizer_dir: Path, manifest: Path, steps: int = 8) -> dict[str, float]:
    """Seconds per training step with the MLM head on every token vs on the masked tokens only, same model,
    same batches, the two interleaved step by step so that a change in machine load hits both alike."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = build_model(config.model, tokenizer)
    sparse = SparseMaskedLM(model)
    urls = shard_urls(str(manifest), load_manifest(manifest), "train")
    stream = PackedStream(plan_mix(urls, tokenizer.backend_tokenizer), tokenizer.backend_tokenizer,
                          _layout(tokenizer, "mlm"), seq_len=config.model.max_seq_len, seed=0)
    generator = torch.Generator().manual_seed(0)
    seconds = {"full_head": 0.0, "masked_only_head": 0.0}
    for step in range(steps + 1):  # the first step of each warms up and is not counted
        batch = mask_for_mlm(stream.next_batch(config.pretrain.batch_size), mask_prob=config.pretrain.mask_prob,
                             mask_id=tokenizer.mask_token_id, first_ordinary_id=max(tokenizer.all_special_ids) + 1,
                             vocab_size=len(tokenizer), whole_word=False, generator=generator)
        for name, run in (("full_head", model), ("masked_only_head", sparse)):
            started = time.perf_counter()
            run(**batch).loss.backward()
            model.zero_grad(set_to_none=True)
            if step:
                seconds[name] += time.perf_counter() - started
    per_step = {name: total / steps for name, total in seconds.items()}
    return {**{f"{name}_s_per_step": value for name, value in per_step.items()},
            "speedup": per_step["full_head"] / per_step["masked_only_head"]}


# ---------------------------------------------------------------- summary


def _spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(metric: str, scores: dict[str, list[float]]) -> dict[str, Any]:
    deltas = [p - r for p, r in zip(scores["pretrained"], scores["random"])]
    delta, spread = statistics.mean(deltas), _spread(deltas)
    return {
        "metric": metric,
        **{arm: {"scores": values, "mean": statistics.mean(values), "std": _spread(values)} for arm, values in scores.items()},
        "delta_per_seed": deltas,
        "delta_mean": delta,
        "delta_std": spread,
        "gain_shown": delta >= 0.02 and delta > spread,
    }


# ---------------------------------------------------------------- main


def _apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        key, _, raw = item.partition("=")
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return data


def markdown_table(results: dict[str, Any]) -> str:
    """One row per run: pretraining cost, LM perplexity of both arms, and per task random -> pretrained (delta +- spread)."""
    lines = ["| run | seeds | steps x batch (tokens) | s | val. ppl random / pretrained | "
             + " | ".join(ALL_TASKS) + " | tasks with gain |", "|---" * (len(ALL_TASKS) + 6) + "|"]
    for run in results.get("runs", []):
        cost, ppl = run["pretraining_cost"], run["lm_validation_perplexity"]
        cells = []
        for name in ALL_TASKS:
            task = run["tasks"].get(name)
            cells.append("—" if task is None else
                         f"{task['random']['mean']:.3f} → {task['pretrained']['mean']:.3f} "
                         f"({task['delta_mean']:+.3f} ± {task['delta_std']:.3f})")
        lines.append(f"| {run['label']} | {len(run['seeds'])} | {cost['steps']} x {run['train']['pretrain']['batch_size']} ({cost['tokens'] / 1e6:.2f}M) "
                     f"| {cost['seconds']:.0f} | {ppl['random']:.0f} / {ppl['pretrained']:.0f} | " + " | ".join(cells)
                     + f" | {run['tasks_with_gain']}/{len(run['tasks'])} |")
    return "\n".join(lines)


def _record(out: Path, section: str, entry: dict[str, Any]) -> None:
    """Add `entry` to a list of the results file, replacing the one with the same label."""
    results = json.loads(out.read_text()) if out.exists() else {}
    results[section] = [r for r in results.get(section, []) if r["label"] != entry["label"]] + [entry]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(json.dumps(entry if section != "runs" else {k: entry[k] for k in ("label", "pretraining_cost", "tasks_with_gain")}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", help="name of this run in the results file (required unless --table)")
    parser.add_argument("-c", "--config", type=Path, default=ROOT / "configs" / "shared_data.yaml",
                        help="its `train` section (tokenizer, model, pretrain) is benchmarked")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="dotted override, e.g. train.pretrain.lr=2e-3 or finetune.lr=5e-4")
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "pretrain_value")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="five by default: with two, one more seed moved a delta by half its size")
    parser.add_argument("--examples", type=int, default=1000, help="cap of every split of every task")
    parser.add_argument("--tasks", nargs="+", default=list(ALL_TASKS), choices=ALL_TASKS)
    parser.add_argument("--out", type=Path, help=f"results file (default: {RESULTS.name} to record, the newest to --table)")
    parser.add_argument("--table", action="store_true", help="only print the results file as a markdown table")
    parser.add_argument("--head-speed", action="store_true",
                        help="only time a step with the MLM head on all tokens vs on masked tokens, and record it")
    args = parser.parse_args()
    if args.table:
        newest = max(RESULTS.parent.glob("pretrain_value-*.json"))
        print(markdown_table(json.loads((args.out or newest).read_text())))
        return
    args.out = args.out or RESULTS
    if not args.label:
        parser.error("--label is required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("pipeline.train.finetune", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    raw = yaml.safe_load(args.config.read_text())
    settings = _apply_overrides({"train": raw.get("train", {}), "finetune": dict(FINETUNE)}, args.overrides)
    load_config(args.config)  # the file itself must be a valid config
    train = TrainConfig.model_validate({**settings["train"], "tasks": []})
    finetune_settings = settings["finetune"]
    tasks = task_configs(args.data, finetune_settings, args.examples)

    corpus_manifest, corpus_counts = build_corpus(args.data, list(tasks.values()), args.work / CORPUS_DIR)
    log.info("corpus: %s", corpus_counts)
    tokenizer_dir = args.work / f"tokenizer-{_settings_hash(train.tokenizer.model_dump())}"
    if not (tokenizer_dir / "tokenizer.json").exists():
        train_tokenizer(str(corpus_manifest), train.tokenizer, tokenizer_dir)
    if args.head_speed:
        _record(args.out, "head_speed", {"label": args.label, "model": train.model.model_dump(),
                                         "batch_size": train.pretrain.batch_size, "vocab_size": train.tokenizer.vocab_size,
                                         **head_speed(train, tokenizer_dir, corpus_manifest)})
        return
    pretrain_hash = _settings_hash(train.tokenizer.model_dump(), train.model.model_dump(), train.pretrain.model_dump(),
                                   train.mix, train.mix_temperature)
    cost = pretrained_model(corpus_manifest, train, tokenizer_dir, args.work / f"pretrain-{pretrain_hash}")
    log.info("pretraining: %s", cost)
    pretrained_dir = Path(cost["model_dir"])

    shape_hash = _settings_hash(train.tokenizer.model_dump(), train.model.model_dump())
    random_dirs = {seed: _random_init(train, tokenizer_dir, args.work / f"random-{shape_hash}-{seed}", seed)
                   for seed in args.seeds}
    perplexity = {
        "random": evaluate_lm(random_dirs[args.seeds[0]], str(corpus_manifest))["perplexity"],
        "pretrained": evaluate_lm(pretrained_dir, str(corpus_manifest))["perplexity"],
    }
    log.info("validation perplexity: %s", perplexity)

    per_task = {}
    # the random arm depends on the tokenizer and the shape only, so runs that differ in pretraining share it
    random_hash = _settings_hash(train.tokenizer.model_dump(), train.model.model_dump(), finetune_settings, args.examples)
    finetune_hash = {"random": random_hash, "pretrained": _settings_hash(pretrain_hash, finetune_settings, args.examples)}
    for name in args.tasks:
        task = tasks[name]
        scores: dict[str, list[float]] = {"random": [], "pretrained": []}
        for seed in args.seeds:
            for arm, model_dir in (("random", random_dirs[seed]), ("pretrained", pretrained_dir)):
                scores[arm].append(finetuned_score(task, model_dir, args.work / "finetuned" / finetune_hash[arm] / f"{name}-{arm}-{seed}", seed))
        per_task[name] = summarize(task.primary_metric, scores)
        log.info("%s: delta %.4f +- %.4f", name, per_task[name]["delta_mean"], per_task[name]["delta_std"])

    run = {
        "label": args.label,
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, "
                   + (torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"),
        "train": train.model_dump(mode="json", exclude={"tasks", "enabled"}),
        "finetune": {**finetune_settings, "examples_per_split": args.examples},
        "seeds": args.seeds,
        "corpus": corpus_counts,
        "pretraining_cost": {k: v for k, v in cost.items() if k != "model_dir"},
        "lm_validation_perplexity": perplexity,
        "tasks": per_task,
        "tasks_with_gain": sum(t["gain_shown"] for t in per_task.values()),
    }
    _record(args.out, "runs", run)
    for name, summary in per_task.items():
        print(f"{name:16s} {summary['metric']:10s} random {summary['random']['mean']:.4f}  pretrained "
              f"{summary['pretrained']['mean']:.4f}  delta {summary['delta_mean']:+.4f} +- {summary['delta_std']:.4f}")


if __name__ == "__main__":
    main()
