"""Text stages 1-6: normalize, script, PII, language ID, segmentation, quality signals and filter.

`build_text_stages` gives the chain in its one valid order; each stage follows pipeline.stages.Stage.
"""

from __future__ import annotations

from pipeline.config import CorpusflowConfig
from pipeline.stages import Stage
from pipeline.text.langid import IdentifyLanguage
from pipeline.text.normalize import Normalize
from pipeline.text.pii import RedactPii
from pipeline.text.quality import QualityFilter, QualitySignals
from pipeline.text.script import ConvertScript
from pipeline.text.segment import Segment

__all__ = ["build_text_stages"]


def build_text_stages(config: CorpusflowConfig) -> list[Stage]:
    """The text chain for `config`, in its one valid order."""
    return [
        Normalize(config.normalize),
        ConvertScript(config.script, config.langid),
        RedactPii(config.pii),
        IdentifyLanguage(config.langid),
        Segment(config.segment),
        QualitySignals(config.segment),
        QualityFilter(config.quality),
    ]
