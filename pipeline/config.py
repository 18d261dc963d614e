"""The one configuration tree of corpusflow, loaded from YAML.

Every knob has a default that serves the demo; a wrong key or value fails at load time with the dotted
path of the key and the reason, before any work starts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
    encoding: str | None = None  # None: detected with charset-normalizer
    label_map: dict[str, str] = Field(default_factory=dict)  # raw label -> label name, e.g. {"1": "positive"}
    pages_per_partition: int = Field(default=5000, gt=0)  # wiki dumps split into page ranges of this size
    rows_per_partition: int = Field(default=200_000, gt=0)  # large CSV/JSONL files split by rows
    # a record (line, page, WARC payload) above this many bytes is rejected as record_too_large, so one
    # runaway line cannot take a worker's memory with it
    max_record_bytes: int = Field(default=1_000_000, gt=0)

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
        return self


class NormalizeConfig(Strict):
    unicode_form: Literal["NFKC", "NFC"] = "NFKC"
    # NFKC folds full-width ASCII letters and digits; Chinese punctuation (，。！？：；) is restored after it,
    # because folding it to ASCII changes the look and the tokenisation of Chinese text.
    keep_cjk_punctuation: bool = True
    strip_html: bool = True


class ScriptConfig(Strict):
    enabled: bool = True
    opencc_config: str = "t2s"  # OpenCC conversion applied to zh documents


class PiiConfig(Strict):
    enabled: bool = True
    types: list[Literal["email", "phone", "id_card", "ip", "url"]] = ["email", "phone", "id_card", "ip"]


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
    hmm: bool = True
    user_dicts: list[str] = Field(default_factory=list)
    stop_words: str | None = None  # a file with one stop word per line; None: the built-in lists
    chunk_docs: int = Field(default=2000, gt=0)  # documents per task sent to a worker process


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
    max_bullet_lines_frac: float | None = None
    min_terminal_punct_line_frac: float | None = None
    forbid_phrases: list[str] = Field(default_factory=list)  # case-insensitive substrings
    spam_patterns: list[str] = Field(default_factory=list)  # RE2 regexes (pyarrow), checked at start-up


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
    comments: short by nature, so no document-structure rules; runs of one character above 10 (shopping
    reviews: 99.5% have none longer) and contact-me spam.
    """
    comments = QualityRules(
        min_chars=4, max_chars=5000, min_words=2, max_repeat_char_run=10, max_symbol_ratio=0.5,
        spam_patterns=[r"(加|\+)\s*(微信|vx|V信|qq|QQ)", r"(?i)click here|buy now|free money"],
    )
    return {
        "zh": QualityRules(
            min_chars=8, max_chars=200_000, min_words=3, min_mean_word_len=1.0, max_mean_word_len=5.0,
            max_symbol_ratio=0.1, max_punct_ratio=0.4, min_cjk_ratio=0.3, max_dup_line_frac=0.287,
            max_dup_ngram_frac=0.198, max_repeat_char_run=12,
        ),
        "en": QualityRules(
            min_chars=40, max_chars=500_000, min_words=10, max_words=100_000, min_mean_word_len=3.0,
            max_mean_word_len=10.0, max_symbol_ratio=0.1, max_punct_ratio=0.3, max_dup_line_frac=0.3,
            max_dup_ngram_frac=0.15, min_stop_words=2, forbid_phrases=["lorem ipsum"],
        ),
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
    against_previous: str | None = None  # manifest path of an earlier version whose documents win ties


class ContractsConfig(Strict):
    enabled: bool = True
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
    mix_shards: int = Field(default=8, ge=1)  # shards read at once, their documents interleaved
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
    max_examples: int | None = Field(default=None, gt=0)  # caps every split (a seeded sample), for demos
    max_seq_len: int = Field(default=128, gt=2)  # longer inputs are truncated
    epochs: int = Field(default=3, gt=0)
    batch_size: int = Field(default=32, gt=0)
    lr: float = Field(default=1e-3, ge=0)
    patience: int = Field(default=2, gt=0)  # epochs without a better dev score before training stops
    primary_metric: Literal["accuracy", "macro_f1", "entity_f1"] = "accuracy"

    @model_validator(mode="after")
    def _metric_and_format_fit_type(self) -> TaskConfig:
        token_task = self.type == "token_classification"
        if token_task != (self.primary_metric == "entity_f1"):
            raise ValueError("primary_metric 'entity_f1' goes with type 'token_classification' and only with it")
        if token_task != (self.format in ("conll", "zip_conll")):
            raise ValueError("formats 'conll' and 'zip_conll' go with type 'token_classification' and only with it")
        return self


class RegistryConfig(Strict):
    tracking_uri: str | None = None  # None: sqlite under the run directory
    model_name: str = "corpusflow-encoder"
    experiment: str = "corpusflow"
    champion_metric: str = "macro_f1"
    champion_margin: float = 0.0


class TrainConfig(Strict):
    enabled: bool = True
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    tasks: list[TaskConfig] = Field(default_factory=list)
    # Also fine-tune the untrained model (same tokenizer, shape and task settings) and record its scores and
    # the pretrained model's gain over it: a pretraining change that stops paying off shows in the registry.
    baseline_random_init: bool = False


class RunnerConfig(Strict):
    kind: Literal["local", "ray"] = "local"
    workers: int = Field(default=2, ge=1)  # process-pool size for CPU-heavy stages
    ray_address: str | None = None


class CorpusflowConfig(Strict):
    dataset: str = Field(default="demo", pattern=r"^[a-z0-9][a-z0-9_-]*$")
    run_dir: str = "runs/demo"
    output_uri: str | None = None  # where shards land (any fsspec URL); None: <run_dir>/datasets
    sources: list[SourceConfig]
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

    @property
    def datasets_uri(self) -> str:
        return self.output_uri or str(Path(self.run_dir) / "datasets")

    def section_hash(self, *sections: str) -> str:
        """Hash of the named config sections: the part of the config a cache entry depends on."""
        payload = {name: _jsonable(getattr(self, name)) for name in sections}
        return _sha256_json(payload)

    def config_hash(self) -> str:
        """Hash of everything that decides the dataset's content (where it is written does not)."""
        return _sha256_json(self.model_dump(mode="json", exclude={"run_dir", "output_uri", "runner"}))


def registered_model_name(registry: RegistryConfig, task: str) -> str:
    """Each task's fine-tuned model is its own registered model, named after the encoder and the task."""
    return f"{registry.model_name}-{task}"


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file, the key and the reason."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
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
