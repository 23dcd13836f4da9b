"""Planning a hub repo that has no shipped architecture reads the hub's config.json alone.

The hub is not reachable here, so a small HTTP server on 127.0.0.1 answers the two requests the
real `huggingface_hub` client makes for one file (HEAD then GET of `/<repo>/resolve/<rev>/<file>`,
with the commit and etag headers the hub sends). Full download tests against a hub mirror (olah)
belong to the checkpoint-fetch stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent.parent / "fixtures"
CONFIG = (FIXTURES / "llama-2-7b-config.json").read_bytes()
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class _Hub(BaseHTTPRequestHandler):
    requests: list[str] = []

    def _answer(self, body: bool) -> None:
        type(self).requests.append(f"{self.command} {self.path}")
        if self.path != "/acme/llama-2-7b-copy/resolve/main/config.json":
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(CONFIG)))
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha1(CONFIG).hexdigest()}"')
        self.end_headers()
        if body:
            self.wfile.write(CONFIG)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def log_message(self, *args) -> None:
        """Keep the test output free of one line per request."""


@pytest.fixture
def hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hub.requests = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _validate(tmp_path: Path, endpoint: str, repo_id: str) -> subprocess.CompletedProcess:
    spec = {
        "name": "hub-config",
        "model": {"repo_id": repo_id},
        "stack": "trtllm-engine",
        "target": {"gpu": "H100-SXM-80GB"},
        "axes": {"quant": ["fp8"]},
        "workload": {"isl": {"mean": 512}, "osl": {"mean": 128}},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)
    script = Path(sys.executable).parent / "enginesweep"
    return subprocess.run(
        [str(script), "plan", str(path), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_repo_without_shipped_architecture_reads_only_config_json(tmp_path, hub):
    done = _validate(tmp_path, hub, "acme/llama-2-7b-copy")
    assert done.returncode == 0, done.stderr
    trial = json.loads(done.stdout)["trials"][0]
    assert trial["model"] == "llama-2-7b-copy"
    assert trial["memory"]["kv_bytes_per_token"] == 2 * 32 * 32 * 128 * 2  # MHA: 32 KV heads
    # Only config.json is fetched. (huggingface_hub >= 2.4 also GETs /api/agent-harnesses from the
    # same endpoint once a day for its request headers; that carries no model data.)
    files = [r for r in _Hub.requests if "/resolve/" in r]
    assert files == [
        "HEAD /acme/llama-2-7b-copy/resolve/main/config.json",
        "GET /acme/llama-2-7b-copy/resolve/main/config.json",
    ]


def test_unknown_repo_is_a_spec_error_naming_repo_id(tmp_path, hub):
    done = _validate(tmp_path, hub, "acme/missing")
    assert done.returncode == 2
    assert "model.repo_id: could not read config.json of acme/missing@main from the hub" in done.stderr
    assert "set model.architecture" in done.stderr


def test_shipped_repo_ids_never_touch_the_network(tmp_path, hub):
    done = _validate(tmp_path, hub, "meta-llama/Llama-3.1-8B-Instruct")
    assert done.returncode == 0, done.stderr
    assert _Hub.requests == []
