"""Check an exported TensorRT-LLM checkpoint config against its source and its recipe.

ModelOpt's export can be silently wrong: under transformers 5 it drops the RoPE base (it reads
`config.rope_theta`, which transformers 5 keeps only in `rope_parameters`), so TRT-LLM would use
10000; it also exports TP shards that split heads unevenly without complaint. Every exported
checkpoint is compared field by field with the source `config.json` and the recipe, and a
mismatch fails the trial. This is a pure function over two dictionaries.
"""

from __future__ import annotations

from typing import Any

from enginesweep.engines.quantize.recipes import QuantRecipe

_SHAPE_FIELDS = (
    "vocab_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_size",
    "intermediate_size",
)


class ExportMismatch(RuntimeError):
    """An exported checkpoint disagrees with its source or recipe."""

    def __init__(self, problems: list[str], what: str = "exported TRT-LLM checkpoint"):
        self.problems = problems
        super().__init__(f"{what} disagrees with its source: " + "; ".join(problems))


def source_rope_theta(source: dict[str, Any]) -> float | None:
    """The RoPE base of a Hugging Face config, wherever this transformers version keeps it."""
    value = source.get("rope_theta")
    if value is None and isinstance(source.get("rope_parameters"), dict):
        value = source["rope_parameters"].get("rope_theta")
    return float(value) if value is not None else None


def export_problems(exported: dict[str, Any], source: dict[str, Any], recipe: QuantRecipe) -> list[str]:
    """Every disagreement between an exported TRT-LLM `config.json` and its source/recipe."""
    problems = []
    for name in _SHAPE_FIELDS:
        if name in source and exported.get(name) != source[name]:
            problems.append(f"{name}: exported {exported.get(name)!r}, source {source[name]!r}")
    rope = source_rope_theta(source)
    if rope is not None and exported.get("rotary_base") != rope:
        problems.append(
            f"rotary_base: exported {exported.get('rotary_base')!r}, source {rope!r} "
            "(TRT-LLM would silently use 10000.0)"
        )
    mapping = exported.get("mapping") or {}
    for key, want in (("tp_size", recipe.tp), ("pp_size", recipe.pp), ("world_size", recipe.tp * recipe.pp)):
        if mapping.get(key) != want:
            problems.append(f"mapping.{key}: exported {mapping.get(key)!r}, recipe {want}")
    heads, kv_heads = source.get("num_attention_heads"), source.get("num_key_value_heads")
    for name, count in (("num_attention_heads", heads), ("num_key_value_heads", kv_heads)):
        if count is not None and count % recipe.tp:
            problems.append(f"{name}={count} is not divisible by tp={recipe.tp}: the shards are invalid")
    quant = exported.get("quantization") or {}
    want_algo = recipe.quant.spec.trtllm_quant_algo
    if quant.get("quant_algo") != want_algo:
        problems.append(
            f"quantization.quant_algo: exported {quant.get('quant_algo')!r}, recipe {want_algo!r}"
        )
    want_kv = recipe.kv_cache.spec.trtllm_kv_cache_quant_algo
    if quant.get("kv_cache_quant_algo") != want_kv:
        problems.append(
            f"quantization.kv_cache_quant_algo: exported {quant.get('kv_cache_quant_algo')!r}, "
            f"recipe {want_kv!r}"
        )
    if recipe.quant.spec.group_scaled and quant.get("group_size") != recipe.awq_block_size:
        problems.append(
            f"quantization.group_size: exported {quant.get('group_size')!r}, recipe {recipe.awq_block_size}"
        )
    return problems
