"""One build of a dataset at a time on a machine: a lease file in the run directory.

`<run_dir>/leases/<dataset>.json` names its holder (flow run, host, pid, start) and carries a heartbeat the
holder refreshes while it builds. Another build of the dataset finds it there and waits, or gives up with
the holder's description. A holder that is gone is replaced: on this host as soon as its process no longer
exists (kill -9 leaves the file behind), anywhere once its heartbeat is older than `stale_after_s` (a lost
node, a frozen process). Reading, judging and replacing the file happen under an exclusive `flock` on
`<dataset>.lock` beside it, so two waiters never both take over from one dead holder; the lease file itself
is only ever replaced whole, so nobody reads half of one.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path

from pipeline.errors import UserError

LEASES_DIR = "leases"
WAIT_POLL_S = 1.0


class LeaseHeld(UserError):
    """Another build holds the dataset's lease and this one was told not to wait."""

    hint = ("let that build finish (run again without --no-wait to wait for it), or stop it; the lease of a "
            "build that died is taken over by the next build")


@dataclass(frozen=True)
class Holder:
    """Who holds a dataset's lease; `prefect_lease` is the server-side lease it also holds, if any."""

    dataset: str
    flow_run: str
    host: str
    pid: int
    started: float
    heartbeat: float
    token: str
    process_start: str = ""  # the pid's start time on its host, so a reused pid is not taken for the holder
    prefect_lease: str = ""

    @classmethod
    def this_process(cls, dataset: str, flow_run: str) -> Holder:
        now = time.time()
        return cls(dataset, flow_run, socket.gethostname(), os.getpid(), now, now, uuid.uuid4().hex,
                   _process_start(os.getpid()))

    def describe(self) -> str:
        started = datetime.fromtimestamp(self.started).strftime("%H:%M")
        where = "" if self.host == socket.gethostname() else f" on {self.host}"
        return f"build {self.flow_run or '(outside a flow run)'} of dataset {self.dataset}, started {started}, " \
               f"pid {self.pid}{where}"

    def gone_because(self, stale_after_s: float) -> str | None:
        """Why this holder is no longer building, or None while it may still be."""
        if self.host == socket.gethostname() and not _same_process_alive(self.pid, self.process_start):
            return f"its process {self.pid} is gone"
        age = time.time() - self.heartbeat
        if age > stale_after_s:
            return f"its heartbeat is {age:.0f} s old (more than {stale_after_s:g} s)"
        return None


@dataclass(frozen=True)
class TakenOver:
    """The holder a new build replaced, and why it was judged gone."""

    holder: Holder
    reason: str

    def note(self) -> str:
        return f"took over the lease of dataset {self.holder.dataset} from {self.holder.describe()}: {self.reason}"


def lease_path(run_dir: str | Path, dataset: str) -> Path:
    return Path(run_dir) / LEASES_DIR / f"{dataset}.json"


def try_take(path: Path, me: Holder, stale_after_s: float) -> Holder | TakenOver | None:
    """Take the lease if it is free or its holder is gone: None or the TakenOver holder; else the holder."""
    with _guard(path):
        current = read_holder(path)
        if current is not None and current.token != me.token:
            reason = current.gone_because(stale_after_s)
            if reason is None:
                return current
            _write(path, me)
            return TakenOver(current, reason)
        _write(path, me)
        return None


def read_holder(path: Path) -> Holder | None:
    try:
        return Holder(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None


def update(path: Path, me: Holder) -> bool:
    """Write `me` (a new heartbeat, a Prefect lease id) if the lease is still mine; False when it is not."""
    with _guard(path):
        current = read_holder(path)
        if current is None or current.token != me.token:
            return False
        _write(path, me)
        return True


def release(path: Path, me: Holder) -> None:
    with _guard(path):
        current = read_holder(path)
        if current is not None and current.token == me.token:
            path.unlink()


@contextmanager
def holding(path: Path, me: Holder, stale_after_s: float, wait: bool,
            on_wait: Callable[[Holder], None]) -> Iterator[HeldLease]:
    """Hold the lease for the block, beating its heartbeat; waits for it, or raises LeaseHeld with `wait` off.

    `on_wait` hears of each holder waited for, once. What else the holder must keep alive while it builds
    (a server-side lease) goes to the held lease's `on_beat`.
    """
    waited_for: str | None = None
    while True:
        outcome = try_take(path, me, stale_after_s)
        if not isinstance(outcome, Holder):
            break
        if not wait:
            raise LeaseHeld(f"dataset {me.dataset} is being built: {outcome.describe()} (lease {path})")
        if outcome.token != waited_for:
            waited_for = outcome.token
            on_wait(outcome)
        time.sleep(WAIT_POLL_S)
    held = HeldLease(path, me, outcome, heartbeat_every_s=stale_after_s / 4)
    try:
        yield held
    finally:
        held.stop()
        release(path, held.me)


class HeldLease:
    """A lease this process holds: its heartbeat, refreshed from a daemon thread until stopped.

    `lost` turns true if another build replaced it meanwhile (this process froze past `stale_after_s`).
    `on_beat`, when set, runs with every heartbeat.
    """

    def __init__(self, path: Path, me: Holder, taken_over: TakenOver | None, heartbeat_every_s: float) -> None:
        self.path, self.me, self.taken_over = path, me, taken_over
        self.lost = False
        self.on_beat: Callable[[], None] = lambda: None
        self._heartbeat_every_s = heartbeat_every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{me.dataset}", daemon=True)
        self._thread.start()

    def record(self, **changes: str) -> None:
        """Add to what the lease file says of its holder (e.g. the Prefect lease it took)."""
        self.me = replace(self.me, **changes)
        self.lost = self.lost or not update(self.path, self.me)

    def _beat(self) -> None:
        while not self._stop.wait(self._heartbeat_every_s):
            self.me = replace(self.me, heartbeat=time.time())
            self.lost = self.lost or not update(self.path, self.me)
            self.on_beat()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def _guard(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a+b") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # released by the kernel if this process dies holding it
        try:
            yield
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)


def _write(path: Path, holder: Holder) -> None:
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(asdict(holder)), encoding="utf-8")
    os.replace(temporary, path)


def _process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux /proc); "" where that cannot be read."""
    fields = _proc_stat(pid)
    return fields[19] if fields else ""  # field 22 of /proc/<pid>/stat


def _same_process_alive(pid: int, process_start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: it exists
    fields = _proc_stat(pid)
    if not fields:
        return True  # no /proc: the pid exists, which is all that can be told
    return fields[0] != "Z" and (not process_start or fields[19] == process_start)  # Z: killed, not yet reaped


def _proc_stat(pid: int) -> list[str]:
    """/proc/<pid>/stat from its third field (state) on; [] where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return stat.rsplit(")", 1)[1].split()  # the command name before ")" may hold spaces
