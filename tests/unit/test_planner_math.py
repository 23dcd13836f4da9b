"""Planner math against hand computations (numbers worked out in the comments)."""

from __future__ import annotations

import math

import pytest

from enginesweep.build_configs.architectures import shipped_architecture
from enginesweep.build_configs.gpus import GIB, get_gpu
from enginesweep.build_configs.quant import KVCacheFormat, QuantFormat
from enginesweep.build_configs.schema import SLA, LengthDistribution, Workload
from enginesweep.build_configs.trial import TrialConfig
from enginesweep.evaluation.planning import plan_trial
from enginesweep.evaluation.planning.memory import weights_bytes_per_gpu, weights_bytes_total
from enginesweep.evaluation.planning.prediction import usd_per_1m_tokens

pytestmark = pytest.mark.unit


NO_SLA = SLA()  # frozen: one instance serves every call


def size(
    model: str,
    gpu: str,
    quant: str,
    kv: str = "auto",
    tp: int = 1,
    pp: int = 1,
    isl: int = 1024,
    osl: int = 256,
    gpus: int | None = None,
    batch: int = 256,
    sla: SLA = NO_SLA,
    concurrency: tuple[int, ...] = (1,),
):
    cfg = TrialConfig(
        quant=QuantFormat(quant),
        kv_cache=KVCacheFormat(kv),
        tp=tp,
        pp=pp,
        max_batch_size=batch,
        max_num_tokens=8192,
        max_seq_len=isl + osl,
    )
    workload = Workload(
        isl=LengthDistribution(mean=isl), osl=LengthDistribution(mean=osl), concurrency=list(concurrency)
    )
    target = get_gpu(gpu)
    return plan_trial(
        shipped_architecture(model),
        target,
        cfg,
        workload=workload,
        sla=sla,
        gpus_available=gpus or tp * pp,
        usd_per_gpu_hour=target.usd_per_gpu_hour,
    )


def test_llama_8b_parameter_count_and_bf16_weights():
    arch = shipped_architecture("llama-3.1-8b")
    # per layer: q 4096*4096 + k,v 2*4096*1024 + o 4096*4096 + mlp 3*4096*14336 = 218,103,808
    assert arch.linear_params_per_layer == 218_103_808
    # 32 layers + embed and lm_head 2*128256*4096 + norms 65*4096
    assert arch.total_params == 32 * 218_103_808 + 2 * 128_256 * 4096 + 65 * 4096 == 8_030_261_248
    assert weights_bytes_total(arch, QuantFormat.BF16) == 2 * 8_030_261_248  # ~16.1 GB
    assert round(weights_bytes_total(arch, QuantFormat.BF16) / 1e9, 1) == 16.1


def test_llama_8b_fp8_keeps_embeddings_in_16_bits():
    arch = shipped_architecture("llama-3.1-8b")
    expected = 32 * 218_103_808 * 1 + (2 * 128_256 * 4096 + 65 * 4096) * 2
    assert weights_bytes_total(arch, QuantFormat.FP8) == expected  # 9.08 GB


def test_int4_awq_counts_group_scales():
    arch = shipped_architecture("llama-3.1-8b")
    linear = 32 * 218_103_808
    expected = int(linear * (0.5 + 2 / 128) + (2 * 128_256 * 4096 + 65 * 4096) * 2)
    assert weights_bytes_total(arch, QuantFormat.INT4_AWQ) == expected


@pytest.mark.parametrize(("kv", "bytes_per_token"), [("auto", 131_072), ("fp8", 65_536), ("int8", 65_536)])
def test_llama_8b_kv_bytes_per_token(kv, bytes_per_token):
    # 2 (K and V) * 32 layers * 8 KV heads * 128 head_dim * 2 bytes = 131,072
    trial = size("llama-3.1-8b", "H100-SXM-80GB", "bf16", kv)
    assert trial.memory.kv_bytes_per_token == bytes_per_token


def test_kv_per_gpu_splits_by_tp_and_pp():
    trial = size("llama-3.1-8b", "H100-SXM-80GB", "bf16", tp=2, pp=2, gpus=4)
    # 2 * (32/2 layers) * (8/2 heads) * 128 * 2 bytes
    assert trial.memory.kv_bytes_per_token_per_gpu == 2 * 16 * 4 * 128 * 2
    assert trial.memory.kv_bytes_per_token == 131_072  # whole model, unaffected by TP/PP


def test_kv_capacity_follows_the_documented_formula():
    trial = size("llama-3.1-8b", "H100-SXM-80GB", "fp8", "fp8")
    mem = trial.memory
    free = (
        mem.gpu_memory_bytes
        - mem.weights_bytes_per_gpu
        - mem.runtime_reserve_bytes_per_gpu
        - mem.activation_bytes_per_gpu
    )
    assert mem.gpu_memory_bytes == int(79.65 * GIB)
    assert mem.kv_budget_bytes_per_gpu == int(free * 0.9)
    assert mem.kv_capacity_tokens == mem.kv_budget_bytes_per_gpu // 65_536
    assert mem.kv_limited_sequences == mem.kv_capacity_tokens // 1280
    assert mem.max_concurrent_sequences == min(mem.kv_limited_sequences, 256)


def test_pp_puts_one_embedding_matrix_on_the_fullest_stage():
    arch = shipped_architecture("llama-3.1-70b")
    total = weights_bytes_total(arch, QuantFormat.BF16)
    embedding = 128_256 * 8192 * 2
    decoder = total - 2 * embedding
    assert weights_bytes_per_gpu(arch, QuantFormat.BF16, 2, 4) == math.ceil(decoder / 8 + embedding / 2)
    assert weights_bytes_per_gpu(arch, QuantFormat.BF16, 2, 1) == math.ceil(total / 2)


def test_llama_70b_fp8_on_one_h100_fits_with_a_small_kv_cache():
    one = size("llama-3.3-70b", "H100-SXM-80GB", "fp8", isl=1536, osl=512)
    assert one.feasible
    # ~72.7 GB of weights leave ~9 GB: tens of 2,048-token sequences, not hundreds
    assert 72.0e9 < one.memory.weights_bytes_per_gpu < 73.5e9
    assert 5 <= one.memory.kv_limited_sequences < 50
    two = size("llama-3.3-70b", "H100-SXM-80GB", "fp8", tp=2, isl=1536, osl=512)
    assert two.memory.kv_limited_sequences > 8 * one.memory.kv_limited_sequences
    assert two.memory.kv_limited_sequences >= 100


def test_llama_70b_bf16_on_one_h100_is_rejected_for_memory():
    trial = size("llama-3.3-70b", "H100-SXM-80GB", "bf16")
    assert not trial.feasible
    assert trial.predicted is None
    assert trial.reasons[0].startswith("memory: weights 141.1 GB")


def test_llama_405b_fp8_needs_eight_h100s():
    four = size("llama-3.1-405b", "H100-SXM-80GB", "fp8", tp=4)
    assert not four.feasible
    assert "memory: weights 102.5 GB" in four.reasons[0]
    eight = size("llama-3.1-405b", "H100-SXM-80GB", "fp8", tp=8)
    assert eight.feasible, eight.reasons
    assert eight.memory.weights_bytes_per_gpu == pytest.approx(410.06e9 / 8, rel=1e-3)


def test_h200_holds_70b_bf16_on_two_gpus_with_more_kv_than_h100():
    h100 = size("llama-3.3-70b", "H100-SXM-80GB", "bf16", tp=2)
    h200 = size("llama-3.3-70b", "H200-SXM-141GB", "bf16", tp=2)
    assert h100.feasible and h200.feasible
    assert h200.memory.kv_capacity_tokens > 5 * h100.memory.kv_capacity_tokens


def test_kv_too_small_for_one_sequence_is_rejected():
    trial = size("llama-3.3-70b", "H100-SXM-80GB", "fp8", isl=30_000, osl=2_000)
    assert not trial.feasible
    assert "less than one ISL+OSL=32,000 sequence" in trial.reasons[0]


def test_roofline_lone_decode_is_weight_bandwidth_bound():
    trial = size("llama-3.1-8b", "H100-SXM-80GB", "bf16", isl=128, osl=128)
    # one token reads all 16.06 GB of weights (+ a little KV) at 3.35 TB/s * 0.75
    expected_ms = 16.06e9 / (3.35e12 * 0.75) * 1e3
    assert trial.predicted.itl_ms == pytest.approx(expected_ms, rel=0.02)
    assert trial.predicted.source == "predicted:roofline"


def test_roofline_prefill_is_compute_bound_for_long_prompts():
    trial = size("llama-3.1-8b", "H100-SXM-80GB", "bf16", isl=8192, osl=64, concurrency=(1,))
    arch = shipped_architecture("llama-3.1-8b")
    gemm = arch.linear_params + 128_256 * 4096
    flops = 2 * gemm * 8192 + 2 * 32 * 4096 * 8192**2
    prefill_ms = flops / (989e12 * 0.5) * 1e3
    # TTFT = prefill + one decode round of the lone request
    assert trial.predicted.ttft_ms == pytest.approx(prefill_ms + trial.predicted.itl_ms, rel=0.01)


def test_tp_and_quantization_speed_up_decode():
    base = size("llama-3.1-8b", "H100-SXM-80GB", "bf16").predicted
    tp2 = size("llama-3.1-8b", "H100-SXM-80GB", "bf16", tp=2).predicted
    fp8 = size("llama-3.1-8b", "H100-SXM-80GB", "fp8").predicted
    assert tp2.itl_ms < base.itl_ms and fp8.itl_ms < base.itl_ms
    assert base.itl_ms / fp8.itl_ms == pytest.approx(16.06 / 9.08, rel=0.05)


def test_cost_formula():
    # 2 GPUs at $3/h producing 1,000 tok/s: 6 $/h / 3.6M tok/h = $1.667 per 1M tokens
    assert usd_per_1m_tokens(2, 3.0, 1000) == pytest.approx(1.6667, rel=1e-4)
    trial = size("llama-3.1-8b", "H100-SXM-80GB", "fp8", tp=2)
    pred = trial.predicted
    assert pred.usd_per_1m_output_tokens == pytest.approx(2 * 3.0 / (pred.output_tok_s * 3600) * 1e6)
    assert pred.output_tok_s_per_gpu == pytest.approx(pred.output_tok_s / 2)


def test_sla_picks_the_highest_concurrency_that_meets_it():
    loose = size(
        "llama-3.1-8b",
        "H100-SXM-80GB",
        "fp8",
        sla=SLA(itl_p99_ms=1000, ttft_p99_ms=10_000),
        concurrency=(1, 8, 64),
    )
    assert loose.predicted.max_concurrency_meeting_sla == 64
    assert all(level.meets_sla for level in loose.predicted.per_concurrency)
    strict = size("llama-3.1-8b", "H100-SXM-80GB", "fp8", sla=SLA(itl_p99_ms=0.5), concurrency=(1, 8))
    assert strict.predicted.max_concurrency_meeting_sla is None
    assert strict.predicted.usd_per_1m_output_tokens_at_sla is None
    none = size("llama-3.1-8b", "H100-SXM-80GB", "fp8", concurrency=(1, 8))
    assert [level.meets_sla for level in none.predicted.per_concurrency] == [None, None]


def test_itl_grows_with_concurrency_and_throughput_with_it():
    pred = size("llama-3.1-8b", "H100-SXM-80GB", "fp8", concurrency=(1, 16, 128)).predicted
    itls = [level.itl_ms for level in pred.per_concurrency]
    rates = [level.output_tok_s for level in pred.per_concurrency]
    assert itls == sorted(itls) and rates == sorted(rates)
    assert pred.output_tok_s >= rates[-1]


def test_queueing_beyond_kv_capacity_raises_ttft_and_warns():
    trial = size("llama-3.3-70b", "H100-SXM-80GB", "fp8", isl=1536, osl=512, concurrency=(1, 256))
    lone, crowded = trial.predicted.per_concurrency
    assert crowded.ttft_ms > 10 * lone.ttft_ms
    assert any("concurrency 256 queues" in warning for warning in trial.warnings)


def test_rules_reject_trials_with_reasons():
    fp8_on_a100 = size("llama-3.1-8b", "A100-SXM-80GB", "fp8")
    assert fp8_on_a100.reasons == ["fp8 needs SM89+; A100-SXM-80GB is SM80"]
    tp3 = size("llama-3.1-8b", "H100-SXM-80GB", "bf16", tp=3)
    assert "tp=3 does not split" in tp3.reasons[0]
    awq = size("smollm2-135m", "H100-SXM-80GB", "int4_awq")
    assert awq.reasons == [
        "int4_awq with tp=1 needs hidden_size/tp=576/1 divisible by build.awq_block_size=128 (SmolLM2-135M)"
    ]
    world = size("llama-3.1-8b", "H100-SXM-80GB", "bf16", tp=2, pp=2, gpus=2)
    assert world.reasons == ["tp=2 x pp=2 = 4 GPUs exceeds target.gpus_available=2"]
