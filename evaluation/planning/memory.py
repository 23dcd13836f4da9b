"""Memory model of one trial: does it fit, and how much KV cache is left.

Formulas (bytes; L = layers, H = hidden, I = intermediate, V = vocab, tp/pp = parallel sizes):

* weights_total = linear_params * weight_bytes(quant) + (embedding_params + norms/biases) * 2.
  Linear = q,k,v,o + gate,up,down of every layer. TRT-LLM's recipes keep embeddings and `lm_head`
  in 16 bits. weight_bytes includes scales (INT4-AWQ: 0.5 + 2/128 bytes).
* weights_per_gpu (the fullest GPU): pp = 1: weights_total / tp. pp > 1: the decoder share
  (linear + norms) / (tp*pp) plus one V*H embedding matrix / tp, held by the first or last stage.
* runtime_reserve = 1.5 GiB per GPU (CUDA context, runtime, cuBLAS workspaces), + 0.5 GiB when
  TP*PP > 1 (NCCL buffers).
* activations = max_num_tokens * (4H + 2I/tp) * 2 bytes + max_batch_size * V/tp * 4 bytes (fp32
  logits).
* kv_bytes_per_token = 2 * L * kv_heads * head_dim * kv_bytes (whole model, before the TP split);
  per GPU: 2 * ceil(L/pp) * kv_heads/tp * head_dim * kv_bytes.
* kv_budget = (gpu_memory - weights_per_gpu - reserve - activations) * kv_free_fraction (TRT-LLM's
  `kv_cache_free_gpu_mem_fraction`, default 0.9).
* kv_capacity_tokens = kv_budget / kv_bytes_per_token_per_gpu; sequences = capacity // (ISL+OSL);
  max_concurrent_sequences = min(sequences, max_batch_size).
"""

from __future__ import annotations

import math

from enginesweep.build_configs.architectures import ModelArchitecture
from enginesweep.build_configs.gpus import GIB, GPU
from enginesweep.build_configs.quant import QuantFormat
from enginesweep.build_configs.trial import TrialConfig
from enginesweep.evaluation.planning.records import MemoryBreakdown

RUNTIME_RESERVE_BYTES = int(1.5 * GIB)
MULTI_GPU_RESERVE_BYTES = int(0.5 * GIB)
_BYTES_16BIT = 2


def weights_bytes_total(arch: ModelArchitecture, quant: QuantFormat) -> int:
    """All weight bytes of `arch` stored in `quant` (16-bit embeddings, norms and biases)."""
    return int(
        arch.linear_params * quant.weight_bytes + (arch.embedding_params + arch.other_params) * _BYTES_16BIT
    )


def weights_bytes_per_gpu(arch: ModelArchitecture, quant: QuantFormat, tp: int, pp: int) -> int:
    """Weight bytes on the fullest GPU of a TP x PP deployment."""
    total = weights_bytes_total(arch, quant)
    if pp == 1:
        return math.ceil(total / tp)
    one_embedding = arch.vocab_size * arch.hidden_size * _BYTES_16BIT
    decoder = total - arch.embedding_params * _BYTES_16BIT
    return math.ceil(decoder / (tp * pp) + one_embedding / tp)


def memory_breakdown(
    arch: ModelArchitecture, gpu: GPU, cfg: TrialConfig, *, kv_free_fraction: float, sequence_tokens: int
) -> MemoryBreakdown:
    """Size one trial's memory on `gpu` (see the module docstring for each formula)."""
    kv_bytes = cfg.kv_cache.bytes_per_element()
    weights_gpu = weights_bytes_per_gpu(arch, cfg.quant, cfg.tp, cfg.pp)
    reserve = RUNTIME_RESERVE_BYTES + (MULTI_GPU_RESERVE_BYTES if cfg.world_size > 1 else 0)
    activations = int(
        cfg.max_num_tokens * (4 * arch.hidden_size + 2 * arch.intermediate_size / cfg.tp) * _BYTES_16BIT
        + cfg.max_batch_size * arch.vocab_size / cfg.tp * 4
    )
    kv_per_token = arch.kv_elements_per_token * kv_bytes
    kv_per_token_gpu = (
        2
        * math.ceil(arch.num_layers / cfg.pp)
        * math.ceil(arch.num_kv_heads / cfg.tp)
        * arch.head_dim
        * kv_bytes
    )
    free = int(gpu.memory_bytes) - weights_gpu - reserve - activations
    budget = max(0, int(free * kv_free_fraction))
    capacity = budget // kv_per_token_gpu
    sequences = capacity // sequence_tokens
    return MemoryBreakdown(
        gpu_memory_bytes=int(gpu.memory_bytes),
        weights_bytes_total=weights_bytes_total(arch, cfg.quant),
        weights_bytes_per_gpu=weights_gpu,
        runtime_reserve_bytes_per_gpu=reserve,
        activation_bytes_per_gpu=activations,
        kv_bytes_per_token=kv_per_token,
        kv_bytes_per_token_per_gpu=kv_per_token_gpu,
        kv_budget_bytes_per_gpu=budget,
        kv_capacity_tokens=capacity,
        kv_limited_sequences=sequences,
        max_concurrent_sequences=min(sequences, cfg.max_batch_size),
    )


def memory_problems(mem: MemoryBreakdown, gpu: GPU, sequence_tokens: int) -> list[str]:
    """Reasons a trial does not fit in memory (empty when it fits)."""
    fixed = mem.weights_bytes_per_gpu + mem.runtime_reserve_bytes_per_gpu + mem.activation_bytes_per_gpu
    if fixed >= mem.gpu_memory_bytes:
        return [
            f"memory: weights {mem.weights_bytes_per_gpu / 1e9:.1f} GB + runtime and activations "
            f"{(fixed - mem.weights_bytes_per_gpu) / 1e9:.1f} GB per GPU exceed the "
            f"{mem.gpu_memory_bytes / 1e9:.1f} GB of {gpu.name}"
        ]
    if mem.kv_capacity_tokens < sequence_tokens:
        return [
            f"memory: the KV cache holds {mem.kv_capacity_tokens:,} tokens, "
            f"less than one ISL+OSL={sequence_tokens:,} sequence"
        ]
    return []
