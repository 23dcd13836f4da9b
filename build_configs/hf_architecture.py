"""How a Hugging Face `config.json` maps onto `ModelArchitecture`'s sizing numbers.

The families read here and the keys each one uses (checked against the public configs named in
`architectures/*.json`):

* dense: `hidden_size`, `intermediate_size`, `num_hidden_layers`, `num_attention_heads`,
  `num_key_value_heads`, `head_dim`, `vocab_size`, `tie_word_embeddings`, `attention_bias`.
* mixture of experts: the expert count is `num_local_experts` (Mixtral, gpt-oss), `num_experts`
  (Qwen3-MoE) or `n_routed_experts` (DeepSeek); `num_experts_per_tok`; the expert width
  `moe_intermediate_size` where the dense `intermediate_size` is another number (Qwen3-MoE,
  DeepSeek); shared experts `n_shared_experts`; dense layers `first_k_dense_replace` (DeepSeek) or
  `mlp_only_layers` and `decoder_sparse_step` (Qwen3-MoE).
* multi-head latent attention: `kv_lora_rank`, `q_lora_rank`, `qk_rope_head_dim`,
  `qk_nope_head_dim`, `v_head_dim`.
* attention windows: `layer_types` (`full_attention` / `sliding_attention` per layer, gpt-oss) with
  `sliding_window`; a `sliding_window` alone applies to every layer (Mistral-7B-v0.1) unless
  `use_sliding_window` is false (Qwen2/3 ship a window they do not use); with it true, Qwen2's
  layers from `max_window_layers` on slide.
* weights as shipped: `quantization_config` with `quant_method` `mxfp4` (gpt-oss: experts in
  MXFP4, attention, router, embeddings and LM head in 16 bits) or `fp8` with `weight_block_size`
  (DeepSeek: every linear layer in FP8 with one fp32 scale per 128x128 block).

A key that would change memory or compute in a way not modelled here is an error naming the key,
never ignored (`UNMODELLED`). `num_nextn_predict_layers` (DeepSeek's multi-token-prediction
module) is not counted: TensorRT-LLM loads it only for MTP speculative decoding.
"""

from __future__ import annotations

from typing import Any

UNMODELLED = {
    "shared_expert_intermediate_size": "a shared expert of its own width (Qwen2-MoE)",
    "index_topk": "sparse attention with an indexer (DeepSeek-V3.2)",
    "linear_num_value_heads": "linear-attention layers (Qwen3-Next)",
    "attention_chunk_size": "chunked local attention (Llama 4)",
    "sliding_window_pattern": "a sliding-window pattern without layer_types (Gemma)",
    "num_experts_per_group": "grouped experts",
}
"""Keys that change memory or compute in ways this model does not size, with what they mean."""

_EXPERT_COUNT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")
_LAYER_TYPES = {"full_attention", "sliding_attention"}


class HFConfigError(ValueError):
    """A config.json this reader cannot size; the message names the key."""


def architecture_fields(config: dict[str, Any]) -> dict[str, Any]:
    """`ModelArchitecture` fields read from a `config.json` dictionary (name excluded)."""
    for key, meaning in UNMODELLED.items():
        if config.get(key):
            raise HFConfigError(f"config.json key '{key}' ({meaning}) is not sized yet")
    required = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    missing = [key for key in required if key not in config]
    if missing:
        raise HFConfigError(f"config.json lacks {', '.join(missing)}; is this a decoder-only LLM config?")
    heads = int(config["num_attention_heads"])
    layers = int(config["num_hidden_layers"])
    rope = config.get("rope_theta")
    # transformers 5 keeps the RoPE base only under rope_parameters.
    if rope is None and isinstance(config.get("rope_parameters"), dict):
        rope = config["rope_parameters"].get("rope_theta")
    model_type = config.get("model_type")
    fields: dict[str, Any] = {
        "hidden_size": int(config["hidden_size"]),
        "num_layers": layers,
        "num_attention_heads": heads,
        "num_kv_heads": int(config.get("num_key_value_heads") or heads),
        "head_dim": int(config.get("head_dim") or config["hidden_size"] // heads),
        "vocab_size": int(config["vocab_size"]),
        "max_position_embeddings": int(config.get("max_position_embeddings") or 4096),
        "tie_word_embeddings": bool(config.get("tie_word_embeddings", False)),
        "attention_bias": bool(config.get("attention_bias", model_type == "qwen2")),
        "rope_theta": float(rope) if rope is not None else None,
        "family": (config.get("architectures") or [None])[0],
        "model_type": model_type,
        "attention_sinks": model_type == "gpt_oss",
    }
    fields |= _moe(config, layers)
    if "intermediate_size" in config:
        fields["intermediate_size"] = int(config["intermediate_size"])
    elif fields.get("expert_intermediate_size"):
        fields["intermediate_size"] = fields["expert_intermediate_size"]
    else:
        raise HFConfigError("config.json lacks intermediate_size; is this a decoder-only LLM config?")
    fields |= _mla(config)
    fields |= _windows(config, layers)
    fields |= _shipped_formats(config)
    return fields


def expert_count(config: dict[str, Any]) -> int:
    """Routed experts per MoE layer of a config.json (0: a dense model)."""
    return next((int(config[k]) for k in _EXPERT_COUNT_KEYS if config.get(k)), 0)


def _moe(config: dict[str, Any], layers: int) -> dict[str, Any]:
    experts = expert_count(config)
    if not experts:
        return {}
    top_k = config.get("num_experts_per_tok") or config.get("experts_per_token")
    if not top_k:
        raise HFConfigError("config.json of a mixture-of-experts model lacks num_experts_per_tok")
    width = config.get("moe_intermediate_size") or config.get("intermediate_size")
    if not width:
        raise HFConfigError("config.json lacks moe_intermediate_size (the width of one expert)")
    if int(config.get("moe_layer_freq") or 1) != 1:
        raise HFConfigError(f"config.json key 'moe_layer_freq' = {config['moe_layer_freq']} is not sized yet")
    dense = set(range(int(config.get("first_k_dense_replace") or 0)))
    dense |= {int(i) for i in config.get("mlp_only_layers") or ()}
    step = int(config.get("decoder_sparse_step") or 1)
    dense |= {i for i in range(layers) if (i + 1) % step != 0}
    return {
        "num_experts": experts,
        "experts_per_token": int(top_k),
        "num_shared_experts": int(config.get("n_shared_experts") or 0),
        "expert_intermediate_size": int(width),
        "num_dense_layers": len(dense & set(range(layers))),
        "expert_bias": config.get("model_type") == "gpt_oss",
    }


def _mla(config: dict[str, Any]) -> dict[str, Any]:
    if not config.get("kv_lora_rank"):
        return {}
    keys = ("kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")
    missing = [key for key in keys if not config.get(key)]
    if missing:
        raise HFConfigError(f"config.json has kv_lora_rank (MLA) but lacks {', '.join(missing)}")
    fields = {key: int(config[key]) for key in keys}
    fields["q_lora_rank"] = int(config["q_lora_rank"]) if config.get("q_lora_rank") else None
    return fields


def _windows(config: dict[str, Any], layers: int) -> dict[str, Any]:
    window = config.get("sliding_window")
    types = config.get("layer_types")
    if types is not None:
        unknown = sorted(set(types) - _LAYER_TYPES)
        if unknown:
            raise HFConfigError(f"config.json key 'layer_types' has {', '.join(unknown)}: not sized yet")
        if len(types) != layers:
            raise HFConfigError(f"config.json key 'layer_types' has {len(types)} entries for {layers} layers")
        sliding = types.count("sliding_attention")
    elif window and str(config.get("model_type", "")).startswith(("gemma", "cohere")):
        # These alternate sliding and full layers; without layer_types the pattern is unknown.
        raise HFConfigError(
            "config.json key 'sliding_window' without layer_types (the pattern of its layers)"
        )
    elif not window or config.get("use_sliding_window") is False:
        sliding = 0
    elif config.get("use_sliding_window") and config.get("max_window_layers") is not None:
        sliding = max(0, layers - int(config["max_window_layers"]))
    else:
        sliding = layers
    if sliding and not window:
        raise HFConfigError("config.json has sliding_attention layers but no sliding_window")
    return {"sliding_window": int(window), "num_sliding_layers": sliding} if sliding else {}


def _shipped_formats(config: dict[str, Any]) -> dict[str, Any]:
    quant = config.get("quantization_config")
    if not quant:
        return {}
    method = str(quant.get("quant_method", "")).lower()
    if method == "mxfp4":
        return {"shipped_expert_format": "mxfp4"}
    if method == "fp8" and quant.get("weight_block_size"):
        return {"shipped_expert_format": "fp8_block", "shipped_dense_format": "fp8_block"}
    raise HFConfigError(
        f"config.json key 'quantization_config' (quant_method {method or '?'}) is not sized yet: "
        "give the unquantized checkpoint's config.json"
    )
