"""Trial progress as events: which trial entered which stage, which trial finished and how.

A tiny channel with no Prefect or rich in it: code that does the work calls `stage_started` or
`emit`; whoever wants to watch (the `enginesweep run` live view) installs a sink with `use_sink`.
With no sink installed, events go nowhere. A trial in a child process (`flows.trial_process`)
installs a sink that prints each event as one `PREFIX`-ed stdout line; the parent's forwarder
turns such a line back into an event with `from_line` and emits it there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field

from enginesweep.engines.interrupts import raise_if_stopped

PREFIX = "@@enginesweep-progress "
"""Marks a child's stdout line as an event, not a log line."""


@dataclass(frozen=True)
class ProgressEvent:
    """One thing that happened. `kind`: `planned` (the sweep's `slugs`, `concurrency` at once),
    `stage` (trial `slug` entered `stage`) or `finished` (trial `slug` ended with `status`
    ok | reused | failed, and `error` when it failed). `time` is wall-clock seconds."""

    kind: str
    slug: str = ""
    stage: str = ""
    status: str = ""
    error: str = ""
    slugs: tuple[str, ...] = ()
    concurrency: int = 0
    time: float = field(default_factory=time.time)


Sink = Callable[[ProgressEvent], None]
_sink: Sink | None = None
# The trial this thread (or child process) is running, so `_stage` need not be told its slug.
_current_slug: ContextVar[str | None] = ContextVar("enginesweep_progress_slug", default=None)


def use_sink(sink: Sink | None) -> Sink | None:
    """Send every event to `sink` from now on (None: nowhere); returns the previous sink."""
    global _sink
    previous, _sink = _sink, sink
    return previous


def emit(event: ProgressEvent) -> None:
    """Hand `event` to the installed sink, if any. The sink is responsible for never raising."""
    sink = _sink
    if sink is not None:
        sink(event)


@contextmanager
def trial(slug: str) -> Iterator[None]:
    """Within this block, `stage_started` reports stages of trial `slug` (this thread only)."""
    token = _current_slug.set(slug)
    try:
        yield
    finally:
        _current_slug.reset(token)


def stage_started(stage: str) -> None:
    """The current trial (see `trial`) entered `stage`; nothing outside a trial block."""
    slug = _current_slug.get()
    if slug is not None and _sink is not None:
        emit(ProgressEvent(kind="stage", slug=slug, stage=stage))


def to_line(event: ProgressEvent) -> str:
    """`event` as one stdout line for the parent process (JSON escapes any newline in it)."""
    return PREFIX + json.dumps(asdict(event), separators=(",", ":"))


def from_line(line: str) -> ProgressEvent | None:
    """The event a `to_line` line carries; None for an ordinary log line (or a garbled one,
    which is then logged as text rather than lost)."""
    if not line.startswith(PREFIX):
        return None
    try:
        data = json.loads(line[len(PREFIX) :])
        data["slugs"] = tuple(data.get("slugs", ()))
        return ProgressEvent(**data)
    except (ValueError, TypeError):
        return None


class StageClock:
    """Times a trial's named stages, in the order they ran, and announces each (the log and the
    live view of `enginesweep run`). A stop request that a library swallowed ends the trial at a
    stage's boundary at the latest."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.timings: dict[str, float] = {}
        """Stage -> seconds; insertion order is the order the stages ran."""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Run one stage: announced, timed, checked for a stop request before and after."""
        raise_if_stopped()
        self.log(f"[{name}] ...")
        stage_started(name)
        start = time.perf_counter()
        yield
        raise_if_stopped()
        self.timings[name] = round(time.perf_counter() - start, 3)
        self.log(f"[{name}] done in {self.timings[name]:.1f} s")

    def reused(self, name: str) -> None:
        """Record `name` as done by reusing a stored result (0 s, and not an executed stage)."""
        self.timings[name] = 0.0

    def move(self, seconds: float, source: str, target: str) -> None:
        """Count `seconds` of stage `source`'s time as stage `target`'s (work done inside one
        stage on behalf of another)."""
        self.timings[source] = round(self.timings[source] - seconds, 3)
        self.timings[target] = round(self.timings.get(target, 0.0) + seconds, 3)

    def executed(self) -> list[str]:
        """Stages that did work in this run (getting the checkpoint, or reusing a stored
        quantized checkpoint or bundle, is not one)."""
        return [
            name
            for name, seconds in self.timings.items()
            if name != "checkpoint" and not (name in ("quantize", "build") and seconds == 0.0)
        ]
