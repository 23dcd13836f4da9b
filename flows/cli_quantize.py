"""`enginesweep quantize`: one ModelOpt quantization + unified HF export for the trtllm-pytorch
stack, the very code its trials run in-process (`engines.quantize.hf_export`), as a command.

Emitted scripts call it where they would otherwise need ModelOpt's `hf_ptq.py`, which neither of
NVIDIA's images ships and which, at ModelOpt 0.37 (TensorRT-LLM 1.2's pin), calibrates only on
hub datasets. It calibrates on a local folder of JSON lines (`text` column) with the hub and
datasets switched off, writes into `<export-dir>.partial` and renames it when whole, and checks
the written `hf_quant_config.json` against the asked formats.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from enginesweep.build_configs.quant import KVCacheFormat, QuantFormat
from enginesweep.flows.cli_common import _fail, app, err

if TYPE_CHECKING:
    from enginesweep.engines.quantize.recipes import QuantRecipe


def _check_paths(model: Path, export_dir: Path) -> None:
    """Fail unless `model` is a checkpoint folder and `export_dir` is free."""
    if not (model / "config.json").is_file():
        raise _fail(f"--model: {model} holds no config.json (a local Hugging Face checkpoint folder)")
    if export_dir.exists():
        raise _fail(f"--export-dir: {export_dir} exists; remove it or name another folder")


def _calibration_texts(
    quant: QuantFormat, kv_cache: KVCacheFormat, calib_dataset: Path, calib_size: int
) -> list[str]:
    """The calibration texts, once the newest contract accepts the formats; fail otherwise."""
    from enginesweep.build_configs.trial import TrialConfig
    from enginesweep.engines.llmapi.commands import ptq_formats
    from enginesweep.engines.quantize.hf_export import ExportError, local_texts
    from enginesweep.engines.trtllm.contract import ContractError, contracts

    config = TrialConfig(
        quant=quant, kv_cache=kv_cache, tp=1, pp=1, max_batch_size=1, max_num_tokens=1, max_seq_len=2
    )
    try:
        ptq_formats(contracts()[max(contracts())], config)
        return local_texts(calib_dataset, calib_size)
    except (ContractError, ExportError) as exc:
        raise _fail(str(exc)) from None


def _export(
    model: Path, recipe: QuantRecipe, export_dir: Path, texts: list[str], seq_len: int
) -> dict[str, Any]:
    """Quantize into `<export_dir>.partial`, renamed when whole; returns the written quant config."""
    from enginesweep.engines.quantize.hf_export import ExportError, export_unified_hf

    partial = export_dir.with_name(export_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        written = export_unified_hf(
            model,
            recipe,
            partial,
            calibration_texts=texts,
            seq_len=seq_len,
            log=lambda line: err.print(line, highlight=False, markup=False),
        )
    except ExportError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise _fail(str(exc), code=1) from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # nothing half-written under either name
        raise
    partial.rename(export_dir)
    return written


@app.command()
def quantize(
    model: Annotated[Path, typer.Option("--model", help="The local Hugging Face checkpoint folder.")],
    quant: Annotated[QuantFormat, typer.Option("--quant", help="Weight format.")],
    calib_dataset: Annotated[
        Path,
        typer.Option(
            "--calib-dataset",
            help="A local folder of JSON lines files with a `text` column "
            "(train*.jsonl first), e.g. the emitted scripts' calibration/.",
        ),
    ],
    calib_size: Annotated[int, typer.Option("--calib-size", min=1, help="Calibration samples.")],
    calib_seq_len: Annotated[
        int, typer.Option("--calib-seq-len", min=1, help="Tokens per calibration sample.")
    ],
    export_dir: Annotated[
        Path, typer.Option("--export-dir", help="Where the checkpoint goes (must not exist).")
    ],
    kv_cache: Annotated[
        KVCacheFormat, typer.Option("--kv-cache", help="KV-cache format.")
    ] = KVCacheFormat.AUTO,
    awq_block_size: Annotated[int, typer.Option("--awq-block-size", help="AWQ group size.")] = 128,
) -> None:
    """trtllm-pytorch: quantize a checkpoint with ModelOpt and export the unified HF checkpoint
    (what the stack does in-process; offline, on a local calibration folder)."""
    # Before transformers and datasets are imported: they read these once.
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    from enginesweep.engines.quantize.recipes import QuantRecipe

    _check_paths(model, export_dir)
    texts = _calibration_texts(quant, kv_cache, calib_dataset, calib_size)
    recipe = QuantRecipe(quant=quant, kv_cache=kv_cache, awq_block_size=awq_block_size)
    written = _export(model, recipe, export_dir, texts, calib_seq_len)
    quantization = written.get("quantization", {})
    err.print(
        f"wrote {export_dir}: quant_algo {quantization.get('quant_algo')}, kv_cache_quant_algo "
        f"{quantization.get('kv_cache_quant_algo')} ({len(texts)} calibration samples)",
        highlight=False,
    )
