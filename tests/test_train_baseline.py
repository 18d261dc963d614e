"""The random-init baseline and the pieces around it: the untrained model saved like a pretrained one, the
masked-LM loss computed on masked tokens only, and task models built from it without noise."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers.tasks import tiny_pretrained
from helpers.training import tiny_train_config, write_dataset
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoModelForTokenClassification
from safetensors.torch import load_file, save_file

from pipeline.train.evaluate import evaluate_lm
from pipeline.train.loading import load_for_task
from pipeline.train.pretrain import SparseMaskedLM, pretrain, save_random_init
from pipeline.train.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def manifest_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_dataset(tmp_path_factory.mktemp("dataset")))


@pytest.fixture(scope="module")
def tokenizer_dir(manifest_path: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tokenizer(manifest_path, tiny_train_config().tokenizer, tmp_path_factory.mktemp("tok") / "tokenizer")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def transformers_log() -> Iterator[_Records]:
    """Records of transformers' own loggers (they do not propagate to the root logger caplog watches)."""
    handler, logger = _Records(), logging.getLogger("transformers")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def test_random_init_is_seeded_and_leaves_the_global_rng_alone(tokenizer_dir: Path, tmp_path: Path) -> None:
    model = tiny_train_config().model
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = save_random_init(model, tokenizer_dir, tmp_path / "a", seed=7)
    assert torch.equal(torch.rand(1), expected_next)

    again = save_random_init(model, tokenizer_dir, tmp_path / "b", seed=7)
    other = save_random_init(model, tokenizer_dir, tmp_path / "c", seed=8)
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(_weights(first)[name], _weights(again)[name])
    assert not torch.equal(_weights(first)[name], _weights(other)[name])
    assert (first / "tokenizer.json").exists()
    assert AutoModelForMaskedLM.from_pretrained(first).config.hidden_size == model.hidden_size


def test_sparse_masked_lm_loss_equals_the_full_head_loss(tokenizer_dir: Path, tmp_path: Path) -> None:
    model = AutoModelForMaskedLM.from_pretrained(save_random_init(tiny_train_config().model, tokenizer_dir, tmp_path / "m", 0))
    model.eval()
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, model.config.vocab_size, (3, 16), generator=generator)
    labels = torch.where(torch.rand(3, 16, generator=generator) < 0.3, input_ids, -100)
    labels[0, 0] = input_ids[0, 0]  # at least one scored token
    with torch.no_grad():
        full = model(input_ids=input_ids, labels=labels).loss
        sparse = SparseMaskedLM(model)(input_ids=input_ids, labels=labels).loss
    assert sparse.item() == pytest.approx(full.item(), rel=1e-5)


@pytest.mark.parametrize("auto", [AutoModelForSequenceClassification, AutoModelForTokenClassification])
def test_task_model_from_a_masked_lm_loads_without_a_report(auto: type, tmp_path: Path, transformers_log: _Records) -> None:
    pretrained = tiny_pretrained(tmp_path / "pretrained")
    model = load_for_task(auto, pretrained, num_labels=3)
    assert model.config.num_labels == 3
    assert not [m for m in transformers_log.messages if "LOAD REPORT" in m]


def test_weights_other_than_the_swapped_heads_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pretrained = tiny_pretrained(tmp_path / "pretrained")
    weights = _weights(pretrained)
    weights["bert.encoder.layer.9.output.dense.weight"] = torch.zeros(2, 2)  # a layer the model does not have
    del weights["bert.encoder.layer.1.output.dense.bias"]
    save_file(weights, str(pretrained / "model.safetensors"), metadata={"format": "pt"})
    with caplog.at_level(logging.WARNING, logger="pipeline.train.loading"):
        load_for_task(AutoModelForSequenceClassification, pretrained, num_labels=2)
    (message,) = [r.getMessage() for r in caplog.records if r.name == "pipeline.train.loading"]
    assert "bert.encoder.layer.9.output.dense.weight" in message and "bert.encoder.layer.1.output.dense.bias" in message
    assert "classifier" not in message and "cls.predictions" not in message


def test_lm_evaluation_of_long_documents_gives_no_length_warning(
    manifest_path: str, tokenizer_dir: Path, tmp_path: Path, transformers_log: _Records
) -> None:
    config = tiny_train_config().model.model_copy(update={"max_seq_len": 16})  # shorter than most documents
    model_dir = save_random_init(config, tokenizer_dir, tmp_path / "m", 0)
    result = evaluate_lm(model_dir, manifest_path)
    assert result["blocks"] > 0
    assert not [m for m in transformers_log.messages if "sequence length is longer" in m]


def test_modernbert_pretrains_and_its_task_models_reuse_the_prediction_head(
    manifest_path: str, tokenizer_dir: Path, tmp_path: Path, transformers_log: _Records
) -> None:
    config = tiny_train_config(max_steps=10)
    config = config.model_copy(update={"model": config.model.model_copy(update={"arch": "modernbert", "dropout": 0.0})})
    result = pretrain(manifest_path, tokenizer_dir, config, tmp_path / "pretrained")
    assert all(math.isfinite(loss) for _, loss in result.losses) and result.losses[-1][1] < result.losses[0][1]
    assert evaluate_lm(result.model_dir, manifest_path)["objective"] == "mlm"

    pretrained = _weights(result.model_dir)
    for auto in (AutoModelForSequenceClassification, AutoModelForTokenClassification):
        model = load_for_task(auto, result.model_dir, num_labels=2)
        assert torch.equal(model.state_dict()["head.dense.weight"], pretrained["head.dense.weight"])
    assert model.config.classifier_pooling == "mean"
    assert not [m for m in transformers_log.messages if "LOAD REPORT" in m]
