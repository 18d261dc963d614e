"""Acceptance on real data: a tiny encoder fine-tuned on a ChnSentiCorp held-out split beats the majority
baseline. The encoder is random-initialised with a tokenizer trained on the train split only, so the
margin measures what fine-tuning alone learns on CPU in about a minute."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.tasks import tiny_pretrained

from pipeline.config import TaskConfig
from pipeline.train.finetune import finetune
from pipeline.train.tasks import load_task


@pytest.mark.slow
@pytest.mark.shared_data
def test_chnsenticorp_classifier_beats_majority_baseline(shared_data: Path, tmp_path: Path) -> None:
    task = TaskConfig(
        name="chnsenticorp", type="sequence_classification", lang="zh",
        train=str(shared_data / "comments/ChnSentiCorp_htl_all.csv"), fields={"text": "review", "label": "label"},
        max_examples=2000, epochs=4, batch_size=32, lr=2e-3, patience=2, max_seq_len=128,
    )
    pretrained = tiny_pretrained(tmp_path / "pretrained", texts=list(load_task(task).train["text"]), max_positions=128)

    result = finetune(task, pretrained, tmp_path / "model")

    metrics = result.metrics
    print(json.dumps({"metrics": metrics, "history": result.history}, indent=1))
    assert metrics["accuracy"] > metrics["majority_accuracy"] + 0.05
    assert metrics["macro_f1"] > metrics["majority_macro_f1"] + 0.2
