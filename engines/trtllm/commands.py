"""The exact commands of the TensorRT engine path for one trial, as argument lists.

One function per step; the `trtllm-engine` stack runs these lists and `plan --emit-scripts`
writes the very same lists into shell scripts, so what a user reads is what would run. Every
list passes the pinned version's contract (`contract.check_command`) when it is made.

Steps (paths inside the machine that runs them, i.e. the Triton + TensorRT-LLM container):

1. checkpoint: `quantize.py` for a quantized format (`--qformat`, `--kv_cache_dtype` only when
   the KV cache is quantized: FP8 weights never imply an FP8 KV cache) and for a 16-bit model with
   a quantized KV cache (`--qformat full_prec`, calibrated), `convert_checkpoint.py` for the plain
   16-bit baseline. TP and PP are fixed here, so the checkpoint is keyed by (quant, kv, tp, pp)
   and shared by trials.
2. build: `trtllm-build` with every limit and feature explicit (defaults moved across releases).
3. repository: copy the installed `inflight_batcher_llm` templates, fill each model with
   `fill_template.py` (values from `repository_values`), then parse every file (the stack does).
4. launch: `launch_triton_server.py --world_size TP*PP` with the three ports.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from enginesweep.build_configs.quant import KVCacheFormat, QuantFormat
from enginesweep.build_configs.schema import Build, Stack
from enginesweep.build_configs.trial import TrialConfig
from enginesweep.engines.trtllm.contract import ContractError, VersionContract, check_command
from enginesweep.engines.trtllm.layout import LayoutError, Required, ToolPaths
from enginesweep.engines.trtllm.templates import fill_args

FP8_CONTEXT_FMHA = (QuantFormat.FP8, QuantFormat.W4A8_AWQ, QuantFormat.NVFP4)
"""Weight formats with FP8 attention inputs: FP8 context FMHA is allowed only with these (and an
FP8 KV cache); elsewhere it is a build error on some GPUs and wrong on others."""
_DTYPE = "bfloat16"


@dataclass(frozen=True)
class Command:
    """One command: the contract tool it is checked against and its argument list."""

    tool: str
    argv: list[str]

    def shell(self) -> str:
        """The command as one shell line (every argument quoted as needed)."""
        return shlex.join(self.argv)


@dataclass(frozen=True)
class TrialPaths:
    """Where one trial's files live on the machine that runs it."""

    tools: ToolPaths
    hf_checkpoint: PurePosixPath
    checkpoint_dir: PurePosixPath
    engine_dir: PurePosixPath
    repo_dir: PurePosixPath
    timing_cache: PurePosixPath
    calib_dataset: str | None = None

    @property
    def templates(self) -> PurePosixPath:
        return self.tools.engine_templates


def checkpoint_key(cfg: TrialConfig) -> str:
    """The shared quantized checkpoint of every trial with this (quant, kv, tp, pp, ep): the
    engine path fixes the expert layout in the checkpoint."""
    key = f"{cfg.quant.value}__kv-{cfg.kv_cache.value}__tp{cfg.tp}__pp{cfg.pp}"
    return key + (f"__ep{cfg.ep}" if cfg.ep > 1 else "")


def _checked(contract: VersionContract, tool: str, program: list[str], args: list[str]) -> Command:
    check_command(contract, tool, args)
    return Command(tool, [*program, *args])


def checkpoint_command(
    contract: VersionContract, cfg: TrialConfig, build: Build, paths: TrialPaths
) -> Command:
    """quantize.py (quantized formats) or convert_checkpoint.py (16-bit baseline)."""
    calib = ["--calib_dataset", paths.calib_dataset] if paths.calib_dataset else []
    sixteen_bit = cfg.quant in (QuantFormat.BF16, QuantFormat.FP16)
    dtype = "float16" if cfg.quant is QuantFormat.FP16 else _DTYPE
    if sixteen_bit and cfg.kv_cache is KVCacheFormat.AUTO:
        args = [
            "--model_dir",
            str(paths.hf_checkpoint),
            "--output_dir",
            str(paths.checkpoint_dir),
            "--dtype",
            dtype,
            "--tp_size",
            str(cfg.tp),
            "--pp_size",
            str(cfg.pp),
        ]
        if cfg.ep > 1:  # Mixtral: experts over ep ranks, each over tp/ep (product = tp)
            args += ["--moe_tp_size", str(cfg.tp // cfg.ep), "--moe_ep_size", str(cfg.ep)]
        program = ["python3", str(paths.tools.convert_checkpoint_py)]
        return _checked(contract, "convert_checkpoint.py", program, args)
    # A 16-bit model with a quantized KV cache goes through quantize.py `full_prec`: it calibrates
    # the KV scales on --calib_dataset (convert_checkpoint.py's --int8_kv_cache cannot read a local
    # dataset folder, and its --fp8_kv_cache is not calibrated at all).
    if cfg.ep > 1:
        raise ContractError("quantize.py has no expert-parallel option (rules.engine_expert_checkpoint)")
    qformat = "full_prec" if sixteen_bit else cfg.quant.spec.trtllm_qformat
    samples, tokens = build.calibration(Stack.TRTLLM_ENGINE, cfg.quant)
    if qformat is None:
        raise ContractError(f"{cfg.quant.value} has no quantize.py --qformat")
    args = [
        "--model_dir",
        str(paths.hf_checkpoint),
        "--output_dir",
        str(paths.checkpoint_dir),
        "--dtype",
        dtype,
        "--qformat",
        qformat,
        "--tp_size",
        str(cfg.tp),
        "--pp_size",
        str(cfg.pp),
        "--calib_size",
        str(samples),
        "--calib_max_seq_length",
        str(tokens),
        *calib,
    ]
    if cfg.kv_cache is not KVCacheFormat.AUTO:  # explicit: FP8 weights never imply an FP8 KV cache
        args += ["--kv_cache_dtype", cfg.kv_cache.value]
    if cfg.quant in (QuantFormat.INT4_AWQ, QuantFormat.W4A8_AWQ):
        args += ["--awq_block_size", str(build.awq_block_size)]
    program = ["python3", str(paths.tools.quantize_py)]
    return _checked(contract, "quantize.py", program, args)


def max_input_len(cfg: TrialConfig) -> int:
    """The longest prompt: below max_seq_len, and within max_num_tokens because chunked context
    stays off (a longer prompt could not be scheduled in one step)."""
    return min(cfg.max_seq_len - 1, cfg.max_num_tokens)


def build_command(contract: VersionContract, cfg: TrialConfig, paths: TrialPaths) -> Command:
    """trtllm-build with every limit and feature flag given."""
    fp8_fmha = cfg.quant in FP8_CONTEXT_FMHA and cfg.kv_cache is KVCacheFormat.FP8
    # The 1.2 builder silently turns paged context FMHA off for an INT8 KV cache and for an FP8
    # one without FP8 attention inputs: say so in the command instead of asking for it in vain.
    paged_fmha = not (
        cfg.kv_cache is KVCacheFormat.INT8 or (cfg.kv_cache is KVCacheFormat.FP8 and not fp8_fmha)
    )
    args = [
        "--checkpoint_dir",
        str(paths.checkpoint_dir),
        "--output_dir",
        str(paths.engine_dir),
        "--max_batch_size",
        str(cfg.max_batch_size),
        "--max_input_len",
        str(max_input_len(cfg)),
        "--max_seq_len",
        str(cfg.max_seq_len),
        "--max_num_tokens",
        str(cfg.max_num_tokens),
        "--max_beam_width",
        "1",
        "--kv_cache_type",
        "paged",
        "--gemm_plugin",
        "auto",
        "--gpt_attention_plugin",
        "auto",
        "--context_fmha",
        "enable",
        "--remove_input_padding",
        "enable",
        "--use_paged_context_fmha",
        "enable" if paged_fmha else "disable",
        "--use_fp8_context_fmha",
        "enable" if fp8_fmha else "disable",
        # Defaults that moved across releases, pinned at 1.2's values.
        "--tokens_per_block",
        "32",
        "--use_fused_mlp",
        "enable",
        "--multiple_profiles",
        "disable",
        "--reduce_fusion",
        "disable",
        "--user_buffer",
        "disable",
        "--logits_dtype",
        "float32",
        "--workers",
        str(cfg.world_size),
        "--input_timing_cache",
        str(paths.timing_cache),
        "--output_timing_cache",
        str(paths.timing_cache),
    ]
    return _checked(contract, "trtllm-build", ["trtllm-build"], args)


def repository_values(cfg: TrialConfig, build: Build, paths: TrialPaths) -> dict[str, dict[str, object]]:
    """What each model of the `inflight_batcher_llm` repository is filled with."""
    batch = cfg.max_batch_size
    return {
        "tensorrt_llm": {
            "triton_backend": "tensorrtllm",
            "triton_max_batch_size": batch,
            "decoupled_mode": "true",
            "max_queue_delay_microseconds": 0,
            "max_queue_size": 0,
            "engine_dir": str(paths.engine_dir),
            "batching_strategy": "inflight_fused_batching",
            "kv_cache_free_gpu_mem_fraction": build.kv_cache_free_gpu_mem_fraction,
            "enable_kv_cache_reuse": "false",
            "exclude_input_in_output": "true",
            "batch_scheduler_policy": "guaranteed_no_evict",
            "enable_chunked_context": "false",
            "max_beam_width": 1,
            "encoder_input_features_data_type": "TYPE_FP16",
            "logits_datatype": "TYPE_FP32",
            "prompt_embedding_table_data_type": "TYPE_FP16",
            "gpu_device_ids": ",".join(str(i) for i in range(cfg.world_size)),
        },
        "preprocessing": {
            "tokenizer_dir": str(paths.hf_checkpoint),
            "triton_max_batch_size": batch,
            "max_queue_delay_microseconds": 0,
            "max_queue_size": 0,
            "preprocessing_instance_count": 1,
        },
        "postprocessing": {
            "tokenizer_dir": str(paths.hf_checkpoint),
            "triton_max_batch_size": batch,
            "postprocessing_instance_count": 1,
        },
        "ensemble": {"triton_max_batch_size": batch, "logits_datatype": "TYPE_FP32"},
        "tensorrt_llm_bls": {
            "triton_max_batch_size": batch,
            "decoupled_mode": "true",
            "bls_instance_count": 1,
            "logits_datatype": "TYPE_FP32",
            "accumulate_tokens": "false",
            "tensorrt_llm_model_name": "tensorrt_llm",
        },
    }


def checked_values(
    contract_templates: Mapping[str, Mapping[str, list[str]]], values: Mapping[str, Mapping[str, object]]
) -> None:
    """Every value names a documented placeholder of its model, every structural and runtime-
    required placeholder has a value, and no value holds a ':' (fill_template.py would split it)."""
    for model, spec in contract_templates.items():
        known = set(spec["structural"]) | set(spec["parameters"])
        given = values.get(model, {})
        unknown = sorted(set(given) - known)
        if unknown:
            raise ContractError(f"{model}: {', '.join(unknown)} is not a placeholder of its template")
        missing = [
            name
            for name in [*spec["structural"], *spec["runtime_required"]]
            if str(given.get(name, "")) == ""
        ]
        if missing:
            raise ContractError(f"{model}: required placeholder(s) {', '.join(missing)} have no value")
        colons = [key for key, value in given.items() if ":" in str(value)]
        if colons:
            raise ContractError(f"{model}: {', '.join(colons)} hold ':', which fill_template.py cannot take")


def repository_commands(
    contract: VersionContract, values: Mapping[str, Mapping[str, object]], paths: TrialPaths
) -> list[Command]:
    """Copy the installed templates and fill each model in place."""
    raw = contract.templates
    checked_values(raw, values)
    fill = str(_triton_file(paths.tools.fill_template, "fill_template.py"))
    commands = [
        Command("shell", ["rm", "-rf", str(paths.repo_dir)]),
        Command("shell", ["cp", "-r", str(paths.templates), str(paths.repo_dir)]),
    ]
    for model, model_values in values.items():
        commands.append(
            Command(
                "fill_template.py",
                [
                    "python3",
                    fill,
                    "-i",
                    str(paths.repo_dir / model / "config.pbtxt"),
                    fill_args(model_values),
                ],
            )
        )
    return commands


def launch_command(
    contract: VersionContract,
    cfg: TrialConfig,
    paths: TrialPaths,
    *,
    http_port: int | str,
    grpc_port: int | str,
    metrics_port: int | str,
) -> Command:
    """launch_triton_server.py over the repository with TP*PP ranks, on this trial's own ports.
    `--force`: the launcher otherwise refuses to start while any tritonserver runs on the
    machine, which another trial's server on other GPUs and ports is; the trial proves after
    readiness that the server answering on its port is its own (`engines.processes`)."""
    args = [
        "--world_size",
        str(cfg.world_size),
        "--model_repo",
        str(paths.repo_dir),
        "--http_port",
        str(http_port),
        "--grpc_port",
        str(grpc_port),
        "--metrics_port",
        str(metrics_port),
        "--tritonserver",
        str(_triton_file(paths.tools.tritonserver, "tritonserver")),
        "--force",
    ]
    program = ["python3", str(_triton_file(paths.tools.launch_triton_server, "launch_triton_server.py"))]
    return _checked(contract, "launch_triton_server.py", program, args)


def _triton_file(path: PurePosixPath | None, what: str) -> PurePosixPath:
    if path is None:
        raise LayoutError(
            f"{what}: this layout has no Triton (the release image): serve with "
            "trtllm-serve (execution.engine_server / execution.pytorch_server: "
            "trtllm-serve), or run in the tritonserver image"
        )
    return path


ENGINE_MODELS = ("preprocessing", "tensorrt_llm", "postprocessing", "ensemble", "tensorrt_llm_bls")
"""The `inflight_batcher_llm` models of the repository (`repository_values` fills each)."""


def required_files(
    tools: ToolPaths,
    configs: Sequence[TrialConfig],
    *,
    server: str,
    calib_dataset: str | None,
    accuracy: bool,
) -> list[Required]:
    """Every file and program the engine path's steps use for `configs` (the stack's preflight
    and the emitted scripts' `require` lines): quantize.py for calibrated formats (and the
    calibration folder), convert_checkpoint.py for 16-bit baselines (and the baseline engine of
    a served accuracy run), trtllm-build, and the server's files (Triton's templates, filler,
    launcher, binary and tensorrtllm backend; or trtllm-serve)."""
    needed: list[Required] = []
    calibrated = [c for c in configs if c.quant.is_quantized or c.kv_cache is not KVCacheFormat.AUTO]
    if calibrated:
        needed.append(Required("quantize.py", str(tools.quantize_py)))
        if calib_dataset is not None:
            needed.append(
                Required(
                    "the calibration dataset (a local folder of JSON lines with a "
                    "text column: build.calib_dataset)",
                    calib_dataset,
                )
            )
    if accuracy or len(calibrated) < len(configs):
        needed.append(Required("convert_checkpoint.py", str(tools.convert_checkpoint_py)))
    needed.append(Required("trtllm-build", "trtllm-build", program=True))
    if server == "trtllm-serve":
        return [*needed, Required("trtllm-serve", "trtllm-serve", program=True)]
    no_triton = (
        "not in this layout (the release image has no Triton): set execution.engine_server: trtllm-serve"
    )
    if tools.triton_models is None or tools.fill_template is None or tools.launch_triton_server is None:
        return [
            *needed,
            Required(
                f"Triton's model templates, fill_template.py and launch_triton_server.py ({no_triton})",
                "<none in this layout>",
            ),
        ]
    needed += [
        Required("Triton's model templates", str(tools.triton_models)),
        *(
            Required(f"the {model} template", str(tools.engine_templates / model / "config.pbtxt"))
            for model in ENGINE_MODELS
        ),
        Required("fill_template.py", str(tools.fill_template)),
        Required("launch_triton_server.py", str(tools.launch_triton_server)),
    ]
    if tools.tritonserver is not None and tools.triton_backends is not None:
        needed += [
            Required("tritonserver", str(tools.tritonserver), program=True),
            Required("Triton's tensorrtllm backend", str(tools.triton_backends / "tensorrtllm")),
        ]
    return needed
