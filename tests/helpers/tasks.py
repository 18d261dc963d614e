"""Small task files and a tiny encoder for the fine-tuning, evaluation and registry tests (no tests here).

The sentiment set and the NER set are written for these tests: short Chinese sentences whose label is
carried by a few words, so a randomly initialised two-layer encoder learns them in a few epochs on CPU.
The tiny "pretrained" directory has the shape pretraining produces (config.json, model.safetensors and a
WordPiece tokenizer with every CJK character its own token), trained on the same sentences.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

from pipeline.config import TaskConfig

# tiny models on two shared cores: synchronising threads costs about ten times what it gains
torch.set_num_threads(1)

_SUBJECTS = ["这家酒店", "房间", "前台服务", "早餐", "酒店位置", "卫生间", "这次入住", "床铺"]
_POSITIVE = ["非常干净，很满意", "很好，强烈推荐", "热情周到，下次还来", "舒服安静，物超所值", "不错，值得入住"]
_NEGATIVE = ["太脏了，很失望", "很差，不推荐", "态度恶劣，再也不来", "吵闹破旧，后悔入住", "糟糕，浪费钱"]

_PEOPLE = ["张伟", "李娜", "王芳", "刘洋", "陈静", "杨明"]
_PLACES = ["北京", "上海", "广州", "南京", "杭州", "武汉"]
_VERBS = ["去", "在", "到", "离开"]


def sentiment_rows() -> list[tuple[str, str]]:
    """(label, review) pairs: 80 rows, positive "1" and negative "0", like ChnSentiCorp's columns."""
    rows = [("1", s + p) for s, p in itertools.product(_SUBJECTS, _POSITIVE)]
    rows += [("0", s + n) for s, n in itertools.product(_SUBJECTS, _NEGATIVE)]
    return rows


def write_sentiment_csv(path: Path, rows: list[tuple[str, str]] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "review"])
        writer.writerows(rows or sentiment_rows())
    return path


def sentiment_task(path: Path, **overrides: object) -> TaskConfig:
    settings: dict[str, object] = {
        "name": "sentiment", "type": "sequence_classification", "lang": "zh", "train": str(path),
        "fields": {"text": "review", "label": "label"}, "epochs": 6, "batch_size": 8, "lr": 3e-3,
        "patience": 3, "max_seq_len": 32, "primary_metric": "accuracy",
    }
    return TaskConfig(**{**settings, **overrides})


def ner_sentences() -> list[list[tuple[str, str]]]:
    """Sentences like 张伟去北京。 as (char, BIO tag) pairs: a person, a verb, a place."""
    sentences = []
    for person, verb, place in itertools.product(_PEOPLE, _VERBS, _PLACES):
        tagged = _tag(person, "PER") + [(c, "O") for c in verb] + _tag(place, "LOC") + [("。", "O")]
        sentences.append(tagged)
    return sentences


def _tag(word: str, entity: str) -> list[tuple[str, str]]:
    return [(c, ("B-" if i == 0 else "I-") + entity) for i, c in enumerate(word)]


def write_conll(path: Path, sentences: list[list[tuple[str, str]]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    blocks = ["\n".join(f"{char}\t{tag}" for char, tag in sentence) for sentence in sentences]
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


def ner_task(directory: Path, **overrides: object) -> TaskConfig:
    """Train, dev and test files cut from the generated sentences (every third sentence is held out)."""
    sentences = ner_sentences()
    train = [s for i, s in enumerate(sentences) if i % 3 != 0]
    held = [s for i, s in enumerate(sentences) if i % 3 == 0]
    settings: dict[str, object] = {
        "name": "ner", "type": "token_classification", "lang": "zh", "format": "conll",
        "train": str(write_conll(directory / "train.txt", train)),
        "validation": str(write_conll(directory / "dev.txt", held[::2])),
        "test": str(write_conll(directory / "test.txt", held[1::2])),
        "epochs": 6, "batch_size": 8, "lr": 3e-3, "patience": 3, "max_seq_len": 32, "primary_metric": "entity_f1",
    }
    return TaskConfig(**{**settings, **overrides})


def tiny_pretrained(directory: Path, texts: list[str] | None = None, max_positions: int = 64) -> Path:
    """A BERT masked-LM directory (random weights) with a WordPiece tokenizer trained on `texts`."""
    texts = texts or [review for _, review in sentiment_rows()] + [
        "".join(c for c, _ in sentence) for sentence in ner_sentences()
    ]
    tokenizer = _train_wordpiece(texts)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=max_positions,
    )
    BertForMaskedLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _train_wordpiece(texts: list[str]) -> PreTrainedTokenizerFast:
    specials = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                "mask_token": "[MASK]"}
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(handle_chinese_chars=True, lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=4000, min_frequency=1, special_tokens=list(specials.values()))
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[(t, tokenizer.token_to_id(t)) for t in ("[CLS]", "[SEP]")],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **specials)
