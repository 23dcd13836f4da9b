"""The real tritonserver serving a quantized tiny Llama through the reference repository."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import urllib.error
import urllib.request

import pytest

from enginesweep.engines import processes, textdata
from enginesweep.engines.quantize.modelopt_cpu import quantize_checkpoint
from enginesweep.engines.quantize.recipes import CalibrationSpec, QuantRecipe
from enginesweep.engines.triton import server as server_module
from enginesweep.engines.triton.repository import SERVED_MODEL, write_reference_repository
from enginesweep.engines.triton.server import ServerError, TritonServer

pytestmark = pytest.mark.integration


def post(url: str, body: dict) -> tuple[int, str]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def events(body: str) -> list[dict]:
    return [json.loads(line[len("data: ") :]) for line in body.splitlines() if line.startswith("data: ")]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_llama_dir, corpus):
    root = tmp_path_factory.mktemp("serve")
    texts = textdata.calibration_texts(corpus, 2, passage_chars=300)
    recipe = QuantRecipe(
        quant="fp8",
        kv_cache="int8",
        calibration=CalibrationSpec(
            dataset="plays", sha256=textdata.text_sha256("".join(texts)), samples=2, seq_len=64
        ),
    )
    quantize_checkpoint(
        tiny_llama_dir, recipe, root / "q", key="k", calibration_texts=texts, log=lambda line: None
    )
    repo = write_reference_repository(root / "repo", root / "q" / "model", max_batch_size=2, max_seq_len=64)
    with TritonServer(repo, root / "work", models=(SERVED_MODEL,)) as running:
        yield running
    assert running.process is None


def test_streams_text_output_deltas(server):
    status, body = post(
        f"{server.url}/v2/models/{SERVED_MODEL}/generate_stream",
        {"text_input": "To be, or not to be", "max_tokens": 12, "min_tokens": 12, "stream": True},
    )
    assert status == 200
    chunks = events(body)
    assert len(chunks) >= 2 and all("error" not in c for c in chunks), chunks
    assert all(c["model_name"] == SERVED_MODEL for c in chunks)
    assert len("".join(c["text_output"] for c in chunks)) > 0


def test_non_streaming_request_gets_one_answer(server):
    status, body = post(
        f"{server.url}/v2/models/{SERVED_MODEL}/generate_stream",
        {"text_input": "Hello", "max_tokens": 4, "min_tokens": 4},
    )
    chunks = events(body)
    assert status == 200 and len(chunks) == 1 and "text_output" in chunks[0], chunks


def test_max_seq_len_is_enforced_with_a_clear_error(server):
    _, body = post(
        f"{server.url}/v2/models/{SERVED_MODEL}/generate_stream",
        {"text_input": "word " * 40, "max_tokens": 60, "stream": True},
    )
    assert "exceed max_seq_len 64" in body


def test_missing_required_field_is_an_error_not_a_hang(server):
    status, body = post(f"{server.url}/v2/models/{SERVED_MODEL}/generate_stream", {"text_input": "x"})
    assert status != 200 or "error" in body


def test_server_binds_loopback_only(server):
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            listening += [line.split()[1] for line in rows.readlines()[1:] if line.split()[3] == "0A"]
    ports = {server.http_port, server.grpc_port, server.metrics_port}
    ours = [address for address in listening if int(address.split(":")[1], 16) in ports]
    assert len(ours) == 3, ours
    # 127.0.0.1, as IPv4 or as the IPv4-mapped IPv6 address gRPC uses
    assert all(address.split(":")[0] in ("0100007F", "0000000000000000FFFF00000100007F") for address in ours)


def test_a_model_that_cannot_load_fails_start_with_its_error(tmp_path):
    repo = write_reference_repository(tmp_path / "repo", tmp_path / "no-such-model")
    server = TritonServer(repo, tmp_path / "work", models=(SERVED_MODEL,))
    with pytest.raises(ServerError, match="no-such-model"):
        server.start(timeout_s=120)
    assert server.process is None
    pid = int((tmp_path / "work" / "server.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_a_busy_port_moves_the_server_to_fresh_ports(tmp_path):
    (tmp_path / "repo").mkdir()
    with contextlib.closing(_listening()) as held:
        busy = held.getsockname()[1]
        with TritonServer(tmp_path / "repo", tmp_path / "work", http_port=busy) as running:
            assert running.http_port != busy
            assert processes.http_ok(running.url + "/v2/health/ready")
    log = (tmp_path / "work" / "server.log").read_text()
    assert f"port {busy} is in use: starting again on fresh ports" in log


def test_ports_busy_on_every_try_fail_naming_the_port(tmp_path, monkeypatch):
    (tmp_path / "repo").mkdir()
    held = [_listening() for _ in range(3 * server_module.PORT_ATTEMPTS)]
    ports = iter(sock.getsockname()[1] for sock in held)
    monkeypatch.setattr(server_module, "free_port", lambda: next(ports))
    try:
        server = TritonServer(
            tmp_path / "repo",
            tmp_path / "work",
            http_port=next(ports),
            grpc_port=next(ports),
            metrics_port=next(ports),
        )
        with pytest.raises(
            ServerError,
            match=r"port \d+ on 127.0.0.1 was in use by another process on "
            rf"each of {server_module.PORT_ATTEMPTS} tries",
        ):
            server.start(timeout_s=60)
        assert server.process is None
    finally:
        for sock in held:
            sock.close()
