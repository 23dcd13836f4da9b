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

from pathlib import Path, PurePosixPath

import yaml

from enginesweep.build_configs.loading import ResolvedSpec
from enginesweep.engines.endpoints import OPENAI_COMPLETIONS, triton_endpoint
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
from enginesweep.engines.trtllm.layout import SCRIPT_TOOLS, Required, layout_shell
from enginesweep.evaluation.benchmark.aiperf_runner import (
    TEMPLATE_NAME,
    aiperf_command,
)
from enginesweep.evaluation.planning.records import PlannedTrial
from enginesweep.flows.emit_scripts.engine import (
    GRPC_PORT,
    HTTP_PORT,
    METRICS_PORT,
    calib_variable,
    ports_shell,
    require_lines,
    serve_block,
    shell_line,
    version_gate,
)

TRITON_MODEL = "tensorrt_llm"


def _literal_yaml(data: dict, *, allow: str = "") -> str:
    """YAML for an unquoted heredoc: it may hold no shell syntax but the `allow`ed variable."""
    text = yaml.safe_dump(data, sort_keys=False)
    if any(c in text.replace(allow, "") for c in "$`\\"):
        raise ContractError(f"cannot write {text!r} into a shell heredoc")
    return text.rstrip()


def trial_script(
    resolved: ResolvedSpec, trial: PlannedTrial, contract: VersionContract, spec_name: str
) -> str:
    """The script of one feasible trtllm-pytorch trial."""
    spec, cfg = resolved.spec, trial.config
    server = spec.execution.pytorch_server
    work = PurePosixPath("$WORK")
    trial_dir = work / "trials" / trial.slug
    quantized = cfg.quant.is_quantized
    shared = work / "checkpoints" / f"{cfg.quant.value}__kv-{cfg.kv_cache.value}"
    checkpoint = shared if quantized else PurePosixPath("$MODEL_DIR")
    options = llm_api_options(cfg, spec.build)
    check_options(contract, options)
    bench_dir = trial_dir / "benchmark"
    required: list[Required] = []
    steps = []
    if quantized:
        export = quantize_command(
            contract,
            cfg,
            spec.build,
            hf_checkpoint=PurePosixPath("$MODEL_DIR"),
            export_dir=shared,
            calib_dataset=PurePosixPath("$CALIB_DATASET"),
        )
        required += [
            Required(
                "enginesweep (the project, installed in this image: scripts/setup-gpu)",
                "enginesweep",
                program=True,
            ),
            Required("the calibration dataset (JSON lines with a text column)", "$CALIB_DATASET"),
        ]
        steps.append(f"""# 1. Unified HF checkpoint (ModelOpt, through `enginesweep quantize`: the stack's own export),
#    shared by every trial with the same weight and KV formats (the export does not fix TP or
#    PP); offline, calibrated on CALIB_DATASET; written aside, renamed when complete.
if [ ! -f "{shared}/hf_quant_config.json" ]; then
    rm -rf "{shared}.partial" "{shared}"
{_indent(shell_line(export))}
fi""")
    else:
        steps.append("# 1. Unquantized baseline: the Hugging Face checkpoint is served as it is.")
    required += required_files(SCRIPT_TOOLS, [cfg], server=server, calib_dataset=None, lm_eval=None)
    steps.append(f"""# 2. LLM-API options (keys checked against TensorRT-LLM {contract.line}'s TorchLlmArgs).
mkdir -p "{trial_dir}"
cat > "{trial_dir}/llm_api_options.yaml" <<'YAML'
{_literal_yaml(options)}
YAML""")
    url = f"http://127.0.0.1:{HTTP_PORT}"
    if server == "triton":
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
        ready = f"{url}/v2/health/ready"
        config = f"{paths.repo_dir}/{TRITON_MODEL}/config.pbtxt"
        steps.append(f"""# 3. Triton's llmapi repository: the installed model, model.yaml from the options, and the
#    model made decoupled in config.pbtxt (launch_triton_server.py disables auto-complete, so
#    model.yaml's triton_config.decoupled alone may not reach Triton).
rm -rf "{paths.repo_dir}"
cp -R "{SCRIPT_TOOLS.llmapi_model}" "{paths.repo_dir}"
cat > "{paths.repo_dir}/{TRITON_MODEL}/1/model.yaml" <<YAML
{body}
YAML
{decouple_shell(config)}
SERVE=({shell_line(launch).replace(chr(92) + chr(10) + "    ", "")})""")
        endpoint = triton_endpoint(TRITON_MODEL, LLMAPI_PAYLOAD)
        model_name = TRITON_MODEL
        metrics = f'curl -sf "http://127.0.0.1:{METRICS_PORT}/metrics" > "{bench_dir}/metrics.txt"'
    else:
        serve = serve_command(
            contract,
            model_dir=str(checkpoint),
            options_file=f"{trial_dir}/llm_api_options.yaml",
            port=HTTP_PORT,
        )
        ready = f"{url}/health"
        steps.append(f"""# 3. trtllm-serve (OpenAI-compatible) with the options.
SERVE=({shell_line(serve).replace(chr(92) + chr(10) + "    ", "")})""")
        endpoint, model_name = OPENAI_COMPLETIONS, str(checkpoint)
        metrics = (
            f'curl -sf "{url}/metrics" > "{bench_dir}/iteration-stats.json" '
            "|| true  # JSON iteration stats, not Prometheus"
        )
    bench = Command(
        "aiperf",
        aiperf_command(
            url=url,
            model=model_name,
            workload=spec.workload,
            tokenizer=Path(str(checkpoint)),
            artifact_dir=Path(str(bench_dir)),
            executable=Path("aiperf"),
            endpoint=endpoint,
        ),
    )
    payload = (
        f"""cat > "{bench_dir}/{TEMPLATE_NAME}" <<'JSON'
{endpoint.payload.rstrip()}
JSON
"""
        if endpoint.payload
        else ""
    )
    serve = serve_block('"${SERVE[@]}"', ready, HTTP_PORT)
    steps.append(f"""# 4. Serve on this script's ports, in a session of its own; stop exactly that session on exit.
{serve}

# 5. Benchmark every concurrency level with aiperf ({endpoint.kind} endpoint).
mkdir -p "{bench_dir}"
{payload}{shell_line(bench)}
{metrics}
stop_server
trap - EXIT""")
    if spec.accuracy.tasks:
        evaluate = lm_eval_command(
            cfg,
            spec.accuracy,
            model_dir=str(checkpoint),
            tokenizer_dir=str(checkpoint),
            tasks=spec.accuracy.tasks,
            include_path="$TASKS_DIR",
            output_path=f"{trial_dir}/accuracy",
        )
        steps.append(f"""# 6. Accuracy with lm-eval's TensorRT-LLM model, every item logged (samples_*.jsonl) for the
#    paired comparison with the baseline; after the server, since both need the GPU's memory.
#    TASKS_DIR: one folder with the task YAMLs and their data (the built-in ones are written
#    under the workspace's tasks/ by `enginesweep run`; add accuracy.task_paths' YAMLs).
if [ -n "${{TASKS_DIR:-}}" ]; then
{_indent(shell_line(evaluate))}
else
    echo "TASKS_DIR is not set: accuracy skipped" >&2
fi""")
    repo_id = spec.model.repo_id or "the model"
    body = "\n\n".join(steps)
    return f"""#!/usr/bin/env bash
# {trial.slug}: {cfg.quant.value} weights, {cfg.kv_cache.value} KV cache, TP{cfg.tp} x PP{cfg.pp} on {trial.gpu}
# TensorRT-LLM {contract.line} PyTorch backend (trtllm-pytorch stack), served by {server}. Generated
# by `enginesweep plan {spec_name} --emit-scripts`; the commands are checked against {contract.line}.
# Run inside NVIDIA's image (see README.md), on {cfg.world_size} GPU(s).
set -euo pipefail
: "${{MODEL_DIR:?set MODEL_DIR to the local Hugging Face checkpoint folder of {repo_id}}}"
WORK="${{WORK:-$PWD/enginesweep-work}}"
SCRIPTS_DIR="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
{calib_variable(spec.build.calib_dataset)}
export MODEL_DIR WORK CALIB_DATASET
case "$MODEL_DIR$WORK${{TASKS_DIR:-}}" in
    *,*) echo "MODEL_DIR, WORK and TASKS_DIR may not hold ',' (lm-eval's --model_args and aiperf's --extra-inputs split on it)" >&2
        exit 2 ;;
esac

{version_gate(contract)}

{layout_shell(spec.execution.trtllm_root, spec.execution.trtllm_paths)}

# Every file and program this trial uses, before any work.
{require_lines(required)}

# The server's ports: free ones (or HTTP_PORT, GRPC_PORT, METRICS_PORT from the environment).
{ports_shell()}
{body}
"""


def _indent(text: str) -> str:
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
