"""Loading and building transformers models safely from several threads.

`from_pretrained` in transformers 5 disables weight tying by replacing `PreTrainedModel.tie_weights` on the
class while it loads, and puts the original back afterwards. Two loads overlapping in threads (Prefect runs
tasks in threads) can restore the replacement instead of the original, leaving tying switched off for the
whole process. Every load and every model construction in the library takes this one lock.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

MODEL_LOCK = threading.RLock()


def load_pretrained(auto_class: Any, model_dir: Path | str, **kwargs: Any) -> Any:
    with MODEL_LOCK:
        return auto_class.from_pretrained(model_dir, **kwargs)
