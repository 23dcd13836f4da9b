"""What `enginesweep run` shows while a sweep runs: each trial's stage, elapsed times, an ETA.

`SweepProgress` listens to the events of `engines.progress` (the plan, each stage a trial
enters, each trial's end). On a terminal it draws a live table, refreshed twice a second; in a
log or a pipe (CI) it prints one plain line per event instead, with no carriage return and no
ANSI code, so the log reads line by line. It is a spectator: an error inside it is reported
once and the view goes quiet; the sweep never fails because of it.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from enginesweep.engines import progress
from enginesweep.engines.progress import ProgressEvent

_ERROR_CHARS = 120  # a trial's error in a progress line: the log and record keep the rest
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")  # newlines, \r, ESC: one line per event, no codes
_STATUS_STYLE = {"ok": "green", "reused": "cyan", "failed": "bold red", "running": "yellow"}


@dataclass
class _Trial:
    index: int  # 1-based, in plan order
    stage: str = ""
    stage_since: float | None = None
    started: float | None = None
    ended: float | None = None
    status: str = "waiting"  # waiting | running | ok | reused | failed
    error: str = ""

    @property
    def duration(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return max(0.0, self.ended - self.started)


def duration_text(seconds: float) -> str:
    """`m:ss`, or `h:mm:ss` from an hour on."""
    whole = max(0, int(round(seconds)))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _clean(text: str, limit: int | None = None) -> str:
    text = _CONTROL.sub(" ", text).strip()
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


class SweepProgress:
    """A progress sink for one sweep; use it as a context manager around the flow call, which
    installs it as the `engines.progress` sink (and starts the live table on a terminal).

    `clock` gives "now" for the live table's running times (tests pass a fake one); events
    carry their own times. `warn` reports the one error that silences the view."""

    def __init__(
        self,
        console: Console,
        *,
        clock: Callable[[], float] = time.time,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self._console = console
        self._clock = clock
        self._warn = warn or (lambda message: print(message, file=sys.stderr))
        self._lock = threading.Lock()  # events come from trial threads and child forwarders
        self._slugs: list[str] = []
        self._trials: dict[str, _Trial] = {}
        self._concurrency = 1
        self._live: Live | None = None
        self._broken = False
        self._previous: progress.Sink | None = None

    def __enter__(self) -> SweepProgress:
        self._previous = progress.use_sink(self)
        if self._console.is_terminal:
            try:
                self._live = Live(
                    console=self._console, refresh_per_second=2, get_renderable=self._renderable
                )
                self._live.start()
            except Exception as exc:
                self._give_up(exc)
        return self

    def __exit__(self, *exc_info: object) -> None:
        progress.use_sink(self._previous)
        self._stop_live()

    def __call__(self, event: ProgressEvent) -> None:
        """Take one event (the `engines.progress` sink); never raises."""
        if self._broken:
            return
        try:
            with self._lock:
                line = self._apply(event)
            if self._live is None and line:
                self._console.print(line, markup=False, highlight=False, soft_wrap=True)
        except Exception as exc:
            self._give_up(exc)

    def _give_up(self, exc: Exception) -> None:
        if self._broken:
            return
        self._broken = True
        self._stop_live()
        try:
            self._warn(
                f"warning: the sweep's progress view stopped ({type(exc).__name__}: {exc}); the sweep goes on"
            )
        except Exception:
            pass

    def _stop_live(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            try:
                live.stop()
            except Exception:
                pass

    def _trial(self, slug: str) -> _Trial:
        if slug not in self._trials:  # a trial the plan event did not name: shown all the same
            self._slugs.append(slug)
            self._trials[slug] = _Trial(index=len(self._slugs))
        return self._trials[slug]

    def _apply(self, event: ProgressEvent) -> str:
        """Update the state with `event`; return its plain line."""
        if event.kind == "planned":
            self._slugs = list(event.slugs)
            self._trials = {slug: _Trial(index=i) for i, slug in enumerate(self._slugs, 1)}
            self._concurrency = max(1, event.concurrency)
            return (
                f"[progress 0/{len(self._slugs)}] sweep: {len(self._slugs)} trials to run, "
                f"{self._concurrency} at a time"
            )
        trial = self._trial(event.slug)
        if event.kind == "stage":
            if trial.started is None:
                trial.started = event.time
            trial.stage, trial.stage_since, trial.status = event.stage, event.time, "running"
            what = f"{_clean(event.stage)} (elapsed {duration_text(event.time - trial.started)})"
        elif event.kind == "finished":
            trial.status, trial.error = event.status or "failed", _clean(event.error, _ERROR_CHARS)
            trial.ended = event.time
            took = f" after {duration_text(trial.duration)}" if trial.duration is not None else ""
            what = f"{_clean(trial.status)}{took}" + (f": {trial.error}" if trial.error else "")
        else:
            return ""  # an event kind this view does not know: nothing to say
        return f"[progress {trial.index}/{len(self._slugs)}] {_clean(event.slug)}: {what} | {self._footer()}"

    def _footer(self) -> str:
        done = sum(1 for t in self._trials.values() if t.status in ("ok", "reused"))
        failed = sum(1 for t in self._trials.values() if t.status == "failed")
        return f"done {done}, failed {failed}, {self._eta(len(self._slugs) - done - failed)}"

    def _eta(self, remaining: int) -> str:
        """Mean duration of the trials that ran (a reused one says nothing about the others)
        x trials left / trials at once."""
        if remaining <= 0:
            return "ETA 0:00"
        ran = [
            t.duration
            for t in self._trials.values()
            if t.duration is not None and t.status in ("ok", "failed")
        ]
        if not ran:
            return "ETA unknown"
        return f"ETA {duration_text(sum(ran) / len(ran) * remaining / self._concurrency)}"

    def _renderable(self) -> RenderableType:
        try:
            with self._lock:
                return self._table()
        except Exception as exc:
            self._broken = True
            return Text(f"progress view unavailable: {type(exc).__name__}")

    def _table(self) -> Table:
        now = self._clock()
        table = Table(
            "#",
            "trial",
            "stage",
            "in stage",
            "in trial",
            "status",
            title="sweep progress",
            caption=escape(self._footer()),
            title_justify="left",
        )
        for slug in self._slugs:
            trial = self._trials[slug]
            running = trial.status == "running"
            in_stage = duration_text(now - trial.stage_since) if running and trial.stage_since else ""
            if trial.duration is not None:
                in_trial = duration_text(trial.duration)
            else:
                in_trial = duration_text(now - trial.started) if trial.started is not None else ""
            status = Text(trial.status, style=_STATUS_STYLE.get(trial.status, ""))
            if trial.error:
                status.append(f" {_clean(trial.error, 60)}")
            table.add_row(str(trial.index), Text(slug), Text(trial.stage or "-"), in_stage, in_trial, status)
        return table
