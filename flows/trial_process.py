"""One trial in a process of its own, on the GPUs lent to it.

A GPU trial runs in a child process (`python -m flows.trial_process`) whose environment sets
`CUDA_VISIBLE_DEVICES` to its lease: everything the trial does on a GPU (ModelOpt calibration
in-process, the server, the accuracy run) then sees only its GPUs, and CUDA memory is never
shared between trials in one process. The child inherits the lease's lock descriptors, so the
GPUs stay held until it has exited, even if the sweep dies first; it gets SIGTERM from the kernel
then (PR_SET_PDEATHSIG), stops its server and records why it stopped.

The job travels on the child's stdin as JSON; its log lines come back on stdout and its record
in a result file (a reused record is not saved to `record.json` again, so the file is the only
faithful answer).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from enginesweep.engines import progress
from enginesweep.engines.gpu_slots import Lease
from enginesweep.engines.interrupts import stop_requested
from enginesweep.engines.processes import kill_with_parent
from enginesweep.evaluation.records import TrialRecord

STOP_GRACE_S = 120.0
"""How long a stopped trial may take to stop its server and save its record before SIGKILL."""


class TrialProcessFailed(RuntimeError):
    """The trial's process ended without a record (it died before run_trial could write one)."""


class TrialJob(BaseModel):
    """What the child needs to run one trial of a sweep exactly as the sweep planned it."""

    model_config = ConfigDict(extra="forbid")

    spec: dict  # the validated spec, its workspace absolute (the file may change meanwhile)
    source: str
    cwd: str  # the sweep's working directory: relative paths in the spec mean the same here
    slug: str
    checkpoint_dir: str
    checkpoint: dict
    planned: dict
    reuse: bool
    rebenchmark: bool
    result_path: str
    stop_file: str  # appears when the sweep stops: how a stop reaches a trial on a Dask worker


def run_trial_process(job: TrialJob, lease: Lease | None, log: Callable[[str], None]) -> TrialRecord:
    """Run `job` in a child process on `lease`'s GPUs and return its record. A failed trial's
    record says why (status failed); a stop request (SIGTERM, Ctrl-C) is passed on to the child,
    waited for, and raised here as KeyboardInterrupt."""
    result = Path(job.result_path)
    result.parent.mkdir(parents=True, exist_ok=True)
    result.unlink(missing_ok=True)
    env = dict(os.environ)
    if lease is not None:
        env["CUDA_VISIBLE_DEVICES"] = lease.visible
        env["ENGINESWEEP_GPU_LEASE"] = lease.visible  # in the record, for the user to see
    if not Path(job.cwd).is_dir():
        raise TrialProcessFailed(
            f"the sweep's working directory {job.cwd} does not exist on this "
            "machine: run Dask workers where the sweep's paths resolve"
        )
    # A session of its own: Ctrl-C's SIGINT to the terminal's process group reaches only the
    # sweep, which passes the stop on once (a second signal would land in the trial's cleanup).
    process = subprocess.Popen(
        [sys.executable, "-m", "enginesweep.flows.trial_process"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        pass_fds=lease.fds if lease else (),
        cwd=job.cwd,
        start_new_session=True,
        preexec_fn=kill_with_parent(signal.SIGTERM),
    )
    reader = threading.Thread(target=_forward, args=(process, log), daemon=True)
    reader.start()
    stop_file = Path(job.stop_file)
    try:
        try:
            process.stdin.write(job.model_dump_json())
            process.stdin.close()
        except BrokenPipeError:
            pass  # it died at start: its output says why, and there is no result below
        while process.poll() is None:
            if stop_requested() or stop_file.exists():
                raise KeyboardInterrupt("stop requested")
            time.sleep(0.2)
    except BaseException:
        _stop(process)
        reader.join(timeout=5)
        raise
    reader.join(timeout=30)
    if result.is_file():
        try:
            return TrialRecord.model_validate_json(result.read_text())
        except ValueError as exc:
            raise TrialProcessFailed(f"its result file is unreadable: {exc}") from None
        finally:
            result.unlink(missing_ok=True)
    raise TrialProcessFailed(
        f"its process exited with {process.returncode} and left no record (see the trial's log above)"
    )


def _forward(process: subprocess.Popen, log: Callable[[str], None]) -> None:
    for line in process.stdout:
        line = line.rstrip("\n")
        event = progress.from_line(line)
        if event is None:
            log(line)
        else:  # the child's progress: to this process's listener (if any), not into the log
            progress.emit(event)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM (the child unwinds: server stopped, record saved), then SIGKILL after the grace."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _first_stop_only(signum: int, frame: object) -> None:
    """Unwind like Ctrl-C on the first SIGTERM; ignore later ones, which would otherwise land in
    the cleanup the first one started (stopping the server, saving the record)."""
    from enginesweep.flows.cli_common import raise_interrupt

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise_interrupt(signum, frame)


def main() -> int:
    """The child: read the job, run the trial, write the record to the result file."""
    signal.signal(signal.SIGTERM, _first_stop_only)  # the parent's stop, or its death
    job = TrialJob.model_validate_json(sys.stdin.read())
    from enginesweep.build_configs.loading import validate_data
    from enginesweep.evaluation.planning import PlannedTrial
    from enginesweep.flows.trial import run_trial

    def log(line: str) -> None:
        try:
            print(line, flush=True)
        except BrokenPipeError:  # the sweep is gone: the trial still stops cleanly and records
            pass

    # Progress events travel to the parent on the same stdout, one marked line each.
    progress.use_sink(lambda event: log(progress.to_line(event)))
    started = time.time()
    resolved = validate_data(job.spec, job.source)
    trial_dir = resolved.spec.workspace.resolve() / "sweeps" / resolved.spec.name / job.slug
    lease = os.environ.get("ENGINESWEEP_GPU_LEASE")
    try:
        record = run_trial(
            resolved,
            job.slug,
            log=log,
            checkpoint=(Path(job.checkpoint_dir), job.checkpoint),
            planned=PlannedTrial.model_validate(job.planned),
            reuse=job.reuse,
            rebenchmark=job.rebenchmark,
        )
        code = 0
    except BaseException as exc:
        log(f"trial {job.slug} failed: {type(exc).__name__}: {exc}")
        saved = trial_dir / "record.json"
        if not saved.is_file() or saved.stat().st_mtime < started:
            raise  # it failed before recording anything: an older record is not this run's answer
        record = TrialRecord.load(saved)
        code = 130 if isinstance(exc, KeyboardInterrupt) else 1
    if lease is not None and (record.executed_stages or record.status != "ok"):
        # What this run measured (a record reused unchanged keeps the GPUs it was measured on).
        record = record.model_copy(update={"gpu_devices": [int(d) for d in lease.split(",")]})
        record.save(trial_dir / "record.json")
    Path(job.result_path).write_text(json.dumps(record.model_dump(mode="json")))
    return code


if __name__ == "__main__":
    sys.exit(main())
