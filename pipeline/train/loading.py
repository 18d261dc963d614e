"""Loading, building and saving transformers models safely from several threads.

`from_pretrained` in transformers 5 disables weight tying by replacing `PreTrainedModel.tie_weights` on the
class while it loads, and puts the original back afterwards. Two loads overlapping in threads (Prefect runs
tasks in threads) can restore the replacement instead of the original, leaving tying switched off for the
whole process. Every load and every model construction in the library takes this one lock.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

from pipeline.storage import replace_directory

MODEL_LOCK = threading.RLock()


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
