"""Hard feasibility rules: one small function per rule, each returning a reason or None.

The planner applies them to every trial (a trial with a reason is rejected, not dropped), and spec
validation applies them to every axis value (a value that no combination can make feasible is an
error in the spec). Memory fit is not here: it needs the planner's memory model.
"""

from __future__ import annotations

from enginesweep.build_configs.architectures import ModelArchitecture
from enginesweep.build_configs.gpus import GPU
from enginesweep.build_configs.quant import KVCacheFormat, QuantFormat
from enginesweep.build_configs.schema import Stack


def stack_target(stack: Stack, gpu: GPU) -> str | None:
    """The `reference` stack runs on the CPU; the TensorRT-LLM stacks need a GPU."""
    if stack is Stack.REFERENCE and not gpu.is_cpu:
        return f"the reference stack runs on the CPU only; set target.gpu to cpu (not {gpu.name})"
    if stack is not Stack.REFERENCE and gpu.is_cpu:
        return f"the {stack.value} stack needs a GPU target, not cpu (use stack: reference on a CPU)"
    return None


def quant_supported(quant: QuantFormat, gpu: GPU, stack: Stack) -> str | None:
    """A weight format needs the GPU's SM (FP8 needs SM89+), or CPU fake quantization."""
    if gpu.is_cpu:
        if not quant.spec.cpu_fake_quant:
            return f"{quant.value} cannot be evaluated on a CPU (ModelOpt has no CPU kernel for it)"
        return None
    if gpu.sm < quant.spec.min_sm:
        return f"{quant.value} needs SM{quant.spec.min_sm}+; {gpu.name} is SM{gpu.sm}"
    if stack is Stack.TRTLLM_ENGINE and gpu.sm >= 100 and quant in _INT_WEIGHTS:
        return (
            f"{quant.value} on {gpu.name}: TensorRT-LLM's engine builder refuses INT8/INT4 "
            "quantization on SM>=100 (use fp8 or nvfp4 there)"
        )
    if stack is Stack.TRTLLM_PYTORCH and quant in _NOT_UNIFIED_HF:
        return f"{quant.value} on the trtllm-pytorch stack: {_NOT_UNIFIED_HF[quant]}"
    return None


# Weight formats ModelOpt's hf_ptq.py (0.37, as TensorRT-LLM 1.2 pins) cannot export as a unified
# HF checkpoint; engines/trtllm/flags lists the ones it can, and a test keeps the two in step.
_NOT_UNIFIED_HF = {
    QuantFormat.INT8_SQ: "hf_ptq.py exports int8_sq as a TensorRT-LLM checkpoint, not a unified HF "
    "one (use the trtllm-engine stack, or fp8)",
    QuantFormat.INT8_WO: "int8_wo is not an hf_ptq.py format in ModelOpt 0.37 (use int4_awq or fp8)",
}


def quant_kv_combination(quant: QuantFormat, kv: KVCacheFormat, stack: Stack) -> str | None:
    """hf_ptq.py quantizes the KV cache only together with the weights."""
    if stack is Stack.TRTLLM_PYTORCH and not quant.is_quantized and kv is not KVCacheFormat.AUTO:
        return (
            f"{quant.value} weights with a {kv.value} KV cache on the trtllm-pytorch stack: "
            "hf_ptq.py has no format that leaves the weights unquantized (use fp8 weights)"
        )
    return None


_INT_WEIGHTS = (QuantFormat.INT4_AWQ, QuantFormat.W4A8_AWQ, QuantFormat.INT8_SQ, QuantFormat.INT8_WO)


def kv_supported(kv: KVCacheFormat, gpu: GPU, stack: Stack) -> str | None:
    """FP8 KV needs SM89+; ModelOpt's unified HF export (trtllm-pytorch) has no INT8 KV cache."""
    if not gpu.is_cpu and gpu.sm < kv.spec.min_sm:
        return f"kv_cache {kv.value} needs SM{kv.spec.min_sm}+; {gpu.name} is SM{gpu.sm}"
    if stack is Stack.TRTLLM_ENGINE and not gpu.is_cpu and gpu.sm >= 100 and kv is KVCacheFormat.INT8:
        return (
            f"kv_cache int8 on {gpu.name}: TensorRT-LLM's engine builder refuses INT8 "
            "quantization on SM>=100 (use an fp8 KV cache there)"
        )
    if stack is Stack.TRTLLM_PYTORCH and kv is KVCacheFormat.INT8:
        return (
            "kv_cache int8 is not supported by the trtllm-pytorch stack (ModelOpt's HF export has no INT8 KV)"
        )
    return None


def tp_divides_heads(arch: ModelArchitecture, tp: int, attention_dp: bool = False) -> str | None:
    """Tensor parallelism splits the attention heads evenly; KV heads are split too, or, when
    fewer than tp, each copied to tp/kv ranks (TensorRT-LLM's duplicate_kv_weight needs one count
    to divide the other). With attention-DP every rank keeps the whole attention."""
    if attention_dp:
        return None
    heads, kv = arch.num_attention_heads, arch.num_kv_heads
    bad = []
    if heads % tp:
        bad.append(f"num_attention_heads={heads}")
    if kv % tp and tp % kv:
        bad.append(f"num_key_value_heads={kv}")
    if bad:
        valid = [n for n in range(1, heads + 1) if heads % n == 0 and (kv % n == 0 or n % kv == 0)]
        return (
            f"tp={tp} does not split {' and '.join(bad)} of {arch.name}: heads must divide by tp, "
            f"KV heads divide by tp or tp by them (valid tp: {valid})"
        )
    return None


def awq_divisible(arch: ModelArchitecture, quant: QuantFormat, tp: int, group: int) -> str | None:
    """AWQ scales groups of `group` input channels per rank: hidden/tp and intermediate/tp must
    divide by the group size (TensorRT-LLM issue #1636)."""
    if not quant.spec.group_scaled:
        return None
    bad = [
        f"{field}/tp={size}/{tp}"
        for field, size in (("hidden_size", arch.hidden_size), ("intermediate_size", arch.intermediate_size))
        if size % tp or (size // tp) % group
    ]
    if bad:
        return (
            f"{quant.value} with tp={tp} needs {' and '.join(bad)} divisible by "
            f"build.awq_block_size={group} ({arch.name})"
        )
    return None


def world_size_fits(tp: int, pp: int, gpus_available: int) -> str | None:
    """A trial needs TP*PP GPUs."""
    if tp * pp > gpus_available:
        return f"tp={tp} x pp={pp} = {tp * pp} GPUs exceeds target.gpus_available={gpus_available}"
    return None


def pp_fits_layers(arch: ModelArchitecture, pp: int) -> str | None:
    """Each pipeline stage needs at least one layer."""
    if pp > arch.num_layers:
        return f"pp={pp} exceeds the {arch.num_layers} layers of {arch.name}"
    return None


def seq_len_fits(
    arch: ModelArchitecture, max_seq_len: int, sequence_tokens: int, what: str = "the workload's ISL+OSL"
) -> str | None:
    """`max_seq_len` must hold the workload's ISL+OSL (`what` names which: the mean, or a request
    log's longest request) and stay within the model's context."""
    if max_seq_len < sequence_tokens:
        return f"max_seq_len={max_seq_len} is shorter than {what}={sequence_tokens}"
    if max_seq_len > arch.max_position_embeddings:
        return (
            f"max_seq_len={max_seq_len} exceeds max_position_embeddings="
            f"{arch.max_position_embeddings} of {arch.name}"
        )
    return None


# SMs whose TensorRT-LLM 1.2 kernels run a checkpoint's own format: FP8 block-scaled GEMMs and MoE
# (DeepSeek-V3) on Hopper and datacenter Blackwell (SM100/103, not SM120); MXFP4 experts (gpt-oss)
# on Hopper (W4A16, TRITON or CUTLASS MoE backend) and Blackwell.
SHIPPED_FORMAT_SMS = {"fp8_block": (90, 100, 103), "mxfp4": (90, 100, 103, 120)}


def shipped_format_runs(arch: ModelArchitecture, gpu: GPU) -> str | None:
    """A checkpoint that ships FP8 block-scaled or MXFP4 weights needs the SMs whose kernels run
    them (the CPU reference stack dequantizes on load)."""
    if gpu.is_cpu:
        return None
    for shipped in dict.fromkeys((arch.shipped_dense_format, arch.shipped_expert_format)):
        sms = SHIPPED_FORMAT_SMS.get(shipped or "")
        if sms and gpu.sm not in sms:
            return (
                f"{arch.name} ships {shipped} weights; TensorRT-LLM 1.2 runs them on SM "
                f"{', '.join(map(str, sms))}, not on {gpu.name} (SM{gpu.sm})"
            )
    return None


def expert_parallel(arch: ModelArchitecture, tp: int, ep: int) -> str | None:
    """EP splits the routed experts over ranks of the TP group: TensorRT-LLM's Mapping needs
    expert TP x EP = TP, and its fused MoE needs EP to divide the expert count."""
    if ep == 1:
        return None
    if not arch.is_moe:
        return f"ep={ep} needs a mixture-of-experts model; {arch.name} has no experts (use ep 1)"
    if tp % ep:
        return (
            f"ep={ep} does not divide tp={tp}: the experts are split within the TP group "
            "(expert TP x EP = TP in TensorRT-LLM), so ep must divide tp"
        )
    if arch.num_experts % ep:
        valid = [n for n in range(1, arch.num_experts + 1) if arch.num_experts % n == 0]
        return f"ep={ep} does not divide the {arch.num_experts} experts of {arch.name} (valid ep: {valid})"
    return None


def attention_dp_fits(arch: ModelArchitecture, tp: int, attention_dp: bool) -> str | None:
    """Attention-DP turns the TP group's ranks into data-parallel attention ranks, so it needs
    TP > 1; enginesweep sizes it for mixture-of-experts models only (their experts stay split)."""
    if not attention_dp:
        return None
    if tp == 1:
        return "attention_dp needs tp > 1: its data-parallel ranks are the TP group's (tp=1 has one)"
    if not arch.is_moe:
        return (
            f"attention_dp on {arch.name}, a dense model: enginesweep sizes attention-DP for "
            "mixture-of-experts models only (set attention_dp to false)"
        )
    return None


# Families TensorRT-LLM 1.2's TensorRT engine path converts with expert parallelism (the llama
# example's convert_checkpoint.py takes --moe_tp_size/--moe_ep_size for Mixtral); every other MoE
# family is a PyTorch-backend model there (DeepSeek-V3, gpt-oss, Qwen3-MoE).
ENGINE_MOE_FAMILIES = ("MixtralForCausalLM",)


def stack_runs_model(stack: Stack, arch: ModelArchitecture) -> str | None:
    """The engine path builds only the MoE families its converters know; the CPU reference stack
    serves any transformers model (MLA and MoE included)."""
    if stack is Stack.TRTLLM_ENGINE and arch.is_moe and arch.family not in ENGINE_MOE_FAMILIES:
        return (
            f"the trtllm-engine stack cannot build {arch.name} ({arch.family or 'unknown family'}): "
            "it converts with TensorRT-LLM 1.2's llama example, whose only mixture-of-experts "
            "family is Mixtral (DeepSeek-V3, gpt-oss and Qwen3-MoE run on the PyTorch backend); "
            "use stack trtllm-pytorch"
        )
    return None


def engine_expert_checkpoint(stack: Stack, quant: QuantFormat, kv: KVCacheFormat, ep: int) -> str | None:
    """The engine path fixes EP in its checkpoint: TensorRT-LLM 1.2's convert_checkpoint.py
    takes --moe_ep_size (16-bit weights, unquantized KV), its quantize.py has no such option."""
    if stack is Stack.TRTLLM_ENGINE and ep > 1 and (quant.is_quantized or kv is not KVCacheFormat.AUTO):
        return (
            f"ep={ep} with {quant.value} weights and a {kv.value} KV cache on the trtllm-engine "
            "stack: TensorRT-LLM 1.2's quantize.py has no expert-parallel option (only "
            "convert_checkpoint.py's 16-bit path has); use bf16 with kv_cache auto, or trtllm-pytorch"
        )
    return None


def stack_parallelism(stack: Stack, ep: int, attention_dp: bool) -> str | None:
    """Which stacks can run EP and attention-DP: the PyTorch backend both; the engine path EP
    through its converter, not attention-DP; the reference stack is one CPU process."""
    if stack is Stack.REFERENCE and (ep > 1 or attention_dp):
        return (
            "the reference stack serves from one CPU process: ep and attention_dp need a TensorRT-LLM stack"
        )
    if stack is Stack.TRTLLM_ENGINE and attention_dp:
        return "attention_dp is a PyTorch-backend option (enable_attention_dp): use stack trtllm-pytorch"
    return None
