"""Train a tokenizer on a dataset version's train split, offline, with the `tokenizers` library.

Two kinds:
- wordpiece (encoder): BERT normalization with `handle_chinese_chars`, which puts spaces around every CJK
  character, so each Chinese character is its own token as in Chinese BERT; other scripts are split on
  whitespace and punctuation, then into WordPiece subwords.
- bpe (decoder): byte-level BPE over the raw text (no unknown tokens, exact round trip). It sees the text as
  written: spaces inserted between jieba words would change its merges, so it is never fed `words`.

The result is a `PreTrainedTokenizerFast` directory (tokenizer.json + tokenizer_config.json) that
`AutoTokenizer.from_pretrained(dir)` loads without network access.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import PreTrainedTokenizerFast

from pipeline.config import TokenizerConfig
from pipeline.versions import load_manifest
from pipeline.train.data import iter_texts

# Special tokens come first, so ids 0..4 are special and every id from 5 on is an ordinary token.
WORDPIECE_SPECIALS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
BPE_SPECIALS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "mask_token": "<mask>"}


def _wordpiece(config: TokenizerConfig) -> tuple[Tokenizer, trainers.Trainer]:
    tokenizer = Tokenizer(models.WordPiece(unk_token=WORDPIECE_SPECIALS["unk_token"]))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, lowercase=config.lowercase, strip_accents=None
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=config.vocab_size,
        show_progress=sys.stderr.isatty(),  # its bars are blank lines in a log
        min_frequency=config.min_frequency,
        special_tokens=list(WORDPIECE_SPECIALS.values()),
        continuing_subword_prefix="##",
    )
    return tokenizer, trainer


def _byte_level_bpe(config: TokenizerConfig) -> tuple[Tokenizer, trainers.Trainer]:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    # trim_offsets=False keeps offsets on the exact characters a token came from (used to map tokens to words).
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        show_progress=sys.stderr.isatty(),  # its bars are blank lines in a log
        min_frequency=config.min_frequency,
        special_tokens=list(BPE_SPECIALS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    return tokenizer, trainer


def _add_bert_template(tokenizer: Tokenizer) -> None:
    cls, sep = WORDPIECE_SPECIALS["cls_token"], WORDPIECE_SPECIALS["sep_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))],
    )


def _counted(texts: Iterator[str], limit: int | None) -> Iterator[str]:
    for count, text in enumerate(texts):
        if limit is not None and count >= limit:
            return
        yield text


def train_tokenizer(manifest_path: str, config: TokenizerConfig, out_dir: Path) -> Path:
    """Train on the usable train shards of the manifest; write the tokenizer directory atomically."""
    manifest = load_manifest(manifest_path)
    tokenizer, trainer = _wordpiece(config) if config.kind == "wordpiece" else _byte_level_bpe(config)
    texts = _counted(iter_texts(manifest_path, manifest, "train"), config.max_docs)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if config.kind == "wordpiece":
        _add_bert_template(tokenizer)
    specials = WORDPIECE_SPECIALS if config.kind == "wordpiece" else BPE_SPECIALS
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **specials)

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    wrapped.save_pretrained(staging)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return out_dir
