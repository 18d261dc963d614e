"""Stage 4, language identification: zh / en per document, a score, and drops for everything else.

Detector: py3langid, a fork of langid.py (naive Bayes over byte n-grams, 97 languages). Its model ships
inside the wheel, so nothing is downloaded at run time and it works offline and in CI; it is deterministic
and pure Python + numpy. lingua is more accurate on short texts but its high-accuracy models take about
1 GB of memory per process and it is several times slower; fastText's lid.176 needs a 126 MB (or a
coarser 917 kB) model downloaded separately and a compiled extension.

Chinese is decided by script first: a text whose letters are mostly Han (and not mixed with kana or
hangul, which Japanese and Korean use next to Han) is zh. That handles mixed zh-en text deliberately
("我用Python写了一个script" is Chinese to a reader; the model may call it en), and it is free, while
py3langid costs about as much per byte as jieba. The model decides only the rest, reads at most
`max_chars` characters, and its Chinese varieties (zh, wuu, yue — it calls about one Mandarin headline in
ten "wuu") count as zh.

`lang_score` is the confidence in the assigned language: for script-decided zh the Han share of letters,
otherwise the model's probability of that language. A declared `lang: en` is kept as it is and
scored the same way; a declared `lang: zh` is kept only when the script says Chinese: a review in English
or made of emoji in a Chinese source is identified like an undeclared document, since calling it zh would
break every Chinese rule downstream. The score threshold applies only to undeclared documents. An undeclared
text without a single letter (punctuation, digits, emoji) is "other".
"""

from __future__ import annotations

import hashlib
import lzma
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from py3langid import modelio
from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

from pipeline.config import LangIdConfig
from pipeline.stages import StageResult, set_column
from pipeline.text.charclass import chinese_by_script, han_letter_share

CHINESE_VARIETIES = frozenset({"zh", "wuu", "yue"})


# py3langid ships its model LZMA-compressed and inflates it at every load: 0.3 s of the 0.4 s a process
# spends loading it, on the way to a build's first partition. The inflated model is kept in the user's cache,
# named by the shipped file's content, and read from there by every later process.
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "corpusflow"


@lru_cache(maxsize=1)
def identifier() -> LanguageIdentifier:
    """The model, loaded once per process: from the inflated copy in CACHE_DIR, made on first use; as
    py3langid loads it where that cannot be written or read."""
    try:
        with np.load(_inflated_model(), allow_pickle=False) as data:
            # what py3langid's own loader makes of the same arrays (modelio.load_model, pinned version)
            return LanguageIdentifier(data["ptc"], data["pc"], data["classes"].tolist(),
                                      modelio._to_array(data["nextmove"]), data["out_feat"].tolist(),
                                      norm_probs=True, tk_row=modelio._to_array(data["nextmove_row"]))
    except (OSError, KeyError, ValueError, AttributeError):
        return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def _inflated_model() -> Path:
    shipped = MODEL_DIR / MODEL_FILE
    inflated = CACHE_DIR / f"langid-{hashlib.sha256(shipped.read_bytes()).hexdigest()[:16]}.npz"
    if not inflated.exists():
        inflated.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=inflated.parent, suffix=".tmp", delete=False) as out:
            try:
                with lzma.open(shipped) as source:
                    shutil.copyfileobj(source, out, 1 << 20)
            except BaseException:
                Path(out.name).unlink(missing_ok=True)
                raise
        os.replace(out.name, inflated)  # whole or not at all, whichever process gets there first
    return inflated


def model_scores(text: str) -> dict[str, float]:
    """Probability per language, with the Chinese varieties merged into zh."""
    scores: dict[str, float] = {}
    for lang, probability in identifier().rank(text):
        key = "zh" if lang in CHINESE_VARIETIES else lang
        scores[key] = scores.get(key, 0.0) + probability
    return scores


class IdentifyLanguage:
    name = "langid"
    reads = ("text", "lang")
    adds = ("lang_score",)  # and fills lang

    def __init__(self, config: LangIdConfig) -> None:
        self.config = config

    def __call__(self, batch: pa.RecordBatch) -> StageResult:
        texts = batch.column("text")
        declared = batch.column("lang")
        han, kana_hangul, letters = han_letter_share(texts)
        by_script = chinese_by_script(
            han, kana_hangul, self.config.cjk_ratio_for_zh, self.config.max_kana_hangul_for_zh
        )
        stated = declared.to_numpy(zero_copy_only=False)
        open_or_zh = pc.fill_null(pc.equal(declared, "zh"), True).to_numpy(zero_copy_only=False)
        zh_by_script = by_script & open_or_zh
        stated_other = ~open_or_zh  # declared, and not zh: kept as declared, scored by the model
        no_letters = ~zh_by_script & ~stated_other & (letters == 0)  # digits, punctuation, emoji

        langs = np.where(zh_by_script, "zh", np.where(no_letters, "other", stated)).astype(object)
        scores = np.where(zh_by_script, han, 0.0).astype(np.float32)
        # The model reads only the rows the script and the declaration leave open: usually a few.
        asked = np.flatnonzero(~zh_by_script & ~no_letters)
        prefixes = pc.utf8_slice_codeunits(texts.take(pa.array(asked, pa.int64())), 0, self.config.max_chars)
        for i, prefix in zip(asked.tolist(), prefixes.to_pylist()):
            if stated_other[i]:
                langs[i], scores[i] = stated[i], model_scores(prefix or "").get(stated[i], 0.0)
            else:
                langs[i], scores[i] = self._identify(prefix or "")

        keep = np.isin(langs, list(self.config.keep_langs))
        reasons = [None if kept else f"lang:{lang}" for lang, kept in zip(langs.tolist(), keep.tolist())]
        batch = set_column(batch, "lang", pa.array(langs.tolist(), pa.string()))
        batch = set_column(batch, "lang_score", pa.array(scores, pa.float32()))
        return StageResult(batch, pa.array(reasons, pa.string()))

    def _identify(self, text: str) -> tuple[str, float]:
        scores = model_scores(text)
        lang = max(scores, key=lambda code: (scores[code], code))  # ties broken by code: deterministic
        if scores[lang] < self.config.min_score:
            return "other", scores[lang]
        return lang, scores[lang]
