"""Imported once by the build's fork server (flows/forkserver.py) before it forks a worker.

Importing this module loads the partition chain's modules, dictionaries and models as the default
sections want them (jieba's dictionary and the tables derived from it, the language model, OpenCC, stop
words). Every worker forked afterwards starts with them, their pages shared copy-on-write, instead of
spending seconds of CPU loading its own copy at the start of every build.
"""

from __future__ import annotations

import gc

from pipeline.steps.partitions import warm_up
from pipeline.config import CorpusflowConfig


def _warm_up_defaults() -> None:
    try:
        warm_up(CorpusflowConfig.model_construct(sources=[]))  # the sections' defaults; sources are not read
    except Exception:  # noqa: BLE001 - an error here would kill the pool's server; a worker loads what it
        pass  # needs itself, and the partition that needs what failed to load raises the same error


_warm_up_defaults()
# What is loaded now stays loaded: frozen, its millions of objects are skipped by the collections in the
# workers, which would otherwise walk them all (and copy every page they touch) in each worker.
gc.freeze()
