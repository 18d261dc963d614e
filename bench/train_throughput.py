"""Pretraining throughput: our loop against a plain `transformers.Trainer` on the same packed data.

For a small and a BERT-base-sized encoder (masked LM), both run the same number of steps on the same
blocks (packed from a dataset version's shards, no padding) from the same fresh model. Reported: tokens/s
after the warm-up steps, the ratio ours / Trainer, and on CUDA the MFU (model FLOPs per token x tokens/s
over the device's dense bf16 peak). The Trainer uses its defaults (bf16 on CUDA, token-level masking by
`DataCollatorForLanguageModeling`); ours adds whole-word masking, which costs it a little CPU work.

The corpus: ChnSentiCorp reviews (jieba words) and AG News items from ../shared/data when present,
otherwise the generated text of tests/helpers/training.py. Text content does not change the cost of a step;
the vocabulary size does, so the tokenizer is trained to the configured vocabulary on that corpus.

    python bench/train_throughput.py [--out bench/results] [--steps N] [--warmup W]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers.training import shard_record, write_dataset, write_manifest, write_shard  # noqa: E402
from transformers import AutoTokenizer, DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from pipeline.config import ModelConfig, PretrainConfig, TokenizerConfig, TrainConfig  # noqa: E402
from pipeline.schema import document_id  # noqa: E402
from pipeline.versions import load_manifest  # noqa: E402
from pipeline.train.data import PackedStream, plan_mix, shard_urls  # noqa: E402
from pipeline.train.pretrain import _layout, bf16_peak_flops, build_model, flops_per_token, pretrain  # noqa: E402
from pipeline.train.tokenizer import train_tokenizer  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
CUDA = torch.cuda.is_available()

# name -> (model, batch size, sequence length); BERT-base is kept to short sequences and batches on CPU.
SIZES = {
    "small": (ModelConfig(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024, max_seq_len=128), 64 if CUDA else 16),
    "bert-base": (
        ModelConfig(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, max_seq_len=512 if CUDA else 128),
        32 if CUDA else 8,
    ),
}


def _real_rows(limit: int) -> list[dict[str, Any]]:
    import jieba

    rows = []
    with (SHARED / "comments" / "ChnSentiCorp_htl_all.csv").open(encoding="utf-8-sig", newline="") as handle:
        for i, record in enumerate(csv.DictReader(handle)):
            text = (record.get("review") or "").strip()
            if text and i < limit:
                rows.append({"id": document_id("chnsenticorp", str(i)), "source": "chnsenticorp", "kind": "comment", "lang": "zh",
                             "text": text, "words": jieba.lcut(text), "split": "train"})
    with (SHARED / "news" / "ag_news_test.csv").open(encoding="utf-8", newline="") as handle:
        for i, record in enumerate(csv.DictReader(handle)):
            text = f"{record['title']}. {record['description']}".replace("\\", " ")
            if i < limit:
                rows.append({"id": document_id("ag_news", str(i)), "source": "ag_news", "kind": "news", "lang": "en",
                             "text": text, "words": text.split(), "split": "train"})
    for row in rows:
        row["n_words"] = len(row["words"])
    return rows


def build_corpus(root: Path) -> tuple[str, str]:
    if not SHARED.is_dir():
        return str(write_dataset(root, {"train": 3000}, with_quarantined=False)), "generated (tests/helpers/training.py)"
    rows = _real_rows(limit=8000)
    records = []
    for lang in ("zh", "en"):
        relative = f"train/{lang}-00000.arrow"
        part = [r for r in rows if r["lang"] == lang]
        write_shard(root / relative, part)
        records.append(shard_record(root, relative, part, "train", lang))
    return str(write_manifest(root, records)), "ChnSentiCorp + AG News (../shared/data)"


class StepTimes(TrainerCallback):
    """Wall time at the end of every Trainer step, the device drained first so the time is real."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if CUDA:
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())


def run_ours(manifest: str, tokenizer_dir: Path, config: TrainConfig, out_dir: Path) -> float:
    """tokens/s over the intervals after the first (which holds the warm-up steps)."""
    records: list[dict[str, Any]] = []
    pretrain(manifest, tokenizer_dir, config, out_dir, on_log=records.append)
    tokens_per_step = config.pretrain.batch_size * config.model.max_seq_len
    intervals = [(r["step"] - p["step"]) * tokens_per_step for p, r in zip(records, records[1:])]
    seconds = sum(tokens / r["tokens_per_s"] for tokens, r in zip(intervals, records[1:]))
    return sum(intervals) / seconds


def run_trainer(manifest: str, tokenizer_dir: Path, config: TrainConfig, out_dir: Path, warmup: int) -> float:
    """tokens/s over the steps after `warmup`, timed by a callback."""
    cfg, seq_len = config.pretrain, config.model.max_seq_len
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    urls = shard_urls(manifest, load_manifest(manifest), "train")
    stream = PackedStream(plan_mix(urls, tokenizer.backend_tokenizer), tokenizer.backend_tokenizer,
                          _layout(tokenizer, "mlm"), seq_len=seq_len, seed=cfg.seed, with_word_keys=False)
    blocks = stream.next_batch(cfg.batch_size * cfg.max_steps)["input_ids"]
    dataset = [{"input_ids": ids} for ids in blocks]
    torch.manual_seed(cfg.seed)
    args = TrainingArguments(
        output_dir=str(out_dir), per_device_train_batch_size=cfg.batch_size, max_steps=cfg.max_steps,
        learning_rate=cfg.lr, warmup_steps=cfg.warmup_steps, lr_scheduler_type="cosine", weight_decay=cfg.weight_decay,
        bf16=CUDA, save_strategy="no", report_to=[], logging_steps=cfg.max_steps, disable_tqdm=True,
        dataloader_num_workers=0, seed=cfg.seed, use_cpu=not CUDA,
    )
    times = StepTimes()
    Trainer(
        model=build_model(config.model, tokenizer), args=args, train_dataset=dataset,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=cfg.mask_prob), callbacks=[times],
    ).train()
    measured_steps = len(times.times) - warmup
    return measured_steps * cfg.batch_size * seq_len / (times.times[-1] - times.times[warmup - 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--steps", type=int, default=None, help="measured steps per run (default: 100 on CUDA; 10 small / 2 BERT-base on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="steps before measuring (default 10 on CUDA, 2 on CPU)")
    args = parser.parse_args()
    warmup = args.warmup or (10 if CUDA else 2)
    device = torch.cuda.get_device_name() if CUDA else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    peak = bf16_peak_flops(torch.device("cuda")) if CUDA else None

    results: dict[str, Any] = {"date": date.today().isoformat(), "device": device, "torch": torch.__version__,
                               "bf16_peak_flops": peak, "configs": {}}
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        manifest, corpus = build_corpus(work_dir / "dataset")
        results["corpus"] = corpus
        tokenizer_dir = train_tokenizer(manifest, TokenizerConfig(vocab_size=8000), work_dir / "tokenizer")
        for name, (model_config, batch_size) in SIZES.items():
            measured = args.steps or (100 if CUDA else (10 if name == "small" else 2))
            # Logged every `warmup` steps: the first interval is the warm-up, the others are timed.
            steps = warmup * (1 + math.ceil(measured / warmup))
            config = TrainConfig(model=model_config, pretrain=PretrainConfig(
                batch_size=batch_size, max_steps=steps, warmup_steps=warmup, log_every=warmup, checkpoint_every=steps,
                lr=1e-4, compile=CUDA,
            ))
            ours = run_ours(manifest, tokenizer_dir, config, work_dir / f"ours-{name}")
            baseline = run_trainer(manifest, tokenizer_dir, config, work_dir / f"trainer-{name}", warmup)
            model = build_model(model_config, AutoTokenizer.from_pretrained(tokenizer_dir))
            flops = flops_per_token(model, model_config)
            entry = {
                "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
                "batch_size": batch_size, "seq_len": model_config.max_seq_len, "steps": steps, "warmup_steps": warmup,
                "compile_ours": CUDA,
                "ours_tokens_per_s": round(ours, 1), "trainer_tokens_per_s": round(baseline, 1),
                "ratio": round(ours / baseline, 3),
                "ours_mfu": round(flops * ours / peak, 4) if peak else None,
                "trainer_mfu": round(flops * baseline / peak, 4) if peak else None,
            }
            results["configs"][name] = entry
            print(f"{name:10s} ours {ours:10.0f} tok/s  Trainer {baseline:10.0f} tok/s  ratio {entry['ratio']:.2f}"
                  + (f"  MFU ours {entry['ours_mfu']:.1%} Trainer {entry['trainer_mfu']:.1%}" if peak else ""), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"train_throughput-{'cuda' if CUDA else 'cpu'}-{results['date']}.json"
    path.write_text(json.dumps(results, indent=1))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
