"""A Prefect server of our own on 127.0.0.1, for `enginesweep schedule` without PREFECT_API_URL.

Prefect's ephemeral API (what `enginesweep run` uses) runs no scheduler service: a deployment
served against it never gets a scheduled run (Prefect's Runner warns "Cannot schedule flows on an
ephemeral server"). So the scheduler starts `prefect server start` itself: on a free loopback
port, with the workspace's Prefect home (the same sqlite database the ephemeral API uses, so
every flow run of the workspace is in one place), the UI off, in a session of its own. It is
started with PR_SET_PDEATHSIG (SIGTERM) so a SIGKILLed scheduler does not leave it running, and
stopped as a process group. Its start migrates the database, so it holds the same start lock as
`flows.prefect_env.start_ephemeral_api`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from enginesweep.engines.locks import key_lock
from enginesweep.engines.processes import http_ok, kill_with_parent, stop_process_group, wait_ready
from enginesweep.engines.triton.server import free_port

START_TIMEOUT_S = 180.0  # a first start creates and migrates the database; 2 busy cores are slow


class PrefectServerError(RuntimeError):
    """The server did not start (the message holds its log's tail)."""


class PrefectServer:
    """`prefect server start` on 127.0.0.1 with the Prefect home `home`; a context manager."""

    def __init__(self, home: Path, port: int | None = None) -> None:
        self.home = home
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> PrefectServer:
        """Start it and wait until its API answers; PrefectServerError with its log otherwise."""
        self.home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        env.pop("PREFECT_API_URL", None)  # the server serves the API; it is no client of one
        command = [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        with key_lock(
            self.home / ".ephemeral-start.lock", "another start of Prefect's API here", log=lambda _: None
        ):
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    command,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=kill_with_parent(signal.SIGTERM),
                )
            try:
                wait_ready(
                    self.process,
                    lambda: http_ok(f"{self.api_url}/health"),
                    timeout_s=timeout_s,
                    what=f"the Prefect server on port {self.port}",
                    error=PrefectServerError,
                    log_tail=lambda: self.log_path.read_text(errors="replace")[-3000:],
                )
            except BaseException:
                self.stop()
                raise
        return self

    def stop(self) -> None:
        """Stop its whole process group (SIGTERM, then SIGKILL). Idempotent."""
        process, self.process = self.process, None
        if process is not None:
            stop_process_group(process)

    def __enter__(self) -> PrefectServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
