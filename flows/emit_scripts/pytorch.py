"""`enginesweep plan SPEC --emit-scripts DIR` for the `trtllm-pytorch` stack: one runnable shell
script per trial with the exact commands (`enginesweep quantize`, the LLM-API options, Triton's
`llmapi` repository or trtllm-serve, aiperf, lm-eval), every one checked against the pinned
contract.

The options YAML and model.yaml are the very dictionaries the stack writes (`options`), the
commands come from `commands`; the quantization is `enginesweep quantize`, the stack's own
in-process ModelOpt export as a command (ModelOpt's hf_ptq.py is in neither of NVIDIA's images
and calibrates only on hub datasets at 0.37), offline on the calibration folder beside the
scripts. The layout and every file are found and checked before any work, as in the engine
stack's scripts (`engines.trtllm.layout`). Around the commands the script does in shell what the
stack does in Python: the checkpoint written aside then moved, the server on free ports in a
session of its own stopped whole, readiness polled, the accuracy run after the server is gone
(both need the GPU's memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from enginesweep.build_configs.loading import ResolvedSpec
from enginesweep.build_configs.schema import Build, SweepSpec
from enginesweep.build_configs.trial import TrialConfig
from enginesweep.engines.endpoints import OPENAI_COMPLETIONS, Endpoint, triton_endpoint
from enginesweep.engines.llmapi.commands import (
    lm_eval_command,
    quantize_command,
    required_files,
    serve_command,
)
from enginesweep.engines.llmapi.options import check_options, llm_api_options, model_yaml
from enginesweep.engines.llmapi.repository import PAYLOAD_TEMPLATE as LLMAPI_PAYLOAD
from enginesweep.engines.llmapi.repository import decouple_shell
from enginesweep.engines.trtllm.commands import Command, TrialPaths, launch_command
from enginesweep.engines.trtllm.contract import ContractError, VersionContract
from enginesweep.engines.trtllm.layout import SCRIPT_TOOLS, Required
from enginesweep.evaluation.benchmark.aiperf_runner import (
    TEMPLATE_NAME,
    aiperf_command,
)
from enginesweep.evaluation.planning.records import PlannedTrial
from enginesweep.flows.emit_scripts.engine import (
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    script_checks,
    script_environment,
    serve_block,
    shell_line,
    version_gate,
)

TRITON_MODEL = "tensorrt_llm"
_URL = f"http://127.0.0.1:{HTTP_PORT}"


def _literal_yaml(data: dict, *, allow: str = "") -> str:
    """YAML for an unquoted heredoc: it may hold no shell syntax but the `allow`ed variable."""
    text = yaml.safe_dump(data, sort_keys=False)
    if any(c in text.replace(allow, "") for c in "$`\\"):
        raise ContractError(f"cannot write {text!r} into a shell heredoc")
    return text.rstrip()


@dataclass(frozen=True)
class _Serving:
    """How one trial is served: its step 3, the readiness URL, and what aiperf and the scrape need."""

    step: str
    ready: str
    endpoint: Endpoint
    model_name: str
    metrics: str


def trial_script(
    resolved: ResolvedSpec, trial: PlannedTrial, contract: VersionContract, spec_name: str
) -> str:
    """The script of one feasible trtllm-pytorch trial."""
    spec, cfg = resolved.spec, trial.config
    server = spec.execution.pytorch_server
    work = PurePosixPath("$WORK")
    trial_dir = work / "trials" / trial.slug
    shared = work / "checkpoints" / f"{cfg.quant.value}__kv-{cfg.kv_cache.value}"
    checkpoint = shared if cfg.quant.is_quantized else PurePosixPath("$MODEL_DIR")
    options = llm_api_options(cfg, spec.build, moe=resolved.architecture.is_moe)
    check_options(contract, options)
    bench_dir = trial_dir / "benchmark"
    quantize, required = _quantize_step(contract, cfg, spec.build, shared)
    required += required_files(SCRIPT_TOOLS, [cfg], server=server, calib_dataset=None, lm_eval=None)
    steps = [quantize, _options_step(contract, trial_dir, options)]
    if server == "triton":
        serving = _triton_serve(contract, cfg, options, checkpoint, trial_dir, bench_dir)
    else:
        serving = _trtllm_serve(contract, checkpoint, trial_dir, bench_dir)
    steps += [serving.step, _serve_and_benchmark_step(spec, serving, checkpoint, bench_dir)]
    if spec.accuracy.tasks:
        steps.append(_accuracy_step(spec, cfg, checkpoint, trial_dir))
    body = "\n\n".join(steps)
    return f"""{_preamble(spec, trial, contract, spec_name, required)}
{body}
"""


def _preamble(
    spec: SweepSpec,
    trial: PlannedTrial,
    contract: VersionContract,
    spec_name: str,
    required: list[Required],
) -> str:
    """The script's header and environment, up to the checks and the ports, before any work."""
    cfg, server = trial.config, spec.execution.pytorch_server
    # These paths reach comma-separated arguments only when the shell expands them, too late
    # for any escaping: the script must refuse a comma in them.
    return f"""#!/usr/bin/env bash
# {trial.slug}: {cfg.quant.value} weights, {cfg.kv_cache.value} KV cache, TP{cfg.tp} x PP{cfg.pp} on {trial.gpu}
# TensorRT-LLM {contract.line} PyTorch backend (trtllm-pytorch stack), served by {server}. Generated
# by `enginesweep plan {spec_name} --emit-scripts`; the commands are checked against {contract.line}.
# Run inside NVIDIA's image (see README.md), on {cfg.world_size} GPU(s).
{script_environment(spec)}
case "$MODEL_DIR$WORK${{TASKS_DIR:-}}" in
    *,*) echo "MODEL_DIR, WORK and TASKS_DIR may not hold ',' (lm-eval's --model_args and aiperf's --extra-inputs split on it)" >&2
        exit 2 ;;
esac

{version_gate(contract)}

{script_checks(spec, required)}"""


def _quantize_step(
    contract: VersionContract, cfg: TrialConfig, build: Build, shared: PurePosixPath
) -> tuple[str, list[Required]]:
    """Step 1 (`enginesweep quantize` into the shared checkpoint, or none for the baseline) and
    what it requires."""
    if not cfg.quant.is_quantized:
        return "# 1. Unquantized baseline: the Hugging Face checkpoint is served as it is.", []
    export = quantize_command(
        contract,
        cfg,
        build,
        hf_checkpoint=PurePosixPath("$MODEL_DIR"),
        export_dir=shared,
        calib_dataset=PurePosixPath("$CALIB_DATASET"),
    )
    required = [
        Required(
            "enginesweep (the project, installed in this image: scripts/setup-gpu)",
            "enginesweep",
            program=True,
        ),
        Required("the calibration dataset (JSON lines with a text column)", "$CALIB_DATASET"),
    ]
    return (
        f"""# 1. Unified HF checkpoint (ModelOpt, through `enginesweep quantize`: the stack's own export),
#    shared by every trial with the same weight and KV formats (the export does not fix TP or
#    PP); offline, calibrated on CALIB_DATASET; written aside, renamed when complete.
if [ ! -f "{shared}/hf_quant_config.json" ]; then
    rm -rf "{shared}.partial" "{shared}"
{_indent(shell_line(export))}
fi""",
        required,
    )


def _options_step(contract: VersionContract, trial_dir: PurePosixPath, options: dict[str, Any]) -> str:
    """Step 2: the LLM-API options YAML, written beside the trial."""
    return f"""# 2. LLM-API options (keys checked against TensorRT-LLM {contract.line}'s TorchLlmArgs).
mkdir -p "{trial_dir}"
cat > "{trial_dir}/llm_api_options.yaml" <<'YAML'
{_literal_yaml(options)}
YAML"""


def _serve_array(command: Command) -> str:
    """`command` as the body of the `SERVE=(...)` array: one line, its continuations joined."""
    return shell_line(command).replace(chr(92) + chr(10) + "    ", "")


def _triton_serve(
    contract: VersionContract,
    cfg: TrialConfig,
    options: dict[str, Any],
    checkpoint: PurePosixPath,
    trial_dir: PurePosixPath,
    bench_dir: PurePosixPath,
) -> _Serving:
    """Triton's llmapi model on the checkpoint, benchmarked through generate_stream."""
    paths = TrialPaths(
        tools=SCRIPT_TOOLS,
        hf_checkpoint=checkpoint,
        checkpoint_dir=checkpoint,
        engine_dir=trial_dir,
        repo_dir=trial_dir / "triton_repo",
        timing_cache=trial_dir / "unused",
    )
    launch = launch_command(
        contract, cfg, paths, http_port=HTTP_PORT, grpc_port=GRPC_PORT, metrics_port=METRICS_PORT
    )
    body = _literal_yaml(model_yaml(contract, options, model=str(checkpoint)), allow=str(checkpoint))
    config = f"{paths.repo_dir}/{TRITON_MODEL}/config.pbtxt"
    step = f"""# 3. Triton's llmapi repository: the installed model, model.yaml from the options, and the
#    model made decoupled in config.pbtxt (launch_triton_server.py disables auto-complete, so
#    model.yaml's triton_config.decoupled alone may not reach Triton).
rm -rf "{paths.repo_dir}"
cp -R "{SCRIPT_TOOLS.llmapi_model}" "{paths.repo_dir}"
cat > "{paths.repo_dir}/{TRITON_MODEL}/1/model.yaml" <<YAML
{body}
YAML
{decouple_shell(config)}
SERVE=({_serve_array(launch)})"""
    return _Serving(
        step=step,
        ready=f"{_URL}/v2/health/ready",
        endpoint=triton_endpoint(TRITON_MODEL, LLMAPI_PAYLOAD),
        model_name=TRITON_MODEL,
        metrics=f'curl -sf "http://127.0.0.1:{METRICS_PORT}/metrics" > "{bench_dir}/metrics.txt"',
    )


def _trtllm_serve(
    contract: VersionContract, checkpoint: PurePosixPath, trial_dir: PurePosixPath, bench_dir: PurePosixPath
) -> _Serving:
    """trtllm-serve on the checkpoint with the options, benchmarked through OpenAI completions."""
    serve = serve_command(
        contract,
        model_dir=str(checkpoint),
        options_file=f"{trial_dir}/llm_api_options.yaml",
        port=HTTP_PORT,
    )
    return _Serving(
        step=f"""# 3. trtllm-serve (OpenAI-compatible) with the options.
SERVE=({_serve_array(serve)})""",
        ready=f"{_URL}/health",
        endpoint=OPENAI_COMPLETIONS,
        model_name=str(checkpoint),
        metrics=(
            f'curl -sf "{_URL}/metrics" > "{bench_dir}/iteration-stats.json" '
            "|| true  # JSON iteration stats, not Prometheus"
        ),
    )


def _serve_and_benchmark_step(
    spec: SweepSpec, serving: _Serving, checkpoint: PurePosixPath, bench_dir: PurePosixPath
) -> str:
    """Steps 4 and 5: serve, run aiperf at every concurrency level, scrape, then stop the server."""
    bench = Command(
        "aiperf",
        aiperf_command(
            url=_URL,
            model=serving.model_name,
            workload=spec.workload,
            tokenizer=Path(str(checkpoint)),
            artifact_dir=Path(str(bench_dir)),
            executable=Path("aiperf"),
            endpoint=serving.endpoint,
        ),
    )
    payload = (
        f"""cat > "{bench_dir}/{TEMPLATE_NAME}" <<'JSON'
{serving.endpoint.payload.rstrip()}
JSON
"""
        if serving.endpoint.payload
        else ""
    )
    serve = serve_block('"${SERVE[@]}"', serving.ready, HTTP_PORT)
    # The server is stopped here, not on exit, so that the accuracy run after it gets the GPU.
    return f"""# 4. Serve on this script's ports, in a session of its own; stop exactly that session on exit.
{serve}

# 5. Benchmark every concurrency level with aiperf ({serving.endpoint.kind} endpoint).
mkdir -p "{bench_dir}"
{payload}{shell_line(bench)}
{serving.metrics}
stop_server
trap - EXIT"""


def _accuracy_step(
    spec: SweepSpec, cfg: TrialConfig, checkpoint: PurePosixPath, trial_dir: PurePosixPath
) -> str:
    """Step 6: lm-eval on the checkpoint in process, when TASKS_DIR names the tasks."""
    evaluate = lm_eval_command(
        cfg,
        spec.accuracy,
        model_dir=str(checkpoint),
        tokenizer_dir=str(checkpoint),
        tasks=spec.accuracy.tasks,
        include_path="$TASKS_DIR",
        output_path=f"{trial_dir}/accuracy",
    )
    return f"""# 6. Accuracy with lm-eval's TensorRT-LLM model, every item logged (samples_*.jsonl) for the
#    paired comparison with the baseline; after the server, since both need the GPU's memory.
#    TASKS_DIR: one folder with the task YAMLs and their data (the built-in ones are written
#    under the workspace's tasks/ by `enginesweep run`; add accuracy.task_paths' YAMLs).
if [ -n "${{TASKS_DIR:-}}" ]; then
{_indent(shell_line(evaluate))}
else
    echo "TASKS_DIR is not set: accuracy skipped" >&2
fi"""


def _indent(text: str) -> str:
    """`text` indented one level, as a body inside an `if`."""
    return "\n".join("    " + line for line in text.splitlines())


def readme_section(contract: VersionContract, slugs: list[str]) -> str:
    """The README part for trtllm-pytorch scripts."""
    listing = "\n".join(f"- `{slug}.sh`" for slug in slugs)
    return f"""## trtllm-pytorch stack (TensorRT-LLM {contract.line}, PyTorch backend)

Each script: `enginesweep quantize` (ModelOpt's quantization and unified HF export, the stack's
own code, offline on the calibration folder), the LLM-API options YAML, Triton's `llmapi` model
or `trtllm-serve`, aiperf at every concurrency level, then lm-eval's `trtllm` model when
`TASKS_DIR` is set. It needs the project installed in the image (`scripts/setup-gpu`: it brings
enginesweep, aiperf and lm-eval).

{listing}
"""
