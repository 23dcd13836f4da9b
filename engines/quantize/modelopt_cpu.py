"""Quantize a Hugging Face checkpoint with NVIDIA ModelOpt on the CPU (the `reference` stack).

One call makes one quantized checkpoint folder:

* `model/`: the fake-quantized model, computed in fp32: `config.json`, the tokenizer and
  `modelopt_model.pth` (`mto.save`: the ModelOpt state and every weight and quantizer scale).
  It is what the reference server and the accuracy evaluation load with `load_quantized_model`.
  Not `save_pretrained` after `mto.enable_huggingface_checkpointing()`: that silently writes a
  plain, UNquantized checkpoint whenever ModelOpt's transformers plugin fails to import (it does
  here: pyarrow 26 needs NumPy 2, PyTriton pins NumPy 1). transformers cannot read ModelOpt's
  unified HF export back correctly either. An unquantized recipe is saved with `save_pretrained`.
* `trtllm_checkpoint/`: the real TensorRT-LLM checkpoint (`config.json` + `rank{N}.safetensors`)
  from `export_tensorrt_llm_checkpoint`, checked field by field against the source
  (`export_check.py`); a mismatch raises and the trial fails.
* `hf_checkpoint/` instead, for a mixture-of-experts model: what TensorRT-LLM 1.2 loads for one
  (MoE models run on its PyTorch backend), ModelOpt's unified HF export, checked against the
  source's experts (`moe_export_check.py`). ModelOpt's TensorRT-LLM checkpoint exporter does not
  take transformers 5's fused experts (`object of type 'QuantQwen3MoeExperts' has no len()`). An
  unquantized MoE model exports nothing: its source is what TensorRT-LLM would load.
* `quantize.json`: the `QuantizeResult` record.

The fake-quantized weights stay fp32 on purpose: the CPU computes in fp32, and the quantizers
reproduce each format's rounding, so accuracy deltas are those of the format, not of bf16 math.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from enginesweep.build_configs.hf_architecture import expert_count
from enginesweep.engines.quantize.export_check import ExportMismatch, export_problems, source_rope_theta
from enginesweep.engines.quantize.moe_export_check import moe_export_problems
from enginesweep.engines.quantize.recipes import QuantRecipe, modelopt_config

MODELOPT_FILE = "modelopt_model.pth"


class QuantizeResult(BaseModel):
    """What a quantization produced, saved as `quantize.json` beside it."""

    model_config = ConfigDict(extra="forbid")

    recipe: QuantRecipe
    key: str
    source_dir: str
    model_dir: str
    trtllm_checkpoint_dir: str
    trtllm_config: dict
    quantize_seconds: float
    export_seconds: float
    versions: dict[str, str]
    export_format: Literal["trtllm-checkpoint", "unified-hf", "source"] = "trtllm-checkpoint"


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a quantized checkpoint's bytes."""
    import modelopt
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "modelopt": modelopt.__version__,
    }


def _calibrate(model, tokenizer, texts: list[str], seq_len: int) -> Callable:
    import torch

    batches = [
        tokenizer(text, return_tensors="pt", truncation=True, max_length=seq_len)["input_ids"]
        for text in texts
    ]

    def forward_loop(model_) -> None:
        with torch.inference_mode():
            for ids in batches:
                model_(input_ids=ids)

    return forward_loop


def quantize_checkpoint(
    source_dir: Path,
    recipe: QuantRecipe,
    out_dir: Path,
    *,
    key: str,
    calibration_texts: list[str],
    log: Callable[[str], None] = print,
) -> QuantizeResult:
    """Quantize `source_dir` per `recipe` into `out_dir` (written via a temporary folder, so a
    crash never leaves a half-written checkpoint under the final name)."""
    source_config = json.loads((source_dir / "config.json").read_text())
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    try:
        result = _quantize_into(
            tmp,
            source_dir,
            source_config,
            recipe,
            out_dir,
            key=key,
            calibration_texts=calibration_texts,
            log=log,
        )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk or an interrupt leaves nothing behind
        raise
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return result


def _quantize_into(
    tmp: Path,
    source_dir: Path,
    source_config: dict,
    recipe: QuantRecipe,
    out_dir: Path,
    *,
    key: str,
    calibration_texts: list[str],
    log: Callable[[str], None],
) -> QuantizeResult:
    """Quantize and export into the temporary folder `tmp`; the result names `out_dir`."""
    import modelopt.torch.opt as mto
    import modelopt.torch.quantization as mtq
    import torch
    from modelopt.torch.export import export_tensorrt_llm_checkpoint
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(source_dir)
    model = AutoModelForCausalLM.from_pretrained(source_dir, dtype=torch.float32).eval()
    config = modelopt_config(recipe)
    if config is not None:
        if recipe.calibration is None or not calibration_texts:
            raise ValueError(f"{recipe.slug} needs calibration text")
        log(f"quantize {recipe.slug}: calibrating on {len(calibration_texts)} samples")
        mtq.quantize(
            model, config, _calibrate(model, tokenizer, calibration_texts, recipe.calibration.seq_len)
        )
    quantize_s = time.perf_counter() - start

    if config is not None:
        model.config.save_pretrained(tmp / "model")
        mto.save(model, tmp / "model" / MODELOPT_FILE)
    else:
        model.save_pretrained(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")

    if expert_count(source_config):
        return _moe_result(tmp, model, source_dir, recipe, out_dir, key=key, quantize_s=quantize_s, log=log)
    # transformers 5 keeps the RoPE base only in rope_parameters; ModelOpt's exporter reads
    # config.rope_theta and would otherwise write no rotary_base (TRT-LLM then uses 10000).
    rope = source_rope_theta(source_config)
    if rope is not None and getattr(model.config, "rope_theta", None) is None:
        model.config.rope_theta = rope
    start = time.perf_counter()
    log(f"quantize {recipe.slug}: exporting the TRT-LLM checkpoint (tp={recipe.tp}, pp={recipe.pp})")
    export_tensorrt_llm_checkpoint(
        model,
        "llama",
        dtype=torch.bfloat16,
        export_dir=tmp / "trtllm_checkpoint",
        inference_tensor_parallel=recipe.tp,
        inference_pipeline_parallel=recipe.pp,
    )
    export_s = time.perf_counter() - start
    exported = json.loads((tmp / "trtllm_checkpoint" / "config.json").read_text())
    problems = export_problems(exported, source_config, recipe)
    if problems:
        raise ExportMismatch(problems)

    result = QuantizeResult(
        recipe=recipe,
        key=key,
        source_dir=str(source_dir),
        model_dir=str(out_dir / "model"),
        trtllm_checkpoint_dir=str(out_dir / "trtllm_checkpoint"),
        trtllm_config=exported,
        quantize_seconds=quantize_s,
        export_seconds=export_s,
        versions=library_versions(),
    )
    (tmp / "quantize.json").write_text(result.model_dump_json(indent=2) + "\n")
    return result


def _moe_result(
    tmp: Path,
    model: Any,
    source_dir: Path,
    recipe: QuantRecipe,
    out_dir: Path,
    *,
    key: str,
    quantize_s: float,
    log: Callable[[str], None],
) -> QuantizeResult:
    """A MoE model's export (module docstring): the unified HF checkpoint, its experts checked."""
    import torch
    from modelopt.torch.export import export_hf_checkpoint

    start = time.perf_counter()
    if modelopt_config(recipe) is None:
        exported, folder, kind = {}, out_dir / "model", "source"
    else:
        log(f"quantize {recipe.slug}: exporting the unified HF checkpoint (mixture of experts)")
        with torch.inference_mode():
            export_hf_checkpoint(model, export_dir=tmp / "hf_checkpoint")
        problems = moe_export_problems(
            tmp / "hf_checkpoint", json.loads((source_dir / "config.json").read_text())
        )
        if problems:
            raise ExportMismatch(problems, what="unified HF export")
        exported = json.loads((tmp / "hf_checkpoint" / "hf_quant_config.json").read_text())
        folder, kind = out_dir / "hf_checkpoint", "unified-hf"
    result = QuantizeResult(
        recipe=recipe,
        key=key,
        source_dir=str(source_dir),
        model_dir=str(out_dir / "model"),
        trtllm_checkpoint_dir=str(folder),
        trtllm_config=exported,
        quantize_seconds=quantize_s,
        export_seconds=time.perf_counter() - start,
        versions=library_versions(),
        export_format=kind,
    )
    (tmp / "quantize.json").write_text(result.model_dump_json(indent=2) + "\n")
    return result


def load_quantized_model(model_dir: Path, *, fold: bool = True):
    """Load a model written by `quantize_checkpoint` for CPU inference: the ModelOpt state is
    restored onto a model built from `config.json` (weights and quantizer scales included), and
    weight fake-quantization is folded in once where ModelOpt can. A folder without the ModelOpt
    file is an unquantized checkpoint and loads as such."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    state = model_dir / MODELOPT_FILE
    if state.exists():
        # Imported only here: ModelOpt's import takes seconds (its plugins import half of
        # transformers), which an unquantized model's server start would pay for nothing.
        import modelopt.torch.opt as mto
        import modelopt.torch.quantization as mtq

        config = AutoConfig.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        mto.restore(model, state)
        if fold:
            mtq.fold_weight(model)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(model_dir)
