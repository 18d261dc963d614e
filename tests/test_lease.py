"""The dataset lease on one machine: held, waited for, refused, and taken over from a holder that is gone."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline import lease


def holder(name: str = "nightly-run", **changes: object) -> lease.Holder:
    return dataclasses.replace(lease.Holder.this_process("demo", name), **changes)


def test_a_second_build_sees_the_holder_and_takes_the_lease_once_released(tmp_path: Path) -> None:
    path = lease.lease_path(tmp_path, "demo")
    first, second = holder("first-run"), holder("second-run")
    assert lease.try_take(path, first, stale_after_s=60) is None
    in_the_way = lease.try_take(path, second, stale_after_s=60)
    assert in_the_way == first
    assert re.fullmatch(rf"build first-run of dataset demo, started \d\d:\d\d, pid {first.pid}", first.describe())
    lease.release(path, second)  # not its lease: nothing happens
    assert lease.read_holder(path) == first
    lease.release(path, first)
    assert lease.try_take(path, second, stale_after_s=60) is None and lease.read_holder(path) == second


def test_without_wait_the_holder_is_named_in_the_error(tmp_path: Path) -> None:
    path = lease.lease_path(tmp_path, "demo")
    lease.try_take(path, holder("first-run"), stale_after_s=60)
    with pytest.raises(lease.LeaseHeld, match=r"dataset demo is being built: build first-run of dataset demo, "
                                              r"started \d\d:\d\d, pid \d+"):
        with lease.holding(path, holder("second-run"), 60, wait=False, on_wait=lambda other: None):
            pass


def test_a_waiting_build_says_for_what_and_goes_on_when_the_holder_is_done(tmp_path: Path) -> None:
    path = lease.lease_path(tmp_path, "demo")
    first = holder("first-run")
    lease.try_take(path, first, stale_after_s=60)
    waited_for: list[lease.Holder] = []
    threading.Timer(1.5, lease.release, (path, first)).start()
    started = time.monotonic()
    with lease.holding(path, holder("second-run"), 60, wait=True, on_wait=waited_for.append) as held:
        assert held.taken_over is None and lease.read_holder(path).flow_run == "second-run"
    assert waited_for == [first], "told once, about the holder"
    assert time.monotonic() - started >= 1.4
    assert not path.exists(), "released on the way out"


def test_the_lease_of_a_killed_process_is_taken_over_with_the_reason(tmp_path: Path) -> None:
    path = lease.lease_path(tmp_path, "demo")
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = holder("killed-run", pid=process.pid, process_start=lease._process_start(process.pid))
    lease.try_take(path, dead, stale_after_s=3600)
    assert isinstance(lease.try_take(path, holder(), stale_after_s=3600), lease.Holder), "alive: still held"
    process.kill()
    process.wait()
    with lease.holding(path, holder("next-run"), 3600, wait=False, on_wait=lambda other: None) as held:
        assert held.taken_over.holder == dead
        assert held.taken_over.note() == (f"took over the lease of dataset demo from {dead.describe()}: "
                                          f"its process {process.pid} is gone")


def test_a_reused_pid_is_not_taken_for_the_holder(tmp_path: Path) -> None:
    path = lease.lease_path(tmp_path, "demo")
    lease.try_take(path, holder("old-run", process_start="1"), stale_after_s=3600)  # this pid, started otherwise
    assert isinstance(lease.try_take(path, holder(), stale_after_s=3600), lease.TakenOver)


def test_a_holder_elsewhere_is_taken_over_once_its_heartbeat_is_stale(tmp_path: Path) -> None:
    path = lease.lease_path(tmp_path, "demo")
    beat = time.time() - 30
    lease.try_take(path, holder("lost-node-run", host="another-node", heartbeat=beat), stale_after_s=60)
    assert isinstance(lease.try_take(path, holder(), stale_after_s=60), lease.Holder)
    taken = lease.try_take(path, holder(), stale_after_s=20)
    assert isinstance(taken, lease.TakenOver) and "heartbeat is 30 s old" in taken.reason
    assert "on another-node" in taken.holder.describe()


def test_a_held_lease_beats_and_notices_being_taken_over(tmp_path: Path) -> None:
    path = lease.lease_path(tmp_path, "demo")
    beats = []
    with lease.holding(path, holder(), 4, wait=False, on_wait=lambda other: None) as held:
        held.on_beat = lambda: beats.append(lease.read_holder(path).heartbeat)
        time.sleep(2.5)
        assert len(beats) >= 1 and beats[-1] > held.me.started and not held.lost
        lease.try_take(path, holder("intruder", host="another-node"), stale_after_s=0)
        time.sleep(1.5)
        assert held.lost
    assert lease.read_holder(path).flow_run == "intruder", "a lost lease is not released by its former holder"
