"""The one configuration tree of corpusflow, loaded from YAML.

Every knob has a default that serves the demo; a wrong key or value fails at load time with the dotted
path of the key and the reason, before any work starts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import UserError

Kind = Literal["wiki", "news", "comments"]
SourceLang = Literal["zh", "en", "auto"]
Format = Literal["mediawiki", "warc", "jsonl", "csv", "tsv"]
DOCUMENT_FIELDS = ("text", "title", "id", "label", "url", "date")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(Strict):
    """One input: a file, a glob, an http(s) URL or any fsspec URL, read by the reader of its kind."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_]*$")
    kind: Kind
    lang: SourceLang = "auto"
    uri: str
    format: Format
    fields: dict[str, str] = Field(default_factory=dict)
    # csv/tsv: false for files without a header row; `fields` then names column positions ({text: 0, label: 1})
    header: bool = True
    encoding: str | None = None  # None: detected per file (byte-order mark, UTF-8, scored CJK candidates)
    # An input that cannot be read at all (binary, not the format, lacking the mapped columns): `skip`
    # records it as one rejected input and goes on; `fail` stops the build.
    on_bad_input: Literal["skip", "fail"] = "skip"
    label_map: dict[str, str] = Field(default_factory=dict)  # raw label -> label name, e.g. {"1": "positive"}
    pages_per_partition: int = Field(default=5000, gt=0)  # wiki dumps split into page ranges of this size
    # index of a multistream wiki dump (offset:page_id:title lines, bz2) when it is not the
    # `*-multistream-index.txt.bz2` beside the dump; lets partitions seek to their pages
    multistream_index: str | None = None
    rows_per_partition: int = Field(default=200_000, gt=0)  # large CSV/JSONL files split by rows
    # a record (line, page, WARC payload) above this many bytes is rejected as record_too_large, so one
    # runaway line cannot take a worker's memory with it
    max_record_bytes: int = Field(default=1_000_000, gt=0)

    @field_validator("fields", mode="before")
    @classmethod
    def _positions_as_names(cls, fields: Any) -> Any:
        # YAML reads `text: 0` as an integer; a column position is named by its digits
        if isinstance(fields, dict):
            return {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in fields.items()}
        return fields

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, fields: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(fields) - set(DOCUMENT_FIELDS))
        if unknown:
            raise ValueError(f"unknown document field(s) {unknown}; allowed: {list(DOCUMENT_FIELDS)}")
        return fields

    @model_validator(mode="after")
    def _format_fits_kind(self) -> SourceConfig:
        if (self.format == "mediawiki") != (self.kind == "wiki"):
            raise ValueError("format 'mediawiki' goes with kind 'wiki' and only with it")
        if self.format in ("jsonl", "csv", "tsv") and "text" not in self.fields:
            raise ValueError(f"format {self.format!r} needs fields.text naming the column that holds the text")
        if not self.header:
            if self.format not in ("csv", "tsv"):
                raise ValueError("header: false applies to formats 'csv' and 'tsv' only")
            named = {k: v for k, v in self.fields.items() if not v.isdigit()}
            if named:
                raise ValueError(f"without a header, fields name column positions (0, 1, ...), got {named}")
        return self


# Sections a reader skips and a language model should not learn from: references, notes, link lists.
# Compared with the heading's text case-insensitively, without spaces; a heading joining several of
# them ("Notes and references", "注释与参考资料") goes too.
DEFAULT_BOILERPLATE_HEADINGS = [
    "references", "reference", "notes", "footnotes", "citations", "sources", "bibliography", "works cited",
    "external links", "external link", "see also", "further reading", "related pages", "other websites",
    "参考资料", "參考資料", "参考文献", "參考文獻", "参考来源", "參考來源", "参考", "參考", "来源", "來源",
    "注释", "註釋", "注釋", "注解", "註解", "脚注", "腳註", "引用",
    "外部链接", "外部鏈接", "外部連結", "外部连结", "外部連接", "相关链接", "相關連結",
    "参见", "參見", "参看", "參看", "另见", "另見", "相关条目", "相關條目", "延伸阅读", "延伸閱讀", "扩展阅读", "擴展閱讀",
]
# Templates that make a page a disambiguation page (a list of other pages' titles, not text), zhwiki's and
# enwiki's names and their redirects; `__DISAMBIG__` marks one too.
DEFAULT_DISAMBIGUATION_TEMPLATES = [
    "disambig", "disambiguation", "dab", "disamb", "hndis", "geodis", "numberdis", "letter-numbercombdisambig",
    "消歧义", "消歧義", "消歧义页", "消歧義頁",
]


class WikiConfig(Strict):
    """How wiki pages become text: which templates keep their words, which sections and pages go."""

    # template name -> what it renders as: `{1}` a positional argument, `{lt}` a named one, `{lt|1}` the
    # first given, `[...]` a part left out when an argument in it is missing, e.g. {"bd": "{1}–{2}"}.
    # Adds to (or replaces an entry of) the built-in table in pipeline/sources/wiki_templates.py.
    inline_templates: dict[str, str] = Field(default_factory=dict)
    boilerplate_headings: list[str] = Field(default_factory=lambda: list(DEFAULT_BOILERPLATE_HEADINGS))
    disambiguation_templates: list[str] = Field(default_factory=lambda: list(DEFAULT_DISAMBIGUATION_TEMPLATES))

    @field_validator("inline_templates")
    @classmethod
    def _patterns_read(cls, patterns: dict[str, str]) -> dict[str, str]:
        # imported here: pipeline.sources imports this module, so a module-level import would be circular
        from pipeline.sources.wiki_templates import compile_pattern

        for pattern in patterns.values():
            compile_pattern(pattern)  # a PatternError (a ValueError) names the pattern and what is wrong
        return patterns


class NormalizeConfig(Strict):
    unicode_form: Literal["NFKC", "NFC"] = "NFKC"
    # NFKC folds full-width ASCII letters and digits; Chinese punctuation (，。！？：；) is restored after it,
    # because folding it to ASCII changes the look and the tokenisation of Chinese text.
    keep_cjk_punctuation: bool = True
    strip_html: bool = True
    # Runs of one punctuation mark, symbol, emoji or interjection longer than this are cut to this length
    # ("！！！！！！" -> "！！！", "哈哈哈哈哈哈" -> "哈哈哈"): people write emphasis that way, above all in
    # reviews, so it is normalised here instead of being punished by the repetition rules. None: keep runs.
    emphasis_max_run: int | None = Field(default=3, ge=1)
    # characters that are repeated as laughter or emphasis, collapsed like punctuation
    emphasis_interjections: str = "哈呵嘿嘻啊哦噢呜嘤啦嗯哇唉哎呀喔哼嗷"


class ScriptConfig(Strict):
    enabled: bool = True
    opencc_config: str = "t2s"  # OpenCC conversion applied to zh documents


PiiType = Literal["email", "phone", "id_card", "ip", "url", "bank_card", "im_handle", "passport"]


class PiiConfig(Strict):
    enabled: bool = True
    # URLs stay by default: links to shops and articles are content, not personal data
    types: list[PiiType] = ["email", "phone", "id_card", "ip", "bank_card", "im_handle", "passport"]


class LangIdConfig(Strict):
    min_score: float = Field(default=0.5, ge=0, le=1)  # below it a document is "other"
    # a text whose letters are at least this share Han characters is zh without asking the model: mixed
    # zh-en text ("用Python写script") is Chinese to a reader, and the script decides it for free
    cjk_ratio_for_zh: float = Field(default=0.2, ge=0, le=1)
    # ... unless this share of its letters is kana or hangul: Japanese and Korean mix Han with them
    max_kana_hangul_for_zh: float = Field(default=0.1, ge=0, le=1)
    # the model reads only the first characters: a few hundred settle the language, and its cost is per byte
    max_chars: int = Field(default=1000, gt=0)
    keep_langs: list[Literal["zh", "en"]] = ["zh", "en"]


class SegmentConfig(Strict):
    # jieba (the reference) or rjieba, a Rust port of it several times faster whose words differ from
    # jieba's in a few percent of documents (bench/segment_engines.py); rjieba needs the `fast` extra
    engine: Literal["jieba", "rjieba"] = "jieba"
    hmm: bool = True
    user_dicts: list[str] = Field(default_factory=list)
    stop_words: str | None = None  # a file with one stop word per line; None: the built-in lists


class QualityRules(Strict):
    """Thresholds of one rule set; None switches a rule off."""

    min_chars: int | None = None
    max_chars: int | None = None
    min_words: int | None = None
    max_words: int | None = None
    min_mean_word_len: float | None = None
    max_mean_word_len: float | None = None
    max_symbol_ratio: float | None = None
    max_punct_ratio: float | None = None
    max_digit_ratio: float | None = None
    min_cjk_ratio: float | None = None
    max_dup_line_frac: float | None = None
    max_dup_ngram_frac: float | None = None
    min_stop_word_ratio: float | None = None
    min_stop_words: int | None = None
    max_repeat_char_run: int | None = None
    # a text that repeats one character or word (pair) is dropped when fewer characters than this are left
    # besides the repetition: "差差差差差差差" goes, "好吃，很甜，好评好评好评好评" stays (pipeline/text/quality.py)
    min_chars_beside_repetition: int | None = None
    max_bullet_lines_frac: float | None = None
    min_terminal_punct_line_frac: float | None = None
    forbid_phrases: list[str] = Field(default_factory=list)  # case-insensitive substrings
    # Advertising. Each pattern (RE2, pyarrow) marks contact or ad text: write it to cover the whole ad
    # phrase, handle and id included ("加微信abc123"), not a bare keyword. A document is spam when the
    # patterns' matches cover at least `spam_min_share` of its characters, so a complaint that mentions a
    # contact channel ("商家让我加微信退款，结果...") is kept and a comment that is mostly an ad is dropped.
    spam_patterns: list[str] = Field(default_factory=list)
    spam_min_share: float = Field(default=0.5, gt=0, le=1)


# What advertising looks like in comments; read with QualityRules.spam_min_share (a comment is spam when
# these cover most of it). Each pattern covers a whole ad phrase, so the share measures the ad's extent.
_CONTACT_APP = r"(?:微信|威信|薇信|v信|vx|wx|qq|扣扣)"
# The PII stage runs first, so a handle may already read <IM_HANDLE> or <PHONE>: they count as the ad's handle.
SPAM_PATTERNS = [
    rf"(?i)(?:加|\+|联系|咨询|私聊|私信)?\s*(?:我|本人)?\s*的?\s*{_CONTACT_APP}\s*号?\s*[:：]?\s*(?:[a-z0-9_-]{{5,}}|<PHONE>|<IM_HANDLE>)",
    rf"(?i)(?:加|\+)\s*(?:我|本人)?\s*{_CONTACT_APP}",  # "add me on WeChat"
    r"领红包|返现|代购|兼职|刷单|日赚|招代理|免费领取?|低价出售|优惠券",
    r"(?i)(?:https?://|www\.)[a-z0-9.-]+",  # the site only: a long path is not more of an ad
    r"(?i)click here|buy now|free money|(?:visit|check out) (?:my|our) (?:site|website|page|store)",
]


def _default_rule_sets() -> dict[str, QualityRules]:
    """Defaults, checked against ../shared/data (headlines, reviews, news): each rule drops at most about 1%
    of that clean data, so what it drops is what it is meant for. Figures from published filters:

    zh: min_cjk_ratio 0.3 is ChineseWebText's; mean word length 1-5 (jieba words), duplicate lines 0.287
    and duplicate 5-gram characters 0.198 are FineWeb-2's cmn_Hani values. ChineseWebText keeps pages of
    >= 200 characters, but our zh documents include news headlines (TNEWS: median 24 characters, 5% under
    11), so min_chars is 8; a web source with whole pages should set its own "<kind>.zh" set with 200.
    en: Gopher's mean word length 3-10, >= 2 stop words, duplicate lines 0.30 and 5-gram characters 0.15,
    C4's "lorem ipsum". Gopher's 50-word minimum would drop 90% of AG News items (median 36 words), so 10.
    Symbol ratio 0.1 is Gopher's figure, per character here (stricter per word; real news is under 0.02).
    news (headlines and ledes, measured on TNEWS and AG News by bench/filter_audit.py): the page rules above
    dropped real headlines, so "news.zh" and "news.en" relax them: TNEWS headlines of 2-7 characters
    ("怎么评价郎平？"), mixed-script ones ("如何评价Fate stay night剧场版HF？"), column markers ("时光|父亲的
    传家宝") and AG News ledes without stop words ("Nokia joins Secure Digital industry group") are news,
    and a lede that names two companies as "(HPQ.N: Quote, Profile, Research)" is not a repetitive page.
    comments: short by nature, so no document-structure rules, and no length floor beyond one character:
    "手感好", "功能齐全" and "挂羊头卖狗肉" (one jieba word) are whole reviews. Emphasis ("！！！！", "哈哈哈哈") is cut short
    by normalisation, so repetition drops only a comment with next to nothing besides one repeated character
    or word ("差差差差差差差", "好评好评好评好评"); spam only a comment that is mostly an ad. Precision of every rule,
    judged by hand on samples of its drops, is in bench/results/filter_audit-*.json.
    """
    comments = QualityRules(
        min_chars=2, max_chars=5000, min_words=1, min_chars_beside_repetition=3, max_symbol_ratio=0.75,
        spam_patterns=SPAM_PATTERNS,
    )
    zh = QualityRules(
        min_chars=8, max_chars=200_000, min_words=3, min_mean_word_len=1.0, max_mean_word_len=5.0,
        max_symbol_ratio=0.1, max_punct_ratio=0.4, min_cjk_ratio=0.3, max_dup_line_frac=0.287,
        max_dup_ngram_frac=0.198, max_repeat_char_run=12,
    )
    en = QualityRules(
        min_chars=40, max_chars=500_000, min_words=10, max_words=100_000, min_mean_word_len=3.0,
        max_mean_word_len=10.0, max_symbol_ratio=0.1, max_punct_ratio=0.3, max_dup_line_frac=0.3,
        max_dup_ngram_frac=0.15, min_stop_words=2, forbid_phrases=["lorem ipsum"],
    )
    return {
        "zh": zh,
        "en": en,
        "news.zh": zh.model_copy(update={
            "min_chars": 2, "min_words": 1, "min_cjk_ratio": 0.1, "max_symbol_ratio": 0.3, "max_punct_ratio": 0.5,
            "max_dup_ngram_frac": None,
        }),
        "news.en": en.model_copy(update={
            "min_chars": 20, "min_words": 3, "min_stop_words": None, "max_dup_ngram_frac": None,
        }),
        "comments": comments,
        # Chinese comments also need some Chinese: the documents contract bounds cjk_ratio of zh rows at 0.1
        "comments.zh": comments.model_copy(update={"min_cjk_ratio": 0.1}),
    }


class QualityConfig(Strict):
    enabled: bool = True
    # rule sets by name. A document is judged by exactly one: the most specific of "<kind>.<lang>",
    # "<kind>", "<lang>" that exists (e.g. "comments.en", then "comments", then "en"). No merging: what a
    # set says is all that applies, so a drop is explained by one set read on its own. Comments are short
    # and chatty, so document-level rules (stop words, line structure, n-gram repetition) do not fit them.
    rule_sets: dict[str, QualityRules] = Field(default_factory=_default_rule_sets)

    @field_validator("rule_sets")
    @classmethod
    def _known_rule_set_names(cls, rule_sets: dict[str, QualityRules]) -> dict[str, QualityRules]:
        langs, kinds = ("zh", "en"), ("wiki", "news", "comments")
        allowed = {*langs, *kinds, *(f"{k}.{lang}" for k in kinds for lang in langs)}
        unknown = sorted(set(rule_sets) - allowed)
        if unknown:
            raise ValueError(f"unknown rule set name(s) {unknown}; use <lang>, <kind> or <kind>.<lang>")
        return rule_sets


KEEP_IDS_ON_REFRESH = "on_refresh"


class DedupConfig(Strict):
    exact: bool = True
    near: bool = True
    # Defaults measured on 90k real headlines and reviews (bench/dedup_bench.py): character 5-grams at
    # estimated Jaccard 0.8 find 257 near duplicates beyond the exact ones, all prefix/suffix edits or
    # one-word changes of the same text; 0.7 doubles the merges with different reviews ("第二差" vs "最差")
    # and 3-grams merge templated short reviews. Below 20 canonical characters headlines that differ in
    # the one word that matters merged ("郑州/苏州今早必知的那些事儿", dated reports), so those are left to
    # exact dedup; 20 instead of 30 keeps 52 real near duplicates of 20-29 characters.
    threshold: float = Field(default=0.8, gt=0, le=1)
    num_perm: int = Field(default=128, ge=16)
    zh_char_ngram: int = Field(default=5, ge=1)
    en_word_ngram: int = Field(default=5, ge=1)
    min_chars_for_near: int = Field(default=20, ge=0)  # canonical characters (no spaces or punctuation)
    seed: int = 1
    # An earlier version whose documents win ties, for a build of new inputs alone (a backfill): a manifest,
    # a version directory, a version id or "latest". Its documents stay out of the new version.
    against_previous: str | None = None
    # A version whose ids win ties among this build's documents, so a text ingested again (a re-published
    # article, a record exported twice) is the duplicate and readers keep the id they know: a reference as
    # above; "on_refresh": the newest version, on refreshes only (the scheduled deployment, `corpusflow
    # run`), not on `corpusflow build`; null: ties go by source order and id alone.
    keep_ids_of: str | None = KEEP_IDS_ON_REFRESH


class ContractsConfig(Strict):
    enabled: bool = True  # off: shards are published unvalidated (their manifest entry has no contract)
    directory: str = "data_contracts"
    documents_suite: str = "documents.v1"
    rejects_suite: str = "rejects.v1"
    tasks_suite: str = "tasks.v1"  # labelled task data; the label set is passed in as the `labels` parameter
    max_quarantined_shard_frac: float = Field(default=0.0, ge=0, le=1)
    max_quarantined_row_frac: float = Field(default=0.0, ge=0, le=1)


class ShardConfig(Strict):
    max_rows: int = Field(default=50_000, gt=0)
    splits: dict[str, float] = Field(default_factory=lambda: {"train": 0.98, "validation": 0.01, "test": 0.01})

    @field_validator("splits")
    @classmethod
    def _splits_sum_to_one(cls, splits: dict[str, float]) -> dict[str, float]:
        if set(splits) - {"train", "validation", "test"} or "train" not in splits:
            raise ValueError("splits are named train, validation, test (train required)")
        if abs(sum(splits.values()) - 1.0) > 1e-9 or min(splits.values()) < 0:
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {splits}")
        return splits


class TokenizerConfig(Strict):
    kind: Literal["wordpiece", "bpe"] = "wordpiece"
    vocab_size: int = Field(default=8000, ge=256)
    min_frequency: int = 2
    max_docs: int | None = None  # None: every train document
    lowercase: bool = True  # wordpiece only, as uncased Chinese BERT; byte-level BPE keeps case


class ModelConfig(Strict):
    # bert: post-norm BERT with learned positions; modernbert: the same masked-LM encoder role with pre-norm,
    # rotary positions and GeGLU (ModernBERT), which leaves the unigram plateau of masked-LM training sooner,
    # and whose task heads reuse the pretrained prediction head over mean-pooled tokens; llama: a decoder
    arch: Literal["bert", "modernbert", "llama"] = "bert"
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 512
    max_seq_len: int = 128
    # encoder dropout (BERT's hidden and attention, ModernBERT's embedding, attention and MLP); short pretraining runs learn faster without it (the model sees
    # each token about once), and fine-tuning inherits the saved value
    dropout: float = Field(default=0.1, ge=0, lt=1)


class PretrainConfig(Strict):
    objective: Literal["mlm", "clm"] = "mlm"
    mask_prob: float = 0.15
    whole_word_mask: bool = True
    batch_size: int = 16
    grad_accum: int = 1
    max_steps: int = 200
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 20
    lr_schedule: Literal["cosine", "linear"] = "cosine"  # decay after warmup, down to min_lr_ratio * lr
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    grad_clip: float | None = 1.0
    checkpoint_every: int = 50
    keep_checkpoints: int = Field(default=3, ge=2)  # >= 2, so a corrupt newest one leaves one to resume from
    log_every: int = 10
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    compile: bool = False
    devices: int = 1  # > 1 launches torchrun data parallel


class TaskConfig(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_]*$")
    type: Literal["sequence_classification", "token_classification"]
    lang: Literal["zh", "en"]
    train: str
    validation: str | None = None  # None: held out from train by hash of the row
    test: str | None = None
    format: Literal["csv", "tsv", "jsonl", "conll", "zip_csv", "zip_conll"] = "csv"
    # role -> column: text (several columns joined: "title,description"), label, optional id; headerless tsv
    # columns are named by position ("0", "1", ...); conll files need no fields
    fields: dict[str, str] = Field(default_factory=lambda: {"text": "text", "label": "label"})
    # Class names of a sequence task whose labels are numbers (a 0/1 sentiment column, TNEWS's 100..116):
    # label as written in the file -> name. They become the model's id2label, so predictions, reports and the
    # served model speak in names. Empty: the labels as the files write them (already names when they are words).
    label_names: dict[str, str] = Field(default_factory=dict)
    max_examples: int | None = Field(default=None, gt=0)  # caps every split (a seeded sample), for demos
    max_seq_len: int = Field(default=128, gt=2)  # longer inputs are truncated
    epochs: int = Field(default=3, gt=0)
    batch_size: int = Field(default=32, gt=0)
    lr: float = Field(default=1e-3, ge=0)
    # Learning rate of the task head (what sits above the encoder: classifier, BERT's pooler, ModernBERT's head
    # over the pooled tokens) as a multiple of `lr`. At one rate for all, a pretrained encoder fitted a task
    # more slowly than a random one (its weights are several times larger than at init, so the same steps move
    # them relatively less). A head at 10x, measured by bench/pretrain_value.py (README): the pretrained
    # encoder +2.7 points on news topics and +3.3 on NER, +0.3 on sentiment; a random one -1.3 on news topics.
    head_lr_scale: float = Field(default=1.0, gt=0)
    # Layer-wise decay: layer k of L (counted from the top, the top layer is 0) trains at lr * decay**k, and
    # the embeddings at lr * decay**L; 1.0 trains every layer at `lr`. For deep encoders; at 2 layers, 0.8
    # lowered both arms' scores (README).
    layer_lr_decay: float = Field(default=1.0, gt=0, le=1)
    patience: int = Field(default=2, gt=0)  # epochs without a better dev score before training stops
    primary_metric: Literal["accuracy", "macro_f1", "entity_f1"] = "accuracy"

    @field_validator("label_names", mode="before")
    @classmethod
    def _numbers_as_text(cls, names: Any) -> Any:
        # YAML reads `{0: negative}` with an integer key; labels are compared as the file's text
        if isinstance(names, dict):
            return {str(k): str(v) for k, v in names.items()}
        return names

    @model_validator(mode="after")
    def _metric_and_format_fit_type(self) -> TaskConfig:
        token_task = self.type == "token_classification"
        if token_task != (self.primary_metric == "entity_f1"):
            raise ValueError("primary_metric 'entity_f1' goes with type 'token_classification' and only with it")
        if token_task != (self.format in ("conll", "zip_conll")):
            raise ValueError("formats 'conll' and 'zip_conll' go with type 'token_classification' and only with it")
        if token_task and self.label_names:
            raise ValueError("label_names is for sequence_classification; a token task's BIO tags are its names")
        return self


class RegistryConfig(Strict):
    tracking_uri: str | None = None  # None: sqlite under the run directory
    model_name: str = "corpusflow-encoder"
    experiment: str = "corpusflow"
    champion_metric: str = "macro_f1"
    champion_margin: float = 0.0


class ContinuationConfig(Strict):
    """How a run that continues a registered model (train.continue_from) trains on a new dataset version."""

    # Share of the tokens drawn from documents the parent already saw (mixed as train.mix says); the rest are
    # the documents that are new or changed since the parent's dataset version. Replay keeps the model from
    # drifting to the new text, which after a refresh is a small slice of the corpus.
    replay_share: float = Field(default=0.5, ge=0, lt=1)
    # The budget: a number of steps, or (None) passes over the new text: steps enough for the new text's
    # tokens times new_text_passes, plus their replay. Never more than pretrain.max_steps. A budget in steps
    # that holds more than new_text_passes passes over the new text replays old text for the rest.
    max_steps: int | None = Field(default=None, gt=0)
    new_text_passes: float = Field(default=2.0, gt=0)
    # Peak learning rate of the continued run, as a share of pretrain.lr. The parent has already converged:
    # re-warming to the full peak throws it off its minimum, and a third of a budget is too short to find it again.
    peak_lr_ratio: float = Field(default=0.5, gt=0, le=1)
    # The parent's tokenizer is kept only while it still covers the corpus: when, on up to coverage_docs new
    # documents, the share of [UNK] tokens or of characters a byte-level BPE splits into bytes is above its
    # share on as many old documents by more than these, the run falls back to a fresh start, with a note.
    max_unk_rise: float = Field(default=0.005, ge=0, le=1)
    max_split_char_rise: float = Field(default=0.01, ge=0, le=1)
    coverage_docs: int = Field(default=2000, gt=0)


class TrainConfig(Strict):
    enabled: bool = True
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    tasks: list[TaskConfig] = Field(default_factory=list)
    # Also fine-tune the untrained model (same tokenizer, shape and task settings) and record its scores and
    # the pretrained model's gain over it: a pretraining change that stops paying off shows in the registry.
    baseline_random_init: bool = False
    # Token shares of pretraining: {source, kind or language: weight}, keys all of one level; a key's weight is
    # shared by its sources in proportion to their tokens, and sources no key names are left out. Empty: every
    # source in proportion to its tokens. The temperature flattens the weights: share ~ weight ** (1 / T).
    mix: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    mix_temperature: float = Field(default=1.0, gt=0)
    # Continue a registered model instead of starting over: "champion", "candidate" or a version number of the
    # first task's registered model. Its tokenizer is kept and its pretrained encoder trains on the new and
    # changed documents since its dataset version, with replay (train.continuation).
    continue_from: str | None = Field(default=None, pattern=r"^(champion|candidate|[0-9]+)$")
    continuation: ContinuationConfig = ContinuationConfig()

    @model_validator(mode="after")
    def _continuing_needs_a_task(self) -> TrainConfig:
        if self.continue_from is not None and not self.tasks:
            raise ValueError("continue_from names a version of the first task's registered model: list a task")
        return self


class RunnerConfig(Strict):
    kind: Literal["local", "ray"] = "local"
    workers: int = Field(default=2, ge=1)  # process-pool size for CPU-heavy stages
    ray_address: str | None = None
    # Shards validated together in one Great Expectations run hold at most this many rows: GX's fixed cost
    # per run outweighs a small shard's own, and the concatenated batch is held in memory.
    validation_batch_rows: int = Field(default=200_000, gt=0)
    # One build of a dataset at a time: a later build takes over the lease of one whose heartbeat is older
    # than this (a lost node, a frozen process), or on the same host as soon as its process is gone. The
    # Prefect server's side of the lease lasts at least 60 s (its minimum) before it expires by itself.
    lease_stale_after_s: float = Field(default=120, ge=4)
    # Bucket tasks of the global dedup step; None: from the number of documents (~2M join records each).
    dedup_buckets: int | None = Field(default=None, ge=1, le=1024)


class CardConfig(Strict):
    """What a version's dataset card (its README.md) states that the build cannot measure: terms of use."""

    license: str = "other"  # a license id the Hugging Face Hub knows (e.g. cc-by-sa-4.0); "other" for a mix
    source_licenses: dict[str, str] = Field(default_factory=dict)  # source name -> its license or attribution
    task_categories: list[str] = Field(default_factory=lambda: ["fill-mask", "text-generation", "text-classification"])


# Settings that only choose which of equal documents keeps its id: neither a cache entry nor the version id
# depends on them, because the shards' hashes already carry their effect. So a refresh against each new
# previous version reuses every partition and, when its inputs did not change, keeps the version id.
TIE_BREAKERS: dict[str, set[str]] = {"dedup": {"against_previous", "keep_ids_of"}}
# Top-level settings that never shape a dataset version's content.
NOT_DATASET_CONTENT = ("run_dir", "output_uri", "work_uri", "runner", "card", "train", "registry")


class CorpusflowConfig(Strict):
    dataset: str = Field(default="demo", pattern=r"^[a-z0-9][a-z0-9_-]*$")
    run_dir: str = "runs/demo"
    output_uri: str | None = None  # where shards land (any fsspec URL); None: <run_dir>/datasets
    # Staging every node of a cluster reaches (partitions, dedup buckets, shards before publishing); None:
    # <run_dir>/work when the output is local, <output_uri>/_work when it is on a remote store.
    work_uri: str | None = None
    sources: list[SourceConfig]
    wiki: WikiConfig = WikiConfig()
    # Inputs skipped as unreadable (see a source's on_bad_input) that a build tolerates: an integer is a
    # count, a number below 1 a fraction of the build's inputs. Past it the build fails, naming them.
    max_bad_inputs: int | float = Field(default=0.1, ge=0)
    normalize: NormalizeConfig = NormalizeConfig()
    script: ScriptConfig = ScriptConfig()
    pii: PiiConfig = PiiConfig()
    langid: LangIdConfig = LangIdConfig()
    segment: SegmentConfig = SegmentConfig()
    quality: QualityConfig = QualityConfig()
    dedup: DedupConfig = DedupConfig()
    contracts: ContractsConfig = ContractsConfig()
    shards: ShardConfig = ShardConfig()
    train: TrainConfig = TrainConfig()
    registry: RegistryConfig = RegistryConfig()
    runner: RunnerConfig = RunnerConfig()
    card: CardConfig = CardConfig()

    @field_validator("sources")
    @classmethod
    def _unique_source_names(cls, sources: list[SourceConfig]) -> list[SourceConfig]:
        names = [s.name for s in sources]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"source names must be unique; repeated: {duplicated}")
        if not sources:
            raise ValueError("at least one source is needed")
        return sources

    @field_validator("max_bad_inputs")
    @classmethod
    def _count_or_fraction(cls, limit: int | float) -> int | float:
        if isinstance(limit, float) and limit >= 1:
            raise ValueError("a fraction of inputs is below 1 (e.g. 0.1); a count is a whole number (e.g. 5)")
        return limit

    @model_validator(mode="after")
    def _mix_names_known_sources(self) -> "CorpusflowConfig":
        levels = {"source": {s.name for s in self.sources}, "kind": {s.kind for s in self.sources},
                  "lang": {"zh", "en"}}
        if self.train.mix and not any(set(self.train.mix) <= names for names in levels.values()):
            raise ValueError(f"train.mix keys {sorted(self.train.mix)} must all name sources, all kinds or all "
                             f"languages: {', '.join(f'{level}s {sorted(names)}' for level, names in levels.items())}")
        return self

    @model_validator(mode="after")
    def _card_names_known_sources(self) -> "CorpusflowConfig":
        unknown = sorted(set(self.card.source_licenses) - {s.name for s in self.sources})
        if unknown:
            raise ValueError(f"card.source_licenses names unknown source(s) {unknown}")
        return self

    @property
    def datasets_uri(self) -> str:
        return self.output_uri or str(Path(self.run_dir) / "datasets")

    def section_hash(self, *sections: str) -> str:
        """Hash of the named config sections: the part of the config a cache entry depends on."""
        payload = {name: _jsonable(getattr(self, name), exclude=TIE_BREAKERS.get(name)) for name in sections}
        return _sha256_json(payload)

    def config_hash(self) -> str:
        """Hash of everything that decides the dataset's content: not where it is written, how the build runs,
        its card's wording, nor what is trained from it (a training setting added or changed must not give
        every dataset a new version id, nor fail `corpusflow verify` of an unchanged dataset)."""
        excluded = {name: True for name in NOT_DATASET_CONTENT} | TIE_BREAKERS
        return _sha256_json(self.model_dump(mode="json", exclude=excluded))

    def training_hash(self) -> str:
        """Hash of what decides a trained model besides its dataset version: the train and registry sections."""
        return self.section_hash("train", "registry")


def registered_model_name(registry: RegistryConfig, task: str) -> str:
    """Each task's fine-tuned model is its own registered model, named after the encoder and the task."""
    return f"{registry.model_name}-{task}"


class ConfigError(UserError, ValueError):
    """A config file that cannot be used; the message names the file, the key and the reason."""

    hint = "correct the key the message names in the config file; `configs/demo.yaml` shows every section"


def _jsonable(value: Any, exclude: set[str] | None = None) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude=exclude)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _sha256_json(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _format_errors(path: str, error: ValidationError) -> str:
    lines = [f"invalid config {path}:"]
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "<root>"
        lines.append(f"  {key}: {item['msg']}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], origin: str = "<dict>") -> CorpusflowConfig:
    try:
        return CorpusflowConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_errors(origin, error)) from None


def load_config(path: str | Path) -> CorpusflowConfig:
    """Load a YAML config; relative paths in it stay relative to the working directory."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config {path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level, got {type(data).__name__}")
    return parse_config(data, str(path))
