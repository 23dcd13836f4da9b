"""Quantization recipes: what to quantize, as data, and its ModelOpt config.

A `QuantRecipe` is the part of a trial that changes a quantized checkpoint's bytes (weight format,
KV-cache format, AWQ group size, TP/PP of the export, calibration set). Its `key` names the shared
quantized checkpoint, so trials that differ only in build knobs reuse one checkpoint.

ModelOpt 0.47 configs are `{"quant_cfg": [entries...], "algorithm": ...}` where later entries
override earlier ones. FP8 weights do not imply an FP8 KV cache: the KV entry is added only when
the recipe asks for it. INT8 KV has no preset: it is a `*[kv]_bmm_quantizer` entry with 8 bits,
per-tensor (axis None).
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from build_configs.quant import KVCacheFormat, QuantFormat

_KV_ENTRIES: dict[KVCacheFormat, dict[str, Any]] = {
    KVCacheFormat.FP8: {"quantizer_name": "*[kv]_bmm_quantizer", "cfg": {"num_bits": (4, 3), "axis": None}},
    KVCacheFormat.INT8: {"quantizer_name": "*[kv]_bmm_quantizer", "cfg": {"num_bits": 8, "axis": None}},
}


class CalibrationSpec(BaseModel):
    """Which text calibrates the quantizers, and how much of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    sha256: str
    samples: int
    seq_len: int


class QuantRecipe(BaseModel):
    """Everything that determines a quantized checkpoint's bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quant: QuantFormat
    kv_cache: KVCacheFormat
    tp: int = 1
    pp: int = 1
    awq_block_size: int = 128
    calibration: CalibrationSpec | None = None

    @property
    def needs_calibration(self) -> bool:
        return self.quant.is_quantized or self.kv_cache is not KVCacheFormat.AUTO

    @property
    def slug(self) -> str:
        """Readable name of the quantized checkpoint: `fp8__kv-int8__tp1__pp1`."""
        return f"{self.quant.value}__kv-{self.kv_cache.value}__tp{self.tp}__pp{self.pp}"

    def key(self, checkpoint_id: str) -> str:
        """Content key of the quantized checkpoint made from `checkpoint_id` with this recipe."""
        payload = json.dumps({"checkpoint": checkpoint_id, "recipe": self.model_dump(mode="json")},
                             sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def modelopt_config(recipe: QuantRecipe) -> dict[str, Any] | None:
    """The ModelOpt `mtq.quantize` config for `recipe`, or None when nothing is quantized."""
    if not recipe.needs_calibration:
        return None
    import modelopt.torch.quantization as mtq  # heavy; only when quantizing

    if recipe.quant.is_quantized:
        config = copy.deepcopy(getattr(mtq, recipe.quant.spec.modelopt_config))
    else:  # 16-bit weights with a quantized KV cache: start from "nothing enabled"
        config = {"quant_cfg": [{"quantizer_name": "*", "enable": False}], "algorithm": "max"}
    if recipe.quant.spec.group_scaled:
        _set_block_size(config, recipe.awq_block_size)
    if recipe.kv_cache in _KV_ENTRIES:
        config["quant_cfg"].append(copy.deepcopy(_KV_ENTRIES[recipe.kv_cache]))
    return config


def _set_block_size(config: dict[str, Any], block: int) -> None:
    """Set the AWQ group size on every weight-quantizer entry that has block sizes."""
    changed = 0
    for entry in config["quant_cfg"]:
        cfgs = entry.get("cfg")
        for cfg in cfgs if isinstance(cfgs, list) else [cfgs]:
            if isinstance(cfg, dict) and isinstance(cfg.get("block_sizes"), dict) \
                    and "weight" in entry.get("quantizer_name", ""):
                cfg["block_sizes"][-1] = block
                changed += 1
    if not changed:
        raise ValueError("the ModelOpt config has no weight block size to set (ModelOpt changed?)")
