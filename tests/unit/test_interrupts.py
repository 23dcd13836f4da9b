"""A stop request outlives a swallowed KeyboardInterrupt: the benchmark wait raises it again."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from enginesweep.engines import interrupts
from enginesweep.evaluation.benchmark import aiperf_runner

pytestmark = pytest.mark.unit


def test_a_recorded_stop_ends_a_wait_within_a_second(monkeypatch):
    monkeypatch.setattr(interrupts, "_requested", [])
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert aiperf_runner.wait_stoppable(subprocess.Popen([sys.executable, "-c", "pass"]), 10) == 0
        interrupts.request_stop("signal 15")
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt, match="signal 15"):
            aiperf_runner.wait_stoppable(process, 60)
        assert time.monotonic() - start < 3
    finally:
        process.kill()
        process.wait()


def test_the_timeout_still_applies_without_a_request(monkeypatch):
    monkeypatch.setattr(interrupts, "_requested", [])
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            aiperf_runner.wait_stoppable(process, 1.5)
    finally:
        process.kill()
        process.wait()
