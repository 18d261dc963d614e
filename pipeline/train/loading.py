"""Loading, building and saving transformers models safely from several threads, and quietly.

`from_pretrained` in transformers 5 disables weight tying by replacing `PreTrainedModel.tie_weights` on the
class while it loads, and puts the original back afterwards. Two loads overlapping in threads (Prefect runs
tasks in threads) can restore the replacement instead of the original, leaving tying switched off for the
whole process. Every load and every model construction in the library takes this one lock.

A task model built from a pretrained masked LM drops the MLM head and adds a new one (classifier, and the
pooler that masked-LM pretraining never trains); transformers reports every such load as a warning table.
That outcome is the design, so `load_for_task` checks the keys itself and warns only about the others.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import datasets
from transformers.utils import logging as transformers_logging

from pipeline.storage import replace_directory

MODEL_LOCK = threading.RLock()
# Weights a masked LM checkpoint has and a task model does not use (BERT's `cls`, ModernBERT's `decoder`;
# ModernBERT's task models keep its `head`), and weights a task model adds.
DROPPED_PRETRAINING_HEAD = ("cls.", "decoder.")
NEW_TASK_HEAD = ("classifier.", "bert.pooler.")

log = logging.getLogger(__name__)


def load_pretrained(auto_class: Any, model_dir: Path | str, **kwargs: Any) -> Any:
    with MODEL_LOCK:
        return auto_class.from_pretrained(model_dir, **kwargs)



def save_model_dir(model: Any, tokenizer: Any, out_dir: Path) -> None:
    """config.json, weights and tokenizer files written aside, then swapped in: never half a model in out_dir."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    replace_directory(staging, out_dir)


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


def load_for_task(auto_class: Any, model_dir: Path | str, **kwargs: Any) -> Any:
    """A task model from a pretrained encoder; warns only about weights other than the swapped heads."""
    report_logger = logging.getLogger("transformers.modeling_utils")
    report_filter = _DropLoadReport()
    with MODEL_LOCK:
        report_logger.addFilter(report_filter)
        try:
            model, info = auto_class.from_pretrained(model_dir, output_loading_info=True, **kwargs)
        finally:
            report_logger.removeFilter(report_filter)
    unexpected = [key for key in info["unexpected_keys"] if not key.startswith(DROPPED_PRETRAINING_HEAD)]
    missing = [key for key in info["missing_keys"] if not key.startswith(NEW_TASK_HEAD)]
    if unexpected or missing or info["mismatched_keys"]:
        log.warning("%s from %s: newly initialised %s, unused from the checkpoint %s, shape mismatches %s",
                    type(model).__name__, model_dir, missing, unexpected, info["mismatched_keys"])
    return model


def quiet_progress_bars() -> None:
    """No tqdm bars from datasets (split generation, map) and transformers (weight loading and saving) when
    nobody watches a terminal: in logs and Prefect task output they are hundreds of carriage-return lines."""
    if not sys.stderr.isatty():
        datasets.disable_progress_bars()
        transformers_logging.disable_progress_bar()
