"""Remote inputs against a real HTTP server on 127.0.0.1: ETag cache, resume after a dropped connection."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.sources.fetch import FetchError, FetchRefused, fetch

CONTENT = bytes(range(256)) * 4000  # 1 MB
ETAG = '"' + hashlib.sha256(CONTENT).hexdigest()[:16] + '"'


class Handler(BaseHTTPRequestHandler):
    """Serves CONTENT with an ETag, conditional GET and byte ranges; /flaky drops its first connection."""

    log: list[dict[str, str | None]] = []
    dropped: set[str] = set()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        Handler.log.append({"path": self.path, "range": self.headers.get("Range"),
                            "if_none_match": self.headers.get("If-None-Match")})
        if self.path == "/missing.csv":
            self.send_error(404, "Not Found")
        elif self.path == "/busy.csv":
            self.send_error(503, "Service Unavailable")
        elif self.headers.get("If-None-Match") == ETAG:
            self.send_response(304)
            self.send_header("ETag", ETAG)
            self.end_headers()
        elif self.path == "/flaky.bin" and self.path not in Handler.dropped:
            Handler.dropped.add(self.path)
            self._send(200, CONTENT, truncate_at=len(CONTENT) // 2)
        else:
            self._send_ranged()

    def _send_ranged(self) -> None:
        requested = self.headers.get("Range")
        if requested and self.headers.get("If-Range") == ETAG:
            start = int(requested.removeprefix("bytes=").rstrip("-"))
            self._send(206, CONTENT[start:], content_range=f"bytes {start}-{len(CONTENT) - 1}/{len(CONTENT)}")
        else:
            self._send(200, CONTENT)

    def _send(self, status: int, body: bytes, truncate_at: int | None = None, content_range: str = "") -> None:
        self.send_response(status)
        self.send_header("ETag", ETAG)
        self.send_header("Content-Length", str(len(body)))
        if content_range:
            self.send_header("Content-Range", content_range)
        self.end_headers()
        self.wfile.write(body[:truncate_at])
        if truncate_at is not None:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)  # the connection drops half way

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture()
def server() -> Iterator[str]:
    Handler.log, Handler.dropped = [], set()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_then_cache_hit_by_etag(server: str, tmp_path: Path) -> None:
    first = fetch(f"{server}/data.bin", tmp_path)
    assert first.read_bytes() == CONTENT and first.name.endswith("data.bin")
    second = fetch(f"{server}/data.bin", tmp_path)
    assert second == first
    assert Handler.log[1]["if_none_match"] == ETAG  # revalidated, answered 304, not downloaded again
    assert not list(tmp_path.rglob("*.part"))


def test_dropped_connection_is_retryable_and_the_next_attempt_resumes(server: str, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="flaky.bin"):
        fetch(f"{server}/flaky.bin", tmp_path, timeout=10)
    partial = next(tmp_path.rglob("download.part"))
    assert partial.stat().st_size == len(CONTENT) // 2
    path = fetch(f"{server}/flaky.bin", tmp_path, timeout=10)
    assert path.read_bytes() == CONTENT
    assert Handler.log[-1]["range"] == f"bytes={len(CONTENT) // 2}-"
    assert not partial.exists()


def test_client_errors_are_not_retryable_and_name_url_and_status(server: str, tmp_path: Path) -> None:
    with pytest.raises(FetchRefused, match=r"/missing\.csv.*404"):
        fetch(f"{server}/missing.csv", tmp_path)
    assert not issubclass(FetchRefused, FetchError)


def test_server_errors_and_refused_connections_are_retryable(server: str, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="503"):
        fetch(f"{server}/busy.csv", tmp_path)
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(FetchError, match="127.0.0.1"):
        fetch(f"http://127.0.0.1:{port}/x.csv", tmp_path, timeout=5)
