"""Pretraining, read top to bottom: build the model from config, stream packed blocks, step, checkpoint.

One loop serves CPU (small, fp32) and CUDA (bf16 autocast, SDPA attention, fused AdamW, optional
torch.compile). With `pretrain.devices > 1` and no torchrun environment, `pretrain()` relaunches itself
under torchrun and every rank runs the same loop with DistributedDataParallel.

A call on an `out_dir` that already holds checkpoints resumes from the newest valid one: model, optimizer,
scheduler, RNG states and the data stream's position are restored, so on CPU the resumed run ends with the
same weights, bit for bit, as one that was never interrupted. This is how a retried task resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    LlamaConfig,
    LlamaForCausalLM,
    ModernBertConfig,
    ModernBertForMaskedLM,
    PreTrainedModel,
)
from transformers.modeling_outputs import MaskedLMOutput

from pipeline.config import ModelConfig, PretrainConfig, TrainConfig
from pipeline.versions import load_manifest
from pipeline.train import checkpoint as ckpt
from pipeline.train.data import (
    REPLAY_SUFFIX,
    PackedStream,
    PackingLayout,
    StreamState,
    causal_lm_labels,
    mask_for_mlm,
    plan_mix,
    shard_urls,
    with_replay_share,
)
from pipeline.train.continuation import (
    Continuation,
    ParentModel,
    continued_replay_share,
    continued_schedule,
    load_parent_weights,
)
from pipeline.train.loading import MODEL_LOCK, save_model_dir

LogFn = Callable[[dict[str, Any]], None]
RESULT_FILE = "result.json"
LOG_LINE_PREFIX = "pretrain-log "  # how ranks under torchrun pass log records to the launching process

# Dense bf16 tensor-core peaks (FLOP/s) by device name; the first matching key wins (L40S before L4).
BF16_PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "H800": 989e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12, "L4": 121e12}


@dataclass
class PretrainResult:
    model_dir: Path
    steps: int
    final_loss: float
    losses: list[tuple[int, float]]
    tokens_per_s: float
    mfu: float | None
    resumed_from: int | None
    tokens_seen: int = 0  # what pretraining cost, over every resumed attempt: the model card reports it
    train_seconds: float = 0.0
    mix_target: dict[str, float] = field(default_factory=dict)  # token share per strand of the stream
    mix_windows: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # realised, per logging window
    continued_from: str | None = None  # the registered version whose encoder this run started from
    new_tokens: int | None = None  # tokens of new text a continued run was budgeted on

    @property
    def replay_share(self) -> float | None:
        """The share of a continued run's tokens that replayed old text (None for a fresh run): the configured
        `replay_share`, or more where a budget in steps holds more passes over the new text than asked."""
        if self.continued_from is None:
            return None
        return sum(share for strand, share in self.mix_target.items() if strand.endswith(REPLAY_SUFFIX))

    def budget(self) -> str:
        """What a continued run trained on, as its note ends."""
        return (f"{self.steps} steps, {self.new_tokens:,} tokens of new text, replay share {self.replay_share:.2f} "
                f"of its tokens")


@dataclass(frozen=True)
class Runtime:
    """Where this process trains: its rank among `world` processes and its device."""

    rank: int
    world: int
    device: torch.device
    bf16: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0


# ---------------------------------------------------------------- model, optimizer, schedule


def build_model(config: ModelConfig, tokenizer: Any) -> PreTrainedModel:
    """A fresh model from config (never from a hub), with SDPA attention."""
    common = {
        "vocab_size": len(tokenizer),
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_size,
        "max_position_embeddings": config.max_seq_len,
        "pad_token_id": tokenizer.pad_token_id,
        "attn_implementation": "sdpa",
    }
    with MODEL_LOCK:  # a load in another thread may have switched tying off meanwhile: see loading.py
        if config.arch == "bert":
            model = BertForMaskedLM(BertConfig(
                **common, hidden_dropout_prob=config.dropout, attention_probs_dropout_prob=config.dropout,
                tie_word_embeddings=True,
            ))
        elif config.arch == "modernbert":
            model = ModernBertForMaskedLM(ModernBertConfig(
                **common,
                cls_token_id=tokenizer.cls_token_id,
                sep_token_id=tokenizer.sep_token_id,
                bos_token_id=tokenizer.cls_token_id,
                eos_token_id=tokenizer.sep_token_id,
                embedding_dropout=config.dropout,
                attention_dropout=config.dropout,
                mlp_dropout=config.dropout,
                sparse_prediction=True,  # the prediction head runs on masked tokens only, as SparseMaskedLM
                classifier_pooling="mean",
                tie_word_embeddings=True,
            ))
        else:
            model = LlamaForCausalLM(LlamaConfig(
                **common,
                num_key_value_heads=config.num_heads,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                tie_word_embeddings=True,
            ))
        return _tied(model)


def save_random_init(config: ModelConfig, tokenizer_dir: Path, out_dir: Path, seed: int) -> Path:
    """The model of `config` before any training step, weights drawn from `seed`, saved with the tokenizer
    as a pretrained model is: fine-tuned with the same settings, it is the baseline pretraining must beat."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(config, tokenizer)
    save_model_dir(model, tokenizer, Path(out_dir))
    return Path(out_dir)


def _tied(model: PreTrainedModel) -> PreTrainedModel:
    """Input and output embeddings share one tensor, always.

    The parameter set must be the same in every process that trains or resumes the run (checkpointed
    optimizer state is matched by position), and construction alone was seen to leave the decoder untied
    in a long-lived process (see loading.py).
    """
    if model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
        model.tie_weights()
    if model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
        raise RuntimeError(f"{type(model).__name__}: output embeddings could not be tied to the input embeddings")
    return model


class SparseMaskedLM(torch.nn.Module):
    """A BERT masked LM whose prediction head runs on the masked tokens only (as Cramming and MosaicBERT).

    The head ends in the vocabulary projection, the largest matmul of a small encoder; run on every token,
    85% of its output would be thrown away by the loss. The loss is the same mean over masked tokens; the
    weights (and so checkpoints and the saved model) are those of the wrapped `BertForMaskedLM`.
    """

    def __init__(self, model: BertForMaskedLM) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None) -> MaskedLMOutput:
        hidden = self.model.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        scored = labels != -100
        logits = self.model.cls(hidden[scored])
        return MaskedLMOutput(loss=F.cross_entropy(logits, labels[scored]))


def build_optimizer(model: torch.nn.Module, config: PretrainConfig, fused: bool) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices and embeddings only, not on biases and norms (as nanoGPT)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-6, fused=fused)


def lr_factor(step: int, config: PretrainConfig) -> float:
    """Linear warmup, then cosine or linear decay to `min_lr_ratio` of the peak at max_steps."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if config.lr_schedule == "cosine" else 1 - progress
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * decay


def flops_per_token(model: torch.nn.Module, config: ModelConfig) -> float:
    """6 N for the weights' forward and backward plus the attention scores (PaLM appendix B, as nanoGPT).

    Position and token-type embeddings are lookups, not matmuls, so they are left out of N; the word
    embedding stays in because the tied output layer multiplies by it."""
    lookups = sum(p.numel() for n, p in model.named_parameters() if "position_embeddings" in n or "token_type" in n)
    n_params = sum(p.numel() for p in model.parameters()) - lookups
    return 6 * n_params + 12 * config.num_layers * config.hidden_size * config.max_seq_len


def bf16_peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_FLOPS.items() if key in name), None)


# ---------------------------------------------------------------- runtime, RNG, data


def _runtime(config: PretrainConfig) -> Runtime:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    return Runtime(rank=rank, world=world, device=device, bf16=bf16)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _rng_state(mask_generator: torch.Generator) -> dict[str, Any]:
    """This process's RNG states as plain values and tensors (weights_only-loadable)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": position, "has_gauss": has_gauss, "cached": cached},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "mask": mask_generator.get_state(),
    }


def _set_rng_state(state: dict[str, Any], mask_generator: torch.Generator) -> None:
    random.setstate(state["python"])
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"], numpy["has_gauss"], numpy["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    mask_generator.set_state(state["mask"])


def _gather(value: Any, runtime: Runtime) -> list[Any]:
    if runtime.world == 1:
        return [value]
    gathered: list[Any] = [None] * runtime.world
    dist.all_gather_object(gathered, value)
    return gathered


def _layout(tokenizer: Any, objective: str) -> PackingLayout:
    """MLM blocks open with [CLS] and separate documents with [SEP]; CLM blocks are documents + EOS."""
    end = tokenizer.sep_token_id if objective == "mlm" and tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    start = (tokenizer.cls_token_id or tokenizer.bos_token_id) if objective == "mlm" else None
    if end is None:
        raise ValueError("the tokenizer has neither a [SEP] nor an EOS token to separate documents")
    return PackingLayout(doc_end_id=end, pad_id=tokenizer.pad_token_id, start_id=start)


def _first_ordinary_id(tokenizer: Any) -> int:
    """Random replacement tokens are drawn from the ids after the special tokens (which come first)."""
    return max(tokenizer.all_special_ids) + 1


# ---------------------------------------------------------------- the loop


def pretrain(
    manifest_path: str,
    tokenizer_dir: Path,
    config: TrainConfig,
    out_dir: Path,
    on_log: LogFn | None = None,
    continuation: Continuation | None = None,
) -> PretrainResult:
    """Pretrain on the manifest's usable train shards; resumes from out_dir's newest valid checkpoint.

    With a `continuation`, training starts from the parent's encoder (the tokenizer must be the parent's),
    reads the new documents mixed with a replay of the old, for the budget of `train.continuation`."""
    out_dir = Path(out_dir)
    if config.pretrain.devices > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_torchrun(manifest_path, Path(tokenizer_dir), config, out_dir, on_log, continuation)
    return _train(manifest_path, Path(tokenizer_dir), config, out_dir, on_log, continuation)


def _train(manifest_path: str, tokenizer_dir: Path, config: TrainConfig, out_dir: Path, on_log: LogFn | None,
           continuation: Continuation | None = None) -> PretrainResult:
    runtime = _runtime(config.pretrain)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.model_max_length = config.model.max_seq_len
    urls = shard_urls(manifest_path, load_manifest(manifest_path), "train")
    tokens_per_step = config.pretrain.batch_size * config.model.max_seq_len * config.pretrain.grad_accum * runtime.world
    if continuation is None:
        strands = plan_mix(urls, tokenizer.backend_tokenizer, config.mix, config.mix_temperature)
        cfg, new_tokens = config.pretrain, None
    else:
        strands = plan_mix(urls, tokenizer.backend_tokenizer, config.mix, config.mix_temperature,
                           new_ids=continuation.new_ids(), replay_share=config.continuation.replay_share)
        new_tokens = sum(s.tokens for s in strands if s.only_ids is not None)
        cfg = continued_schedule(config, new_tokens, tokens_per_step)
        replay = continued_replay_share(config.continuation, new_tokens, cfg.max_steps * tokens_per_step)
        strands = with_replay_share(strands, replay)
    _seed_everything(cfg.seed + runtime.rank)

    model = build_model(config.model, tokenizer)
    if continuation is not None:
        load_parent_weights(model, continuation.parent.pretrained_dir)
    model = model.to(runtime.device)
    optimizer = build_optimizer(model, cfg, fused=runtime.device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
    mask_generator = torch.Generator().manual_seed(cfg.seed + runtime.rank)
    stream = PackedStream(
        strands,
        tokenizer.backend_tokenizer,
        _layout(tokenizer, cfg.objective),
        seq_len=config.model.max_seq_len,
        seed=cfg.seed,
        with_word_keys=cfg.objective == "mlm" and cfg.whole_word_mask,
    )

    checkpoints = out_dir / "checkpoints"
    if runtime.is_main:
        ckpt.remove_partial(checkpoints)
    step, losses, mix_windows, tokens_seen, train_seconds, resumed_from = 0, [], [], 0, 0.0, None
    latest = ckpt.latest_valid(checkpoints)
    if latest is not None:
        state = ckpt.load_checkpoint(latest, model, optimizer)
        if state["model_config"] != config.model.model_dump(mode="json"):
            raise ValueError(f"{latest} was written for another model config; use a new out_dir to start over")
        scheduler.load_state_dict(state["scheduler"])
        stream.load_state(StreamState.from_dict(state["data"]))
        _set_rng_state(state["rng"][runtime.rank], mask_generator)
        step, losses, tokens_seen, train_seconds = state["step"], [tuple(x) for x in state["losses"]], state["tokens_seen"], state["train_seconds"]
        mix_windows = [tuple(x) for x in state["mix_windows"]]
        resumed_from = step

    # Compile and wrap after loading, so checkpoints always hold the plain module's names.
    raw_model = model
    if isinstance(model, BertForMaskedLM):
        model = SparseMaskedLM(model)
    if cfg.compile:
        model = torch.compile(model)
    if runtime.world > 1:
        model = DistributedDataParallel(model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None)
    autocast = torch.autocast(runtime.device.type, dtype=torch.bfloat16) if runtime.bf16 else nullcontext()
    flops_token, peak = flops_per_token(raw_model, config.model), bf16_peak_flops(runtime.device)

    def prepare(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if cfg.objective == "clm":
            inputs = causal_lm_labels(batch)
        else:
            inputs = mask_for_mlm(
                batch,
                mask_prob=cfg.mask_prob,
                mask_id=tokenizer.mask_token_id,
                first_ordinary_id=_first_ordinary_id(tokenizer),
                vocab_size=len(tokenizer),
                whole_word=cfg.whole_word_mask,
                generator=mask_generator,
            )
        if bool(inputs["attention_mask"].all()):
            # Packed blocks have no padding: without a mask SDPA can use its fastest (flash) kernel.
            del inputs["attention_mask"]
        return {k: v.to(runtime.device, non_blocking=True) for k, v in inputs.items()}

    def next_micro_batch() -> dict[str, torch.Tensor]:
        # Every rank reads the same stream and keeps its own slice, so the data position is one state.
        batch = stream.next_batch(cfg.batch_size * runtime.world)
        mine = slice(runtime.rank * cfg.batch_size, (runtime.rank + 1) * cfg.batch_size)
        return prepare({k: v[mine] for k, v in batch.items()})

    model.train()
    interval_loss = torch.zeros((), device=runtime.device)
    interval_start, interval_steps = time.perf_counter(), 0
    window_start = stream.emitted_tokens()
    while step < cfg.max_steps:
        for micro in range(cfg.grad_accum):
            sync = micro == cfg.grad_accum - 1 or runtime.world == 1
            with (nullcontext() if sync else model.no_sync()), autocast:
                loss = model(**next_micro_batch()).loss / cfg.grad_accum
            loss.backward()
            interval_loss += loss.detach()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        interval_steps += 1

        if step % cfg.log_every == 0 or step == cfg.max_steps:
            if runtime.world > 1:
                dist.all_reduce(interval_loss, op=dist.ReduceOp.AVG)
            elapsed = time.perf_counter() - interval_start  # .item() below waits for the device
            mean_loss = interval_loss.item() / interval_steps
            tokens_per_s = tokens_per_step * interval_steps / max(elapsed, 1e-9)
            losses.append((step, mean_loss))
            emitted = stream.emitted_tokens()
            mix_windows.append((step, _window_shares(window_start, emitted)))
            window_start = emitted
            tokens_seen += tokens_per_step * interval_steps
            train_seconds += elapsed
            record = {
                "step": step,
                "loss": mean_loss,
                "lr": scheduler.get_last_lr()[0],
                "tokens_per_s": tokens_per_s,
                "mfu": flops_token * tokens_per_s / (peak * runtime.world) if peak else None,
                "mix_share": mix_windows[-1][1],
            }
            if on_log is not None and runtime.is_main:
                on_log(record)
            interval_loss.zero_()
            interval_start, interval_steps = time.perf_counter(), 0

        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            _checkpoint(checkpoints, step, raw_model, optimizer, scheduler, stream, mask_generator, runtime, config,
                        {"losses": losses, "mix_windows": mix_windows, "tokens_seen": tokens_seen,
                         "train_seconds": train_seconds})
            # The time spent writing it counts in the next interval: checkpoints are part of training's cost.

    model_dir = out_dir / "model"
    if runtime.is_main:
        save_model_dir(raw_model, tokenizer, model_dir)
    if runtime.world > 1:
        dist.barrier()
    tokens_per_s = tokens_seen / train_seconds if train_seconds else 0.0
    return PretrainResult(
        model_dir=model_dir,
        steps=step,
        final_loss=losses[-1][1] if losses else float("nan"),
        losses=losses,
        tokens_per_s=tokens_per_s,
        mfu=flops_token * tokens_per_s / (peak * runtime.world) if peak else None,
        resumed_from=resumed_from,
        tokens_seen=tokens_seen,
        train_seconds=train_seconds,
        mix_target=stream.target_shares,
        mix_windows=mix_windows,
        continued_from=continuation.parent.reference if continuation is not None else None,
        new_tokens=new_tokens,
    )


def _window_shares(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """Each strand's share of the tokens emitted between two counts."""
    window = {name: after[name] - before.get(name, 0) for name in after}
    total = sum(window.values())
    return {name: count / total for name, count in window.items()} if total else {}


def _checkpoint(
    root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    stream: PackedStream,
    mask_generator: torch.Generator,
    runtime: Runtime,
    config: TrainConfig,
    progress: dict[str, Any],
) -> None:
    rng_states = _gather(_rng_state(mask_generator), runtime)  # every rank's, so each resumes its own
    if runtime.is_main:
        state = {
            "step": step,
            "model_config": config.model.model_dump(mode="json"),
            "scheduler": scheduler.state_dict(),
            "data": stream.state.to_dict(),
            "rng": rng_states,
            **progress,
        }
        ckpt.save_checkpoint(root, step, model, optimizer, state, keep=config.pretrain.keep_checkpoints)
    if runtime.world > 1:
        dist.barrier()


# ---------------------------------------------------------------- torchrun launcher


def write_launch_spec(manifest_path: str, tokenizer_dir: Path, config: TrainConfig, out_dir: Path,
                      continuation: Continuation | None = None) -> Path:
    """The arguments of a run in a file, for `python -m pipeline.train.pretrain <spec>` in a new process."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = out_dir / "launch.json"
    spec.write_text(json.dumps({
        "manifest_path": manifest_path,
        "tokenizer_dir": str(tokenizer_dir),
        "out_dir": str(out_dir),
        "config": config.model_dump(mode="json"),
        "continuation": None if continuation is None else {
            "parent": {**asdict(continuation.parent), "pretrained_dir": str(continuation.parent.pretrained_dir)},
            "new_ids_file": str(continuation.new_ids_file),
        },
    }))
    return spec


def _continuation_from_spec(spec: dict[str, Any] | None) -> Continuation | None:
    if spec is None:
        return None
    parent = ParentModel(**{**spec["parent"], "pretrained_dir": Path(spec["parent"]["pretrained_dir"])})
    return Continuation(parent, Path(spec["new_ids_file"]))


def _launch_torchrun(manifest_path: str, tokenizer_dir: Path, config: TrainConfig, out_dir: Path, on_log: LogFn | None,
                     continuation: Continuation | None) -> PretrainResult:
    """Run this module under torchrun with one process per device; log records stream back on stdout."""
    spec = write_launch_spec(manifest_path, tokenizer_dir, config, out_dir, continuation)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={config.pretrain.devices}",
               "-m", "pipeline.train.pretrain", str(spec)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        for line in process.stdout:
            if line.startswith(LOG_LINE_PREFIX):
                if on_log is not None:
                    on_log(json.loads(line[len(LOG_LINE_PREFIX):]))
            else:
                sys.stdout.write(line)
    if process.returncode != 0:
        raise RuntimeError(f"torchrun pretraining failed with exit code {process.returncode}")
    return _read_result(out_dir / RESULT_FILE)


def _read_result(path: Path) -> PretrainResult:
    data = json.loads(path.read_text())
    return PretrainResult(**{**data, "model_dir": Path(data["model_dir"]), "losses": [tuple(x) for x in data["losses"]],
                                "mix_windows": [tuple(x) for x in data["mix_windows"]]})


def _print_log(record: dict[str, Any]) -> None:
    print(LOG_LINE_PREFIX + json.dumps(record), flush=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of a launched process: `python -m pipeline.train.pretrain launch.json`."""
    parser = argparse.ArgumentParser(description="Run pretraining from a launch spec (written by pretrain()).")
    parser.add_argument("spec", type=Path)
    spec = json.loads(parser.parse_args(argv).spec.read_text())
    config = TrainConfig.model_validate(spec["config"])
    out_dir = Path(spec["out_dir"])
    result = _train(spec["manifest_path"], Path(spec["tokenizer_dir"]), config, out_dir, _print_log,
                    _continuation_from_spec(spec.get("continuation")))
    if int(os.environ.get("RANK", "0")) == 0:
        (out_dir / RESULT_FILE).write_text(json.dumps({**asdict(result), "model_dir": str(result.model_dir)}))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
