"""A real hub-protocol server on loopback for download tests: olah, serving plain git repos.

olah (run from its own virtualenv `.venv-olah`, made by `scripts/setup-olah`: its pins conflict
with aiperf's) answers the Hugging Face hub API from `<mirrors>/models/<org>/<name>` git repos
when `[accessibility] offline = true`. Weights are committed as Git LFS pointer text with their
bytes under `.git/lfs/objects/<2>/<2>/<sha256>`, the layout `git lfs` leaves (written directly:
no `git-lfs` binary needed). Plain blobs also work except binaries of 121-149 bytes: olah decodes
every blob of that size as UTF-8 to sniff for an LFS pointer and answers 500 when it cannot.

olah checks no tokens, so `AuthGate` stands in front of it for gated repositories: it answers
file downloads of one repo the way the hub does for a gated repo (401 without a token, 403 with a
wrong one, `X-Error-Code: GatedRepo`) and forwards everything else.

The server runs in a process session of its own and is always stopped as a whole group.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from safetensors.numpy import save as safetensors_bytes

from enginesweep.engines.processes import http_ok, stop_process_group, wait_ready
from enginesweep.engines.triton.server import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
OLAH_CLI = REPO_ROOT / ".venv-olah" / "bin" / "olah-cli"
READY_TIMEOUT_S = 30.0
# Headers the gate sets itself (or http.server does) rather than copying from olah.
_HOP_HEADERS = ("transfer-encoding", "connection", "content-length", "date", "server")
_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "enginesweep tests",
    "GIT_COMMITTER_NAME": "enginesweep tests",
    "GIT_AUTHOR_EMAIL": "tests@example.invalid",
    "GIT_COMMITTER_EMAIL": "tests@example.invalid",
}


def require_olah() -> Path:
    """The olah command; a missing install is an error with the fix, never a skip."""
    if not OLAH_CLI.exists():
        raise RuntimeError(
            f"{OLAH_CLI} is missing: run scripts/setup-olah (olah lives in its own "
            "virtualenv .venv-olah because its pins conflict with aiperf's)"
        )
    return OLAH_CLI


def tiny_safetensors(seed: int) -> bytes:
    """A valid safetensors file of two small tensors (a few hundred bytes)."""
    rng = np.random.default_rng(seed)
    return safetensors_bytes(
        {
            "embed.weight": rng.standard_normal((8, 4)).astype(np.float32),
            "norm.weight": np.ones(4, dtype=np.float32),
        }
    )


class MirrorRepo:
    """A git repository olah serves as the hub model `<org>/<name>`."""

    def __init__(self, mirrors: Path, repo_id: str) -> None:
        self.repo_id = repo_id
        self.path = mirrors / "models" / repo_id
        self.path.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        command = ["git", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false", *args]
        done = subprocess.run(
            command,
            cwd=self.path,
            env={**os.environ, **_GIT_IDENTITY},
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    def write(self, name: str, data: bytes | str | dict) -> None:
        """A plain file in the work tree (text or JSON)."""
        if isinstance(data, dict):
            data = json.dumps(data, indent=2) + "\n"
        target = self.path / name
        target.write_bytes(data.encode() if isinstance(data, str) else data)

    def write_lfs(self, name: str, data: bytes) -> None:
        """`data` as Git LFS stores it: pointer text in the tree, bytes under .git/lfs/objects."""
        oid = hashlib.sha256(data).hexdigest()
        obj = self.path / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
        obj.parent.mkdir(parents=True, exist_ok=True)
        obj.write_bytes(data)
        self.write(name, f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n")

    def commit(self, message: str) -> str:
        """Commit everything in the work tree; the new commit's full sha."""
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")


@dataclass
class OlahServer:
    """One olah process serving the git repos under `mirrors`, offline, on 127.0.0.1."""

    mirrors: Path
    workdir: Path
    probe_repo: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "olah.log"

    def write_config(self) -> Path:
        """olah's TOML config: loopback only, no upstream, repos served from `mirrors`."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "olah.toml"
        config.write_text(
            "[basic]\n"
            'host = "127.0.0.1"\n'
            f"port = {self.port}\n"
            f'mirror-netloc = "127.0.0.1:{self.port}"\n'
            f'mirror-lfs-netloc = "127.0.0.1:{self.port}"\n'
            f'repos-path = "{self.workdir / "repos"}"\n'
            f'mirrors-path = ["{self.mirrors}"]\n'
            "\n[accessibility]\n"
            "offline = true\n"
        )
        return config

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> OlahServer:
        command = [
            str(require_olah()),
            "--config",
            str(self.write_config()),
            "--log-path",
            str(self.workdir / "logs"),
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        # `/` answers before the mirror routes work; a repo's revision API is the real signal.
        probe = f"{self.url}/api/models/{self.probe_repo}/revision/main"
        assert self.process is not None
        wait_ready(
            self.process,
            lambda: http_ok(probe),
            timeout_s=timeout_s,
            what="olah",
            log_tail=lambda: self.log_path.read_text(errors="replace")[-3000:],
        )

    def stop(self) -> None:
        """Stop olah's whole process group. Idempotent."""
        process, self.process = self.process, None
        if process is not None:
            stop_process_group(process)

    def __enter__(self) -> OlahServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class AuthGate:
    """A loopback proxy to `upstream` that gates file downloads of `repo_id` behind `token`."""

    def __init__(self, upstream: str, repo_id: str, token: str) -> None:
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                gate.answer(self)

            def do_HEAD(self) -> None:
                gate.answer(self)

            def log_message(self, *args: object) -> None:
                """Keep the test output free of one line per request."""

        self.upstream = urllib.parse.urlsplit(upstream)
        self.gated_prefix = f"/{repo_id}/resolve/"
        self.repo_id = repo_id
        self.token = token
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, request: BaseHTTPRequestHandler) -> None:
        if request.path.startswith(self.gated_prefix):
            sent = request.headers.get("Authorization")
            if sent != f"Bearer {self.token}":
                status = 401 if sent is None else 403
                request.send_response(status)
                request.send_header("X-Error-Code", "GatedRepo")
                request.send_header("X-Error-Message", f"Access to model {self.repo_id} is restricted.")
                request.send_header("Content-Length", "0")
                request.end_headers()
                return
        upstream = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
            upstream.request(request.command, request.path, headers=headers)
            response = upstream.getresponse()
            body = response.read()
        finally:
            upstream.close()
        request.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() in _HOP_HEADERS:
                continue
            if name.lower() == "location":  # keep redirects on the gate
                value = value.replace(self.upstream.geturl(), self.url)
            request.send_header(name, value)
        length = response.getheader("Content-Length") if request.command == "HEAD" else None
        request.send_header("Content-Length", length or str(len(body)))
        request.end_headers()
        if request.command == "GET":
            request.wfile.write(body)

    def __enter__(self) -> AuthGate:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
