"""One build of a dataset at a time, from planning to publish.

Two locks, taken in this order and held until the version is published:
1. the lease file in the run directory (pipeline/lease.py): builds on this machine, with who holds it and a
   heartbeat, taken over from a holder that died;
2. a Prefect global concurrency limit of one slot named after the dataset: builds that go through the same
   Prefect server from anywhere (two deployments, a deployment and the CLI). Its server-side lease is
   renewed with the heartbeat and expires by itself once nobody renews it; the lease file records its id,
   so a build that takes over from a dead holder on this machine frees it at once instead of waiting.

A Prefect variable named after the dataset says who holds the limit, so a build waiting on another machine
can say what it waits for.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from logging import Logger, LoggerAdapter
from pathlib import Path
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound, PrefectHTTPStatusError
from prefect.variables import Variable

from pipeline import lease
from pipeline.config import CorpusflowConfig

LIMIT_PREFIX = "corpusflow-dataset-"  # + dataset and where it lives: the global concurrency limit
HOLDER_PREFIX = "corpusflow-lease-"  # + the same: the variable naming the limit's holder
SERVER_MIN_LEASE_S = 60  # the shortest lease a Prefect server grants
SERVER_POLL_MAX_S = 5.0


def limit_name(config: CorpusflowConfig) -> str:
    """The dataset's name, and a hash of where its versions live: the same dataset name in two places (a
    scratch rebuild, another project on the server) is another dataset, built independently."""
    where = config.datasets_uri if "://" in config.datasets_uri else str(Path(config.datasets_uri).resolve())
    return f"{LIMIT_PREFIX}{config.dataset}-{hashlib.sha256(where.encode()).hexdigest()[:8]}"


@contextmanager
def dataset_lease(config: CorpusflowConfig, wait: bool = True) -> Iterator[None]:
    """Hold the dataset's lease for the block; wait for another build of it, or raise LeaseHeld without `wait`."""
    logger = get_run_logger()
    run = FlowRunContext.get()
    me = lease.Holder.this_process(config.dataset, run.flow_run.name if run else "")
    stale_after_s = config.runner.lease_stale_after_s
    path = lease.lease_path(config.run_dir, config.dataset)
    def say_waiting(other: lease.Holder) -> None:
        logger.warning("waiting for %s", other.describe())

    with lease.holding(path, me, stale_after_s, wait, say_waiting) as held:
        if held.taken_over:
            logger.warning(held.taken_over.note())
            _release_server_lease(held.taken_over.holder.prefect_lease)
        with _server_limit(held, limit_name(config), max(SERVER_MIN_LEASE_S, stale_after_s), wait, logger):
            yield
        if held.lost:
            logger.warning("the lease of dataset %s was taken over while this build ran (it did not beat for "
                           "%g s): another build may have run beside it", config.dataset, stale_after_s)


@contextmanager
def _server_limit(held: lease.HeldLease, name: str, lease_s: float, wait: bool,
                  logger: Logger | LoggerAdapter) -> Iterator[None]:
    run = FlowRunContext.get()
    holder = ConcurrencyLeaseHolder(type="flow_run", id=run.flow_run.id) if run else None
    with get_client(sync_client=True) as client:
        _ensure_limit(client, name)
        lease_id = _take_slot(client, name, held.me, lease_s, holder, wait, logger)
    held.record(prefect_lease=str(lease_id))
    Variable.set(_holder_variable(name), json.dumps(asdict(held.me)), overwrite=True)
    held.on_beat = lambda: _renew(lease_id, lease_s, logger)
    try:
        yield
    finally:
        held.on_beat = lambda: None
        _release_server_lease(str(lease_id))


def _ensure_limit(client, name: str) -> None:
    try:
        client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        except ObjectAlreadyExists:  # another build created it meanwhile
            pass


def _take_slot(client, name: str, me: lease.Holder, lease_s: float, holder: ConcurrencyLeaseHolder | None,
               wait: bool, logger: Logger | LoggerAdapter) -> UUID:
    """The slot's lease id, once the limit has a free slot (at once, or after waiting with `wait`)."""
    announced = None
    while True:
        try:
            response = client.increment_concurrency_slots_with_lease([name], 1, "concurrency", lease_s, holder)
            return UUID(response.json()["lease_id"])
        except PrefectHTTPStatusError as error:
            if error.response.status_code != 423:  # 423 Locked: the slot is taken
                raise
            retry_after = float(error.response.headers.get("Retry-After", 1))
        other = _server_holder(name, me.dataset)
        if not wait:
            raise lease.LeaseHeld(f"dataset {me.dataset} is being built: {other} (Prefect concurrency limit {name})")
        if other != announced:
            announced = other
            logger.warning("waiting for %s (Prefect concurrency limit %s)", other, name)
        time.sleep(min(retry_after, SERVER_POLL_MAX_S))


def _holder_variable(limit: str) -> str:
    return HOLDER_PREFIX + limit.removeprefix(LIMIT_PREFIX)


def _server_holder(limit: str, dataset: str) -> str:
    recorded = Variable.get(_holder_variable(limit), default=None)
    if not recorded:
        return f"another build of dataset {dataset}"
    return lease.Holder(**json.loads(recorded)).describe()


def _renew(lease_id: UUID, lease_s: float, logger: Logger | LoggerAdapter) -> None:
    try:
        with get_client(sync_client=True) as client:
            client.renew_concurrency_lease(lease_id, lease_s)
    except Exception as error:  # the next beat tries again; the lease outlives a few missed renewals
        logger.warning("could not renew the server lease %s: %s", lease_id, error)


def _release_server_lease(lease_id: str) -> None:
    if not lease_id:
        return
    with get_client(sync_client=True) as client:
        try:
            client.release_concurrency_slots_with_lease(UUID(lease_id))
        except PrefectHTTPStatusError as error:
            if error.response.status_code != 404:  # 404: it expired already
                raise
