"""GPU trials run concurrently without sharing a GPU, through the real runners: `enginesweep run`
(the Prefect flow, the GPU-slot allocator, a process per trial) on three PP2 trials of the
trtllm-pytorch stack and four declared GPUs (`execution.gpus`), with `local` threads and with a
local Dask cluster (prefect-dask). Nothing here has a GPU: the witness is the stand-in
`trtllm-serve` (tests/fixtures/trtllm_standins, NOT NVIDIA's code), which logs the
`CUDA_VISIBLE_DEVICES` it was started with and when it started and stopped. Each trial is
benchmarked by the real aiperf. The tiny Llama has 3 KV heads, so width 2 comes from PP=2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = Path(sys.executable).parent / "enginesweep"
STANDINS = Path(__file__).parents[1] / "fixtures" / "trtllm_standins"


def _environment(tmp_path: Path) -> dict[str, str]:
    """`trtllm-serve` and an H100 `nvidia-smi` on PATH, the stand-in `tensorrt_llm` importable."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    serve = bin_dir / "trtllm-serve"
    serve.write_text(f'#!/bin/sh\nexec python3 {STANDINS / "trtllm_serve.py"} "$@"\n')
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 9.0'\n")
    for tool in (serve, smi):
        tool.chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(STANDINS / "pylib"), os.environ.get("PYTHONPATH")])),
        "STANDIN_GPU_LOG": str(tmp_path / "gpu_events.jsonl"),
        "ENGINESWEEP_GPU_LOCK_DIR": str(tmp_path / "gpu_locks"),
        "TRTLLM_ROOT": str(tmp_path / "trtllm"),
    }


def _spec(tmp_path: Path, model_dir: Path, runner: str) -> Path:
    spec = {
        "name": f"gpu-concurrency-{runner}",
        "model": {"path": str(model_dir), "name": "tiny"},
        "stack": "trtllm-pytorch",
        "target": {"gpu": "H100-SXM-80GB", "gpus_available": 4},
        "axes": {
            "quant": ["bf16"],
            "kv_cache": ["auto"],
            "tp": [1],
            "pp": [2],
            "max_batch_size": [1, 2, 4],  # three trials: two at a time, one waiting
            "max_num_tokens": [512],
            "max_seq_len": [256],
        },
        "workload": {"isl": {"mean": 32}, "osl": {"mean": 8}, "concurrency": [2], "request_count": 6},
        "accuracy": {"tasks": []},
        "execution": {"runner": runner, "gpus": [0, 1, 2, 3], "pytorch_server": "trtllm-serve"},
        "workspace": str(tmp_path / "ws"),
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _intervals(events_path: Path) -> list[tuple[float, float, frozenset[int]]]:
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    starts = {e["pid"]: e for e in events if e["event"] == "start"}
    stops = {e["pid"]: e for e in events if e["event"] == "stop"}
    assert starts.keys() == stops.keys(), "a server was never stopped"
    return [
        (starts[pid]["t"], stops[pid]["t"], frozenset(int(g) for g in starts[pid]["gpus"].split(",")))
        for pid in starts
    ]


def _left_behind(marker: str, wait_s: float = 15.0) -> list[str]:
    """Live processes whose environment names `marker`, after up to `wait_s` for them to exit."""
    deadline = time.monotonic() + wait_s
    while True:
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                if marker.encode() in (proc / "environ").read_bytes():
                    found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200])
            except OSError:
                continue
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


@pytest.mark.parametrize("runner", ["local", "dask"])
def test_three_pp2_trials_on_four_gpus_never_share_a_gpu(tmp_path, tiny_llama_dir, runner):
    env = _environment(tmp_path)
    _spec(tmp_path, tiny_llama_dir, runner)  # run by a relative path: trial processes must find it
    log = tmp_path / "run.log"
    with log.open("w") as sink:  # a file, not a pipe: a process left behind cannot hang the test
        code = subprocess.run(
            [str(SCRIPT), "run", "spec.yaml"],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=900,
            check=False,
        ).returncode
    output = log.read_text()
    assert code == 0, output[-6000:]
    if runner == "dask":  # the trials' tasks ran on the cluster prefect-dask started
        assert "Creating a new Dask cluster" in output
        # ... and its scheduler held them back (the `GPU` resource): none had to wait for GPUs
        # in the allocator, as the local runner's threads do.
        assert "free GPUs of" not in output
    else:
        assert "waits for 2 free GPUs of [0, 1, 2, 3]" in output
    # Nothing the sweep started outlives it: Dask's workers, Prefect's API server(s), the trial
    # processes and their servers all carry the test's environment.
    assert _left_behind(str(tmp_path)) == [], "processes left behind"

    intervals = _intervals(tmp_path / "gpu_events.jsonl")
    assert len(intervals) == 3
    assert all(len(gpus) == 2 and gpus <= {0, 1, 2, 3} for _, _, gpus in intervals)
    # At every server start: who else is serving then. Never more than two trials at once,
    # never one GPU in two of them; and two at once did happen (the GPUs were shared out).
    most = 0
    for start, _, gpus in intervals:
        running = [other for other in intervals if other[0] <= start < other[1]]
        most = max(most, len(running))
        assert len(running) <= 2, running
        for other in running:
            if other[2] is not gpus:
                assert not other[2] & gpus, f"GPUs {sorted(other[2] & gpus)} lent twice at once"
    assert most == 2, "the trials ran one at a time: four GPUs hold two PP2 trials"

    records = [json.loads(p.read_text()) for p in (tmp_path / "ws" / "sweeps").glob("*/*/record.json")]
    assert len(records) == 3 and all(r["status"] == "ok" for r in records)
    assert sorted(sorted(r["gpu_devices"]) for r in records) == sorted(sorted(g) for *_, g in intervals)


def test_sigterm_stops_running_and_waiting_trials_and_frees_every_gpu(tmp_path, tiny_llama_dir):
    """SIGTERM while two trials serve and the third waits for GPUs: the two stop (their servers
    too) and record why, the waiting one never starts, nothing is left running, and every GPU is
    free."""
    import signal

    from enginesweep.engines.gpu_slots import GpuSlots

    env = _environment(tmp_path)
    _spec(tmp_path, tiny_llama_dir, "local")
    events = tmp_path / "gpu_events.jsonl"
    with (tmp_path / "run.log").open("w") as sink:
        sweep = subprocess.Popen(
            [str(SCRIPT), "run", "spec.yaml", "--set", "workload.request_count=400"],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and sweep.poll() is None:
                if events.is_file() and len(events.read_text().splitlines()) >= 2:
                    break
                time.sleep(0.5)
            time.sleep(2)  # benchmarking now (400 requests take far longer than this)
            sweep.send_signal(signal.SIGTERM)
            code = sweep.wait(timeout=300)
        finally:
            sweep.kill()
            sweep.wait()
    output = (tmp_path / "run.log").read_text()
    assert code == 130, output[-4000:]
    intervals = _intervals(events)  # every started server was stopped
    assert len(intervals) == 2, "a trial started after the stop"
    records = [json.loads(p.read_text()) for p in (tmp_path / "ws" / "sweeps").glob("*/*/record.json")]
    assert len(records) == 2 and all(
        r["status"] == "failed" and "KeyboardInterrupt" in r["error"] for r in records
    )
    assert _left_behind(str(tmp_path)) == []
    slots = GpuSlots([0, 1, 2, 3], tmp_path / "gpu_locks")
    taken = slots._try_take(4)
    assert taken is not None, "a GPU is still held"
    taken[1].close()
