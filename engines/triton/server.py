"""Start, health-check and always stop a real `tritonserver` process.

On the reference stack the binary is the one bundled in `nvidia-pytriton` (Triton 2.51 with the
Python backend). Facts this module handles (see shared/reference/cpu-stack-notes.md):

* The Python backend's stub embeds libpython and must load the running interpreter's library:
  `LD_LIBRARY_PATH` gets this interpreter's LIBDIR.
* The stub builds `sys.path` from the first `python3` on `PATH`; with the base interpreter first
  it imports the base site-packages (another numpy) and crashes on string tensors. `PATH` starts
  with this environment's `bin/` so the stub runs inside the project's environment.
* PyTriton keeps the stub outside the backend folder; a backend folder is assembled from links.
* Its embedded Python keeps the ASCII C locale whatever the environment says: a model sets
  LC_CTYPE itself before importing torch (see reference_model.py).
* Every port binds 127.0.0.1 (gRPC and metrics default to 0.0.0.0 otherwise).
* SIGTERM stops it (SIGINT is ignored in the background); after a grace period, SIGKILL.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from importlib import util
from pathlib import Path

from enginesweep.engines.endpoints import Endpoint, triton_endpoint
from enginesweep.engines.processes import (
    STOP_GRACE_S,
    http_ok,
    kill_with_parent,
    reap_stale_session,
    stop_process_group,
    wait_ready,
)

READY_TIMEOUT_S = 120.0
PORT_ATTEMPTS = 3  # a port found free can be taken by another process before tritonserver binds it
_BUSY = re.compile(r"Socket '[^']*:(\d+)' already in use")


class ServerError(RuntimeError):
    """The server could not start or become ready; the message carries the log tail."""


def pytriton_dir() -> Path:
    """The folder of the installed `pytriton` package (which bundles tritonserver)."""
    spec = util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError(
            "nvidia-pytriton is not installed: it provides the tritonserver binary "
            "(pip install 'enginesweep[reference]')"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "tritonserver"


def backend_dir(workdir: Path) -> Path:
    """A Triton backend folder whose python backend has the stub for this interpreter."""
    source = pytriton_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = source / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise ServerError(f"nvidia-pytriton ships no Python backend stub for Python {version}")
    target = workdir / "backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    for item in [*(source / "backends" / "python").iterdir(), stub]:
        link = target / item.name
        if not link.exists():
            link.symlink_to(item)
    return target.parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_environment() -> dict[str, str]:
    """The environment the Python backend stub needs to run inside this interpreter's env."""
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    return env


@dataclass
class TritonServer:
    """One tritonserver process serving `model_repository`. Use as a context manager."""

    model_repository: Path
    workdir: Path
    models: tuple[str, ...] = ()
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    # What a trial's benchmark reads of its server (`engines.stacks.base.Server`).
    metrics_url = None
    """No KV-cache metrics to sample: the reference model is a Python backend, not TensorRT-LLM's."""

    @property
    def model(self) -> str:
        """The model clients call: the first of `models`."""
        return self.models[0]

    @property
    def endpoint(self) -> Endpoint:
        """TensorRT-LLM's `generate_stream` contract, which the reference model speaks."""
        return triton_endpoint(self.model)

    def command(self) -> list[str]:
        """The exact command line (every address on loopback)."""
        return [
            str(pytriton_dir() / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backend_dir(self.workdir)}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--exit-timeout-secs=5",
            "--log-verbose=0",
        ]

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> TritonServer:
        """Start the server and wait until it and every model in `models` are ready. When one of
        its ports turns out to be taken (another process bound it after it was picked), start
        again on fresh ports, up to PORT_ATTEMPTS times."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        # A server (or its Python-backend stubs) left by a run that was SIGKILLed here.
        reap_stale_session(self.workdir / "server.pid", str(self.model_repository))
        attempt = 1
        while True:
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            try:
                self._launch()
                self._wait_ready(timeout_s)
                return self
            except ServerError as exc:
                self.stop()
                busy = self._busy_port(offset)
                if busy is None:
                    raise
                if attempt == PORT_ATTEMPTS:
                    raise ServerError(
                        f"port {busy} on 127.0.0.1 was in use by another process on each "
                        f"of {PORT_ATTEMPTS} tries; free ports or stop what holds them "
                        f"(`ss -ltnp`): {exc}"
                    ) from None
                with self.log_path.open("a") as log:
                    log.write(f"[enginesweep] port {busy} is in use: starting again on fresh ports\n")
                self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
                attempt += 1
            except BaseException:
                self.stop()
                raise

    def _busy_port(self, offset: int) -> int | None:
        """The port this attempt's log says was already in use, if any."""
        with self.log_path.open("rb") as log:
            log.seek(offset)
            found = _BUSY.search(log.read().decode(errors="replace"))
        return int(found.group(1)) if found else None

    def _launch(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server_environment(),
                start_new_session=True,  # our Ctrl-C must not reach it before we stop it
                preexec_fn=kill_with_parent(),  # nor may it outlive us when we are SIGKILLed
            )
        (self.workdir / "server.pid").write_text(str(self.process.pid))

    def _wait_ready(self, timeout_s: float) -> None:
        paths = ["/v2/health/ready", *(f"/v2/models/{m}/ready" for m in self.models)]
        assert self.process is not None
        wait_ready(
            self.process,
            lambda: all(http_ok(self.url + path) for path in paths),
            timeout_s=timeout_s,
            what="tritonserver",
            log_tail=self.log_tail,
            error=ServerError,
        )

    def alive(self) -> bool:
        """True while the server process runs."""
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 10) -> str:
        """The server's error lines and last lines (for error messages)."""
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_bytes().decode(errors="replace").splitlines()
        errors = [line[:2000] for line in text if line.startswith("E")][-3:]
        return "\n".join([*errors, "...", *text[-lines:]] if errors else text[-lines:])

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the server's process group (its Python-backend stubs included), SIGKILL after
        `grace_s`. Idempotent."""
        process, self.process = self.process, None
        if process is not None:
            stop_process_group(process, grace_s)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
