"""Quantize a Hugging Face checkpoint into ModelOpt's unified HF format (the `trtllm-pytorch`
stack): what ModelOpt's `hf_ptq.py` does, through the same Python API.

`mtq.quantize` with the recipe's ModelOpt config (the very config `hf_ptq.py --qformat` picks:
FP8_DEFAULT_CFG, INT4_AWQ_CFG, W4A8_AWQ_BETA_CFG, NVFP4_DEFAULT_CFG, plus the FP8 KV entry of
FP8_KV_CFG), calibrated on the project's text, then `export_hf_checkpoint`: safetensors with
the quantized weights and scales, `config.json` with `quantization_config`, and
`hf_quant_config.json`, which TensorRT-LLM's LLM API reads to pick the kernels. The tokenizer is
saved beside them, as hf_ptq.py does. It runs on a GPU when one is visible, else on the CPU (the
tests export a real checkpoint this way; the export does not depend on the device).
The same calls serve ModelOpt 0.37 + transformers 4.57.1 (TensorRT-LLM 1.2's images) and
ModelOpt 0.47 + transformers 5 (the reference stack): `from_pretrained(dtype=...)` (transformers
>= 4.56), `export_hf_checkpoint(model, export_dir=...)` and the `hf_quant_config.json` keys read
below are alike in both; the config's shape is the recipe's business (recipes.py). The
`container` tests export FP8, FP8 + FP8 KV and INT4-AWQ in both.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from enginesweep.build_configs.hf_architecture import expert_count
from enginesweep.engines.quantize.moe_export_check import moe_export_problems
from enginesweep.engines.quantize.recipes import QuantRecipe, modelopt_config

HF_QUANT_CONFIG = "hf_quant_config.json"


class ExportError(RuntimeError):
    """The unified HF export did not produce what the recipe asked for."""


def export_unified_hf(
    source_dir: Path,
    recipe: QuantRecipe,
    export_dir: Path,
    *,
    calibration_texts: list[str],
    seq_len: int,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Quantize `source_dir` per `recipe` and export it into `export_dir` (which must not exist
    yet); returns the written `hf_quant_config.json`, checked against the recipe."""
    import modelopt.torch.quantization as mtq
    import torch
    from modelopt.torch.export import export_hf_checkpoint
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = modelopt_config(recipe)
    if config is None:
        raise ExportError(f"{recipe.slug} quantizes nothing: serve the source checkpoint as it is")
    if not calibration_texts:
        raise ExportError(f"{recipe.slug} needs calibration text")
    gpu = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(source_dir)
    # On GPUs the layers are spread over every visible one (as hf_ptq.py does): a model that
    # is served with TP 2 may not fit one GPU for calibration either.
    model = AutoModelForCausalLM.from_pretrained(
        source_dir, dtype="auto", **({"device_map": "auto"} if gpu else {})
    ).eval()
    device = next(model.parameters()).device
    batches = [
        tokenizer(text, return_tensors="pt", truncation=True, max_length=seq_len)["input_ids"]
        for text in calibration_texts
    ]

    def forward_loop(model_: Any) -> None:
        with torch.inference_mode():
            for ids in batches:
                model_(input_ids=ids.to(device))

    log(f"quantize {recipe.slug}: calibrating on {len(batches)} samples ({device})")
    mtq.quantize(model, config, forward_loop)
    log(f"quantize {recipe.slug}: exporting the unified HF checkpoint")
    with torch.inference_mode():
        export_hf_checkpoint(model, export_dir=export_dir)
    tokenizer.save_pretrained(export_dir)
    written = json.loads((export_dir / HF_QUANT_CONFIG).read_text())
    problems = quant_config_problems(written, recipe)
    if problems:
        raise ExportError(
            f"{export_dir / HF_QUANT_CONFIG} disagrees with {recipe.slug}: " + "; ".join(problems)
        )
    source = json.loads((Path(source_dir) / "config.json").read_text())
    if expert_count(source):
        problems = moe_export_problems(export_dir, source)
        if problems:
            raise ExportError(
                f"the MoE export of {recipe.slug} disagrees with its source: " + "; ".join(problems)
            )
    return written


def local_texts(folder: Path, count: int) -> list[str]:
    """The first `count` texts of a local calibration dataset: JSON lines files (`*.jsonl`,
    split `train` first) with a `text` column, as the engine stack writes them."""
    if not folder.is_dir():
        raise ExportError(
            f"build.calib_dataset {folder}: the trtllm-pytorch stack calibrates "
            "in-process on a local folder of JSON lines with a `text` column "
            "(hf_ptq.py's dataset names are for the emitted scripts)"
        )
    texts: list[str] = []
    for path in sorted(folder.glob("*.jsonl"), key=lambda p: (not p.name.startswith("train"), p.name)):
        for line in path.read_text().splitlines():
            if line.strip() and len(texts) < count:
                texts.append(str(json.loads(line)["text"]))
    if not texts:
        raise ExportError(f"build.calib_dataset {folder} holds no `text` rows in *.jsonl files")
    return texts


def quant_config_problems(hf_quant_config: dict[str, Any], recipe: QuantRecipe) -> list[str]:
    """Where an `hf_quant_config.json` disagrees with the recipe's weight and KV formats."""
    quantization = hf_quant_config.get("quantization", {})
    problems = []
    want = recipe.quant.spec.trtllm_quant_algo
    if quantization.get("quant_algo") != want:
        problems.append(f"quant_algo is {quantization.get('quant_algo')!r}, expected {want!r}")
    want_kv = recipe.kv_cache.spec.trtllm_kv_cache_quant_algo
    if quantization.get("kv_cache_quant_algo") != want_kv:
        problems.append(
            f"kv_cache_quant_algo is {quantization.get('kv_cache_quant_algo')!r}, expected {want_kv!r}"
        )
    if recipe.quant.spec.group_scaled and quantization.get("group_size") != recipe.awq_block_size:
        problems.append(f"group_size is {quantization.get('group_size')!r}, expected {recipe.awq_block_size}")
    return problems
