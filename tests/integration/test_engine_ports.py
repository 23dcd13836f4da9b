"""Engine trials on one host never benchmark each other's server: each takes free ports of its
own (never 8000), and after readiness the trial proves the socket answering on its port belongs
to its own server session, else it fails naming who holds the port. Stand-ins for TensorRT-LLM's
tools and Triton (tests/fixtures/trtllm_standins: NOT NVIDIA's code); the load is the real
aiperf's."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path, PurePosixPath

import pytest
import yaml

from enginesweep.build_configs.quant import KVCacheFormat, QuantFormat
from enginesweep.build_configs.schema import Build
from enginesweep.engines.processes import foreign_listener, session_pids
from enginesweep.engines.quantize.recipes import QuantRecipe
from enginesweep.engines.stacks import BuildKnobs
from enginesweep.engines.stacks.gpu_server import StepFailed
from enginesweep.engines.stacks.trtllm_engine import TrtllmEngineStack
from enginesweep.engines.triton.server import free_port
from testkit.standin_layouts import STANDINS, build_layout

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = Path(sys.executable).parent / "enginesweep"


def test_a_listener_is_told_apart_by_its_session():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert foreign_listener(port, session=os.getsid(0)) is None
        other = foreign_listener(port, session=os.getsid(0) + 1)
        assert (
            other is not None
            and f"pid {os.getpid()}" in other
            and "outside the trial's server session" in other
        )
    assert "no process of this user listens on port" in foreign_listener(port, session=os.getsid(0))


def test_two_engine_trials_at_once_each_benchmark_their_own_server(tmp_path, tiny_llama_dir):
    """`enginesweep run` with two engine trials on two (fake) GPUs: they serve at once, on ports
    of their own, and each server answered exactly the requests its own trial's aiperf sent."""
    layout = build_layout(tmp_path, "tritonserver")
    env = layout.environment()
    env.update(
        {
            "PYTHONPATH": str(STANDINS / "pylib"),
            "STANDIN_GPU_LOG": str(tmp_path / "events.jsonl"),
            "ENGINESWEEP_GPU_LOCK_DIR": str(tmp_path / "gpu_locks"),
        }
    )
    spec = {
        "name": "two-engines",
        "model": {"path": str(tiny_llama_dir), "name": "tiny"},
        "stack": "trtllm-engine",
        "target": {"gpu": "H100-SXM-80GB", "gpus_available": 2},
        "axes": {
            "quant": ["fp8"],
            "kv_cache": ["auto"],
            "tp": [1],
            "max_batch_size": [2, 4],
            "max_num_tokens": [256],
            "max_seq_len": [256],
        },
        "build": {"calib_size": 2, "calib_max_seq_length": 32},
        "workload": {"isl": {"mean": 16}, "osl": {"mean": 8}, "concurrency": [2], "request_count": 40},
        "accuracy": {"tasks": []},
        "execution": {"gpus": [0, 1], "trtllm_root": str(layout.root)},
        "workspace": str(tmp_path / "ws"),
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    with (tmp_path / "run.log").open("w") as sink:
        code = subprocess.run(
            [str(SCRIPT), "run", "spec.yaml"],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=900,
            check=False,
        ).returncode
    assert code == 0, (tmp_path / "run.log").read_text()[-6000:]
    trials = sorted((tmp_path / "ws" / "sweeps" / "two-engines").glob("tiny__*"))
    assert len(trials) == 2
    ports = []
    for trial in trials:
        server_log = (trial / "server" / "server.log").read_text()
        port = int(re.search(r"--http_port (\d+)", server_log).group(1))
        ports.append(port)
        sent = sum(
            1
            for path in (trial / "benchmark").rglob("profile_export.jsonl")
            for line in path.read_text().splitlines()
            if line.strip()
        )
        answered = server_log.count("generate model=ensemble")
        # Plus the warm-up at server start: one wave of the workload's concurrency (2).
        assert sent >= 40 and answered == sent + 2, (trial.name, sent, answered)
        assert json.loads((trial / "record.json").read_text())["status"] == "ok"
    assert len(set(ports)) == 2 and 8000 not in ports
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    starts = {e["pid"]: e for e in events if e["event"] == "start"}
    stops = {e["pid"]: e for e in events if e["event"] == "stop"}
    (a, b) = starts
    assert starts[a]["t"] < stops[b]["t"] and starts[b]["t"] < stops[a]["t"], "the two never served at once"
    assert {starts[a]["gpus"], starts[b]["gpus"]} == {"0", "1"}
    assert sorted(e["port"] for e in starts.values()) == sorted(ports)


def test_a_server_that_is_not_the_trials_own_fails_the_trial(tmp_path, monkeypatch):
    """The trial's launcher starts a server that never binds, and another session's server
    comes up on the trial's port meanwhile: readiness alone would pass; the trial fails instead,
    naming the process that holds the port, and stops its own session (not the stranger)."""
    layout = build_layout(tmp_path, "checkout")
    layout.apply(monkeypatch)
    ports = (free_port(), free_port(), free_port())
    stack = TrtllmEngineStack(
        version="1.2.0rc8", trtllm_root=str(layout.root), build=Build(calib_size=2), ports=ports
    )
    sleeper = tmp_path / "silent-tritonserver"
    sleeper.write_text("#!/bin/sh\nexec sleep 300\n")
    sleeper.chmod(0o755)
    stack.layout = replace(
        stack.layout, tools=replace(stack.layout.tools, tritonserver=PurePosixPath(sleeper))
    )
    recipe = QuantRecipe(quant=QuantFormat.BF16, kv_cache=KVCacheFormat.AUTO)
    quantized = stack.quantize(
        tmp_path / "hf", recipe, tmp_path / "q", key="k", calibration_texts=[], log=lambda _: None
    )
    build = stack.build(
        quantized,
        BuildKnobs(max_batch_size=2, max_num_tokens=64, max_seq_len=64),
        tmp_path / "bundle",
        slug="t",
        checkpoint={},
        target={},
    )
    repo = stack.write_model_repository(build, tmp_path / "repo")
    stranger: list[subprocess.Popen] = []

    def squat() -> None:  # after the trial's check that the port is free, before it is ready
        time.sleep(2.0)
        stranger.append(
            subprocess.Popen(
                [sys.executable, "-c", _ANSWER_EVERYTHING, str(ports[0])], start_new_session=True
            )
        )

    thread = threading.Thread(target=squat)
    thread.start()
    try:
        with (
            pytest.raises(
                StepFailed,
                match=rf"is not this trial's: port {ports[0]} is held by pid "
                rf"\d+ .*outside the trial's server session",
            ),
            stack.server(repo, tmp_path / "server"),
        ):
            pytest.fail("the stranger's server was taken for the trial's")
        thread.join()
        launcher = int((tmp_path / "server" / "server.pid").read_text())
        assert session_pids(launcher) == []  # the trial's own session is gone
        assert stranger[0].poll() is None  # the stranger's server is not the trial's to stop
    finally:
        thread.join()
        for process in stranger:
            process.kill()
            process.wait()


_ANSWER_EVERYTHING = """
import http.server, sys
class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        return  # no access log
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Ok).serve_forever()
"""
