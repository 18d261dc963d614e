"""Downloading an http(s) input into a local cache, one attempt per call.

Retries belong to the orchestrator: a failure that may pass (connection lost, timeout, 5xx) raises
FetchError, and the next attempt resumes the partial download with a Range request. A 4xx will not pass
by retrying and raises FetchRefused. The cache is keyed by URL and ETag: an unchanged file is not
downloaded again (the server answers 304), a changed one lands in a new entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from http.client import HTTPException, HTTPResponse
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pipeline.errors import UserError

_CHUNK = 1 << 20


class FetchError(RuntimeError):
    """A download failed in a way that may pass on retry; a partial download is kept to resume from."""


class FetchRefused(UserError, RuntimeError):
    """The server refused the URL (4xx): retrying will not help."""

    hint = "check the source's uri (and any credentials it needs); the server answered that it will not serve it"


def fetch(url: str, cache_dir: Path, timeout: float = 60) -> Path:
    """The local path of `url`'s content, downloading (or resuming) it when the cache lacks it."""
    entry = Path(cache_dir) / hashlib.sha256(url.encode()).hexdigest()[:24]
    entry.mkdir(parents=True, exist_ok=True)
    cached = _cached(entry)
    try:
        with urllib.request.urlopen(_request(url, entry, cached), timeout=timeout) as response:
            return _save(url, entry, response)
    except urllib.error.HTTPError as error:
        if error.code == 304 and cached is not None:
            return cached
        if error.code == 416:  # the partial file is not a prefix the server knows: start over next time
            (entry / "download.part").unlink(missing_ok=True)
            raise FetchError(f"GET {url}: HTTP 416, partial download discarded") from None
        if 400 <= error.code < 500 and error.code not in (408, 429):
            raise FetchRefused(f"GET {url} refused: HTTP {error.code} {error.reason}") from None
        raise FetchError(f"GET {url} failed: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, HTTPException, OSError) as error:
        raise FetchError(f"GET {url} failed: {error}") from error


def _cached(entry: Path) -> Path | None:
    """The completed download of this URL, if any (validated against the server by its ETag)."""
    state = _read_state(entry / "complete.json")
    path = entry / state["name"] if state else None
    return path if path is not None and path.is_file() else None


def _request(url: str, entry: Path, cached: Path | None) -> urllib.request.Request:
    request = urllib.request.Request(url)
    complete = _read_state(entry / "complete.json")
    if cached is not None and complete.get("etag"):
        request.add_header("If-None-Match", complete["etag"])
        return request
    partial, state = entry / "download.part", _read_state(entry / "download.json")
    # Resume only what the server can vouch for: If-Range makes it send the whole file if it changed.
    if partial.is_file() and state.get("etag"):
        request.add_header("Range", f"bytes={partial.stat().st_size}-")
        request.add_header("If-Range", state["etag"])
    return request


def _save(url: str, entry: Path, response: HTTPResponse) -> Path:
    etag = response.headers.get("ETag")
    partial = entry / "download.part"
    resumed = response.status == 206
    _write_state(entry / "download.json", {"url": url, "etag": etag})
    expected = _expected_size(response, partial if resumed else None)
    with open(partial, "ab" if resumed else "wb") as out:
        while chunk := response.read(_CHUNK):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if expected is not None and partial.stat().st_size != expected:
        raise FetchError(f"GET {url}: got {partial.stat().st_size} of {expected} bytes; will resume")
    name = _file_name(url, etag)
    os.replace(partial, entry / name)
    _write_state(entry / "complete.json", {"url": url, "etag": etag, "name": name})
    (entry / "download.json").unlink(missing_ok=True)
    return entry / name


def _expected_size(response: HTTPResponse, resumed_from: Path | None) -> int | None:
    length = response.headers.get("Content-Length")
    if length is None:
        return None
    already = resumed_from.stat().st_size if resumed_from is not None else 0
    return already + int(length)


def _file_name(url: str, etag: str | None) -> str:
    """The URL's file name (readers go by its suffix), prefixed by the ETag's hash to keep versions apart."""
    name = Path(unquote(urlsplit(url).path)).name or "download"
    version = hashlib.sha256((etag or "").encode()).hexdigest()[:12]
    return f"{version}-{name}"


def _read_state(path: Path) -> dict[str, str]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _write_state(path: Path, state: dict[str, str | None]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state))
    os.replace(temporary, path)
