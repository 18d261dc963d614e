"""Prefect retries only failures that may pass: storage, network, a lost worker; never bad input or config."""

from __future__ import annotations

import errno
from concurrent.futures.process import BrokenProcessPool

import pytest
from prefect.states import Failed

from flows.retries import transient_only
from pipeline.steps.manifest import QuarantineLimitExceeded
from pipeline.config import ConfigError
from pipeline.sources import SourceUnreadable
from pipeline.sources.fetch import FetchError, FetchRefused


@pytest.mark.parametrize("error, retried", [
    (OSError(errno.EIO, "input/output error"), True),
    (ConnectionResetError(errno.ECONNRESET, "reset by peer"), True),
    (FetchError("connection dropped at byte 1024"), True),
    (BrokenProcessPool("a worker process died"), True),
    (SourceUnreadable("a.csv", "binary", "not text"), False),
    (FetchRefused("HTTP 404"), False),
    (ConfigError("bad key"), False),
    (QuarantineLimitExceeded("3/3 shards"), False),
    (OSError("corrupt bz2 data"), False),  # raised by a decompressor: no errno, the bytes are bad
    (KeyError("a bug"), False),
])
def test_only_transient_failures_are_retried(error: BaseException, retried: bool) -> None:
    assert transient_only(None, None, Failed(data=error)) is retried
