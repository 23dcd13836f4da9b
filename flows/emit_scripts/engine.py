"""`enginesweep plan SPEC --emit-scripts DIR`: one runnable shell script per trial of the
`trtllm-engine` stack, with the exact commands (checkpoint, build, repository, launch,
benchmark), plus a README naming the image to run them in and the calibration folder they
quantize on (`calibration/train.jsonl`, the texts the stack calibrates on: nothing downloads).

The tool commands come from `engines.trtllm.commands` (the functions the stack runs), with paths
rooted in shell variables (`$WORK`, `$MODEL_DIR`, and the layout's `$TRTLLM_EXAMPLES`,
`$TRITON_MODELS`, `$FILL_TEMPLATE`, `$LAUNCH_TRITON_SERVER`, `$TRITONSERVER`, which the script
finds as the stack does: `engines.trtllm.layout.layout_shell`) so a script runs in any of
NVIDIA's images; an argument holding a variable is double-quoted, every other one shell-quoted.
Before any work a script checks every file and program it will use (`require`), as the stack's
preflight does. Around the commands it does in shell what the stack does in Python (not the same
code): the checkpoint written aside then moved, the server on free ports in a session of its own
stopped whole, readiness polled, metrics scraped once after the benchmark.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from enginesweep.build_configs.loading import ResolvedSpec
from enginesweep.build_configs.schema import Build, SweepSpec
from enginesweep.build_configs.trial import TrialConfig
from enginesweep.engines.endpoints import OPENAI_COMPLETIONS, PAYLOAD_TEMPLATE, Endpoint, triton_endpoint
from enginesweep.engines.llmapi.commands import engine_serve_command
from enginesweep.engines.trtllm.commands import (
    Command,
    TrialPaths,
    build_command,
    checkpoint_command,
    checkpoint_key,
    launch_command,
    repository_commands,
    repository_values,
    required_files,
)
from enginesweep.engines.trtllm.contract import VersionContract
from enginesweep.engines.trtllm.layout import SCRIPT_TOOLS, Required, layout_shell
from enginesweep.evaluation.benchmark.aiperf_runner import (
    TEMPLATE_NAME,
    aiperf_command,
)
from enginesweep.evaluation.planning.records import PlannedTrial

HTTP_PORT, GRPC_PORT, METRICS_PORT = "$HTTP_PORT", "$GRPC_PORT", "$METRICS_PORT"
"""The server's ports: free ones picked when the script starts (`ports_shell`), or the
environment's; never a fixed 8000, which another server on the host may hold."""
_URL = f"http://127.0.0.1:{HTTP_PORT}"
SERVED_MODEL = "ensemble"
CALIBRATION_FOLDER = "calibration"
"""Beside the scripts: `train.jsonl`, one `{"text": ...}` row per calibration sample (the split
and column quantize.py reads from a local folder)."""
OFFLINE = ["env", "HF_HUB_OFFLINE=1", "HF_DATASETS_OFFLINE=1", "TRANSFORMERS_OFFLINE=1"]
"""The prefix of the quantization command: the checkpoint is local and the calibration folder
too, so nothing may download (an offline GPU node must not fail, a connected one not fetch)."""


def script_paths(trial: PlannedTrial, calib_dataset: str | None) -> TrialPaths:
    """The trial's paths, rooted in the script's variables."""
    work = PurePosixPath("$WORK")
    return TrialPaths(
        tools=SCRIPT_TOOLS,
        hf_checkpoint=PurePosixPath("$MODEL_DIR"),
        checkpoint_dir=work / "checkpoints" / checkpoint_key(trial.config),
        engine_dir=work / "trials" / trial.slug / "engine",
        repo_dir=work / "trials" / trial.slug / "triton_repo",
        timing_cache=work / "timing.cache",
        calib_dataset=calib_dataset,
    )


def calib_variable(spec_dataset: str | None) -> str:
    """The script line that names the calibration folder: the spec's `build.calib_dataset`, else
    the folder written beside the scripts; `CALIB_DATASET` in the environment wins."""
    default = shlex.quote(spec_dataset) if spec_dataset else f'"$SCRIPTS_DIR/{CALIBRATION_FOLDER}"'
    return f'CALIB_DATASET="${{CALIB_DATASET:-{default}}}"'


def ports_shell() -> str:
    """Shell that picks the server's ports: the environment's, else free ones on 127.0.0.1."""
    return """free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
HTTP_PORT="${HTTP_PORT:-$(free_port)}"
GRPC_PORT="${GRPC_PORT:-$(free_port)}"
METRICS_PORT="${METRICS_PORT:-$(free_port)}"
"""


def require_lines(required: list[Required]) -> str:
    """`require` / `require_program` calls (defined by `layout_shell`), one per item."""
    lines = []
    for item in required:
        call = "require_program" if item.program else "require"
        lines.append(f"{call} {shlex.quote(item.what)} {_quote(item.path)}")
    return "\n".join(lines)


def _quote(arg: str) -> str:
    """Shell-quote an argument; one that uses the script's variables is double-quoted (its
    backslashes doubled, so `\\,` reaches the command as `\\,`)."""
    if "$" in arg:
        if any(c in arg for c in '"`'):
            raise ValueError(f"cannot quote {arg!r} for the shell")
        return '"' + arg.replace("\\", "\\\\") + '"'
    return shlex.quote(arg)


def shell_line(command: Command) -> str:
    """One command as a shell line; long ones continued over lines."""
    parts = [_quote(a) for a in command.argv]
    lines, current = [], parts[0]
    for part in parts[1:]:
        if len(current) + len(part) + 1 > 96:
            lines.append(current + " \\")
            current = "    " + part
        else:
            current += " " + part
    return "\n".join([*lines, current])


@dataclass(frozen=True)
class _Serving:
    """How one trial is served: its steps 3 and 4, and what aiperf and the scrape need."""

    repository: str
    serve_step: str
    endpoint: Endpoint
    model_name: str
    metrics: str


def trial_script(
    resolved: ResolvedSpec, trial: PlannedTrial, contract: VersionContract, spec_name: str
) -> str:
    """The script of one feasible trtllm-engine trial."""
    spec, cfg = resolved.spec, trial.config
    server = spec.execution.engine_server
    paths = script_paths(trial, "$CALIB_DATASET")
    checkpoint = _checkpoint_step(contract, cfg, spec.build, paths)
    build = build_command(contract, cfg, paths)
    required = required_files(
        SCRIPT_TOOLS, [cfg], server=server, calib_dataset="$CALIB_DATASET", accuracy=False
    )
    bench_dir = PurePosixPath("$WORK") / "trials" / trial.slug / "benchmark"
    serve = _trtllm_serve if server == "trtllm-serve" else _triton_serve
    serving = serve(contract, spec, cfg, paths, bench_dir)
    benchmark = _benchmark_step(spec, serving, bench_dir)
    return f"""{_preamble(spec, trial, contract, spec_name, required)}
{checkpoint}

# 2. Engine.
{shell_line(build)}

{serving.repository}

# 4. Serve on this script's ports, in a session of its own (a launcher returns at once;
#    mpirun's ranks leave its process group, not its session); stop exactly that session on exit.
{serving.serve_step}

{benchmark}
"""


def script_environment(spec: SweepSpec) -> str:
    """The shell's strict mode and the variables every trial script reads (MODEL_DIR required)."""
    repo_id = spec.model.repo_id or "the model"
    return f"""set -euo pipefail
: "${{MODEL_DIR:?set MODEL_DIR to the local Hugging Face checkpoint folder of {repo_id}}}"
WORK="${{WORK:-$PWD/enginesweep-work}}"
SCRIPTS_DIR="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
{calib_variable(spec.build.calib_dataset)}
export MODEL_DIR WORK CALIB_DATASET"""


def script_checks(spec: SweepSpec, required: list[Required]) -> str:
    """The layout probe, every file and program the trial uses, and the server's free ports."""
    return f"""{layout_shell(spec.execution.trtllm_root, spec.execution.trtllm_paths)}

# Every file and program this trial uses, before any work.
{require_lines(required)}

# The server's ports: free ones (or HTTP_PORT, GRPC_PORT, METRICS_PORT from the environment).
{ports_shell()}"""


def _preamble(
    spec: SweepSpec,
    trial: PlannedTrial,
    contract: VersionContract,
    spec_name: str,
    required: list[Required],
) -> str:
    """The script's header and environment, up to the checks and the ports, before any work."""
    cfg, server = trial.config, spec.execution.engine_server
    # MODEL_DIR and WORK reach fill_template.py's `key:value,...` argument only when the shell
    # expands them, after `fill_args` escaped the rest: the script must refuse what it splits on.
    return f"""#!/usr/bin/env bash
# {trial.slug}: {cfg.quant.value} weights, {cfg.kv_cache.value} KV cache, TP{cfg.tp} x PP{cfg.pp} on {trial.gpu}
# TensorRT-LLM {contract.line} engine path (trtllm-engine stack), served by {server}. Generated by
# `enginesweep plan {spec_name} --emit-scripts`: the stack runs these same commands.
# Run inside NVIDIA's image (see README.md), on {cfg.world_size} GPU(s).
{script_environment(spec)}
case "$MODEL_DIR$WORK" in
    *[,:\\\\]*) echo "MODEL_DIR and WORK may not hold ',', ':' or a backslash (fill_template.py splits on them)" >&2
        exit 2 ;;
esac

# The commands below are checked against TensorRT-LLM {contract.line}'s options: refuse another version.
{version_gate(contract)}

{script_checks(spec, required)}"""


def _checkpoint_step(contract: VersionContract, cfg: TrialConfig, build: Build, paths: TrialPaths) -> str:
    """Step 1: the shared checkpoint, quantized offline into a `.partial` folder, then moved."""
    # Written aside so that an interrupted run never leaves a half checkpoint that the next
    # trial sharing it would take for a complete one.
    partial = replace(paths, checkpoint_dir=PurePosixPath(f"{paths.checkpoint_dir}.partial"))
    checkpoint = checkpoint_command(contract, cfg, build, partial)
    checkpoint = Command(checkpoint.tool, [*OFFLINE, *checkpoint.argv])
    return f"""# 1. Checkpoint, shared by every trial with the same quant, KV cache, TP and PP: written aside,
#    moved into place only when complete. Offline: the calibration texts are CALIB_DATASET.
if [ ! -f "{paths.checkpoint_dir}/config.json" ]; then
    rm -rf "{partial.checkpoint_dir}"
{_indent(shell_line(checkpoint))}
    mv "{partial.checkpoint_dir}" "{paths.checkpoint_dir}"
fi"""


def _trtllm_serve(
    contract: VersionContract, spec: SweepSpec, cfg: TrialConfig, paths: TrialPaths, bench_dir: PurePosixPath
) -> _Serving:
    """trtllm-serve on the engine folder, benchmarked through OpenAI completions."""
    serve = engine_serve_command(
        contract,
        cfg,
        engine_dir=str(paths.engine_dir),
        port=HTTP_PORT,
        tokenizer="$MODEL_DIR",
        kv_fraction=spec.build.kv_cache_free_gpu_mem_fraction,
    )
    return _Serving(
        repository="# 3. No Triton repository: trtllm-serve reads the engine folder itself.",
        serve_step=serve_block(shell_line(serve), f"{_URL}/health", HTTP_PORT),
        endpoint=OPENAI_COMPLETIONS,
        model_name=str(paths.engine_dir),
        metrics=(
            f'curl -sf "{_URL}/metrics" > "{bench_dir}/iteration-stats.json" '
            "|| true  # JSON iteration stats, not Prometheus"
        ),
    )


def _triton_serve(
    contract: VersionContract, spec: SweepSpec, cfg: TrialConfig, paths: TrialPaths, bench_dir: PurePosixPath
) -> _Serving:
    """Triton on a filled inflight_batcher_llm repository, benchmarked through generate_stream."""
    commands = repository_commands(contract, repository_values(cfg, spec.build, paths), paths)
    launch = launch_command(
        contract, cfg, paths, http_port=HTTP_PORT, grpc_port=GRPC_PORT, metrics_port=METRICS_PORT
    )
    return _Serving(
        repository="# 3. Triton model repository (inflight_batcher_llm), filled in place.\n"
        + "\n".join(shell_line(c) for c in commands),
        serve_step=serve_block(shell_line(launch), f"{_URL}/v2/health/ready", HTTP_PORT),
        endpoint=triton_endpoint(SERVED_MODEL),
        model_name=SERVED_MODEL,
        metrics=f'curl -sf "http://127.0.0.1:{METRICS_PORT}/metrics" > "{bench_dir}/metrics.txt"',
    )


def _benchmark_step(spec: SweepSpec, serving: _Serving, bench_dir: PurePosixPath) -> str:
    """Step 5: aiperf at every concurrency level (its payload template first), then the scrape."""
    bench = Command(
        "aiperf",
        aiperf_command(
            url=_URL,
            model=serving.model_name,
            workload=spec.workload,
            tokenizer=Path("$MODEL_DIR"),
            artifact_dir=Path(str(bench_dir)),
            executable=Path("aiperf"),
            endpoint=serving.endpoint,
        ),
    )
    payload = (
        f"""cat > "{bench_dir}/{TEMPLATE_NAME}" <<'JSON'
{PAYLOAD_TEMPLATE.rstrip()}
JSON
"""
        if serving.endpoint.kind == "template"
        else ""
    )
    return f"""# 5. Benchmark every concurrency level with aiperf ({serving.endpoint.kind} endpoint).
mkdir -p "{bench_dir}"
{payload}{shell_line(bench)}
{serving.metrics}"""


def version_gate(contract: VersionContract) -> str:
    """Shell that stops the script unless the installed TensorRT-LLM is of `contract`'s line."""
    versions = " | ".join(contract.versions)
    return f"""python3 - <<'PY'
import fnmatch, sys
import tensorrt_llm
version = tensorrt_llm.__version__
if not any(fnmatch.fnmatchcase(version, p) for p in "{versions}".split(" | ")):
    sys.exit(f"TensorRT-LLM {{version}} is installed; these commands are for {contract.line} ({versions})")
PY"""


def serve_block(command_line: str, ready_url: str, port: str) -> str:
    """Shell that refuses a port something already answers on, starts `command_line` with
    setsid in a session of its own, stops exactly that session on exit (trap) and waits until
    `ready_url` answers."""
    return f"""if curl -sf "{ready_url}" >/dev/null; then
    echo "a server already answers on port {port}: stop it first, or pick other ports (HTTP_PORT)" >&2
    exit 2
fi
setsid {command_line} &
SERVER_SESSION=$!
stop_server() {{
    pkill -TERM -s "$SERVER_SESSION" || true
    for _ in $(seq 1 40); do pgrep -s "$SERVER_SESSION" >/dev/null || return 0; sleep 1; done
    pkill -KILL -s "$SERVER_SESSION" || true
}}
trap stop_server EXIT
for _ in $(seq 1 900); do
    if curl -sf "{ready_url}" >/dev/null; then break; fi
    sleep 1
done
curl -sf "{ready_url}" >/dev/null"""


def _indent(text: str) -> str:
    """`text` indented one level, as a body inside an `if`."""
    return "\n".join("    " + line for line in text.splitlines())


def readme(spec_name: str, contract: VersionContract, slugs: list[str], *, calibration: str) -> str:
    """The README of an emitted-scripts folder (its trtllm-engine part lists `slugs`)."""
    engine = "\n".join(f"- `{slug}.sh`" for slug in slugs) if slugs else "(no trial of this stack)"
    return f"""# Scripts for `{spec_name}` (TensorRT-LLM {contract.line})

Generated by `enginesweep plan {spec_name} --emit-scripts`. The commands are the ones the
enginesweep stacks run, checked against TensorRT-LLM {contract.line}'s command-line options and
LLM-API keys ({contract.source}).

Images: `nvcr.io/nvidia/tritonserver:<YY.MM>-trtllm-python-py3` (26.03: TensorRT-LLM 1.2.0rc8;
26.04 to 26.07: 1.2.1) has Triton and every file below; `nvcr.io/nvidia/tensorrt-llm/release:1.2.x`
has TensorRT-LLM and trtllm-serve but no Triton (serve with trtllm-serve there). Each script finds
the files itself (`/app` of the tritonserver image, `/app/tensorrt_llm` of the release image, a
source checkout named by `TRTLLM_ROOT`) and checks every file and program it uses before any
work, naming what is missing and how to get it.

Run, inside the image, with the Hugging Face checkpoint on local disk:

```bash
MODEL_DIR=/models/my-checkpoint WORK=/scratch/enginesweep bash <trial>.sh
```

Nothing is downloaded: quantization calibrates on {calibration}
(`CALIB_DATASET` names another folder of JSON lines with a `text` column), with the hub and
datasets switched off. The server listens on free ports (or `HTTP_PORT`, `GRPC_PORT`,
`METRICS_PORT`). aiperf is not in the images: install the project's GPU profile first
(`scripts/setup-gpu`), or `pip install aiperf==0.13.0`.

## trtllm-engine stack (TensorRT engine path)

Each script runs one trial: checkpoint (quantize.py / convert_checkpoint.py), `trtllm-build`, the
Triton `inflight_batcher_llm` repository and `launch_triton_server.py` (or `trtllm-serve
--backend tensorrt`), then aiperf at every concurrency level of the workload.

{engine}
"""
