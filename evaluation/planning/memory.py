"""Memory model of one trial: does it fit, and how much KV cache is left.

Formulas (bytes; L = layers, H = hidden, I = intermediate, V = vocab, tp/pp/ep = parallel sizes,
dp = tp with attention data-parallelism, else 1):

* Weights come in three parts (`ModelArchitecture`): attention + dense (attention, dense MLPs,
  shared experts, routers), routed experts, and 16-bit embeddings/norms/biases. Each part's bytes
  per weight is the trial's format or the checkpoint's own where that is smaller (gpt-oss ships
  MXFP4 experts: 4 bits + one 8-bit scale per 32 = 0.53125 bytes; DeepSeek-V3 FP8 with one fp32
  scale per 128x128 block). weight_bytes includes scales (INT4-AWQ: 0.5 + 2/128 bytes).
* weights_per_gpu (the fullest GPU): routed experts / tp (EP x expert-TP = tp: ceil(E/ep) experts,
  each split by tp/ep); attention + dense / tp, or whole on every GPU with attention-DP; with pp > 1
  the decoder parts / pp plus one V*H embedding matrix (first or last stage), else both matrices;
  embeddings / tp, whole with attention-DP.
* runtime_reserve = 1.5 GiB per GPU (CUDA context, runtime, cuBLAS workspaces), + 0.5 GiB when
  TP*PP > 1 (NCCL buffers).
* activations = max_num_tokens * (4H + 2I/tp) * 2 bytes + max_batch_size * V/tp * 4 bytes (fp32
  logits); a MoE model's MLP term is its experts': max_num_tokens * k * 2 I_e/(tp/ep) * 2 with
  k experts per token, plus with ep > 1 the all-to-all dispatch and combine buffers,
  2 * max_num_tokens * k * H * 2 bytes.
* kv per token and layer: 2 * kv_heads * head_dim * kv_bytes, split by tp (kv_heads/tp, at least
  one head) unless attention-DP; MLA: (kv_lora_rank + qk_rope_head_dim) * kv_bytes, one latent
  vector for all heads, on every GPU of the TP group. A sliding-window layer holds at most its
  window of each sequence, so per-token figures are means over one ISL+OSL sequence.
  kv_bytes_per_token = the whole model (before any split); per GPU: ceil(L/pp) layers' share.
* kv_budget = (gpu_memory - weights_per_gpu - reserve - activations) * kv_free_fraction (TRT-LLM's
  `kv_cache_free_gpu_mem_fraction`, default 0.9).
* kv_capacity_tokens = kv_budget / kv_bytes_per_token_per_gpu (* dp: each attention-DP rank holds
  its own sequences); sequences = capacity // (ISL+OSL); max_concurrent_sequences =
  min(sequences, max_batch_size * dp).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from enginesweep.build_configs.architectures import ModelArchitecture
from enginesweep.build_configs.gpus import GIB, GPU
from enginesweep.build_configs.quant import QuantFormat
from enginesweep.build_configs.trial import TrialConfig
from enginesweep.evaluation.planning.records import MemoryBreakdown

RUNTIME_RESERVE_BYTES = int(1.5 * GIB)
MULTI_GPU_RESERVE_BYTES = int(0.5 * GIB)
_BYTES_16BIT = 2
SHIPPED_BYTES_PER_WEIGHT = {
    "mxfp4": 4.25 / 8,  # 4-bit E2M1 values, one E8M0 scale per 32
    "fp8_block": 1 + 4 / (128 * 128),  # e4m3 values, one fp32 scale per 128x128 block
}
"""Bytes per weight of the formats checkpoints ship their weights in (`shipped_*_format`)."""


@dataclass(frozen=True)
class Parallel:
    """How one trial spreads the model over its GPUs (ep = 1 and no attention-DP: plain TP x PP)."""

    tp: int = 1
    pp: int = 1
    ep: int = 1
    attention_dp: bool = False

    def __post_init__(self) -> None:
        # TensorRT-LLM's Mapping: expert-TP x EP = TP (EP lies within the TP group).
        if self.tp < 1 or self.pp < 1 or self.ep < 1 or self.tp % self.ep:
            raise ValueError(f"ep {self.ep} must divide tp {self.tp} (expert TP x EP = TP)")
        if self.attention_dp and self.tp == 1:
            raise ValueError("attention-DP needs tp > 1 (its ranks are the TP group's)")

    @property
    def dp(self) -> int:
        """Attention data-parallel ranks: each holds whole attention and its own sequences."""
        return self.tp if self.attention_dp else 1


def trial_parallel(cfg: TrialConfig) -> Parallel:
    """The trial's layout; a combination the rules reject (ep not dividing tp, attention-DP at
    tp 1) is sized as plain TP x PP so that its rejection still shows a memory breakdown."""
    try:
        return Parallel(tp=cfg.tp, pp=cfg.pp, ep=cfg.ep, attention_dp=cfg.attention_dp)
    except ValueError:
        return Parallel(tp=cfg.tp, pp=cfg.pp)


def part_bytes_per_weight(arch: ModelArchitecture, quant: QuantFormat) -> tuple[float, float]:
    """Bytes per weight of (attention + dense, routed experts): the trial's format, or the
    checkpoint's own where that is already smaller."""

    def pick(shipped: str | None) -> float:
        return min(quant.weight_bytes, SHIPPED_BYTES_PER_WEIGHT.get(shipped or "", _BYTES_16BIT))

    return pick(arch.shipped_dense_format), pick(arch.shipped_expert_format)


def weight_parts_total(arch: ModelArchitecture, quant: QuantFormat) -> tuple[int, int, int]:
    """Bytes of (attention + dense, routed experts, 16-bit embeddings/norms/biases), whole model."""
    dense_b, expert_b = part_bytes_per_weight(arch, quant)
    return (
        int((arch.attention_params + arch.dense_params) * dense_b),
        int(arch.routed_expert_params * expert_b),
        (arch.embedding_params + arch.other_params) * _BYTES_16BIT,
    )


def weights_bytes_total(arch: ModelArchitecture, quant: QuantFormat) -> int:
    """All weight bytes of `arch` stored in `quant` (16-bit embeddings, norms and biases)."""
    return sum(weight_parts_total(arch, quant))


def weight_parts_per_gpu(arch: ModelArchitecture, quant: QuantFormat, par: Parallel) -> tuple[int, int]:
    """Bytes of (attention + dense + 16-bit parts, routed experts) on the fullest GPU."""
    dense, experts, sixteen = weight_parts_total(arch, quant)
    one_embedding = arch.vocab_size * arch.hidden_size * _BYTES_16BIT
    embeddings = arch.embedding_params * _BYTES_16BIT
    if par.pp > 1:
        embeddings = one_embedding  # the first stage's input embedding or the last's LM head
    rest = sixteen - arch.embedding_params * _BYTES_16BIT  # norms, biases, sinks
    shared = 1 if par.attention_dp else par.tp  # attention-DP replicates all but the experts
    per_gpu_dense = (dense + rest) / (shared * par.pp) + embeddings / shared
    if arch.is_moe:
        experts_per_rank = math.ceil(arch.num_experts / par.ep)
        per_gpu_experts = experts * experts_per_rank / arch.num_experts / (par.tp // par.ep) / par.pp
    else:
        per_gpu_experts = 0
    return math.ceil(per_gpu_dense), math.ceil(per_gpu_experts)


def weights_bytes_per_gpu(arch: ModelArchitecture, quant: QuantFormat, tp: int, pp: int) -> int:
    """Weight bytes on the fullest GPU of a TP x PP deployment."""
    return sum(weight_parts_per_gpu(arch, quant, Parallel(tp=tp, pp=pp)))


def kv_bytes_per_token(arch: ModelArchitecture, kv_bytes: int, sequence_tokens: int) -> float:
    """KV bytes one token of an ISL+OSL sequence costs, whole model (sliding layers: their
    window's share)."""
    held = arch.kv_held_fraction(sequence_tokens)
    return arch.kv_elements_per_token * kv_bytes * held


def kv_bytes_per_token_per_gpu(
    arch: ModelArchitecture, kv_bytes: int, sequence_tokens: int, par: Parallel
) -> float:
    """The fullest GPU's share of `kv_bytes_per_token`."""
    if arch.is_mla:
        per_layer = arch.kv_elements_per_token_per_layer  # one latent vector: not split by TP
    else:
        heads = arch.num_kv_heads if par.attention_dp else math.ceil(arch.num_kv_heads / par.tp)
        per_layer = 2 * heads * arch.head_dim
    held = arch.kv_held_fraction(sequence_tokens)
    return math.ceil(arch.num_layers / par.pp) * per_layer * kv_bytes * held


def activation_bytes(arch: ModelArchitecture, cfg: TrialConfig, par: Parallel) -> int:
    """Activations for max_num_tokens and fp32 logits on one GPU (module docstring)."""
    tokens, h = cfg.max_num_tokens, arch.hidden_size
    logits = cfg.max_batch_size * arch.vocab_size / (1 if par.attention_dp else par.tp) * 4
    if not arch.is_moe:
        return int(tokens * (4 * h + 2 * arch.intermediate_size / par.tp) * _BYTES_16BIT + logits)
    k = arch.experts_per_token
    width = arch.expert_intermediate_size or arch.intermediate_size
    experts = tokens * k * 2 * width / (par.tp // par.ep) * _BYTES_16BIT  # k copies' gate/up
    all_to_all = 2 * tokens * k * h * _BYTES_16BIT if par.ep > 1 else 0
    return int(tokens * 4 * h * _BYTES_16BIT + experts + all_to_all + logits)


def memory_breakdown(
    arch: ModelArchitecture,
    gpu: GPU,
    cfg: TrialConfig,
    *,
    kv_free_fraction: float,
    sequence_tokens: int,
    par: Parallel | None = None,
) -> MemoryBreakdown:
    """Size one trial's memory on `gpu` (see the module docstring for each formula). `par`
    defaults to the trial's own layout (`trial_parallel`)."""
    par = par or trial_parallel(cfg)
    kv_bytes = cfg.kv_cache.bytes_per_element()
    dense_gpu, experts_gpu = weight_parts_per_gpu(arch, cfg.quant, par)
    weights_gpu = dense_gpu + experts_gpu
    reserve = RUNTIME_RESERVE_BYTES + (MULTI_GPU_RESERVE_BYTES if cfg.world_size > 1 else 0)
    activations = activation_bytes(arch, cfg, par)
    kv_per_token_gpu = math.ceil(kv_bytes_per_token_per_gpu(arch, kv_bytes, sequence_tokens, par))
    free = int(gpu.memory_bytes) - weights_gpu - reserve - activations
    budget = max(0, int(free * kv_free_fraction))
    capacity = budget // kv_per_token_gpu * par.dp
    sequences = capacity // sequence_tokens
    dense_b, expert_b = part_bytes_per_weight(arch, cfg.quant)
    return MemoryBreakdown(
        gpu_memory_bytes=int(gpu.memory_bytes),
        weights_bytes_total=weights_bytes_total(arch, cfg.quant),
        weights_bytes_per_gpu=weights_gpu,
        expert_bytes_per_gpu=experts_gpu if arch.is_moe else None,
        dense_bytes_per_gpu=dense_gpu if arch.is_moe else None,
        dense_bytes_per_weight=dense_b if arch.is_moe else None,
        expert_bytes_per_weight=expert_b if arch.is_moe else None,
        runtime_reserve_bytes_per_gpu=reserve,
        activation_bytes_per_gpu=activations,
        kv_bytes_per_token=math.ceil(kv_bytes_per_token(arch, kv_bytes, sequence_tokens)),
        kv_bytes_per_token_per_gpu=kv_per_token_gpu,
        kv_budget_bytes_per_gpu=budget,
        kv_capacity_tokens=capacity,
        kv_limited_sequences=sequences,
        max_concurrent_sequences=min(sequences, cfg.max_batch_size * par.dp),
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
