"""Training checkpoints: written atomically, verified by checksum, loaded without unpickling code.

Layout of `<root>/step-00000050/`:
  model.safetensors       model weights (shared tensors stored once)
  optimizer.safetensors   the optimizer's per-parameter tensors, keyed "<param index>/<name>"
  trainer_state.pt        plain values only (step, scheduler, RNG states, data position, loss history,
                          optimizer hyper-parameters), read back with torch.load(weights_only=True)
  checksums.json          sha256 of each file above; written last, so a checkpoint without it is partial

A checkpoint is built in a hidden temp directory, every file fsynced, then renamed into place: a crash
leaves either the complete directory or a temp directory that is ignored and cleaned up. On load the
newest checkpoint whose checksums match is used; corrupt ones are skipped with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from pipeline.storage import file_sha256, fsync_directory

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.pt"
CHECKSUMS_FILE = "checksums.json"
REQUIRED_FILES = (MODEL_FILE, OPTIMIZER_FILE, STATE_FILE)
_PREFIX = "step-"
_TEMP_PREFIX = ".tmp-"


def checkpoint_name(step: int) -> str:
    return f"{_PREFIX}{step:08d}"


def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors go to safetensors; the hyper-parameters and any non-tensor entries stay plain."""
    tensors: dict[str, torch.Tensor] = {}
    plain_state: dict[int, dict[str, Any]] = {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}/{name}"] = value.detach().cpu().contiguous()
            else:
                plain_state.setdefault(index, {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "plain_state": plain_state}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in plain["plain_state"].items()}
    for key, tensor in tensors.items():
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = tensor
    return {"state": state, "param_groups": plain["param_groups"]}


def save_checkpoint(
    root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    keep: int,
) -> Path:
    """Write step's checkpoint atomically, then delete all but the newest `keep` checkpoints."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    temp = root / f"{_TEMP_PREFIX}{final.name}-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    save_model(model, str(temp / MODEL_FILE))
    optimizer_tensors, optimizer_plain = _split_optimizer_state(optimizer.state_dict())
    save_file(optimizer_tensors, str(temp / OPTIMIZER_FILE))
    torch.save({**trainer_state, "optimizer": optimizer_plain}, temp / STATE_FILE)
    checksums = {name: file_sha256(temp / name) for name in REQUIRED_FILES}
    (temp / CHECKSUMS_FILE).write_text(json.dumps(checksums, indent=1))
    for name in (*REQUIRED_FILES, CHECKSUMS_FILE):
        _fsync_file(temp / name)
    fsync_directory(temp)
    if final.exists():
        # Only a checkpoint that failed verification is ever rewritten (the run resumed from an older one).
        shutil.rmtree(final)
    temp.rename(final)
    fsync_directory(root)
    _prune(root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    for stale in list_checkpoints(root)[:-keep]:
        shutil.rmtree(stale, ignore_errors=True)


def remove_partial(root: Path) -> None:
    """Delete temp directories left by a process killed while writing a checkpoint."""
    if root.exists():
        for temp in root.glob(f"{_TEMP_PREFIX}*"):
            shutil.rmtree(temp, ignore_errors=True)


def list_checkpoints(root: Path) -> list[Path]:
    """Completed checkpoint directories, oldest first (not verified)."""
    if not root.exists():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX))


def verify(path: Path) -> str | None:
    """None when the checkpoint is complete and intact, otherwise what is wrong with it."""
    checksums_path = path / CHECKSUMS_FILE
    if not checksums_path.exists():
        return "no checksums.json (partial write)"
    try:
        checksums = json.loads(checksums_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "checksums.json is not valid JSON"
    for name in REQUIRED_FILES:
        if name not in checksums:
            return f"{name} is not listed in checksums.json"
        if not (path / name).exists():
            return f"{name} is missing"
        if file_sha256(path / name) != checksums[name]:
            return f"{name} does not match its sha256"
    return None


def latest_valid(root: Path) -> Path | None:
    """The newest checkpoint that passes verification; corrupt newer ones are skipped with a warning."""
    for path in reversed(list_checkpoints(root)):
        problem = verify(path)
        if problem is None:
            return path
        log.warning("skipping checkpoint %s: %s", path, problem)
    return None


def _load_weights(model: torch.nn.Module, file: Path) -> None:
    """Load every weight; a tied alias (e.g. the MLM decoder sharing the embeddings) may be absent.

    safetensors saves one name per shared tensor and forgives the others only when the model being loaded
    has them tied at that moment, which is not guaranteed; so aliases are tied again after loading and any
    other missing or unexpected key is an error.
    """
    missing, unexpected = load_model(model, str(file), strict=False)
    aliases = set(getattr(model, "_tied_weights_keys", None) or ())
    untied = [key for key in missing if key not in aliases]
    if untied or unexpected:
        raise RuntimeError(f"checkpoint {file} does not fit the model: missing {untied}, unexpected {unexpected}")
    if missing:
        model.tie_weights()


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model and optimizer in place; returns the trainer state (step, RNG, data position...)."""
    _load_weights(model, path / MODEL_FILE)
    trainer_state = torch.load(path / STATE_FILE, weights_only=True)
    tensors = load_file(str(path / OPTIMIZER_FILE))
    optimizer.load_state_dict(_join_optimizer_state(tensors, trainer_state.pop("optimizer")))
    return trainer_state
