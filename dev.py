#!/usr/bin/env python3
"""Run the demo or the tests on a machine that has only Python 3.11+.

    python3 dev.py demo     # builds the sample corpus, trains, evaluates and registers a model
    python3 dev.py test     # the test suite (extra arguments go to pytest)

Both first make sure `.venv` holds the locked dependencies (installed once; again only when
pyproject.toml or constraints.txt change). torch is installed on its own first, so a CPU build that is
already available is used and no other package can pull a CUDA build in.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".corpusflow-installed"
TORCH = os.environ.get("CORPUSFLOW_TORCH", "torch==2.13.0")


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def wanted_stamp() -> str:
    digest = hashlib.sha256(TORCH.encode())
    for name in ("pyproject.toml", "constraints.txt"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def pip(*args: str) -> None:
    subprocess.run([str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", *args],
                   check=True, cwd=ROOT)


def ensure_environment() -> None:
    if not venv_python().exists():
        print("creating .venv", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if STAMP.exists() and STAMP.read_text() == wanted_stamp():
        return
    print("installing dependencies into .venv (once)", flush=True)
    pip("-q", TORCH)
    pip("-q", "-c", "constraints.txt", "-e", ".[dev,ray,fast]")
    STAMP.write_text(wanted_stamp())


def run(*command: str) -> int:
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
           "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([str(venv_python()), *command], cwd=ROOT, env=env).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test"):
        print(__doc__)
        return 2
    ensure_environment()
    if argv[0] == "demo":
        return run("-m", "flows.cli", "run", "--config", "configs/demo.yaml", *argv[1:])
    return run("-m", "pytest", *argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
