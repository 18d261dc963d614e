"""Dataset versions: find one, publish one, set a failed one aside, list them; on any store.

A dataset lives under `<datasets_uri>/<dataset>/`:

    <version>/manifest.json ...   one directory per published version; it exists once its manifest does
    LATEST                        the newest published version's id, moved only by a good build
    failed/<version>/...          builds over their contract limits, kept for inspection, never LATEST

Every caller that turns a reference (a manifest, a version directory, a dataset directory, a version id,
"latest") into a manifest goes through `resolve_manifest`, so LATEST is read in one place, on local disk
and on object stores alike.

Object stores have no multi-object transaction, so a version is published in an order readers rely on:
files first, the manifest next, then LATEST. Readers find shards through the manifest, never by listing.
"""

from __future__ import annotations

from pathlib import Path

from pipeline import storage
from pipeline.errors import UserError
from pipeline.schema import Manifest

MANIFEST = "manifest.json"
LEDGER = "ledger.arrow"  # every record's outcome, beside the manifest: Arrow, but not a shard
LATEST = "LATEST"
FAILED = "failed"


class VersionNotFound(UserError, FileNotFoundError):
    """A reference that names no dataset version."""

    hint = "pass a manifest.json, a version directory or a dataset directory; `corpusflow build` makes one"


def load_manifest(uri: str | Path) -> Manifest:
    return Manifest.model_validate_json(storage.read_text(str(uri)))


def write_manifest(version_dir: str | Path, manifest: Manifest) -> str:
    path = storage.join(str(version_dir), MANIFEST)
    storage.write_text(path, manifest.model_dump_json(indent=2))
    return path


def version_dir(manifest_uri: str) -> str:
    return storage.parent(manifest_uri)


def dataset_dir(datasets_uri: str, dataset: str) -> str:
    return storage.join(datasets_uri, dataset)


def latest_version(datasets_uri: str, dataset: str) -> str | None:
    """The version LATEST names, or None before the first good build."""
    return _read_latest(dataset_dir(datasets_uri, dataset))


def _read_latest(dataset_uri: str) -> str | None:
    latest = storage.join(dataset_uri, LATEST)
    return storage.read_text(latest).strip() if storage.exists(latest) else None


def resolve_manifest(reference: str, datasets_uri: str | None = None, dataset: str | None = None) -> str:
    """The manifest URI a reference names.

    `reference` is a manifest file, a version directory, a dataset directory (its LATEST is followed), or
    with `datasets_uri` and `dataset` given, a version id or "latest".
    """
    reference = str(reference)
    if reference.endswith(".json"):
        if storage.exists(reference):
            return reference
        raise VersionNotFound(f"{reference}: no such manifest")
    if storage.exists(storage.join(reference, MANIFEST)):
        return storage.join(reference, MANIFEST)
    if storage.exists(storage.join(reference, LATEST)):
        return _manifest_of(reference, _read_latest(reference) or "")
    if datasets_uri and dataset:
        dataset_uri = dataset_dir(datasets_uri, dataset)
        version = _read_latest(dataset_uri) if reference == "latest" else reference
        if not version:
            raise VersionNotFound(f"no published version of {dataset!r} under {datasets_uri} yet "
                                  f"(no {LATEST}): run `corpusflow build` first")
        return _manifest_of(dataset_uri, version)
    raise VersionNotFound(f"{reference}: not a manifest, a version directory or a dataset directory with {LATEST}")


def _manifest_of(dataset_uri: str, version: str) -> str:
    uri = storage.join(dataset_uri, version, MANIFEST)
    if not storage.exists(uri):
        raise VersionNotFound(f"version {version!r} has no manifest under {dataset_uri}")
    return uri


def list_versions(datasets_uri: str, dataset: str) -> list[str]:
    """Ids of the published versions (those with a manifest), oldest name first; failed builds excluded."""
    dataset_uri = dataset_dir(datasets_uri, dataset)
    return [name for name in storage.list_dirs(dataset_uri)
            if name != FAILED and storage.exists(storage.join(dataset_uri, name, MANIFEST))]


def publish(staging: str, datasets_uri: str, dataset: str, version: str) -> str:
    """Move a finished, good build to <datasets_uri>/<dataset>/<version>, then LATEST; returns the manifest URI.

    Locally one directory swap makes the whole version appear at once. Otherwise (a remote store at either
    end) files are copied first and the manifest last, then the staging is removed. An identical version that already exists is kept as it is (same content,
    same id).
    """
    target = storage.join(dataset_dir(datasets_uri, dataset), version)
    _place(staging, target)
    set_latest(datasets_uri, dataset, version)
    return storage.join(target, MANIFEST)


def set_latest(datasets_uri: str, dataset: str, version: str) -> None:
    storage.write_text(storage.join(dataset_dir(datasets_uri, dataset), LATEST), version + "\n")


def set_aside(staging: str, datasets_uri: str, dataset: str, version: str) -> str:
    """Keep a build that must not be published under failed/, reports included; LATEST is not touched."""
    target = storage.join(dataset_dir(datasets_uri, dataset), FAILED, version)
    _place(staging, target)
    return storage.join(target, MANIFEST)


def _place(staging: str, target: str) -> None:
    if storage.exists(storage.join(target, MANIFEST)):
        storage.remove_tree(staging)
    elif storage.is_local(target) and storage.is_local(staging):
        storage.replace_directory(Path(staging), Path(target))  # also replaces a remnant without manifest
    else:
        storage.copy_tree(staging, target, last=MANIFEST)
        storage.remove_tree(staging)


def check_stored_files(manifest_uri: str) -> list[str]:
    """One line per stored shard (data, quarantined, rejects) that is missing or differs from its sha256."""
    manifest = load_manifest(manifest_uri)
    root = version_dir(manifest_uri)
    problems = []
    for shard in manifest.shards + manifest.quarantined + manifest.rejects:
        uri = storage.join(root, shard.path)
        if not storage.exists(uri):
            problems.append(f"{shard.path}: missing")
            continue
        actual = storage.file_sha256(uri)
        if actual != shard.sha256:
            problems.append(f"{shard.path}: sha256 {actual} where the manifest has {shard.sha256}")
    return problems
