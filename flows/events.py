"""The event that links building to training: "a new dataset version was published".

The build flow announces a version when it moves LATEST; the training deployment has an event trigger on
it (see flows/deploy.py), so a GPU worker trains as soon as a CPU worker has published new data, and an
unchanged rebuild (same content, same version id) starts nothing.
"""

from __future__ import annotations

from prefect.events import emit_event

DATASET_PUBLISHED = "corpusflow.dataset.published"
DATASET_RESOURCE_PREFIX = "corpusflow.dataset."


def dataset_resource_id(dataset: str) -> str:
    return f"{DATASET_RESOURCE_PREFIX}{dataset}"


def announce_dataset_version(dataset: str, version: str, manifest_uri: str, previous_version: str | None) -> bool:
    """Emit DATASET_PUBLISHED when `version` differs from the previous LATEST; returns whether it did."""
    if version == previous_version:
        return False
    emit_event(
        event=DATASET_PUBLISHED,
        resource={"prefect.resource.id": dataset_resource_id(dataset), "prefect.resource.name": dataset},
        payload={"version": version, "previous_version": previous_version, "manifest_path": manifest_uri},
    )
    return True
