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
from pathlib import PurePosixPath
from typing import Sequence

from build_configs.quant import KVCacheFormat
from build_configs.schema import Accuracy, Build
from engines.trtllm.commands import Command
from engines.trtllm.contract import ContractError, VersionContract, check_command
from evaluation.planning.records import TrialConfig

SERVE_TOOL = "trtllm-serve serve"
PTQ_TOOL = "hf_ptq.py"
LM_EVAL_TOOL = "lm-eval run"


def ptq_formats(contract: VersionContract, cfg: TrialConfig) -> tuple[str, str]:
    """hf_ptq.py's `--qformat` and `--kv_cache_qformat` for a trial; ContractError for a format
    the pinned ModelOpt cannot export as a unified HF checkpoint."""
    modelopt = contract.modelopt or {}
    qformat = cfg.quant.spec.trtllm_qformat
    if qformat not in modelopt.get("qformat_configs", {}):
        raise ContractError(f"{cfg.quant.value}: not a unified-HF format of hf_ptq.py "
                            f"({modelopt.get('source', 'no ModelOpt contract')})")
    kv = "none" if cfg.kv_cache is KVCacheFormat.AUTO else cfg.kv_cache.value
    if kv != "none" and kv not in modelopt.get("kv_qformat_configs", {}):
        raise ContractError(f"kv_cache {cfg.kv_cache.value}: hf_ptq.py has no such --kv_cache_qformat")
    return qformat, kv


def ptq_command(contract: VersionContract, cfg: TrialConfig, build: Build, *,
                examples_dir: PurePosixPath, hf_checkpoint: PurePosixPath, export_dir: PurePosixPath
                ) -> Command:
    """ModelOpt's hf_ptq.py: quantize and write a unified HF checkpoint (safetensors,
    `config.json` with `quantization_config`, `hf_quant_config.json`). TP and PP are not fixed
    by the export: one checkpoint serves every TP/PP of the same format."""
    qformat, kv = ptq_formats(contract, cfg)
    args = ["--pyt_ckpt_path", str(hf_checkpoint), "--qformat", qformat, "--kv_cache_qformat", kv,
            "--calib_size", str(build.calib_size), "--export_path", str(export_dir)]
    if cfg.quant.spec.group_scaled:
        args += ["--awq_block_size", str(build.awq_block_size)]
    if build.calib_dataset is not None:  # else hf_ptq.py's own default dataset
        args += ["--dataset", build.calib_dataset]
    check_command(contract, PTQ_TOOL, args)
    return Command(PTQ_TOOL, ["python3", str(examples_dir / "llm_ptq/hf_ptq.py"), *args])


def serve_command(contract: VersionContract, *, model_dir: str, options_file: str, port: int,
                  host: str = "127.0.0.1", executable: str = "trtllm-serve") -> Command:
    """`trtllm-serve serve MODEL` on the PyTorch backend with the trial's options YAML (which
    holds TP, PP and the limits: the YAML wins over the command line, key by key)."""
    args = ["--host", host, "--port", str(port), "--backend", "pytorch",
            "--extra_llm_api_options", options_file, "--log_level", "info"]
    check_command(contract, SERVE_TOOL, args)
    return Command(SERVE_TOOL, [executable, "serve", model_dir, *args])


def _lm_eval_parser() -> argparse.ArgumentParser:
    from lm_eval._cli.harness import HarnessCLI  # noqa: PLC0415 - the installed harness's own parser

    return HarnessCLI()._parser


def check_lm_eval(argv: Sequence[str]) -> None:
    """Raise ContractError unless the installed lm-eval's own parser accepts `argv` (after the
    program) and every `--model_args` key of the `trtllm` model is a parameter of its wrapper."""
    from lm_eval.models.trtllm_causallms import TRTLLM  # noqa: PLC0415 - imports without tensorrt_llm

    sink, parser = io.StringIO(), _lm_eval_parser()
    try:
        with contextlib.redirect_stderr(sink):
            args = parser.parse_args(list(argv))
    except SystemExit:
        raise ContractError(f"lm-eval rejects {' '.join(argv)}: {sink.getvalue().strip()}") from None
    run = parser._subparsers._group_actions[0].choices["run"]  # noqa: SLF001 - argparse has no API
    for option, action in run._option_string_actions.items():  # noqa: SLF001
        if type(action) is argparse._StoreAction and list(argv).count(option) > 1:  # noqa: SLF001
            raise ContractError(f"lm-eval keeps only the last {option}: pass it once")
    if args.model != "trtllm":
        raise ContractError(f"lm-eval --model {args.model}: the GPU stacks evaluate with 'trtllm'")
    accepted = set(inspect.signature(TRTLLM.__init__).parameters) - {"self", "kwargs"}
    unknown = [key for key in (args.model_args or {}) if key not in accepted]
    if unknown:
        # The wrapper swallows unknown keys (**kwargs) silently: a typo would be ignored on the GPU.
        raise ContractError(f"lm-eval's trtllm model takes no {', '.join(unknown)} "
                            f"(it takes {', '.join(sorted(accepted))})")


def lm_eval_command(cfg: TrialConfig, accuracy: Accuracy, *, model_dir: str, tokenizer_dir: str,
                    tasks: Sequence[str], include_path: str | None, output_path: str,
                    executable: str = "lm-eval") -> Command:
    """lm-eval with its TensorRT-LLM model (`--model trtllm`: the PyTorch-backend `LLM` over the
    bundle's checkpoint, prompt log-probabilities for multiple-choice items), every item logged
    (`--log_samples`) so the comparison with the baseline is paired item by item."""
    argv = ["run", "--model", "trtllm", "--model_args",
            f"model={model_dir},tokenizer={tokenizer_dir},tensor_parallel_size={cfg.tp},"
            f"pipeline_parallel_size={cfg.pp},max_batch_size={accuracy.batch_size}",
            "--tasks", ",".join(tasks), "--batch_size", str(accuracy.batch_size),
            "--output_path", output_path, "--log_samples", "--seed", "0"]
    if include_path is not None:  # one folder: lm-eval keeps only the last --include_path
        argv += ["--include_path", include_path]
    if accuracy.task_limit is not None:
        argv += ["--limit", str(accuracy.task_limit)]
    check_lm_eval(argv)
    return Command(LM_EVAL_TOOL, [executable, *argv])

