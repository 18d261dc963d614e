"""Which failures Prefect retries: only those that may pass on a second try (I/O, network, a lost worker).

A `UserError` (unreadable input, a wrong mapping, a bad config, a broken contract) is deterministic: the
same inputs give the same error, so retrying it only adds sleep before the same failure.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import UserError


def transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """retry_condition_fn for tasks: retry unless the failure is a UserError."""
    return not isinstance(state.result(raise_on_failure=False), UserError)
