"""The GPU-slot allocator: no GPU is ever lent twice at once, whatever fails, and a lease outlives
the sweep that took it for as long as the trial's process lives."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time

import pytest

from enginesweep.engines.gpu_slots import GpuSlots, NoGpus, parse_visible, preferred_groups

pytestmark = pytest.mark.unit


class TrialFailed(RuntimeError):
    """A trial's own failure inside its lease (the test's random faults)."""


def test_no_oversubscription_under_random_trial_failures(tmp_path):
    """24 trials of width 1, 2 or 4 on 4 GPUs, each holding its GPUs for a random time and failing
    at random (an exception inside the lease): every lease is disjoint from every other one held
    at the same moment, the slots all come back, and the GPUs were really shared out (several
    trials at once), so a serialising allocator would not pass either."""
    seed = int(os.environ.get("ENGINESWEEP_FAULT_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    slots = GpuSlots([0, 1, 2, 3], tmp_path / "locks")
    in_use: dict[int, str] = {}
    guard = threading.Lock()
    violations: list[str] = []
    peak = [0]
    failures = []
    plans = [
        (f"t{i}", rng.choice([1, 2, 2, 4]), rng.uniform(0.01, 0.08), rng.random() < 0.4) for i in range(24)
    ]

    def trial(name: str, width: int, hold_s: float, fails: bool) -> None:
        try:
            with slots.hold(width, what=name, log=lambda _: None, poll_s=0.005) as lease:
                assert len(lease.devices) == width == len(lease.fds)
                with guard:
                    clash = [d for d in lease.devices if d in in_use]
                    if clash:
                        violations.append(f"{name} got {clash} held by {[in_use[d] for d in clash]}")
                    in_use.update({d: name for d in lease.devices})
                    peak[0] = max(peak[0], len(in_use))
                time.sleep(hold_s)
                with guard:
                    for d in lease.devices:
                        in_use.pop(d, None)
                if fails:
                    raise TrialFailed(name)
        except TrialFailed:
            failures.append(name)
        except BaseException as exc:
            violations.append(f"{name}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=trial, args=plan) for plan in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), f"a trial never got its GPUs (seed {seed})"
    assert violations == [], f"seed {seed}"
    assert sorted(failures) == sorted(name for name, *_, fails in plans if fails), f"seed {seed}"
    assert peak[0] >= 2, f"never more than one GPU in use at once (seed {seed})"
    with slots.hold(4, log=lambda _: None, poll_s=0.005) as lease:  # every slot came back
        assert lease.devices == [0, 1, 2, 3]


def test_a_killed_holder_frees_its_gpus(tmp_path):
    """A trial process SIGKILLed while holding GPUs cannot keep them: the kernel drops its locks."""
    code = (
        "import sys, time; from pathlib import Path; from enginesweep.engines.gpu_slots import GpuSlots\n"
        "with GpuSlots([0, 1, 2, 3], Path(sys.argv[1])).hold(3, log=lambda _: None) as lease:\n"
        "    print(lease.visible, flush=True); time.sleep(600)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "locks")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "0,1,2"
        slots = GpuSlots([0, 1, 2, 3], tmp_path / "locks")
        assert slots._try_take(2) is None  # only GPU 3 is free
        holder.kill()
        holder.wait(timeout=10)
        with slots.hold(4, log=lambda _: None, poll_s=0.01) as lease:
            assert lease.devices == [0, 1, 2, 3]
    finally:
        holder.kill()
        holder.wait()


def test_a_lease_stays_held_while_the_trial_process_that_inherited_it_lives(tmp_path):
    """The sweep passes the lease's lock descriptors to the trial's process: when the sweep lets
    go (or dies) first, the GPUs stay taken until that process has exited."""
    slots = GpuSlots([0, 1], tmp_path / "locks")
    with slots.hold(2, log=lambda _: None) as lease:
        child = subprocess.Popen(["sleep", "600"], pass_fds=lease.fds)
    try:
        assert slots._try_take(1) is None
        child.kill()
        child.wait(timeout=10)
        taken = slots._try_take(2)
        assert taken is not None and taken[0].devices == [0, 1]
        taken[1].close()
    finally:
        child.kill()
        child.wait()


def test_a_waiting_trial_says_so_once_and_gets_the_gpus_when_freed(tmp_path):
    slots = GpuSlots([0, 1], tmp_path / "locks")
    said: list[str] = []
    got: list[list[int]] = []
    with slots.hold(2, log=lambda _: None):
        waiter = threading.Thread(target=lambda: got.append(_take(slots, 1, said)))
        waiter.start()
        time.sleep(0.2)
        assert got == [] and said == ["  trial x waits for 1 free GPUs of [0, 1]"]
    waiter.join(timeout=10)
    assert got == [[0]]


def _take(slots: GpuSlots, count: int, said: list[str]) -> list[int]:
    with slots.hold(count, what="trial x", log=said.append, poll_s=0.01) as lease:
        return lease.devices


def test_aligned_blocks_first_then_lowest_free():
    assert preferred_groups([1, 2, 3], 2, [0, 1, 2, 3]) == [2, 3]
    assert preferred_groups([0, 3], 2, [0, 1, 2, 3]) == [0, 3]
    assert preferred_groups([4, 6, 7], 2, [4, 5, 6, 7]) == [6, 7]
    assert preferred_groups([0], 2, [0, 1]) is None


def test_bad_requests_name_the_field_and_the_fix(tmp_path):
    with pytest.raises(NoGpus, match=r"needs 4 GPUs; this machine lends 2 .*execution.gpus"):
        with GpuSlots([0, 1], tmp_path).hold(4):
            pytest.fail("a lease wider than the machine was granted")
    with pytest.raises(NoGpus, match="UUIDs"):
        parse_visible("GPU-8a1b,GPU-77c2")
    assert parse_visible("2, 3") == [2, 3]
