"""One GPU stack's server, owned from start to stop: launched in a session of its own (Triton's
launcher returns at once and mpirun's ranks leave its process group, but not its session),
polled until ready, proven to be the server that answers on the trial's port, and always torn
down whole, every process of that session found through /proc.

Shared by the `trtllm-engine` and `trtllm-pytorch` stacks (Triton's launch_triton_server.py or
`trtllm-serve`); the CPU reference stack has its own `engines.triton.server`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from enginesweep.engines.processes import foreign_listener, http_ok, reap_stale_session, session_pids
from enginesweep.engines.triton.server import free_port

READY_TIMEOUT_S = 1800.0  # large engines load for minutes


class StepFailed(RuntimeError):
    """A step of a GPU stack failed; `reason` is one line, the log is kept beside it."""

    def __init__(self, step: str, reason: str, log: Path):
        super().__init__(f"{step}: {reason} (log: {log})")
        self.step, self.reason, self.log = step, reason, log


def pick_ports(fixed: tuple[int, int, int] | None) -> tuple[int, int, int]:
    """`fixed` (tests), else three ports free on 127.0.0.1 now (HTTP, gRPC, metrics)."""
    return fixed or (free_port(), free_port(), free_port())


def tail_reason(log: Path, fallback: str) -> str:
    """The last error-looking line of `log` (else its last line, else `fallback`)."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "rror" in line or "Exception" in line or "assert" in line.lower()]
    return (errors or lines or [fallback])[-1][:500]


def session_alive(process: subprocess.Popen) -> bool:
    """True while anything of the session `process` leads runs (the launcher itself may exit)."""
    process.poll()
    return bool(session_pids(process.pid))


def wait_group_ready(
    process: subprocess.Popen,
    ready_url: str,
    log_path: Path,
    timeout_s: float = READY_TIMEOUT_S,
    server: str = "Triton",
) -> None:
    """Poll readiness while anything of the launcher's session lives (the launcher itself exits
    at once); raise with the log tail when the session dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if http_ok(ready_url):
            return
        if not session_alive(process) or process.returncode not in (None, 0):
            break
        time.sleep(0.5)
    raise StepFailed(
        "serve",
        f"{server} did not become ready at {ready_url}: " + tail_reason(log_path, "no output"),
        log_path,
    )


def kill_session(process: subprocess.Popen, grace_s: float = 40.0) -> None:
    """SIGTERM every process of the launcher's session (tritonserver takes up to 30 s to exit),
    SIGKILL what is left after `grace_s`, and wait until none is left."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        for pid in session_pids(process.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and session_alive(process):
            time.sleep(0.2)
        if not session_alive(process):
            break
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=1)


@contextlib.contextmanager
def owned_server(
    argv: Sequence[str],
    *,
    port: int,
    ready_path: str,
    workdir: Path,
    marker: str,
    server: str,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen]:
    """Run `argv` as a server in a session of its own and yield its process once
    `http://127.0.0.1:<port><ready_path>` answers and the socket listening on `port` belongs to
    that session; stop the whole session on the way out, whatever happened.

    What a SIGKILLed run left of an earlier server of this trial (`marker`: a path of the trial
    in its command line) is reaped first; a port already answering is refused before starting."""
    url = f"http://127.0.0.1:{port}"
    log_path = workdir / "server.log"
    reap_stale_session(workdir / "server.pid", marker, grace_s=40.0)
    if http_ok(url + ready_path):  # a leftover server would be benchmarked instead
        raise StepFailed("serve", f"a server already answers at {url}: stop it before this trial", log_path)
    workdir.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as sink:
        sink.write("$ " + " ".join(argv) + "\n")
        sink.flush()
        try:
            process = subprocess.Popen(
                list(argv), stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        except OSError as exc:  # the server program is not installed here
            raise StepFailed("serve", f"cannot start {argv[0]}: {exc}", log_path) from None
    (workdir / "server.pid").write_text(str(process.pid))  # the session id, for the reaper
    try:
        wait_group_ready(process, url + ready_path, log_path, server=server)
        # Ready is not enough: on a shared host another server may hold the port (a race for a
        # free port, a server started by hand) and would be benchmarked in this trial's name.
        foreign = foreign_listener(port, session=process.pid)
        if foreign is not None:
            raise StepFailed(
                "serve", f"the server answering at {url} is not this trial's: {foreign}", log_path
            )
        yield process
    finally:
        kill_session(process)
