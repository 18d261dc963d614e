"""The pretraining mix and retraining that continues, measured on the pretrain_value corpus and tasks.

Two measurements, each appended under its label to bench/results/pretrain_refresh-<date>.json:

`--mix-share`: the per-window token share of each source in the stream pretraining reads, against its
target, for the recipe's logging window (`log_every` steps of `batch_size` blocks) over `--windows`
windows; no model is trained. Target: within 5 points in every window after the first 100 steps.

`--refresh`: version B is the corpus, version A the corpus less 10 % of its train documents (chosen by a
hash of their id, so the same ones on every run). The recipe is pretrained on A (the parent, tokenizer of
A); then on B both fresh (tokenizer of B, full budget) and continued from the parent (its tokenizer, the new
documents mixed with a replay of the old, for `--continue-fraction` of the budget). Both B arms are
fine-tuned on the tasks with every seed; per task: each arm's score, the per-seed delta continued - fresh,
and whether it is within 0.5 points; cost: steps, tokens, wall and CPU seconds of each pretraining (the
time ratio is taken on CPU seconds, which a pause does not count; on a shared machine they grow too, as
torch's threads spin while they wait, so both arms need idle cores). Target:
continued within 0.5 points of fresh on every task at <= 1/3 of its pretraining time.

The full protocol is the defaults (the recipe's 7,000 steps, five seeds, the four tasks, 1,000 examples):
about an hour of pretraining and two hundred fine-tuning runs on two idle cores. Smaller runs (`--set
train.pretrain.max_steps=...`, fewer `--seeds` or `--tasks`) are recorded with `"reduced": true` and what
was reduced.

    python bench/pretrain_refresh.py --mix-share --label recipe [--windows 70]
    python bench/pretrain_refresh.py --refresh --label recipe [--set train.pretrain.max_steps=600] [--seeds 0]
        [--tasks tnews msra_ner] [--continue-fraction 0.3333] [--replay-share 0.5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import platform
import statistics
import time
from datetime import date
from pathlib import Path
from typing import Any

import pretrain_value as value  # the sibling benchmark: corpus, tasks, fine-tuning and result helpers
import pyarrow as pa
import torch
import yaml
from helpers.training import shard_record, write_manifest, write_shard
from transformers import AutoTokenizer

from pipeline.config import TrainConfig, load_config
from pipeline.train.continuation import Continuation, ParentModel, changed_document_ids, write_ids
from pipeline.train.data import PackedStream, plan_mix, shard_urls
from pipeline.train.pretrain import _layout, pretrain
from pipeline.train.tokenizer import train_tokenizer
from pipeline.versions import load_manifest

RESULTS = value.ROOT / "bench" / "results" / f"pretrain_refresh-{date.today().isoformat()}.json"
NEW_SHARE = 0.10  # version B = version A + this share of new text
FULL_PROTOCOL = {"max_steps": 7000, "seeds": 5, "tasks": len(value.ALL_TASKS), "examples": 1000}
TARGET_POINTS = 0.05  # the mix's share within 5 points of its target
WITHIN_FRESH = 0.005  # continued within 0.5 points of fresh
REPLAY_RULE = "new text read at most new_text_passes times, the rest of a budget in steps replayed"

log = logging.getLogger("pretrain_refresh")


def _held_out(doc_id: str) -> bool:
    return hashlib.sha256(doc_id.encode()).digest()[0] < 256 * NEW_SHARE


def _read_rows(path: Path) -> list[dict]:
    with pa.ipc.open_stream(str(path)) as reader:
        return reader.read_all().to_pylist()


def version_without_new_text(corpus: Path, out: Path) -> Path:
    """Version A: the corpus version less the train documents `_held_out` picks (validation as it is)."""
    manifest = out / "manifest.json"
    if manifest.exists():
        return manifest
    records = []
    for shard in load_manifest(corpus).usable_shards():
        rows = [row for row in _read_rows(corpus.parent / shard.path)
                if shard.split != "train" or not _held_out(row["id"])]
        write_shard(out / shard.path, rows)
        records.append(shard_record(out, shard.path, rows, shard.split, shard.lang))
    return write_manifest(out, records)


# ---------------------------------------------------------------- mix share


def mix_share(manifest: Path, config: TrainConfig, tokenizer_dir: Path, windows: int) -> dict[str, Any]:
    """Realised token share of every source per logging window, against the target."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = config.pretrain
    started = time.perf_counter()
    strands = plan_mix(shard_urls(str(manifest), load_manifest(manifest), "train"), tokenizer.backend_tokenizer,
                       config.mix, config.mix_temperature)
    census_seconds = time.perf_counter() - started
    stream = PackedStream(strands, tokenizer.backend_tokenizer, _layout(tokenizer, cfg.objective),
                          seq_len=config.model.max_seq_len, seed=cfg.seed, with_word_keys=cfg.whole_word_mask)
    blocks_per_window = cfg.log_every * cfg.batch_size
    rows, deviations = [], []
    for window in range(1, windows + 1):
        before = stream.emitted_tokens()
        for _ in range(blocks_per_window):
            stream.next_block()
        after = stream.emitted_tokens()
        total = sum(after.values()) - sum(before.values())
        shares = {name: (after[name] - before[name]) / total for name in after}
        rows.append({"step": window * cfg.log_every, **{name: round(share, 4) for name, share in shares.items()}})
        if window * cfg.log_every > 100:
            deviations.append(max(abs(shares[n] - t) for n, t in stream.target_shares.items()))
    worst = max(deviations) if deviations else None
    return {
        "window": {"steps": cfg.log_every, "blocks": blocks_per_window, "tokens": blocks_per_window * stream.body_len},
        "target": {name: round(share, 4) for name, share in stream.target_shares.items()},
        "source_tokens": {strand.name: strand.tokens for strand in strands},
        "passes_completed": {name: state.epoch for name, state in zip(stream.state.names, stream.state.strands)},
        "census_seconds": round(census_seconds, 1),
        "windows": rows,
        "max_abs_deviation_after_100_steps": worst,
        "target_met": worst is not None and worst <= TARGET_POINTS,
    }


# ---------------------------------------------------------------- refresh


def continued_model(manifest_b: Path, manifest_a: Path, config: TrainConfig, parent_dir: Path, out: Path) -> dict[str, Any]:
    cost_file = out / "cost.json"
    if cost_file.exists():
        return json.loads(cost_file.read_text())
    started, started_cpu = time.perf_counter(), time.process_time()
    new_ids = changed_document_ids(str(manifest_a), str(manifest_b))
    continuation = Continuation(ParentModel("bench", "A", parent_dir, str(manifest_a), "A"),
                                write_ids(new_ids, out / "new_ids.txt"))
    result = pretrain(str(manifest_b), parent_dir, config, out, continuation=continuation,
                      on_log=lambda r: log.info("continued step %d loss %.3f", r["step"], r["loss"]))
    cost = {
        "model_dir": str(result.model_dir), "steps": result.steps, "new_documents": len(new_ids),
        "new_tokens": result.new_tokens,
        "tokens": result.steps * config.pretrain.batch_size * config.pretrain.grad_accum * config.model.max_seq_len,
        "seconds": round(time.perf_counter() - started, 1), "cpu_seconds": round(time.process_time() - started_cpu, 1),
        "first_loss": result.losses[0][1] if result.losses else None,
        "final_loss": result.final_loss, "mix_target": result.mix_target,
    }
    cost_file.write_text(json.dumps(cost))
    return cost


def refresh(args: argparse.Namespace, train: TrainConfig, finetune_settings: dict[str, Any]) -> dict[str, Any]:
    tasks = value.task_configs(args.data, finetune_settings, args.examples)
    corpus_b, counts = value.build_corpus(args.data, list(tasks.values()), args.work / value.CORPUS_DIR)
    corpus_a = version_without_new_text(corpus_b, args.work / "corpus-without-new-text")
    pretrain_hash = value._settings_hash(train.tokenizer.model_dump(), train.model.model_dump(), train.pretrain.model_dump(),
                                         train.mix, train.mix_temperature)
    tokenizer_hash = value._settings_hash(train.tokenizer.model_dump())
    # version B is pretrain_value's corpus: its tokenizer, pretraining and fine-tunes are pretrain_value's own
    # (same directories), so a recipe measured there is not trained twice
    tokenizers = {"a": args.work / f"tokenizer-a-{tokenizer_hash}", "b": args.work / f"tokenizer-{tokenizer_hash}"}
    pretrain_dirs = {"a": args.work / f"pretrain-a-{pretrain_hash}", "b": args.work / f"pretrain-{pretrain_hash}"}
    pretrained = {}
    for name, manifest in (("a", corpus_a), ("b", corpus_b)):
        if not (tokenizers[name] / "tokenizer.json").exists():
            train_tokenizer(str(manifest), train.tokenizer, tokenizers[name])
        pretrained[name] = value.pretrained_model(manifest, train, tokenizers[name], pretrain_dirs[name])
        log.info("fresh pretraining on %s: %s", name.upper(), pretrained[name])
    steps = max(1, round(train.pretrain.max_steps * args.continue_fraction))
    continued_train = train.model_copy(update={"continuation": train.continuation.model_copy(
        update={"max_steps": steps, "replay_share": args.replay_share})})
    # the rule naming the replay share a budget in steps gets, so runs made under the earlier rule (new text
    # repeated to fill the budget) are not taken for runs of this one
    continue_hash = value._settings_hash(pretrain_hash, continued_train.continuation.model_dump(), REPLAY_RULE)
    continued = continued_model(corpus_b, corpus_a, continued_train, Path(pretrained["a"]["model_dir"]),
                                args.work / f"continued-{continue_hash}")
    log.info("continued pretraining: %s", continued)

    arms = {"fresh": Path(pretrained["b"]["model_dir"]), "continued": Path(continued["model_dir"])}
    finetune_hash = {"fresh": value._settings_hash(pretrain_hash, finetune_settings, args.examples),
                     "continued": value._settings_hash(continue_hash, finetune_settings, args.examples)}
    per_task = {}
    for name in args.tasks:
        scores: dict[str, list[float]] = {"fresh": [], "continued": []}
        for seed in args.seeds:
            for arm, model_dir in arms.items():
                out = args.work / "finetuned" / finetune_hash[arm] / f"{name}-{'pretrained' if arm == 'fresh' else arm}-{seed}"
                scores[arm].append(value.finetuned_score(tasks[name], model_dir, out, seed))
        deltas = [c - f for c, f in zip(scores["continued"], scores["fresh"])]
        per_task[name] = {
            "metric": tasks[name].primary_metric,
            **{arm: {"scores": v, "mean": statistics.mean(v), "std": value._spread(v)} for arm, v in scores.items()},
            "delta_per_seed": deltas, "delta_mean": statistics.mean(deltas), "delta_std": value._spread(deltas),
            "within_half_point": statistics.mean(deltas) >= -WITHIN_FRESH,
        }
        log.info("%s: continued - fresh %+.4f", name, per_task[name]["delta_mean"])
    cost = {"fresh_a": _cost(pretrained["a"]), "fresh_b": _cost(pretrained["b"]), "continued_b": _cost(continued)}
    # CPU seconds of the process (all its threads), not wall time: a paused run does not count its pause
    # (they still grow on a shared machine: torch's threads spin while they wait); wall seconds beside them
    time_ratio = continued["cpu_seconds"] / pretrained["b"]["cpu_seconds"]
    return {
        "corpus": counts,
        "new_documents": continued["new_documents"], "new_tokens": continued["new_tokens"],
        "continuation": continued_train.continuation.model_dump(),
        "pretraining_cost": cost,
        "continued_over_fresh": {"steps": continued["steps"] / pretrained["b"]["steps"], "cpu_seconds": round(time_ratio, 3),
                                 "wall_seconds": round(continued["seconds"] / pretrained["b"]["seconds"], 3)},
        "tasks": per_task,
        "target_met": time_ratio <= 1 / 3 + 0.01 and all(t["within_half_point"] for t in per_task.values()),
    }


def _cost(cost: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cost.items() if k not in ("model_dir", "mix_target")}


# ---------------------------------------------------------------- main


def _reduced(train: TrainConfig, args: argparse.Namespace) -> dict[str, Any]:
    ran = {"max_steps": train.pretrain.max_steps, "seeds": len(args.seeds), "tasks": len(args.tasks), "examples": args.examples}
    return {key: {"ran": ran[key], "full": full} for key, full in FULL_PROTOCOL.items() if ran[key] != full}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", required=True)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--mix-share", action="store_true", help="per-window token share of the stream, no training")
    what.add_argument("--refresh", action="store_true", help="continued vs fresh pretraining on version B")
    parser.add_argument("-c", "--config", type=Path, default=value.ROOT / "configs" / "shared_data.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="dotted override, e.g. train.pretrain.max_steps=600 or finetune.lr=5e-4")
    parser.add_argument("--data", type=Path, default=value.SHARED)
    parser.add_argument("--work", type=Path, default=value.ROOT / "runs" / "pretrain_value")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--examples", type=int, default=1000, help="cap of every split of every task")
    parser.add_argument("--tasks", nargs="+", default=list(value.ALL_TASKS), choices=value.ALL_TASKS)
    parser.add_argument("--windows", type=int, default=70, help="logging windows the mix share is measured over")
    parser.add_argument("--continue-fraction", type=float, default=1 / 3, help="continued budget / fresh budget, in steps")
    parser.add_argument("--replay-share", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("pipeline.train.finetune", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    raw = yaml.safe_load(args.config.read_text())
    settings = value._apply_overrides({"train": raw.get("train", {}), "finetune": dict(value.FINETUNE)}, args.overrides)
    load_config(args.config)
    train = TrainConfig.model_validate({**settings["train"], "tasks": []})
    entry: dict[str, Any] = {
        "label": args.label, "date": date.today().isoformat(),
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, "
                   + (torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"),
        "train": train.model_dump(mode="json", exclude={"tasks", "enabled"}),
    }
    if args.mix_share:
        tasks = value.task_configs(args.data, settings["finetune"], args.examples)
        corpus, _ = value.build_corpus(args.data, list(tasks.values()), args.work / value.CORPUS_DIR)
        tokenizer_dir = args.work / f"tokenizer-b-{value._settings_hash(train.tokenizer.model_dump())}"
        if not (tokenizer_dir / "tokenizer.json").exists():
            train_tokenizer(str(corpus), train.tokenizer, tokenizer_dir)
        entry.update(mix_share(corpus, train, tokenizer_dir, args.windows))
        section = "mix_share"
    else:
        reduced = _reduced(train, args)
        entry.update({"reduced": bool(reduced), "reductions": reduced, "seeds": args.seeds,
                      "finetune": {**settings["finetune"], "examples_per_split": args.examples},
                      **refresh(args, train, settings["finetune"])})
        section = "refresh"
    value._record(args.out, section, entry)


if __name__ == "__main__":
    main()
