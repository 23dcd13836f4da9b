"""The GPU stacks in each layout NVIDIA's images have, built as stand-in trees from the images'
documented file lists (`standin_layouts`: the tritonserver image, a source checkout, the
release image; the tools are stand-ins, NOT NVIDIA's code): `enginesweep doctor` reports the
layout's files found, a trial of each GPU stack runs through (`enginesweep trial`, a process of
its own, stand-in `tensorrt_llm` on PYTHONPATH) with the layout's paths in its commands, the
emitted scripts find the same files and run end to end, a layout missing one file fails before
any work naming it, and a trial with no network (`unshare -rn`) gets through quantization on
its local calibration folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from testkit.standin_layouts import SHAPES, STANDINS, build_layout

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = Path(sys.executable).parent / "enginesweep"
REPO = Path(__file__).resolve().parents[2]
TRITON = {"tritonserver": "triton", "checkout": "triton", "release": "trtllm-serve"}
"""The server each layout can run: the release image has no Triton."""
SHAPE_NAMES = {
    "tritonserver": "tritonserver image",
    "checkout": "source checkout",
    "release": "release image",
}


def _spec(
    tmp_path: Path,
    model: Path,
    shape: str,
    root: Path | None,
    stack: str,
    *,
    server: str | None = None,
    quant: str = "fp8",
) -> Path:
    server = server or TRITON[shape]
    execution = {"engine_server": server, "pytorch_server": server}
    if root is not None:
        execution["trtllm_root"] = str(root)
    spec = {
        "name": f"{shape}-{stack}",
        "model": {"path": str(model), "name": "tiny"},
        "stack": stack,
        "target": {"gpu": "H100-SXM-80GB"},
        "axes": {
            "quant": [quant],
            "kv_cache": ["auto"],
            "tp": [1],
            "max_batch_size": [4],
            "max_num_tokens": [256],
            "max_seq_len": [256],
        },
        "build": {"calib_size": 2, "calib_max_seq_length": 32, "awq_block_size": 64},
        "workload": {"isl": {"mean": 16}, "osl": {"mean": 4}, "concurrency": [2], "request_count": 4},
        "accuracy": {"tasks": []},
        "execution": execution,
        "workspace": str(tmp_path / "ws"),
    }
    path = tmp_path / f"{shape}-{stack}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _env(layout) -> dict[str, str]:
    env = layout.environment()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(STANDINS / "pylib"), env.get("PYTHONPATH")]))
    return env


def _run(argv: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("shape", ["tritonserver", "checkout", "release"])
def test_doctor_reports_each_layouts_files(tmp_path, tiny_llama_dir, shape):
    layout = build_layout(tmp_path, shape)
    env = _env(layout)
    for stack in ("trtllm-engine", "trtllm-pytorch"):
        spec = _spec(tmp_path, tiny_llama_dir, shape, layout.root, stack)
        done = _run([str(SCRIPT), "doctor", "--stack", stack, "--spec", str(spec), "--json"], env)
        checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
        assert checks["tensorrt_llm"]["ok"] and checks["tensorrt_llm"]["detail"].startswith("1.2.0")
        assert checks["layout"]["ok"], checks["layout"]
        assert (
            f"{SHAPE_NAMES[shape]} at {layout.root} (from execution.trtllm_root)"
            in checks["layout"]["detail"]
        )
        files = {name: c for name, c in checks.items() if name.startswith(("file: ", "program: "))}
        assert files and all(c["ok"] for c in files.values()), [c for c in files.values() if not c["ok"]]
        details = " ".join(c["detail"] for c in files.values())
        if stack == "trtllm-engine":
            assert str(layout.file("examples", "quantization/quantize.py")) in details
        if TRITON[shape] == "triton":
            assert str(layout.file("scripts", "launch_triton_server.py")) in details
            assert str(layout.tritonserver) in details
        else:
            assert "trtllm-serve" in details and "launch_triton_server" not in details
        assert checks["gpu 0"]["ok"] and "SM90" in checks["gpu 0"]["detail"]  # the fake nvidia-smi
        # This venv has ModelOpt 0.47, TensorRT-LLM 1.2 wants ~=0.37: the one check that fails.
        assert not checks["nvidia-modelopt"]["ok"] and "~=0.37.0" in checks["nvidia-modelopt"]["detail"]
        assert done.returncode == 1
    if shape == "release":  # asking for Triton where there is none: named, with the way out
        spec = _spec(tmp_path, tiny_llama_dir, shape, layout.root, "trtllm-engine", server="triton")
        done = _run([str(SCRIPT), "doctor", "--stack", "trtllm-engine", "--spec", str(spec)], env)
        failed = [line for line in done.stdout.splitlines() if line.startswith("[FAIL] file: Triton")]
        assert len(failed) == 1 and "execution.engine_server: trtllm-serve" in failed[0]


@pytest.mark.parametrize("shape", ["tritonserver", "checkout"])
def test_a_trial_of_each_gpu_stack_runs_through_in_each_layout(tmp_path, tiny_llama_dir, shape):
    """The release image's layout runs both stacks in the offline test below (trtllm-serve)."""
    from enginesweep.build_configs.loading import load_spec
    from enginesweep.evaluation.planning import expand

    layout = build_layout(tmp_path, shape)
    env = _env(layout)
    for stack in ("trtllm-engine", "trtllm-pytorch"):
        spec = _spec(tmp_path, tiny_llama_dir, shape, layout.root, stack)
        (trial,) = expand(load_spec(spec)).to_run
        done = _run([str(SCRIPT), "trial", str(spec), "--slug", trial.slug, "--json"], env)
        assert done.returncode == 0, done.stderr[-3000:]
        record = json.loads(done.stdout)
        assert record["status"] == "ok" and record["hardware"] == "H100-SXM-80GB"
        (level,) = record["benchmark"]["levels"]
        assert level["request_count"] == 4 and level["error_count"] == 0
        trial_dir = tmp_path / "ws" / "sweeps" / f"{shape}-{stack}" / trial.slug
        server_log = (trial_dir / "server" / "server.log").read_text()
        if stack == "trtllm-engine":
            quantize_log = next((tmp_path / "ws" / "quantized").glob("fp8__kv-auto__tp1__pp1-*/quantize.log"))
            assert str(layout.file("examples", "quantization/quantize.py")) in quantize_log.read_text()
            assert "calibrating on 2 samples" in quantize_log.read_text()
        if TRITON[shape] == "triton":
            assert str(layout.file("scripts", "launch_triton_server.py")) in server_log
            assert f"--tritonserver {layout.tritonserver}" in server_log and "--force" in server_log
            assert server_log.count("generate model=") >= 4
        else:
            assert server_log.startswith("$ trtllm-serve serve ")
        assert " --http_port 8000 " not in server_log and " --port 8000 " not in server_log


def _layout_block(script: Path) -> str:
    """The layout probe of an emitted script (from its comment to its `require` helpers)."""
    text = script.read_text()
    return text[text.index("# Where TensorRT-LLM's files are") : text.index("require() {")]


def test_emitted_scripts_find_the_layout_and_run_end_to_end(tmp_path, tiny_llama_dir):
    """Each layout's files found by the scripts' probe (the very block the scripts run), then two
    whole scripts with stand-ins and the real aiperf: the engine stack's in the tritonserver
    image (Triton) and the pytorch stack's in the release image (trtllm-serve; its quantization
    for real: `enginesweep quantize` on the tiny Llama). `bash -x` shows the files they used."""
    spec = _spec(tmp_path, tiny_llama_dir, "tritonserver", None, "trtllm-engine")
    out = tmp_path / "probe"
    assert (
        _run(
            [str(SCRIPT), "plan", str(spec), "--predictor", "roofline", "--emit-scripts", str(out)],
            os.environ.copy(),
        ).returncode
        == 0
    )
    (script,) = out.glob("*.sh")
    probe = (
        _layout_block(script) + 'printf "%s|%s|%s|%s|%s\\n" "$LAYOUT" "${TRTLLM_EXAMPLES:-}" '
        '"${TRITON_MODELS:-}" "${FILL_TEMPLATE:-}" "${LAUNCH_TRITON_SERVER:-}"'
    )
    for shape in ("tritonserver", "checkout", "release"):
        layout = build_layout(tmp_path / "trees", shape)
        done = _run(["bash", "-c", probe], {**_env(layout), "TRTLLM_ROOT": str(layout.root)})
        assert done.returncode == 0, done.stderr
        examples, models, tools, scripts = SHAPES[shape]
        expected = [
            f"{SHAPE_NAMES[shape]} at {layout.root}",
            str(layout.root / examples),
            *(
                (
                    str(layout.root / models),
                    str(layout.root / tools / "fill_template.py"),
                    str(layout.root / scripts / "launch_triton_server.py"),
                )
                if models
                else ("", "", "")
            ),
        ]
        assert done.stdout.strip().split("|") == expected
    for shape, stack in (("tritonserver", "trtllm-engine"), ("release", "trtllm-pytorch")):
        layout = build_layout(tmp_path / f"{shape}-{stack}-tree", shape)
        spec = _spec(tmp_path, tiny_llama_dir, shape, None, stack)  # the script probes TRTLLM_ROOT
        out = tmp_path / f"scripts-{shape}-{stack}"
        done = _run(
            [str(SCRIPT), "plan", str(spec), "--predictor", "roofline", "--emit-scripts", str(out)],
            os.environ.copy(),
        )
        assert done.returncode == 0, done.stderr
        (script,) = out.glob("*.sh")
        work = tmp_path / f"work-{shape}-{stack}"
        env = {
            **_env(layout),
            "TRTLLM_ROOT": str(layout.root),
            "MODEL_DIR": str(tiny_llama_dir),
            "WORK": str(work),
        }
        ran = _run(["bash", "-x", str(script)], env)
        assert ran.returncode == 0, ran.stderr[-3000:]
        trace = ran.stderr
        assert f"LAYOUT='{SHAPE_NAMES[shape]} at {layout.root}'" in trace
        if stack == "trtllm-engine":
            assert f"python3 {layout.file('examples', 'quantization/quantize.py')}" in trace
            assert f"--calib_dataset {out / 'calibration'}" in trace
            assert f"python3 {layout.file('scripts', 'launch_triton_server.py')}" in trace
            assert f"--tritonserver {layout.bin_dir / 'tritonserver'}" in trace  # as found on PATH
        else:
            assert f"enginesweep quantize --model {tiny_llama_dir} --quant fp8" in trace
            written = json.loads((work / "checkpoints" / "fp8__kv-auto" / "hf_quant_config.json").read_text())
            assert written["quantization"]["quant_algo"] == "FP8"
            assert "trtllm-serve serve" in trace
        exports = list(work.glob("trials/*/benchmark/**/profile_export_aiperf.json"))
        assert exports, "aiperf wrote no export"


def test_a_layout_missing_one_file_fails_before_any_work(tmp_path, tiny_llama_dir):
    layout = build_layout(tmp_path, "tritonserver")
    env = _env(layout)
    missing = layout.file("tools", "fill_template.py")
    missing.unlink()
    spec = _spec(tmp_path, tiny_llama_dir, "tritonserver", layout.root, "trtllm-engine")
    done = _run([str(SCRIPT), "run", str(spec)], env)
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert f"missing fill_template.py ({missing})" in message
    assert f"Layout: tritonserver image at {layout.root}" in message and "git clone" in message
    workspace = tmp_path / "ws"
    assert not (workspace / "quantized").exists() and not (workspace / "sweeps").exists()
    # The emitted script stops at the same file, before it writes anything.
    out = tmp_path / "scripts"
    assert (
        _run(
            [str(SCRIPT), "plan", str(spec), "--predictor", "roofline", "--emit-scripts", str(out)],
            os.environ.copy(),
        ).returncode
        == 0
    )
    (script,) = out.glob("*.sh")
    work = tmp_path / "work"
    ran = _run(["bash", str(script)], {**env, "MODEL_DIR": str(tiny_llama_dir), "WORK": str(work)})
    assert ran.returncode == 2 and f"missing fill_template.py ({missing})" in ran.stderr
    assert "Layout: tritonserver image" in ran.stderr and not work.exists()


def test_offline_trials_get_through_quantization_on_their_local_calibration(tmp_path, tiny_llama_dir):
    """No network (`unshare -rn`, loopback up): a trial of each GPU stack with a local model runs
    whole: the engine stack's quantize.py stand-in reads the trial's calibration folder with the
    `datasets` library (a dataset name would need the hub and fail here: checked too), the
    pytorch stack quantizes for real with ModelOpt."""
    from enginesweep.build_configs.loading import load_spec
    from enginesweep.evaluation.planning import expand

    assert shutil.which("unshare") and shutil.which("ip"), "util-linux's unshare and iproute2's ip"
    layout = build_layout(tmp_path, "release")  # and so the release image's layout runs through
    env = _env(layout)
    env["PATH"] = f"{env['PATH']}{os.pathsep}/usr/sbin:/sbin"  # ip
    for stack in ("trtllm-engine", "trtllm-pytorch"):
        spec = _spec(tmp_path, tiny_llama_dir, "release", layout.root, stack)
        (trial,) = expand(load_spec(spec)).to_run
        command = f"ip link set lo up && exec {SCRIPT} trial {spec} --slug {trial.slug} --json"
        done = _run(["unshare", "-rn", "sh", "-c", command], env)
        assert done.returncode == 0, done.stderr[-3000:]
        record = json.loads(done.stdout)
        assert record["status"] == "ok" and record["executed_stages"][0] == "quantize"
        (level,) = record["benchmark"]["levels"]
        assert level["request_count"] == 4 and level["error_count"] == 0
    # The control: the stand-in, like quantize.py, goes to the hub for a dataset name; offline it fails.
    control = _run(
        [
            "unshare",
            "-rn",
            sys.executable,
            str(STANDINS / "checkpoint_tool.py"),
            "--qformat",
            "fp8",
            "--output_dir",
            str(tmp_path / "control"),
        ],
        {**env, "HF_DATASETS_OFFLINE": "1"},
    )
    assert control.returncode != 0 and not (tmp_path / "control").exists()


def test_the_acceptance_command_says_no_gpu_here(tmp_path):
    """On this machine (no nvidia-smi): doctor's report for both stacks, then "no GPU", exit 1,
    no traceback, and a summary that says so."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PATH"] = os.pathsep.join(
        p for p in env["PATH"].split(os.pathsep) if not (Path(p) / "nvidia-smi").exists()
    )
    env["PATH"] = f"{SCRIPT.parent}{os.pathsep}{env['PATH']}"
    done = _run([str(REPO / "scripts" / "gpu-acceptance"), "--out", str(tmp_path / "acc")], env)
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    for stack in ("trtllm-engine", "trtllm-pytorch"):
        assert f"== enginesweep doctor --stack {stack}" in done.stdout
    assert "[FAIL] gpus: no GPU" in done.stdout
    assert "error: no GPU: nvidia-smi lists none here" in " ".join(done.stderr.split())
    assert json.loads((tmp_path / "acc" / "summary.json").read_text())["verdict"] == "no GPU"


def _in_the_container_env() -> bool:
    from importlib.metadata import version

    return version("nvidia-modelopt").startswith("0.37.")


@pytest.mark.container
@pytest.mark.skipif(
    not _in_the_container_env(),
    reason="the doctor passes only beside TensorRT-LLM 1.2's ModelOpt 0.37: this runs in "
    ".venv-trtllm (test_container_profile.py runs it there)",
)
def test_gpu_acceptance_on_a_fake_gpu_runs_both_stacks_and_writes_the_summary(tmp_path, tiny_llama_dir):
    """The acceptance command past the doctor, in the container-shaped environment (Prefect,
    MLflow and ModelOpt at the versions the GPU profile resolves beside TensorRT-LLM 1.2): a fake
    H100, the tritonserver layout of stand-ins, one trial per stack through `enginesweep run`,
    a summary whose numbers name the GPU they were measured on."""
    layout = build_layout(tmp_path, "tritonserver")
    env = _env(layout)
    spec = _spec(tmp_path, tiny_llama_dir, "tritonserver", None, "trtllm-engine")
    out = tmp_path / "acceptance"
    done = _run(
        [
            str(SCRIPT),
            "gpu-acceptance",
            "--spec",
            str(spec),
            "--skip-tests",
            "--out",
            str(out),
            "--set",
            f"execution.trtllm_root={layout.root}",
        ],
        env,
        timeout=1500,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert done.returncode == 0, (done.stdout[-4000:], summary)
    assert summary["verdict"] == "passed"
    assert (summary["gpu"], summary["catalog_gpu"]) == ("NVIDIA H100 80GB HBM3", "H100-SXM-80GB")
    assert all(check["ok"] for checks in summary["doctor"].values() for check in checks)
    for stack in ("trtllm-engine", "trtllm-pytorch"):
        sweep = summary["sweeps"][stack]
        assert sweep["status"] == "passed" and len(sweep["trials"]) == 1
        (trial,) = sweep["trials"]
        assert trial["status"] == "ok" and trial["measured_on"] == "NVIDIA H100 80GB HBM3"
        assert trial["levels"][0]["concurrency"] == 2 and trial["levels"][0]["errors"] == 0
    assert "(measured on NVIDIA H100 80GB HBM3)" in (out / "summary.md").read_text()
