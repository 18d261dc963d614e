"""The Prefect UI served by the embedded server calls that server's API, not Prefect's default port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from flows.servers import ensure_prefect_server, free_port, stop_prefect_server, ui_api_url


def _ui_settings(api_url: str) -> dict:
    with urllib.request.urlopen(f"{api_url.removesuffix('/api')}/ui-settings", timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture()
def ui_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_UI_ENABLED", "true")


def test_served_ui_calls_the_servers_own_api(tmp_path: Path, ui_on: None) -> None:
    api_url = ensure_prefect_server(tmp_path)
    try:
        assert not api_url.startswith("http://127.0.0.1:4200")
        assert _ui_settings(api_url)["api_url"] == api_url
        assert ensure_prefect_server(tmp_path) == api_url  # a right server is reused
    finally:
        stop_prefect_server(tmp_path)


@pytest.mark.slow
def test_a_recorded_server_whose_ui_calls_elsewhere_is_replaced(tmp_path: Path, ui_on: None) -> None:
    """A server started the old way (`--port` alone) serves a UI that calls :4200; it must not be reused."""
    home = tmp_path / "prefect"
    home.mkdir()
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    with open(home / "old-server.log", "ab") as log:
        old = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env,
                               start_new_session=True)
    old_api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 90
    while ui_api_url(old_api) is None:
        assert old.poll() is None and time.monotonic() < deadline, "the old-style server did not come up"
        time.sleep(0.5)
    assert ui_api_url(old_api) != old_api  # the fault being guarded against
    (home / "server.json").write_text(json.dumps({"api_url": old_api, "pid": old.pid}))

    api_url = ensure_prefect_server(tmp_path)
    try:
        assert api_url != old_api
        assert old.poll() is not None  # stopped before the new one took the database
        assert _ui_settings(api_url)["api_url"] == api_url
    finally:
        stop_prefect_server(tmp_path)
