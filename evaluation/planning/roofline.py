"""A transparent roofline model of TTFT, ITL, throughput and cost. Labelled `predicted:roofline`.

It is a first-order estimate to rank and prune trials, not a measurement; `aiconfigurator` replaces
it where it covers the GPU (see the planner-fidelity issue). Symbols: P = params in GEMMs per token
(linear + one V*H LM-head row set), W = weights_total bytes, KV = kv_bytes_per_token (whole model),
F = dense TFLOP/s of the format's compute dtype, BW = memory bandwidth, tp/pp = parallel sizes.

* Prefill of ISL tokens (compute-bound): flops = 2*P*ISL + 2*L*(heads*head_dim)*ISL^2 (causal
  attention); t = flops / (tp * F * MFU), floored by the weight read W/tp / (BW * BW_EFF), plus
  2*L TP all-reduces of ISL*H*2 bytes and (pp-1) stage hops.
* A mixture-of-experts model computes with its active parameters (P counts only the k routed
  experts of E a token uses) and a decode round of B tokens reads all its other weights and the
  expected E * (1 - (1 - k/E)^B) experts they touch.
* Expert parallelism without attention-DP: every rank of the TP group holds every token, so EP
  moves no tokens; its bytes, FLOPs and all-reduces are those of TP (the roofline cannot tell EP
  from expert-TP: kernel efficiency and expert load imbalance are not modelled; the note says so).
* Attention-DP (MoE): each rank runs attention and the dense parts for its own B/tp sequences, so
  a decode round reads the whole dense weights on every rank plus its share of the touched
  experts, and the attention all-reduce is gone. Each MoE layer exchanges tokens instead: an
  all-to-all when ep = tp (every rank sends its B/tp tokens' k copies, (ep-1)/ep of them away, to
  the experts and back), else an all-gather and a reduce-scatter of B tokens across the TP group.
  A lone request's prefill runs its attention and dense parts on one rank (TTFT grows); the
  prefills of many requests spread over the ranks (throughput does not lose).
* One decode round for B sequences at context C (memory-bound): each stage reads its weights once
  per micro-batch and the KV of its layers, so t = (W/tp + B*C*KV/(tp*pp)) / (BW * BW_EFF), or the
  compute time 2*P*B/(tp*pp) / (F * MFU) if larger, plus 2*L all-reduces of (B/pp)*H*2 bytes.
  Taken at C = ISL + OSL/2.
* All-reduce (ring) of S bytes: 2*(tp-1)/tp * S / link_bandwidth + link latency.
* In steady state with B in flight, one cycle in which every sequence emits OSL tokens takes
  T = B * prefill_compute(ISL) + OSL * round(B): the other B-1 requests' prefills interrupt each
  sequence's decoding. So ITL = round(B) + (B-1) * prefill_compute(ISL) / OSL, and a request's
  latency TTFT + (OSL-1) * ITL ~ T, consistent with the throughput by Little's law.
* TTFT at concurrency c = prefill + one decode round of the running batch, plus whole cycles T of
  queueing when c exceeds the sequences the KV cache holds.
* Throughput at B in flight: B*OSL / T. Saturated: B = max_concurrent_sequences (the KV /
  max_batch_size limit).
* Cost: $/1M output tokens = GPUs * $/GPU-hour / (tok/s * 3600) * 1e6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from enginesweep.build_configs.architectures import ModelArchitecture
from enginesweep.build_configs.gpus import GPU
from enginesweep.build_configs.schema import SLA, Workload
from enginesweep.evaluation.planning.memory import Parallel, trial_parallel, weight_parts_total
from enginesweep.evaluation.planning.prediction import assemble, level
from enginesweep.evaluation.planning.records import (
    ConcurrencyPrediction,
    MemoryBreakdown,
    Prediction,
    TrialConfig,
)

MFU = 0.5
"""Fraction of peak tensor throughput reached by large GEMMs (prefill)."""
BW_EFF = 0.75
"""Fraction of peak memory bandwidth reached by decode kernels."""


@dataclass(frozen=True)
class Deployment:
    """One trial's model on its hardware: everything the timing formulas read."""

    arch: ModelArchitecture
    gpu: GPU
    cfg: TrialConfig
    mem: MemoryBreakdown

    @property
    def flops_per_s(self) -> float:
        """Effective FLOP/s of ONE GPU for this format."""
        return self.gpu.tflops(self.cfg.quant.spec.compute_dtype) * 1e12 * MFU

    @property
    def bytes_per_s(self) -> float:
        """Effective memory bandwidth of ONE GPU."""
        return self.gpu.hbm_tb_s * 1e12 * BW_EFF

    @property
    def gemm_params(self) -> int:
        """GEMM weights one token multiplies with: a MoE model's active ones, plus the LM head."""
        return self.arch.active_linear_params + self.arch.vocab_size * self.arch.hidden_size

    def decode_weight_bytes(self, batch: int) -> float:
        """Weight bytes one decode round reads: all but a MoE model's routed experts, and of those
        the expected number that `batch` tokens touch, E * (1 - (1 - k/E)^batch) of E."""
        if not self.arch.is_moe:
            return self.mem.weights_bytes_total
        _, experts, _ = weight_parts_total(self.arch, self.cfg.quant)
        e, k = self.arch.num_experts, self.arch.experts_per_token
        touched = 1 - (1 - k / e) ** max(batch, 1)
        return self.mem.weights_bytes_total - experts * (1 - touched)

    @property
    def par(self) -> Parallel:
        return trial_parallel(self.cfg)

    @property
    def adp(self) -> bool:
        """Attention-DP as the roofline models it (MoE models; the rules refuse the rest)."""
        return self.par.attention_dp and self.arch.is_moe

    @property
    def expert_bytes_total(self) -> int:
        return weight_parts_total(self.arch, self.cfg.quant)[1] if self.arch.is_moe else 0

    def decode_gpu_weight_bytes(self, batch: int) -> float:
        """Weight bytes ONE GPU reads in a decode round of `batch` tokens (all stages in turn):
        1/tp of what the model reads, or with attention-DP the whole dense part and 1/tp of the
        touched experts."""
        read = self.decode_weight_bytes(batch)
        if not self.adp:
            return read / self.cfg.tp
        dense = self.mem.weights_bytes_total - self.expert_bytes_total
        return dense + (read - dense) / self.cfg.tp

    def token_exchange_s(self, tokens: float) -> float:
        """Attention-DP: moving `tokens` (the whole group's) to their experts and back, one MoE
        layer: an all-to-all when ep = tp, else an all-gather plus a reduce-scatter."""
        tp, ep, link = self.cfg.tp, self.par.ep, self.gpu.interconnect_gb_s * 1e9
        hidden = self.arch.hidden_size * 2
        if ep == tp:
            sent = tokens / tp * self.arch.experts_per_token * hidden * (ep - 1) / ep
        else:
            sent = (tp - 1) / tp * tokens * hidden
        return 2 * sent / link + 2 * self.gpu.interconnect_latency_us * 1e-6

    def layer_comm_s(self, tokens: float) -> float:
        """Communication of one forward pass over `tokens`: 2*L TP all-reduces, or with
        attention-DP one token exchange per MoE layer."""
        if self.adp:
            moe_layers = self.arch.num_layers - self.arch.num_dense_layers
            return moe_layers * self.token_exchange_s(tokens)
        return 2 * self.arch.num_layers * self.allreduce_s(tokens)

    def allreduce_s(self, tokens: float) -> float:
        """One ring all-reduce of `tokens` hidden states across the TP group."""
        tp = self.cfg.tp
        if tp == 1:
            return 0.0
        size = tokens * self.arch.hidden_size * 2
        return (
            2 * (tp - 1) / tp * size / (self.gpu.interconnect_gb_s * 1e9)
            + self.gpu.interconnect_latency_us * 1e-6
        )

    def prefill_compute_s(self, isl: int) -> float:
        """GEMM + attention time of one ISL-token prefill, compute-bound, across the TP group."""
        q_width = self.arch.num_attention_heads * self.arch.head_dim
        flops = 2 * self.gemm_params * isl + 2 * self.arch.num_layers * q_width * isl**2
        return flops / (self.cfg.tp * self.flops_per_s)

    def lone_prefill_compute_s(self, isl: int) -> float:
        """One request's prefill alone: across the TP group, or with attention-DP its attention
        and dense parts on one rank and its experts across the group."""
        if not self.adp:
            return self.prefill_compute_s(isl)
        arch = self.arch
        expert_params = arch.num_moe_layers * arch.experts_per_token * arch.expert_params
        whole = self.prefill_compute_s(isl) * self.cfg.tp
        experts = 2 * expert_params * isl / self.flops_per_s
        return whole - experts + experts / self.cfg.tp

    def prefill_s(self, isl: int) -> float:
        """TTFT of a lone request: prefill floored by one weight read, plus communication."""
        weight_read = self.decode_gpu_weight_bytes(isl) / self.bytes_per_s
        comm = self.layer_comm_s(isl)
        hops = (self.cfg.pp - 1) * (
            isl * self.arch.hidden_size * 2 / (self.gpu.interconnect_gb_s * 1e9)
            + self.gpu.interconnect_latency_us * 1e-6
        )
        return max(self.lone_prefill_compute_s(isl), weight_read) + comm + hops

    def decode_round_s(self, batch: int, context: float) -> float:
        """Time for every one of `batch` sequences to produce one token (= ITL)."""
        tp, pp = self.cfg.tp, self.cfg.pp
        memory = (
            self.decode_gpu_weight_bytes(batch) + batch * context * self.mem.kv_bytes_per_token / (tp * pp)
        ) / self.bytes_per_s
        compute = 2 * self.gemm_params * batch / (tp * pp) / self.flops_per_s
        comm = self.layer_comm_s(batch / pp)
        hops = pp * (pp - 1) * self.gpu.interconnect_latency_us * 1e-6
        return max(memory, compute) + comm + hops


ROOFLINE_VERSION = f"roofline-3 (MFU {MFU}, BW_EFF {BW_EFF}, runtime reserve 1.5 GiB)"


def _at_concurrency(dep: Deployment, workload: Workload, sla: SLA, concurrency: int) -> ConcurrencyPrediction:
    isl, osl = workload.isl.mean, workload.osl.mean
    in_flight = max(1, min(concurrency, dep.mem.max_concurrent_sequences))
    round_s = dep.decode_round_s(in_flight, isl + osl / 2)
    prefill_c = dep.prefill_compute_s(isl)
    cycle_s = in_flight * prefill_c + osl * round_s
    itl_s = round_s + (in_flight - 1) * prefill_c / osl  # the others' prefills stall decoding
    ttft_s = dep.prefill_s(isl) + round_s
    waves = math.ceil(concurrency / in_flight)
    if waves > 1:  # the KV cache cannot hold them all: later requests queue for whole cycles
        ttft_s += (waves - 1) * cycle_s
    return level(
        concurrency=concurrency,
        in_flight=in_flight,
        ttft_ms=ttft_s * 1e3,
        itl_ms=itl_s * 1e3,
        output_tok_s=in_flight * osl / cycle_s,
        osl=osl,
        sla=sla,
    )


def predict(dep: Deployment, workload: Workload, sla: SLA, usd_per_gpu_hour: float) -> Prediction:
    """Roofline prediction for one feasible trial."""
    saturation = max(1, dep.mem.max_concurrent_sequences)
    notes = ["cpu target: order-of-magnitude only"] if dep.gpu.is_cpu else []
    if dep.arch.is_moe:
        notes.append(
            "mixture-of-experts on the roofline: no efficiency term for expert GEMMs or routing; "
            "it overpredicts NVIDIA's published MoE throughput severalfold (docs/planner-fidelity.md)"
        )
    if dep.cfg.ep > 1:
        notes.append(
            "expert parallelism: same bytes, FLOPs and collectives as expert-TP here; "
            "kernel efficiency and expert load imbalance are not modelled"
        )
    return assemble(
        source="predicted:roofline",
        source_version=ROOFLINE_VERSION,
        hardware=dep.gpu.name,
        gpus=dep.cfg.world_size,
        usd_per_gpu_hour=usd_per_gpu_hour,
        lone=_at_concurrency(dep, workload, sla, 1),
        saturated=_at_concurrency(dep, workload, sla, saturation),
        levels=[_at_concurrency(dep, workload, sla, c) for c in workload.concurrency],
        notes=notes,
    )
