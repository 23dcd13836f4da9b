"""Quantization recipes: what to quantize, as data, and its ModelOpt config.

A `QuantRecipe` is the part of a trial that changes a quantized checkpoint's bytes (weight format,
KV-cache format, AWQ group size, TP/PP of the export, calibration set). Its `key` names the shared
quantized checkpoint, so trials that differ only in build knobs reuse one checkpoint.

The config comes in the installed ModelOpt's own shape, read from its presets (not from its
version): from 0.44 `{"quant_cfg": [entries...], "algorithm": ...}`, a list of
`{quantizer_name, cfg | enable}` entries where later ones override earlier ones (the reference
stack's 0.47); up to 0.43 `{"quant_cfg": {pattern: cfg}, ...}`, a dict whose `default` key applies
first (the 0.37 of TensorRT-LLM 1.2's images). FP8 weights do not imply an FP8 KV cache: the KV
entry is added only when the recipe asks for it. INT8 KV has no preset: it is a
`*[kv]_bmm_quantizer` entry with 8 bits, per-tensor (axis None).
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from enginesweep.build_configs.quant import KVCacheFormat, QuantFormat

_KV_QUANTIZER = "*[kv]_bmm_quantizer"
_KV_CFG: dict[KVCacheFormat, dict[str, Any]] = {
    KVCacheFormat.FP8: {"num_bits": (4, 3), "axis": None},
    KVCacheFormat.INT8: {"num_bits": 8, "axis": None},
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
    ep: int = 1
    """Expert-parallel ranks the checkpoint is cut for: the engine path only (its
    convert_checkpoint.py fixes them); the HF checkpoints of the other stacks do not depend on it."""
    awq_block_size: int = 128
    calibration: CalibrationSpec | None = None

    @property
    def needs_calibration(self) -> bool:
        return self.quant.is_quantized or self.kv_cache is not KVCacheFormat.AUTO

    @property
    def slug(self) -> str:
        """Readable name of the quantized checkpoint: `fp8__kv-int8__tp1__pp1`."""
        slug = f"{self.quant.value}__kv-{self.kv_cache.value}__tp{self.tp}__pp{self.pp}"
        return slug + (f"__ep{self.ep}" if self.ep > 1 else "")

    def key(self, checkpoint_id: str) -> str:
        """Content key of the quantized checkpoint made from `checkpoint_id` with this recipe."""
        # ep is left out at 1, so checkpoints stored before it existed keep their keys.
        recipe = self.model_dump(mode="json", exclude={"ep"} if self.ep == 1 else set())
        payload = json.dumps({"checkpoint": checkpoint_id, "recipe": recipe}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def modelopt_config(recipe: QuantRecipe) -> dict[str, Any] | None:
    """The ModelOpt `mtq.quantize` config for `recipe`, or None when nothing is quantized."""
    if not recipe.needs_calibration:
        return None
    import modelopt.torch.quantization as mtq  # heavy; only when quantizing

    listed = entries_are_listed(mtq)
    if recipe.quant.is_quantized:
        config = copy.deepcopy(getattr(mtq, recipe.quant.spec.modelopt_config))
    elif listed:  # 16-bit weights with a quantized KV cache: start from "nothing enabled"
        config = {"quant_cfg": [{"quantizer_name": "*", "enable": False}], "algorithm": "max"}
    else:
        config = {"quant_cfg": {"default": {"enable": False}}, "algorithm": "max"}
    if recipe.quant.spec.group_scaled:
        _set_block_size(config, recipe.awq_block_size, listed)
    if recipe.kv_cache in _KV_CFG:
        cfg = copy.deepcopy(_KV_CFG[recipe.kv_cache])
        if listed:
            config["quant_cfg"].append({"quantizer_name": _KV_QUANTIZER, "cfg": cfg})
        else:  # a dict applies its patterns in order after `default`: this one comes last
            config["quant_cfg"][_KV_QUANTIZER] = {**cfg, "enable": True}
    return config


def entries_are_listed(mtq: Any) -> bool:
    """Whether the installed ModelOpt (`modelopt.torch.quantization`) writes `quant_cfg` as a
    list of entries (0.44 and later) rather than a dict of patterns (up to 0.43), read from its
    own FP8 preset."""
    shape = mtq.FP8_DEFAULT_CFG["quant_cfg"]
    if isinstance(shape, (list, dict)):
        return isinstance(shape, list)
    raise ValueError(
        f"ModelOpt's FP8_DEFAULT_CFG['quant_cfg'] is a {type(shape).__name__}, "
        "neither the list (0.44+) nor the dict (up to 0.43) this code knows"
    )


def _set_block_size(config: dict[str, Any], block: int, listed: bool) -> None:
    """Set the AWQ group size on every weight-quantizer config that has block sizes (W4A8's
    weight quantizer is a list of two: the INT4 one has them)."""
    if listed:
        cfgs = [
            entry.get("cfg") for entry in config["quant_cfg"] if "weight" in entry.get("quantizer_name", "")
        ]
    else:
        cfgs = [cfg for pattern, cfg in config["quant_cfg"].items() if "weight" in pattern]
    changed = 0
    for cfg in cfgs:
        for one in cfg if isinstance(cfg, list) else [cfg]:
            if isinstance(one, dict) and isinstance(one.get("block_sizes"), dict):
                one["block_sizes"][-1] = block
                changed += 1
    if not changed:
        raise ValueError("the ModelOpt config has no weight block size to set (ModelOpt changed?)")
