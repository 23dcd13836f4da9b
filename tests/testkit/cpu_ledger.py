"""What each test costs in CPU, for keeping the suite inside its 20 minutes on two cores.

With `ENGINESWEEP_TEST_CPU_LEDGER=FILE` set, every test (setup, call and teardown together)
appends one JSON line to FILE: its node id, the worker, wall seconds, and the CPU seconds of the
worker process and of its children that ended meanwhile (user + system, `getrusage`). A child
counts once it has been waited for, so a server the test stopped is in; one still running when
the test ends counts towards the test that reaps it (session fixtures' servers: the last).

    ENGINESWEEP_TEST_CPU_LEDGER=/tmp/ledger.jsonl .venv/bin/python -m pytest
    .venv/bin/python tests/testkit/cpu_ledger.py /tmp/ledger.jsonl   # per module, costliest first
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

ENV = "ENGINESWEEP_TEST_CPU_LEDGER"
NESTED_ENV = "ENGINESWEEP_TEST_CPU_LEDGER_NESTED"


def _cpu() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


class CpuLedger:
    """The pytest plugin: one line per test, appended (O_APPEND: workers share the file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        # A pytest run inside a test (test_container_profile's) inherits NESTED_ENV from the
        # process that runs tests (set below, not here: xdist's controller runs none): its lines
        # say so, as the outer test's children time already holds them.
        self.nested = os.environ.get(NESTED_ENV) == "1"

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Iterator[None]:
        os.environ[NESTED_ENV] = "1"
        wall, (own, children) = time.monotonic(), _cpu()
        yield
        own_after, children_after = _cpu()
        line = {
            "test": item.nodeid,
            "worker": self.worker,
            "wall_s": round(time.monotonic() - wall, 3),
            "cpu_s": round(own_after - own, 3),
            "children_cpu_s": round(children_after - children, 3),
            "nested": self.nested,
        }
        with self.path.open("a") as sink:
            sink.write(json.dumps(line) + "\n")


def summarize(path: Path) -> list[tuple[str, float, float, int]]:
    """(module, CPU seconds, wall seconds, tests) per module, costliest first; the tests of a
    nested run are left out (their time is in the test that ran them)."""
    cpu: dict[str, float] = defaultdict(float)
    wall: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for raw in path.read_text().splitlines():
        line = json.loads(raw)
        if line.get("nested"):  # counted in the test that ran it
            continue
        module = line["test"].split("::", 1)[0]
        cpu[module] += line["cpu_s"] + line["children_cpu_s"]
        wall[module] += line["wall_s"]
        count[module] += 1
    return sorted(((m, cpu[m], wall[m], count[m]) for m in cpu), key=lambda row: -row[1])


if __name__ == "__main__":
    rows = summarize(Path(sys.argv[1]))
    print(f"{'CPU s':>8} {'wall s':>8} {'tests':>5}  module")
    for module, cpu_s, wall_s, tests in rows:
        print(f"{cpu_s:8.1f} {wall_s:8.1f} {tests:5d}  {module}")
    print(f"{sum(r[1] for r in rows):8.1f} {sum(r[2] for r in rows):8.1f} {sum(r[3] for r in rows):5d}  all")
