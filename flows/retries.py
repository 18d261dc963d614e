"""Which failures Prefect retries: only those that may pass on a second try (I/O, network, a lost worker).

Unreadable input, a wrong mapping, a bad config or a broken contract is deterministic: the same inputs
give the same error, so retrying it only adds sleep before the same failure.
"""

from __future__ import annotations

from typing import Any

from pipeline.sources import is_transient


def transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """retry_condition_fn for tasks: retry storage, network and worker-process failures only."""
    return is_transient(state.result(raise_on_failure=False))
