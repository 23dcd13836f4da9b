"""A trial's LLM-API options, and the check that the pinned TensorRT-LLM version accepts them.

The same dictionary is the YAML of `trtllm-serve --extra_llm_api_options` and the body of Triton's
`llmapi` `model.yaml` (where `model`, `backend` and `triton_config` join it). TensorRT-LLM's
`TorchLlmArgs` forbids unknown keys, top level and nested, so an option the version does not know
stops the server at start on the user's GPU machine; `check_options` fails it here instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from enginesweep.build_configs.quant import KVCacheFormat
from enginesweep.build_configs.schema import Build
from enginesweep.build_configs.trial import TrialConfig
from enginesweep.engines.trtllm.contract import ContractError, VersionContract

_KV_DTYPE = {KVCacheFormat.AUTO: "auto", KVCacheFormat.FP8: "fp8"}


def llm_api_options(cfg: TrialConfig, build: Build, *, moe: bool = False) -> dict[str, Any]:
    """The LLM-API options of one trial: parallelism, limits, KV cache and CUDA graphs, each
    explicit (defaults move between releases); for a mixture-of-experts model (`moe`) also its
    expert layout (expert TP x EP = TP), attention-DP and the MoE backend where the spec sets one."""
    if not moe and (cfg.ep > 1 or cfg.attention_dp):
        raise ContractError("ep and attention_dp apply to mixture-of-experts models only")
    if cfg.kv_cache not in _KV_DTYPE:
        raise ContractError(
            f"kv_cache {cfg.kv_cache.value}: the LLM API's kv_cache_config.dtype "
            f"takes {', '.join(v.value for v in _KV_DTYPE)} only"
        )
    sizes = [s for s in build.cuda_graph_batch_sizes or [] if s <= cfg.max_batch_size]
    # Graphs are captured for decode batches up to the trial's batch limit; padding rounds an odd
    # batch up to the next captured size instead of running it eagerly.
    graphs: dict[str, Any] = (
        {"batch_sizes": sizes, "enable_padding": True}
        if sizes
        else {"max_batch_size": cfg.max_batch_size, "enable_padding": True}
    )
    layout: dict[str, Any] = {}
    if moe:
        layout = {
            "moe_expert_parallel_size": cfg.ep,
            "moe_tensor_parallel_size": cfg.tp // cfg.ep,
            "enable_attention_dp": cfg.attention_dp,
        }
        if build.moe_backend:
            layout["moe_config"] = {"backend": build.moe_backend}
    return {
        "tensor_parallel_size": cfg.tp,
        "pipeline_parallel_size": cfg.pp,
        **layout,
        "max_batch_size": cfg.max_batch_size,
        "max_num_tokens": cfg.max_num_tokens,
        "max_seq_len": cfg.max_seq_len,
        "kv_cache_config": {
            "dtype": _KV_DTYPE[cfg.kv_cache],
            "free_gpu_memory_fraction": build.kv_cache_free_gpu_mem_fraction,
            "enable_block_reuse": build.enable_block_reuse,
        },
        "cuda_graph_config": graphs,
        # trtllm-serve's /metrics returns iteration statistics (KV blocks, reuse) only with it;
        # the benchmark samples them (evaluation.benchmark.server_metrics).
        "enable_iter_perf_stats": True,
    }


def check_options(
    contract: VersionContract, options: Mapping[str, Any], *, where: str = "LLM-API options"
) -> None:
    """Raise ContractError unless every key of `options` (and of each nested section) is one the
    version's `TorchLlmArgs` accepts, and every value with a listed domain is in it."""
    api = contract.llm_api
    if api is None:
        raise ContractError(
            f"TensorRT-LLM {contract.line} has no LLM-API contract here: the "
            "trtllm-pytorch stack does not support it"
        )
    keys, sections, values = set(api["keys"]), api["sections"], api.get("values", {})
    for key, value in options.items():
        if key not in keys:
            raise ContractError(
                f"{where}: {key!r} is not an LLM-API option of TensorRT-LLM "
                f"{contract.line} (TorchLlmArgs forbids unknown keys; accepted "
                f"keys from {api['source']})"
            )
        if isinstance(value, Mapping):
            if key not in sections:
                raise ContractError(
                    f"{where}: no key list for the {key!r} section in TensorRT-LLM "
                    f"{contract.line}'s contract; add it before writing one"
                )
            for sub, sub_value in value.items():
                if sub not in sections[key]:
                    raise ContractError(
                        f"{where}: {key}.{sub} is not accepted by TensorRT-LLM "
                        f"{contract.line} (it takes {', '.join(sections[key])})"
                    )
                allowed = values.get(f"{key}.{sub}")
                if allowed is not None and sub_value not in allowed:
                    raise ContractError(
                        f"{where}: {key}.{sub} {sub_value!r} is not one of "
                        f"{', '.join(map(str, allowed))} in TensorRT-LLM {contract.line}"
                    )


def model_yaml(contract: VersionContract, options: Mapping[str, Any], *, model: str) -> dict[str, Any]:
    """Triton's `llmapi` `model.yaml`: `model` (the checkpoint folder), the PyTorch backend, the
    options, and `triton_config` (decoupled for streaming; Triton-level batching off, since the
    LLM batches in flight itself: the shipped example's `max_batch_size: 0`)."""
    llmapi = contract.triton_llmapi
    if llmapi is None:
        raise ContractError(f"TensorRT-LLM {contract.line} has no Triton llmapi contract here")
    body = {
        "model": model,
        "backend": "pytorch",
        **options,
        "triton_config": {"max_batch_size": 0, "decoupled": True},
    }
    check_model_yaml(contract, body)
    return body


def check_model_yaml(contract: VersionContract, body: Mapping[str, Any]) -> None:
    """Every key of a `model.yaml` outside `triton_config` is an LLM() argument; `triton_config`
    takes the keys the version's model.py reads."""
    llmapi = contract.triton_llmapi or {}
    triton = body.get("triton_config", {})
    stray = [key for key in triton if key not in llmapi.get("triton_config_keys", [])]
    if stray:
        raise ContractError(
            f"model.yaml: triton_config.{stray[0]} is not read by TensorRT-LLM "
            f"{contract.line}'s llmapi model ({llmapi.get('source', 'no contract')})"
        )
    check_options(contract, {k: v for k, v in body.items() if k != "triton_config"}, where="model.yaml")
