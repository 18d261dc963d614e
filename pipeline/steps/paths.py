"""Every place a build reads or writes, resolved once, absolute or a URL, so any task on any node finds it.

Relative paths in a config are relative to the directory the build was started in; a task on a Ray node
runs in whatever directory that node was started in. The flow resolves them here, once, and hands tasks
only what this returns. Staging (partitions, key files, dedup buckets, shards before publishing) lives
under the work URL: the run directory's work/ when the datasets are local, beside them on their store
(`<output_uri>/_work`) when they are remote, so that every node reaches it; `work_uri` overrides both.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pipeline import storage
from pipeline.config import CorpusflowConfig

REMOTE_WORK_DIR = "_work"  # under a remote output_uri; no reader lists it (readers go through manifests)


@dataclass(frozen=True)
class BuildPaths:
    run_dir: str  # local: the fetch cache, Data Docs
    work: str  # staging every node reaches
    datasets: str  # where versions are published
    contracts: str  # the suites' directory
    data_docs: str
    base_dir: str  # the directory the build started in: inputs named relative to it are read from there

    @property
    def fetch_cache(self) -> str:
        return storage.join(self.run_dir, "cache", "fetch")

    def dedup(self, key: str) -> str:
        return storage.join(self.work, "dedup", key)

    def staging(self, key: str) -> str:
        return storage.join(self.work, f"build-{key}")


def resolve_paths(config: CorpusflowConfig) -> BuildPaths:
    run_dir = storage.absolute(config.run_dir)
    datasets = storage.absolute(config.datasets_uri)
    if config.work_uri:
        work = storage.absolute(config.work_uri)
    elif storage.is_local(datasets):
        work = storage.join(run_dir, "work")
    else:
        work = storage.join(datasets, REMOTE_WORK_DIR)
    return BuildPaths(run_dir=run_dir, work=work, datasets=datasets,
                      contracts=storage.absolute(config.contracts.directory),
                      data_docs=storage.join(run_dir, "data_docs"), base_dir=os.getcwd())


@contextmanager
def working_directory(directory: str) -> Iterator[None]:
    """Run a block in `directory`, so inputs named relative to where the build started resolve the same.

    Readers keep an input's name as the config gives it (documents and rejects record it), so it is not
    made absolute; instead a task that opens inputs runs in the build's directory. Where the process is
    already there (the flow's own threads) nothing changes; elsewhere it is a worker process (the local
    pool's or a Ray worker), which runs one task at a time, so no other task sees the change.
    """
    before = os.getcwd()
    if before == directory:
        yield
        return
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(before)
