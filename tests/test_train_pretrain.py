"""Tokenizer, packing, whole-word masking and the pretraining loop with its checkpoints, on a tiny model."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from helpers.training import QUARANTINE_MARKER, tiny_train_config, write_dataset
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from pipeline.versions import load_manifest
from pipeline.train import checkpoint as ckpt
from pipeline.train.data import (
    NOT_A_WORD,
    PackedStream,
    PackingLayout,
    mask_for_mlm,
    plan_mix,
    shard_urls,
)
from pipeline.train.pretrain import PretrainResult, _layout, pretrain, write_launch_spec
from pipeline.train.tokenizer import train_tokenizer

REPO = Path(__file__).resolve().parents[1]
STEPS = 60


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pretrain")


@pytest.fixture(scope="module")
def manifest_path(workdir: Path) -> str:
    return str(write_dataset(workdir / "dataset"))


@pytest.fixture(scope="module")
def wordpiece_dir(workdir: Path, manifest_path: str) -> Path:
    return train_tokenizer(manifest_path, tiny_train_config().tokenizer, workdir / "tokenizer-wordpiece")


@pytest.fixture(scope="module")
def config():  # noqa: ANN201 - a TrainConfig
    return tiny_train_config(max_steps=STEPS, checkpoint_every=10, log_every=5)


@pytest.fixture(scope="module")
def reference(workdir: Path, manifest_path: str, wordpiece_dir: Path, config) -> PretrainResult:  # noqa: ANN001
    """One uninterrupted run; resumed runs must end with exactly its weights."""
    return pretrain(manifest_path, wordpiece_dir, config, workdir / "reference")


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def _assert_same_weights(a: Path, b: Path) -> None:
    left, right = _weights(a), _weights(b)
    assert left.keys() == right.keys()
    for name in left:
        assert torch.equal(left[name], right[name]), f"{name} differs"


def _stream(manifest_path: str, tokenizer_dir: Path, split: str = "train", loop: bool = False) -> PackedStream:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    layout = PackingLayout(doc_end_id=tokenizer.sep_token_id, pad_id=tokenizer.pad_token_id, start_id=tokenizer.cls_token_id)
    urls = shard_urls(manifest_path, load_manifest(manifest_path), split)
    return PackedStream(plan_mix(urls, tokenizer.backend_tokenizer), tokenizer.backend_tokenizer, layout, seq_len=64,
                        seed=0, loop=loop)


# ---------------------------------------------------------------- tokenizer


def test_wordpiece_splits_every_cjk_character_and_loads_offline(wordpiece_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(wordpiece_dir)
    text = "我们在酒店预订房间。The hotel was clean."
    encoding = tokenizer(text, return_offsets_mapping=True)
    tokens = tokenizer.convert_ids_to_tokens(encoding["input_ids"])
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert tokens[1:11] == list("我们在酒店预订房间。")
    assert "hotel" in tokens and "clean" in tokens and "[UNK]" not in tokens
    # Offsets point back into the original text: the pieces, in order, are the text without spaces.
    pieces = "".join(text[s:e] for s, e in encoding["offset_mapping"])
    assert pieces == text.replace(" ", "")
    assert tokenizer.decode(encoding["input_ids"], skip_special_tokens=True).replace(" ", "") == text.lower().replace(" ", "")


def test_byte_level_bpe_round_trips_raw_text(workdir: Path, manifest_path: str) -> None:
    config = tiny_train_config(kind="bpe", arch="llama").tokenizer
    tokenizer = AutoTokenizer.from_pretrained(train_tokenizer(manifest_path, config, workdir / "tokenizer-bpe"))
    text = "我们在酒店预订房间。The Hotel was clean, 价格 100 元！"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.eos_token == "</s>" and tokenizer.pad_token_id is not None


# ---------------------------------------------------------------- packing and masking


def test_packing_pads_only_the_last_block_and_skips_quarantined_shards(manifest_path: str, wordpiece_dir: Path) -> None:
    urls = shard_urls(manifest_path, load_manifest(manifest_path), "train")
    assert len(urls) == 4 and not any("quarantine" in ref.url for ref in urls)
    stream = _stream(manifest_path, wordpiece_dir)
    tokenizer = AutoTokenizer.from_pretrained(wordpiece_dir)
    blocks = []
    while (block := stream.next_block()) is not None:
        blocks.append(block)
    assert len(blocks) > 10
    for ids, _, length in blocks[:-1]:
        assert length == 64 and tokenizer.pad_token_id not in ids
    last_ids, _, last_length = blocks[-1]
    assert 1 <= last_length <= 64 and (last_ids[last_length:] == tokenizer.pad_token_id).all()
    marker = tokenizer.convert_tokens_to_ids(list(QUARANTINE_MARKER))
    text_ids = np.concatenate([ids[:length] for ids, _, length in blocks])
    windows = np.lib.stride_tricks.sliding_window_view(text_ids, len(marker))
    assert not (windows == marker).all(axis=1).any(), "a quarantined document reached training"


def test_whole_word_masking_masks_every_jieba_word_entirely(manifest_path: str, wordpiece_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(wordpiece_dir)
    batch = _stream(manifest_path, wordpiece_dir, loop=True).next_batch(16)
    masked = mask_for_mlm(
        batch, mask_prob=0.3, mask_id=tokenizer.mask_token_id, first_ordinary_id=5, vocab_size=len(tokenizer),
        whole_word=True, generator=torch.Generator().manual_seed(0),
    )
    keys, chosen = batch["word_keys"], masked["labels"] != -100
    multi_token_words = 0
    for key in torch.unique(keys[keys != NOT_A_WORD]):
        in_word = keys == key
        assert chosen[in_word].all() or not chosen[in_word].any(), "a word was masked in part"
        multi_token_words += int(in_word.sum() > 1)
    assert multi_token_words > 50  # 我们, 酒店, ... span several character tokens
    assert not chosen[keys == NOT_A_WORD].any()  # [CLS], [SEP] are never masked
    fraction = chosen.sum() / (keys != NOT_A_WORD).sum()
    assert 0.2 < fraction < 0.4
    # 80% of the chosen tokens become [MASK]; the labels keep the original ids.
    assert (masked["input_ids"][chosen] == tokenizer.mask_token_id).float().mean() > 0.6
    assert torch.equal(masked["labels"][chosen], batch["input_ids"][chosen])


def test_token_masking_without_word_keys_masks_tokens_one_by_one(manifest_path: str, wordpiece_dir: Path, workdir: Path, config) -> None:  # noqa: ANN001
    tokenizer = AutoTokenizer.from_pretrained(wordpiece_dir)
    urls = shard_urls(manifest_path, load_manifest(manifest_path), "train")
    stream = PackedStream(plan_mix(urls, tokenizer.backend_tokenizer), tokenizer.backend_tokenizer,
                          _layout(tokenizer, "mlm"), seq_len=64, seed=0, with_word_keys=False)
    batch = stream.next_batch(16)
    keys = batch["word_keys"]
    specials = torch.isin(batch["input_ids"], torch.tensor(tokenizer.all_special_ids))
    assert (keys[specials] == NOT_A_WORD).all() and (keys[~specials] != NOT_A_WORD).all()
    assert len(torch.unique(keys[~specials])) == int((~specials).sum())  # no two tokens share a key
    masked = mask_for_mlm(batch, mask_prob=0.15, mask_id=tokenizer.mask_token_id, first_ordinary_id=5,
                          vocab_size=len(tokenizer), whole_word=False, generator=torch.Generator().manual_seed(0))
    assert 0.1 < float((masked["labels"] != -100).sum() / (~specials).sum()) < 0.2

    char_masking = config.model_copy(update={"pretrain": config.pretrain.model_copy(update={"whole_word_mask": False})})
    result = pretrain(manifest_path, wordpiece_dir, char_masking, workdir / "char-masking")
    assert all(math.isfinite(loss) for _, loss in result.losses) and result.losses[-1][1] < result.losses[0][1]


def test_word_keys_follow_the_words_column(manifest_path: str, wordpiece_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(wordpiece_dir)
    batch = _stream(manifest_path, wordpiece_dir, loop=True).next_batch(4)
    ids, keys = batch["input_ids"][0], batch["word_keys"][0]
    words = ["".join(tokenizer.convert_ids_to_tokens(ids[keys == key])).replace("##", "") for key in torch.unique(keys[keys >= 0])]
    assert {"我们", "满意"} & set(words) or {"the", "was"} & set(words)


def test_stream_position_resumes_the_same_blocks(manifest_path: str, wordpiece_dir: Path) -> None:
    straight = _stream(manifest_path, wordpiece_dir, loop=True)
    for _ in range(7):
        straight.next_block()
    saved = straight.state.to_dict()
    expected = [straight.next_block()[0] for _ in range(40)]  # crosses shard ends and an epoch
    resumed = _stream(manifest_path, wordpiece_dir, loop=True)
    resumed.load_state(type(straight.state).from_dict(saved))
    assert all(np.array_equal(resumed.next_block()[0], e) for e in expected)


# ---------------------------------------------------------------- the loop


def test_loss_falls_and_the_model_loads_offline(reference: PretrainResult, config) -> None:  # noqa: ANN001
    first, last = reference.losses[0][1], reference.losses[-1][1]
    assert reference.steps == STEPS and reference.resumed_from is None
    assert last < first - 0.4, reference.losses
    assert last < np.log(config.tokenizer.vocab_size) - 1
    assert reference.tokens_per_s > 0 and reference.mfu is None  # no MFU on CPU
    model_dir = reference.model_dir
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in model_dir.iterdir()}
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    mlm = AutoModelForMaskedLM.from_pretrained(model_dir)
    assert mlm(**tokenizer("我们很满意。", return_tensors="pt")).logits.shape[-1] == len(tokenizer)
    classifier = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    assert classifier(**tokenizer(["服务很好"], return_tensors="pt")).logits.shape == (1, 2)


def test_decoder_trains_with_causal_lm(workdir: Path, manifest_path: str) -> None:
    config = tiny_train_config(kind="bpe", arch="llama", max_steps=30, checkpoint_every=30, log_every=10)
    tokenizer_dir = train_tokenizer(manifest_path, config.tokenizer, workdir / "tokenizer-bpe-clm")
    result = pretrain(manifest_path, tokenizer_dir, config, workdir / "llama")
    assert result.losses[-1][1] < result.losses[0][1]
    assert AutoTokenizer.from_pretrained(result.model_dir).eos_token == "</s>"


def test_logs_step_loss_lr_and_throughput(workdir: Path, manifest_path: str, wordpiece_dir: Path) -> None:
    records: list[dict] = []
    config = tiny_train_config(max_steps=4, log_every=2, checkpoint_every=4, warmup_steps=2)
    pretrain(manifest_path, wordpiece_dir, config, workdir / "logged", on_log=records.append)
    assert [r["step"] for r in records] == [2, 4]
    assert {"step", "loss", "lr", "tokens_per_s", "mfu"} <= records[0].keys()
    assert records[0]["lr"] > records[1]["lr"]  # warmup is over: the decay has begun


def test_killed_run_resumes_to_the_same_weights(
    workdir: Path, manifest_path: str, wordpiece_dir: Path, config, reference: PretrainResult  # noqa: ANN001
) -> None:
    out_dir = workdir / "killed"
    spec = write_launch_spec(manifest_path, wordpiece_dir, config, out_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.train.pretrain", str(spec)], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    for line in process.stdout:
        if '"step": 25' in line:  # the checkpoint of step 20 is on disk
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not (out_dir / "model").exists(), "the run finished before it was killed"
    checkpoints = ckpt.list_checkpoints(out_dir / "checkpoints")
    assert checkpoints and int(checkpoints[-1].name.split("-")[1]) < STEPS

    resumed = pretrain(manifest_path, wordpiece_dir, config, out_dir)
    assert resumed.resumed_from is not None and 20 <= resumed.resumed_from < STEPS
    assert resumed.steps == STEPS
    _assert_same_weights(resumed.model_dir, reference.model_dir)
    assert resumed.losses == reference.losses


def test_corrupt_newest_checkpoint_is_skipped(workdir: Path, manifest_path: str, wordpiece_dir: Path, config, reference: PretrainResult) -> None:  # noqa: ANN001
    out_dir = workdir / "corrupt"
    shutil.copytree(workdir / "reference" / "checkpoints", out_dir / "checkpoints")
    newest = ckpt.list_checkpoints(out_dir / "checkpoints")[-1]
    assert newest.name == ckpt.checkpoint_name(STEPS)
    weights = newest / ckpt.MODEL_FILE
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    (out_dir / "checkpoints" / ".tmp-step-00000070-1").mkdir()  # left by a process killed mid-write
    assert ckpt.verify(newest) is not None

    resumed = pretrain(manifest_path, wordpiece_dir, config, out_dir)
    assert resumed.resumed_from == STEPS - 10
    assert ckpt.verify(newest) is None  # rewritten when the run reached it again
    assert not list((out_dir / "checkpoints").glob(".tmp-*"))
    _assert_same_weights(resumed.model_dir, reference.model_dir)


def test_finished_run_is_not_trained_again(workdir: Path, manifest_path: str, wordpiece_dir: Path, config, reference: PretrainResult) -> None:  # noqa: ANN001
    again = pretrain(manifest_path, wordpiece_dir, config, workdir / "reference")
    assert again.resumed_from == STEPS and again.steps == STEPS
    assert again.losses == reference.losses
    _assert_same_weights(again.model_dir, reference.model_dir)
