"""The exact commands of the `trtllm-pytorch` stack for one trial, as argument lists.

One function per command; every list passes the pinned contract when it is made: hf_ptq.py and
trtllm-serve against the options listed in `engines/trtllm/flags/`, lm-eval against the parser
of the installed lm-evaluation-harness (the version the project pins) and the signature of its
`trtllm` model. `plan --emit-scripts` writes these lists; the stack itself runs the server ones
(the quantization it does in-process with ModelOpt's Python API, the calls hf_ptq.py makes).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
from collections.abc import Sequence
from pathlib import PurePosixPath

from enginesweep.build_configs.quant import KVCacheFormat
from enginesweep.build_configs.schema import Accuracy, Build, Stack
from enginesweep.build_configs.trial import TrialConfig
from enginesweep.engines.trtllm.commands import Command
from enginesweep.engines.trtllm.contract import ContractError, VersionContract, check_command
from enginesweep.engines.trtllm.layout import Required, ToolPaths

SERVE_TOOL = "trtllm-serve serve"
QUANTIZE_TOOL = "enginesweep quantize"
LM_EVAL_TOOL = "lm-eval run"


def ptq_formats(contract: VersionContract, cfg: TrialConfig) -> tuple[str, str]:
    """hf_ptq.py's `--qformat` and `--kv_cache_qformat` for a trial; ContractError for a format
    the pinned ModelOpt cannot export as a unified HF checkpoint."""
    modelopt = contract.modelopt or {}
    qformat = cfg.quant.spec.trtllm_qformat
    if qformat not in modelopt.get("qformat_configs", {}):
        raise ContractError(
            f"{cfg.quant.value}: not a unified-HF format of hf_ptq.py "
            f"({modelopt.get('source', 'no ModelOpt contract')})"
        )
    kv = "none" if cfg.kv_cache is KVCacheFormat.AUTO else cfg.kv_cache.value
    if kv != "none" and kv not in modelopt.get("kv_qformat_configs", {}):
        raise ContractError(f"kv_cache {cfg.kv_cache.value}: hf_ptq.py has no such --kv_cache_qformat")
    return qformat, kv


def quantize_command(
    contract: VersionContract,
    cfg: TrialConfig,
    build: Build,
    *,
    hf_checkpoint: PurePosixPath,
    export_dir: PurePosixPath,
    calib_dataset: PurePosixPath,
    executable: str = "enginesweep",
) -> Command:
    """`enginesweep quantize`: ModelOpt's quantization and unified HF export (safetensors,
    `config.json` with `quantization_config`, `hf_quant_config.json`) of one format, by the very
    code the stack runs in-process (`engines.quantize.hf_export`), calibrated on the local folder
    `calib_dataset`, offline. Emitted scripts run it instead of ModelOpt's hf_ptq.py, which is in
    neither image and, at ModelOpt 0.37, calibrates only on hub datasets. TP and PP are not fixed
    by the export: one checkpoint serves every TP/PP of the same format."""
    ptq_formats(contract, cfg)  # a format the unified export cannot write: refused here
    samples, tokens = build.calibration(Stack.TRTLLM_PYTORCH, cfg.quant)
    argv = [
        executable,
        "quantize",
        "--model",
        str(hf_checkpoint),
        "--quant",
        cfg.quant.value,
        "--kv-cache",
        cfg.kv_cache.value,
        "--calib-dataset",
        str(calib_dataset),
        "--calib-size",
        str(samples),
        "--calib-seq-len",
        str(tokens),
        "--export-dir",
        str(export_dir),
    ]
    if cfg.quant.spec.group_scaled:
        argv += ["--awq-block-size", str(build.awq_block_size)]
    return Command(QUANTIZE_TOOL, argv)


def serve_command(
    contract: VersionContract,
    *,
    model_dir: str,
    port: int | str,
    backend: str = "pytorch",
    options_file: str | None = None,
    tokenizer: str | None = None,
    extra: Sequence[str] = (),
    host: str = "127.0.0.1",
    executable: str = "trtllm-serve",
) -> Command:
    """`trtllm-serve serve MODEL` on loopback: the PyTorch backend with the trial's options YAML
    (which holds TP, PP and the limits: the YAML wins over the command line, key by key), or the
    TensorRT backend over an engine folder with the Hugging Face tokenizer beside it (`extra`:
    the engine's TP/PP and KV-cache share)."""
    args = ["--host", host, "--port", str(port), "--backend", backend]
    if tokenizer is not None:
        args += ["--tokenizer", tokenizer]
    if options_file is not None:
        args += ["--extra_llm_api_options", options_file]
    args += [*extra, "--log_level", "info"]
    check_command(contract, SERVE_TOOL, args)
    return Command(SERVE_TOOL, [executable, "serve", model_dir, *args])


def engine_serve_command(
    contract: VersionContract,
    cfg: TrialConfig,
    *,
    engine_dir: str,
    port: int | str,
    tokenizer: str,
    kv_fraction: float,
) -> Command:
    """`trtllm-serve ENGINE --backend tensorrt` with the engine's TP/PP and the KV-cache share (the
    limits are the engine's own, fixed at build time)."""
    extra = [
        "--tp_size",
        str(cfg.tp),
        "--pp_size",
        str(cfg.pp),
        "--kv_cache_free_gpu_memory_fraction",
        str(kv_fraction),
    ]
    return serve_command(
        contract, model_dir=engine_dir, port=port, backend="tensorrt", tokenizer=tokenizer, extra=extra
    )


def _lm_eval_parser() -> argparse.ArgumentParser:
    from lm_eval._cli.harness import HarnessCLI

    return HarnessCLI()._parser


def check_lm_eval(argv: Sequence[str]) -> None:
    """Raise ContractError unless the installed lm-eval's own parser accepts `argv` (after the
    program) and every `--model_args` key of the `trtllm` model is a parameter of its wrapper."""
    from lm_eval.models.trtllm_causallms import TRTLLM

    sink, parser = io.StringIO(), _lm_eval_parser()
    try:
        with contextlib.redirect_stderr(sink):
            args = parser.parse_args(list(argv))
    except SystemExit:
        raise ContractError(f"lm-eval rejects {' '.join(argv)}: {sink.getvalue().strip()}") from None
    run = parser._subparsers._group_actions[0].choices["run"]
    for option, action in run._option_string_actions.items():
        if type(action) is argparse._StoreAction and list(argv).count(option) > 1:
            raise ContractError(f"lm-eval keeps only the last {option}: pass it once")
    if args.model != "trtllm":
        raise ContractError(f"lm-eval --model {args.model}: the GPU stacks evaluate with 'trtllm'")
    accepted = set(inspect.signature(TRTLLM.__init__).parameters) - {"self", "kwargs"}
    unknown = [key for key in (args.model_args or {}) if key not in accepted]
    if unknown:
        # The wrapper swallows unknown keys (**kwargs) silently: a typo would be ignored on the GPU.
        raise ContractError(
            f"lm-eval's trtllm model takes no {', '.join(unknown)} (it takes {', '.join(sorted(accepted))})"
        )


def lm_eval_command(
    cfg: TrialConfig,
    accuracy: Accuracy,
    *,
    model_dir: str,
    tokenizer_dir: str,
    tasks: Sequence[str],
    include_path: str | None,
    output_path: str,
    executable: str = "lm-eval",
) -> Command:
    """lm-eval with its TensorRT-LLM model (`--model trtllm`: the PyTorch-backend `LLM` over the
    bundle's checkpoint, prompt log-probabilities for multiple-choice items), every item logged
    (`--log_samples`) so the comparison with the baseline is paired item by item."""
    argv = [
        "run",
        "--model",
        "trtllm",
        "--model_args",
        f"model={model_dir},tokenizer={tokenizer_dir},tensor_parallel_size={cfg.tp},"
        f"pipeline_parallel_size={cfg.pp},max_batch_size={accuracy.batch_size}",
        "--tasks",
        ",".join(tasks),
        "--batch_size",
        str(accuracy.batch_size),
        "--output_path",
        output_path,
        "--log_samples",
        "--seed",
        "0",
    ]
    if include_path is not None:  # one folder: lm-eval keeps only the last --include_path
        argv += ["--include_path", include_path]
    if accuracy.task_limit is not None:
        argv += ["--limit", str(accuracy.task_limit)]
    check_lm_eval(argv)
    return Command(LM_EVAL_TOOL, [executable, *argv])


def required_files(
    tools: ToolPaths | None,
    configs: Sequence[TrialConfig],
    *,
    server: str,
    calib_dataset: str | None,
    lm_eval: str | None,
) -> list[Required]:
    """Every file and program the PyTorch path uses for `configs` (the stack's preflight and the
    emitted scripts' `require` lines): the calibration folder when one is named, the server's
    files (Triton's llmapi model, launcher, binary and python backend; or trtllm-serve), and
    `lm_eval` (the lm-eval program) when accuracy tasks run. Quantization itself is ModelOpt's
    Python API: no file of TensorRT-LLM's."""
    needed: list[Required] = []
    if calib_dataset is not None and any(c.quant.is_quantized for c in configs):
        needed.append(
            Required(
                "the calibration dataset (a local folder of JSON lines with a "
                "text column: build.calib_dataset)",
                calib_dataset,
            )
        )
    if lm_eval is not None:
        needed.append(Required("lm-eval (its trtllm model scores the accuracy tasks)", lm_eval, program=True))
    if server == "trtllm-serve":
        return [*needed, Required("trtllm-serve", "trtllm-serve", program=True)]
    if tools is None:
        return [
            *needed,
            Required(
                "Triton's llmapi model and launch_triton_server.py (no TensorRT-LLM layout found)",
                "<no layout found>",
            ),
        ]
    if tools.triton_models is None or tools.launch_triton_server is None:
        return [
            *needed,
            Required(
                "Triton's llmapi model and launch_triton_server.py (not in this "
                "layout: the release image has no Triton): set "
                "execution.pytorch_server: trtllm-serve",
                "<none in this layout>",
            ),
        ]
    llmapi = tools.llmapi_model / "tensorrt_llm"
    needed += [
        Required("the llmapi model's config.pbtxt", str(llmapi / "config.pbtxt")),
        Required("the llmapi model's model.py", str(llmapi / "1" / "model.py")),
        Required("launch_triton_server.py", str(tools.launch_triton_server)),
    ]
    if tools.tritonserver is not None and tools.triton_backends is not None:
        needed += [
            Required("tritonserver", str(tools.tritonserver), program=True),
            Required("Triton's python backend", str(tools.triton_backends / "python")),
        ]
    return needed
