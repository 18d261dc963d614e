"""Fixtures shared by the suite: the real local Prefect server, and the public data when it is present."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"public data not found at {SHARED_DATA}: integration on real data skipped")
    return SHARED_DATA


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real `prefect server start` (SQLite) for the whole session, as the CLI's embedded default uses.

    Prefect's temporary in-process server is not used: it loses task runs and costs 15 s per start.
    """
    from flows.servers import ensure_prefect_server, refresh_prefect_settings, stop_prefect_server

    home = tmp_path_factory.mktemp("corpusflow-home")
    os.environ["CORPUSFLOW_HOME"] = str(home)
    os.environ["PREFECT_HOME"] = str(home / "prefect-client")
    os.environ.pop("PREFECT_API_URL", None)
    os.environ["PREFECT_UI_ENABLED"] = "false"
    api_url = ensure_prefect_server(home)
    os.environ["PREFECT_API_URL"] = api_url
    # test modules may have imported prefect while collecting, before these variables were set
    refresh_prefect_settings()
    yield api_url
    # Send the run logs still queued while the server is up; the URL stays set so that nothing left at exit
    # makes Prefect start its temporary server.
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=5)
    os.environ["PREFECT_LOGGING_TO_API_ENABLED"] = "false"
    refresh_prefect_settings()
    stop_prefect_server(home)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Bit-equal weights across processes need the same reduction order: one intra-op thread everywhere."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
