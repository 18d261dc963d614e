"""Fine-tuning of a pretrained encoder on a classification or NER task, with early stopping on dev.

A plain loop rather than `transformers.Trainer`: the Trainer needs `accelerate`, which is only in the gpu
extra, and early stopping, best-checkpoint keeping and the per-epoch dev score are a dozen readable lines
here. One epoch: train over the shuffled train split, score the dev split with the task's primary metric,
keep the model when the score is the best so far, stop after `patience` epochs without improvement.
The test metrics come from the kept model reloaded from disk, by the same code `evaluate_task` runs, so
the figure logged is the figure a downloaded model reproduces.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
    set_seed,
)

from pipeline.config import TaskConfig
from pipeline.train.evaluate import evaluate_split, evaluate_task, input_length
from pipeline.train.loading import load_for_task, save_model_dir
from pipeline.train.tasks import SEQUENCE, TaskData, load_task, numbered_labels

log = logging.getLogger(__name__)

WARMUP_FRACTION = 0.1
WEIGHT_DECAY = 0.01
GRAD_CLIP = 1.0
IGNORED = -100  # label of sub-tokens and special tokens: the loss skips them
_LAYER_INDEX = re.compile(r"\.layers?\.(\d+)\.")  # ModernBERT's model.layers.N., BERT's encoder.layer.N.


@dataclass
class FinetuneResult:
    task: str
    model_dir: Path
    metrics: dict[str, float]  # test split, with the majority baseline next to each score
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: train_loss, dev_<metric>
    evaluation: dict[str, Any] = field(default_factory=dict)  # the full test evaluation, per-class table included

    def curves(self) -> dict[str, list[tuple[int, float]]]:
        """Per-epoch curves keyed for the registry: <task>/train_loss and <task>/dev_<metric>."""
        names = [key for key in self.history[0] if key != "epoch"] if self.history else []
        return {f"{self.task}/{name}": [(int(row["epoch"]), row[name]) for row in self.history] for name in names}


def finetune(task: TaskConfig, pretrained_dir: Path, out_dir: Path, seed: int = 0) -> FinetuneResult:
    """Fine-tune `pretrained_dir` on `task`; the best dev epoch's model and tokenizer end in `out_dir`."""
    set_seed(seed)
    data = load_task(task)
    tokenizer = AutoTokenizer.from_pretrained(pretrained_dir)
    model = _load_pretrained(task, pretrained_dir, data.labels)
    # saved with the model: whoever loads the folder (a transformers pipeline, the served model) cuts texts
    # where training and evaluation did
    tokenizer.model_max_length = input_length(model, task)
    loader = _train_loader(task, data, tokenizer, model, seed)
    optimizer = torch.optim.AdamW(parameter_groups(model, task), lr=task.lr, weight_decay=WEIGHT_DECAY)
    total_steps = task.epochs * len(loader)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(WARMUP_FRACTION * total_steps), total_steps)
    dev_key = f"dev_{task.primary_metric}"
    history: list[dict[str, float]] = []
    best_score, best_epoch = float("-inf"), 0
    for epoch in range(1, task.epochs + 1):
        train_loss = _train_epoch(model, loader, optimizer, scheduler)
        dev_score = evaluate_split(model, tokenizer, task, data, "validation")["metrics"][task.primary_metric]
        history.append({"epoch": epoch, "train_loss": train_loss, dev_key: dev_score})
        log.info("%s epoch %d: train loss %.4f, %s %.4f", task.name, epoch, train_loss, dev_key, dev_score)
        if dev_score > best_score:
            best_score, best_epoch = dev_score, epoch
            save_model_dir(model, tokenizer, Path(out_dir))
        elif epoch - best_epoch >= task.patience:
            log.info("%s: no better dev score for %d epochs, stopping", task.name, task.patience)
            break
    evaluation = evaluate_task(Path(out_dir), task, data)
    return FinetuneResult(
        task=task.name, model_dir=Path(out_dir), metrics=evaluation["metrics"], best_epoch=best_epoch,
        history=history, evaluation=evaluation,
    )


def parameter_groups(model: PreTrainedModel, task: TaskConfig) -> list[dict[str, Any]]:
    """One AdamW group per learning rate: the task head at lr * head_lr_scale, encoder layer k from the top at
    lr * layer_lr_decay**k, the embeddings below the lowest layer (see TaskConfig)."""
    encoder = f"{model.base_model_prefix}."
    layers = model.config.num_hidden_layers
    rates: dict[float, list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not name.startswith(encoder) or ".pooler." in name:  # BERT's pooler is never trained by masked LM
            rate = task.lr * task.head_lr_scale
        elif ".embeddings." in name:
            rate = task.lr * task.layer_lr_decay**layers
        elif layer := _LAYER_INDEX.search(name):
            rate = task.lr * task.layer_lr_decay ** (layers - 1 - int(layer.group(1)))
        else:  # a norm above the top layer
            rate = task.lr
        rates.setdefault(rate, []).append(parameter)
    return [{"params": parameters, "lr": rate} for rate, parameters in rates.items()]


def _load_pretrained(task: TaskConfig, pretrained_dir: Path, labels: list[str]) -> PreTrainedModel:
    if task.type == SEQUENCE and numbered_labels(labels):
        log.warning("task %s: labels %s are numbers, so the model will predict numbers; name them with the task's "
                    "label_names", task.name, labels[:5])
    auto = AutoModelForSequenceClassification if task.type == SEQUENCE else AutoModelForTokenClassification
    return load_for_task(
        auto,
        pretrained_dir,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )


def _train_loader(
    task: TaskConfig, data: TaskData, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, seed: int
) -> DataLoader:
    max_len = input_length(model, task)
    if task.type == SEQUENCE:
        encoded = _encode_sequences(data.train, tokenizer, model.config.label2id, max_len)
        collator = DataCollatorWithPadding(tokenizer)
    else:
        encoded = _encode_tokens(data.train, tokenizer, model.config.label2id, max_len)
        collator = DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORED)
    return DataLoader(
        encoded, batch_size=task.batch_size, shuffle=True, collate_fn=collator,
        generator=torch.Generator().manual_seed(seed),
    )


def _encode_sequences(
    rows: Dataset, tokenizer: PreTrainedTokenizerBase, label2id: dict[str, int], max_len: int
) -> list[dict[str, Any]]:
    encoded = tokenizer(list(rows["text"]), truncation=True, max_length=max_len)
    return [
        {**{key: values[i] for key, values in encoded.items()}, "labels": label2id[label]}
        for i, label in enumerate(rows["label"])
    ]


def _encode_tokens(
    rows: Dataset, tokenizer: PreTrainedTokenizerBase, label2id: dict[str, int], max_len: int
) -> list[dict[str, Any]]:
    """Each word's tag goes to its first sub-token; later sub-tokens and specials are ignored by the loss
    (a CJK character is a single token, so for Chinese every character carries its own tag)."""
    sentences = [list(tokens) for tokens in rows["tokens"]]
    encoded = tokenizer(sentences, is_split_into_words=True, truncation=True, max_length=max_len)
    examples = []
    for i, tags in enumerate(rows["tags"]):
        labels, previous = [], None
        for word in encoded.word_ids(i):
            labels.append(IGNORED if word is None or word == previous else label2id[tags[word]])
            previous = word
        examples.append({**{key: values[i] for key, values in encoded.items()}, "labels": labels})
    return examples


def _train_epoch(
    model: PreTrainedModel,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> float:
    model.train()
    total, steps = 0.0, 0
    for batch in loader:
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        total, steps = total + loss.item(), steps + 1
    return total / max(steps, 1)
