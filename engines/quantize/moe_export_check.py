"""Check a mixture-of-experts checkpoint exported by ModelOpt against its source `config.json`.

An export can lose experts without failing: a fused-experts module its exporter does not know is
written as it is or not at all, and TensorRT-LLM then loads a model with fewer experts, or stops
on the GPU machine an hour later. After a unified HF export of a MoE model the export is read back
(the safetensors headers only: no tensor is loaded, no framework needed) and compared with the
source: the expert count and top-k in the written `config.json` (under the source's own key),
every MoE layer holding experts
0..E-1, and each expert projection's shape (gate/up: expert width x hidden; down: hidden x expert
width; a packed 4-bit weight stores its input dimension halved or in eighths).
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

from enginesweep.build_configs.hf_architecture import expert_count

_COUNT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts")
_EXPERT_WEIGHT = re.compile(r"layers\.(\d+)\..*experts\.(\d+)\.(\w+)\.weight$")
# Per-expert projection names: Qwen/DeepSeek/gpt-oss style, and Mixtral's w1/w3 (in) and w2 (out).
_INTO_EXPERT = ("gate_proj", "up_proj", "w1", "w3")
_OUT_OF_EXPERT = ("down_proj", "w2")
_PACKING = (1, 2, 8)  # input-dimension divisors of packed weights (FP8/bf16, 4-bit in bytes, in int32)


def safetensors_shapes(folder: Path) -> dict[str, list[int]]:
    """Tensor name -> shape for every `*.safetensors` file in `folder` (headers only)."""
    shapes: dict[str, list[int]] = {}
    for path in sorted(folder.glob("*.safetensors")):
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        shapes.update({name: entry["shape"] for name, entry in header.items() if name != "__metadata__"})
    return shapes


def _top_k(config: dict[str, Any]) -> int | None:
    value = config.get("num_experts_per_tok") or config.get("experts_per_token")
    return int(value) if value else None


def moe_export_problems(export_dir: Path, source: dict[str, Any]) -> list[str]:
    """Every way the MoE export in `export_dir` disagrees with the `source` config (empty: none)."""
    experts, top_k = expert_count(source), _top_k(source)
    written = json.loads((export_dir / "config.json").read_text())
    problems = []
    if expert_count(written) != experts:
        problems.append(f"config.json: {expert_count(written)} experts per layer, source {experts}")
    for key in _COUNT_KEYS:
        # transformers 5 writes Qwen3-MoE's count as num_local_experts; transformers 4.57
        # (TensorRT-LLM 1.2's) reads num_experts and would build its default of 128 experts.
        if source.get(key) and written.get(key) != source[key]:
            problems.append(
                f"config.json: {key} is {written.get(key)!r}, source {source[key]!r} (a reader of "
                "the source's key would build another expert count)"
            )
    if _top_k(written) != top_k:
        problems.append(f"config.json: top-k {_top_k(written)}, source {top_k}")
    hidden = int(source["hidden_size"])
    width = int(source.get("moe_intermediate_size") or source["intermediate_size"])
    found: dict[int, set[int]] = {}
    for name, shape in safetensors_shapes(export_dir).items():
        match = _EXPERT_WEIGHT.search(name)
        if not match:
            continue
        layer, expert, projection = int(match[1]), int(match[2]), match[3]
        found.setdefault(layer, set()).add(expert)
        want = (width, hidden) if projection in _INTO_EXPERT else (hidden, width)
        if projection not in _INTO_EXPERT + _OUT_OF_EXPERT:
            continue
        rows, columns = (shape + [0, 0])[:2]
        if rows != want[0] or all(columns * pack != want[1] for pack in _PACKING):
            problems.append(f"{name}: shape {shape}, expected {list(want)} (from the source config)")
    if not found:
        problems.append("no per-expert weights in the export (a fused-experts module written as it is?)")
    for layer, indices in sorted(found.items()):
        if indices != set(range(experts)):
            missing = sorted(set(range(experts)) - indices)
            problems.append(
                f"layer {layer}: experts {missing or sorted(indices)} missing or extra of {experts}"
            )
    return problems
