"""Check that the Prefect UI of the local server shows the runs, in a real browser (headless Chromium).

Run after the demo (`python3 dev.py demo`) or any build:

    python scripts/ui_check.py [--out runs/ui-check] [--api http://127.0.0.1:PORT/api]

It finds (or starts) the local Prefect server the CLI uses, checks that the UI is told to call that server's
API, opens the flow-runs page and the newest build's flow runs (build-corpus, and its build-dataset subflow
on Ray) in Chromium, saves a screenshot of each, and exits 1 if a page shows an API connection error or the runs
page does not list the build. Needs Debian's `chromium` (`apt-get install chromium`); the test suite does not.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flows.servers import ensure_prefect_server, ui_api_url  # noqa: E402

CONNECTION_ERRORS = ("can't connect to server api", "failed to fetch")  # compared in lower case
PAGE_BUDGET_MS = 20_000  # virtual time the page gets to load its scripts and call the API


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "ui-check", help="where screenshots go")
    parser.add_argument("--api", help="Prefect API URL (default: the local server the CLI starts)")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        print("chromium not found: apt-get install -y chromium", file=sys.stderr)
        return 2
    api = args.api or ensure_prefect_server()
    ui = api.removesuffix("/api")
    problems = []
    if ui_api_url(api) != api:
        problems.append(f"the UI calls {ui_api_url(api)!r}, not the server's own API {api}")
    build = _newest_run(api, "build-corpus")
    if build is None:
        print(f"no build-corpus run on {api}: run `python3 dev.py demo` first", file=sys.stderr)
        return 2
    pages = {"flow-runs": f"{ui}/runs", "build-run": f"{ui}/runs/flow-run/{build['id']}"}
    subflow = _newest_run(api, "build-dataset", parent=build)
    if subflow:
        pages["build-dataset-run"] = f"{ui}/runs/flow-run/{subflow['id']}"
    args.out.mkdir(parents=True, exist_ok=True)
    for name, url in pages.items():
        screenshot = args.out / f"{name}.png"
        text = _render(browser, url, screenshot)
        errors = [e for e in CONNECTION_ERRORS if e in text.lower()]
        print(f"{name}: {url} -> {screenshot}" + (f"  ERROR: {errors}" if errors else ""))
        problems += [f"{name}: the page says {e!r}" for e in errors]
        if name == "flow-runs" and build["name"] not in text:
            problems.append(f"flow-runs: the build's run {build['name']!r} is not listed")
        if name == "build-run" and "build-corpus" not in text:
            problems.append("build-run: the page does not name the build-corpus flow")
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    return 1 if problems else 0


def _newest_run(api: str, flow_name: str, parent: dict | None = None) -> dict | None:
    body: dict = {"flows": {"name": {"any_": [flow_name]}}, "sort": "START_TIME_DESC", "limit": 1}
    if parent:
        body["flow_runs"] = {"start_time": {"after_": parent["start_time"]}}
    runs = _post(f"{api}/flow_runs/filter", body)
    return runs[0] if runs else None


def _post(url: str, body: dict) -> list[dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _render(browser: str, url: str, screenshot: Path) -> str:
    """Screenshot of the page after its scripts ran, and its text (the DOM) for the checks."""
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
              "--window-size=1440,1000", f"--virtual-time-budget={PAGE_BUDGET_MS}"]
    subprocess.run([*common, f"--screenshot={screenshot}", url], check=True, capture_output=True, timeout=180)
    dom = subprocess.run([*common, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=180)
    return dom.stdout


if __name__ == "__main__":
    sys.exit(main())
