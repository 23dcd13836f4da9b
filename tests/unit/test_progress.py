"""The progress of `enginesweep run`: the plain lines a log gets, the table a terminal gets, and
the events a trial's child process sends its parent on stdout."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import pytest
from rich.console import Console

from enginesweep.engines import progress
from enginesweep.engines.progress import ProgressEvent
from enginesweep.flows import trial_process
from enginesweep.flows.progress_view import SweepProgress

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _log_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=False, width=60), buffer


def test_a_log_gets_one_plain_line_per_event_with_counts_and_eta():
    console, buffer = _log_console()
    assert not console.is_terminal
    warnings: list[str] = []
    script = [
        ProgressEvent(kind="planned", slugs=("a__bf16", "b__fp8", "c__fp8"), concurrency=1, time=100),
        ProgressEvent(kind="stage", slug="a__bf16", stage="checkpoint", time=100),
        ProgressEvent(kind="stage", slug="a__bf16", stage="build", time=110),
        ProgressEvent(kind="finished", slug="a__bf16", status="ok", time=160),
        ProgressEvent(kind="stage", slug="b__fp8", stage="serve+benchmark", time=161),
        ProgressEvent(
            kind="finished",
            slug="b__fp8",
            status="failed",
            error="RuntimeError: boom\r\n\x1b[31mred\x1b[0m",
            time=191,
        ),
        ProgressEvent(kind="finished", slug="c__fp8", status="reused", time=192),
    ]
    with SweepProgress(console, clock=FakeClock(), warn=warnings.append):
        for event in script:
            progress.emit(event)
    progress.emit(ProgressEvent(kind="stage", slug="a__bf16", stage="late"))  # uninstalled: no line
    assert buffer.getvalue().splitlines() == [
        "[progress 0/3] sweep: 3 trials to run, 1 at a time",
        "[progress 1/3] a__bf16: checkpoint (elapsed 0:00) | done 0, failed 0, ETA unknown",
        "[progress 1/3] a__bf16: build (elapsed 0:10) | done 0, failed 0, ETA unknown",
        "[progress 1/3] a__bf16: ok after 1:00 | done 1, failed 0, ETA 2:00",
        "[progress 2/3] b__fp8: serve+benchmark (elapsed 0:00) | done 1, failed 0, ETA 2:00",
        # mean of 60 s and 30 s x 1 left / 1 at a time; control characters never reach the log
        "[progress 2/3] b__fp8: failed after 0:30: RuntimeError: boom [31mred [0m | "
        "done 1, failed 1, ETA 0:45",
        "[progress 3/3] c__fp8: reused | done 2, failed 1, ETA 0:00",
    ]
    assert "\r" not in buffer.getvalue() and "\x1b" not in buffer.getvalue()
    assert warnings == []


def test_the_eta_divides_by_the_trials_running_at_once():
    console, buffer = _log_console()
    with SweepProgress(console, clock=FakeClock()):
        progress.emit(ProgressEvent(kind="planned", slugs=tuple("abcde"), concurrency=2, time=0))
        progress.emit(ProgressEvent(kind="stage", slug="a", stage="build", time=0))
        progress.emit(ProgressEvent(kind="finished", slug="a", status="ok", time=120))
    assert (
        buffer.getvalue().splitlines()[-1] == "[progress 1/5] a: ok after 2:00 | done 1, failed 0, ETA 4:00"
    )  # 120 s x 4 / 2


def test_a_broken_view_warns_once_and_never_raises_into_the_sweep():
    class Unwritable(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("disk gone")

    warnings: list[str] = []
    console = Console(file=Unwritable(), force_terminal=False)
    with SweepProgress(console, warn=warnings.append):
        for stage in ("checkpoint", "build", "accuracy"):
            progress.emit(ProgressEvent(kind="stage", slug="a", stage=stage))
    assert len(warnings) == 1 and "OSError: disk gone" in warnings[0]
    assert progress.use_sink(None) is None  # and it uninstalled itself


def test_a_terminal_gets_a_table_of_stages_and_times_not_lines():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    clock = FakeClock(130)
    view = SweepProgress(console, clock=clock)
    with view:
        progress.emit(ProgressEvent(kind="planned", slugs=("a", "b"), concurrency=1, time=100))
        progress.emit(ProgressEvent(kind="stage", slug="a", stage="quantize", time=100))
        progress.emit(ProgressEvent(kind="stage", slug="a", stage="build", time=120))
        table = io.StringIO()
        Console(file=table, force_terminal=False, width=120).print(view._renderable())
    assert "[progress" not in buffer.getvalue()
    rows = table.getvalue()
    assert "build" in rows and "0:10" in rows and "0:30" in rows  # in stage, in trial
    assert "waiting" in rows and "done 0, failed 0, ETA unknown" in rows


def test_a_childs_progress_line_becomes_an_event_in_the_parent_and_is_not_logged():
    event = ProgressEvent(kind="finished", slug="a", status="failed", error="x\ny", time=5.5)
    assert "\n" not in progress.to_line(event)
    assert progress.from_line(progress.to_line(event)) == event
    assert progress.from_line("[build] ...") is None
    assert progress.from_line(progress.PREFIX + "{not json") is None  # logged as text, not lost

    # The child's side as trial_process.main sets it up, and a stage of a trial.
    child = textwrap.dedent("""
        from enginesweep.engines import progress
        progress.use_sink(lambda event: print(progress.to_line(event), flush=True))
        print("a log line", flush=True)
        clock = progress.StageClock(lambda line: print(line, flush=True))
        with progress.trial("tiny__fp8"), clock.stage("build"):
            pass
    """)
    process = subprocess.Popen(
        [sys.executable, "-c", child], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    logged: list[str] = []
    events: list[ProgressEvent] = []
    previous = progress.use_sink(events.append)
    try:
        trial_process._forward(process, logged.append)
    finally:
        progress.use_sink(previous)
    assert process.wait(timeout=60) == 0, logged
    assert logged[0] == "a log line" and logged[1] == "[build] ..."
    assert logged[2].startswith("[build] done in") and len(logged) == 3
    assert [(e.kind, e.slug, e.stage) for e in events] == [("stage", "tiny__fp8", "build")]
