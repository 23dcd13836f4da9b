"""Mixture-of-experts, MLA and sliding-window models sized against their published numbers.

Each shipped MoE file carries the counts its authors publish (`published`, with the source): the
parameter count read from the config must be within 1% of them, and the weights as the checkpoint
ships them within 3% of count x bytes per parameter. The DeepSeek-V3 and Mixtral figures are the
house issue's hand computations:
- DeepSeek-V3 KV per token = 61 layers x (kv_lora_rank 512 + qk_rope_head_dim 64) x 1 byte (FP8)
  = 35,136 (bf16: 70,272), one latent vector per token and layer, not per head;
- Mixtral-8x7B KV per token = 2 x 32 layers x 8 KV heads x 128 x 2 bytes = 131,072; weights about
  2 x 46.7e9 = 93 GB in bf16.
"""

from __future__ import annotations

import json
from importlib import resources

import pytest

from enginesweep.build_configs.architectures import ArchitectureError, ModelArchitecture, shipped_architecture
from enginesweep.build_configs.gpus import get_gpu
from enginesweep.build_configs.quant import KVCacheFormat, QuantFormat
from enginesweep.build_configs.trial import TrialConfig
from enginesweep.evaluation.planning.memory import (
    Parallel,
    memory_breakdown,
    memory_problems,
    weight_parts_per_gpu,
    weights_bytes_total,
)

pytestmark = pytest.mark.unit

MOE_MODELS = (
    "gpt-oss-120b",
    "gpt-oss-20b",
    "qwen3-30b-a3b",
    "qwen3-235b-a22b",
    "deepseek-v3",
    "mixtral-8x7b",
)
H100, H200 = get_gpu("H100-SXM-80GB"), get_gpu("H200-SXM-141GB")


def published(name: str) -> dict:
    folder = resources.files("enginesweep.build_configs").joinpath("architectures")
    return json.loads(folder.joinpath(f"{name}.json").read_text())["published"]


def trial(quant: str = "bf16", kv: str = "auto", tp: int = 1, pp: int = 1, batch: int = 256) -> TrialConfig:
    return TrialConfig(
        quant=QuantFormat(quant),
        kv_cache=KVCacheFormat(kv),
        tp=tp,
        pp=pp,
        max_batch_size=batch,
        max_num_tokens=8192,
        max_seq_len=4096,
    )


@pytest.mark.parametrize("name", MOE_MODELS)
def test_parameter_counts_match_what_the_authors_publish(name):
    arch, pub = shipped_architecture(name), published(name)
    assert arch.is_moe and arch.total_params == pytest.approx(pub["total_params"], rel=0.01)
    active = arch.active_params
    if name.startswith("gpt-oss"):  # the card counts the LM head as active, not the embedding
        active -= arch.vocab_size * arch.hidden_size
    assert active == pytest.approx(pub["active_params"], rel=0.03)


@pytest.mark.parametrize(
    ("name", "bytes_per_param"),
    [
        ("qwen3-30b-a3b", 2),
        ("qwen3-235b-a22b", 2),
        ("mixtral-8x7b", 2),
        ("deepseek-v3", 1),  # shipped in FP8 (embeddings, norms and routers in bf16)
    ],
)
def test_weights_as_shipped_are_the_published_count_times_its_bytes(name, bytes_per_param):
    quant = QuantFormat.FP8 if name == "deepseek-v3" else QuantFormat.BF16
    expected = published(name)["total_params"] * bytes_per_param
    assert weights_bytes_total(shipped_architecture(name), quant) == pytest.approx(expected, rel=0.03)


@pytest.mark.parametrize("name", ["gpt-oss-120b", "gpt-oss-20b"])
def test_gpt_oss_ships_mxfp4_experts_and_weighs_its_published_checkpoint(name):
    arch = shipped_architecture(name)
    assert arch.shipped_expert_format == "mxfp4" and arch.shipped_dense_format is None
    # bf16 asks for no quantization: the experts stay MXFP4 (4.25 bits), attention 16-bit.
    total = weights_bytes_total(arch, QuantFormat.BF16)
    assert total == pytest.approx(published(name)["checkpoint_gib"] * 2**30, rel=0.03)
    # FP8 quantizes attention; it never inflates the 4-bit experts to 8 bits.
    assert weights_bytes_total(arch, QuantFormat.FP8) < total


def test_deepseek_v3_mla_kv_per_token_is_one_latent_vector_per_layer():
    arch = shipped_architecture("deepseek-v3")
    assert (arch.num_layers, arch.num_dense_layers, arch.num_shared_experts) == (61, 3, 1)
    fp8 = memory_breakdown(arch, H200, trial("fp8", "fp8", tp=8), kv_free_fraction=0.9, sequence_tokens=2048)
    bf16 = memory_breakdown(
        arch, H200, trial("fp8", "auto", tp=8), kv_free_fraction=0.9, sequence_tokens=2048
    )
    assert fp8.kv_bytes_per_token == 61 * (512 + 64) == 35_136
    assert bf16.kv_bytes_per_token == 70_272
    # The latent vector is shared by all heads: TP does not split it, every GPU holds all of it.
    assert fp8.kv_bytes_per_token_per_gpu == 35_136


def test_deepseek_v3_fp8_does_not_fit_8_h100s_and_fits_8_h200s_with_room():
    arch, cfg = shipped_architecture("deepseek-v3"), trial("fp8", "fp8", tp=8)
    on_h100 = memory_breakdown(arch, H100, cfg, kv_free_fraction=0.9, sequence_tokens=2048)
    # 673 GB / 8 = 84.1 GB of weights and 2 GB of runtime on a GPU of 79.65 GiB (85.5 GB)
    assert on_h100.weights_bytes_per_gpu == pytest.approx(84.1e9, rel=0.005)
    assert on_h100.weights_bytes_per_gpu + on_h100.runtime_reserve_bytes_per_gpu > H100.memory_bytes
    assert memory_problems(on_h100, H100, 2048)
    on_h200 = memory_breakdown(arch, H200, cfg, kv_free_fraction=0.9, sequence_tokens=2048)
    assert memory_problems(on_h200, H200, 2048) == []
    assert on_h200.kv_limited_sequences >= 100


def test_mixtral_bf16_kv_and_weights_tp1_rejected_tp2_feasible():
    arch = shipped_architecture("mixtral-8x7b")
    tp1 = memory_breakdown(arch, H100, trial(tp=1), kv_free_fraction=0.9, sequence_tokens=2048)
    assert tp1.kv_bytes_per_token == 131_072
    assert tp1.weights_bytes_total == pytest.approx(2 * 46.7e9, rel=0.01)
    assert memory_problems(tp1, H100, 2048)
    tp2 = memory_breakdown(arch, H100, trial(tp=2), kv_free_fraction=0.9, sequence_tokens=2048)
    assert memory_problems(tp2, H100, 2048) == [] and tp2.kv_limited_sequences > 0


def test_sliding_window_layers_hold_only_their_window():
    """gpt-oss-120b alternates 18 sliding (window 128) and 18 full layers: per sequence of S
    tokens the cache holds 18*S + 18*128 token-layers where a windowless copy holds 36*S."""
    arch = shipped_architecture("gpt-oss-120b")
    assert (arch.num_sliding_layers, arch.sliding_window) == (18, 128)
    windowless = arch.model_copy(update={"num_sliding_layers": 0, "sliding_window": None})
    seq = 4096
    cfg = trial("bf16", "fp8", tp=2, batch=100_000)
    with_windows = memory_breakdown(arch, H100, cfg, kv_free_fraction=0.9, sequence_tokens=seq)
    without = memory_breakdown(windowless, H100, cfg, kv_free_fraction=0.9, sequence_tokens=seq)
    implied = (36 * seq) / (18 * seq + 18 * 128)
    assert with_windows.kv_limited_sequences / without.kv_limited_sequences == pytest.approx(
        implied, rel=0.01
    )
    # a sequence shorter than the window is held whole by every layer
    short = memory_breakdown(arch, H100, cfg, kv_free_fraction=0.9, sequence_tokens=100)
    assert short.kv_bytes_per_token == windowless.kv_elements_per_token


def test_experts_split_by_ep_times_expert_tp_attention_by_tp_or_whole_with_attention_dp():
    arch = shipped_architecture("qwen3-235b-a22b")
    quant = QuantFormat.FP8
    dense_tp8, experts_tp8 = weight_parts_per_gpu(arch, quant, Parallel(tp=8))
    dense_ep8, experts_ep8 = weight_parts_per_gpu(arch, quant, Parallel(tp=8, ep=8))
    dense_adp, experts_adp = weight_parts_per_gpu(arch, quant, Parallel(tp=8, ep=8, attention_dp=True))
    # 128 experts over EP8 = 16 whole experts per GPU, the same bytes as each of 128 split 8 ways
    assert experts_tp8 == pytest.approx(experts_ep8, abs=1) == pytest.approx(experts_adp, abs=1)
    assert experts_ep8 == pytest.approx(arch.routed_expert_params * 1 / 8, rel=1e-6)
    assert dense_ep8 == dense_tp8 and dense_adp > 7 * dense_tp8  # attention-DP keeps attention whole
    # KV: with attention-DP every rank holds all 4 KV heads of its own sequences (4 < TP8 anyway)
    cfg = trial("fp8", "fp8", tp=8)
    plain = memory_breakdown(arch, H100, cfg, kv_free_fraction=0.9, sequence_tokens=2048)
    adp = memory_breakdown(
        arch,
        H100,
        cfg,
        kv_free_fraction=0.9,
        sequence_tokens=2048,
        par=Parallel(tp=8, ep=8, attention_dp=True),
    )
    assert adp.kv_capacity_tokens > plain.kv_capacity_tokens
    assert adp.max_concurrent_sequences <= 8 * cfg.max_batch_size


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"index_topk": 2048}, "index_topk"),
        ({"layer_types": ["linear_attention"] * 32}, "layer_types"),
        ({"quantization_config": {"quant_method": "gptq"}}, "quantization_config"),
        ({"moe_layer_freq": 2}, "moe_layer_freq"),
        ({"model_type": "gemma2", "sliding_window": 4096}, "sliding_window"),
    ],
)
def test_keys_that_change_memory_unmodelled_are_errors_naming_the_key(extra, key):
    config = {
        **{
            k: v
            for k, v in json.loads(
                resources.files("enginesweep.build_configs")
                .joinpath("architectures", "mixtral-8x7b.json")
                .read_text()
            ).items()
        },
        **extra,
    }
    with pytest.raises(ArchitectureError, match=f"'{key}'"):
        ModelArchitecture.from_hf_config(config, name="x")


@pytest.mark.parametrize(
    ("par", "message"),
    [
        (dict(tp=4, ep=8), "ep 8 must divide tp 4"),
        (dict(tp=1, attention_dp=True), "attention-DP needs tp > 1"),
    ],
)
def test_impossible_parallel_layouts_are_refused(par, message):
    with pytest.raises(ValueError, match=message):
        Parallel(**par)


def test_dense_models_size_as_before():
    """The dense formulas did not move: Llama-3.1-8B's counts and KV are the hand-computed ones."""
    arch = shipped_architecture("llama-3.1-8b")
    assert not arch.is_moe and not arch.is_mla and arch.num_sliding_layers == 0
    assert arch.total_params == 8_030_261_248 and arch.active_params == arch.total_params
    assert arch.kv_elements_per_token * 2 == 2 * 32 * 8 * 128 * 2
