"""Quantization formats as data.

Each weight format and KV-cache format is an enum member that carries everything the rest of the
pipeline needs to know about it: bytes per weight, the activation/compute precision used for
roofline math, the TensorRT-LLM `quant_algo` / `kv_cache_quant_algo` strings written into a
checkpoint's `config.json`, the `--qformat` value of TensorRT-LLM's `quantize.py`, the ModelOpt
config name, and the minimum GPU SM version. No other module spells these strings.

Sources: TensorRT-LLM `examples/quantization/quantize.py` (qformat choices),
`tensorrt_llm/quantization/mode.py` (`QuantAlgo` strings), ModelOpt
`modelopt/torch/quantization/config.py` (config names).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class QuantSpec:
    """The data one weight-quantization format carries."""

    weight_bits: float
    """Bits per linear-layer weight, before scales."""
    compute_dtype: str
    """Which tensor-core rate a GEMM runs at: a key of `GPU.dense_tflops` (bf16, fp8, int8, fp4)."""
    trtllm_quant_algo: str | None
    """`quantization.quant_algo` in a TRT-LLM checkpoint config; None for unquantized."""
    trtllm_qformat: str | None
    """`quantize.py --qformat`; None where `convert_checkpoint.py` builds the checkpoint instead."""
    modelopt_config: str | None
    """ModelOpt config constant (`modelopt.torch.quantization.<name>`)."""
    min_sm: int
    """Minimum GPU SM version (89 = Ada, 90 = Hopper, 100 = Blackwell)."""
    group_scaled: bool = False
    """True for block-scaled formats whose weight dims must divide by a group size (AWQ)."""
    scale_bytes_per_weight: float = 0.0
    """Per-weight share of the scale storage at the default group size."""
    cpu_fake_quant: bool = True
    """Whether ModelOpt can fake-quantize and evaluate it on a CPU (the `reference` stack)."""


class QuantFormat(str, Enum):
    """Weight quantization format of one trial (`axes.quant`)."""

    BF16 = "bf16"
    FP16 = "fp16"
    FP8 = "fp8"
    INT8_SQ = "int8_sq"
    INT8_WO = "int8_wo"
    INT4_AWQ = "int4_awq"
    W4A8_AWQ = "w4a8_awq"
    NVFP4 = "nvfp4"

    @property
    def spec(self) -> QuantSpec:
        return _QUANT_SPECS[self]

    @property
    def is_quantized(self) -> bool:
        """False for the unquantized 16-bit baselines."""
        return self.spec.trtllm_quant_algo is not None

    @property
    def weight_bytes(self) -> float:
        """Bytes per linear-layer weight including scale storage."""
        return self.spec.weight_bits / 8 + self.spec.scale_bytes_per_weight


_QUANT_SPECS: dict[QuantFormat, QuantSpec] = {
    QuantFormat.BF16: QuantSpec(16, "bf16", None, None, None, min_sm=80),
    QuantFormat.FP16: QuantSpec(16, "bf16", None, None, None, min_sm=70),
    QuantFormat.FP8: QuantSpec(8, "fp8", "FP8", "fp8", "FP8_DEFAULT_CFG", min_sm=89),
    QuantFormat.INT8_SQ: QuantSpec(
        8, "int8", "W8A8_SQ_PER_CHANNEL", "int8_sq", "INT8_SMOOTHQUANT_CFG", min_sm=80
    ),
    QuantFormat.INT8_WO: QuantSpec(8, "bf16", "W8A16", "int8_wo", "INT8_WEIGHT_ONLY_CFG", min_sm=80),
    # One fp16 scale per group of 128 weights: 2/128 bytes per weight.
    QuantFormat.INT4_AWQ: QuantSpec(
        4,
        "bf16",
        "W4A16_AWQ",
        "int4_awq",
        "INT4_AWQ_CFG",
        min_sm=80,
        group_scaled=True,
        scale_bytes_per_weight=2 / 128,
    ),
    QuantFormat.W4A8_AWQ: QuantSpec(
        4,
        "fp8",
        "W4A8_AWQ",
        "w4a8_awq",
        "W4A8_AWQ_BETA_CFG",
        min_sm=89,
        group_scaled=True,
        scale_bytes_per_weight=2 / 128,
    ),
    # One fp8 scale per 16 weights; ModelOpt exports NVFP4 on CPU but cannot evaluate it there.
    QuantFormat.NVFP4: QuantSpec(
        4,
        "fp4",
        "NVFP4",
        "nvfp4",
        "NVFP4_DEFAULT_CFG",
        min_sm=100,
        scale_bytes_per_weight=1 / 16,
        cpu_fake_quant=False,
    ),
}


@dataclass(frozen=True)
class KVCacheSpec:
    """The data one KV-cache format carries."""

    bytes_per_element: int | None
    """None for `auto`: the model's activation dtype (2 bytes for bf16/fp16)."""
    trtllm_kv_cache_quant_algo: str | None
    min_sm: int


class KVCacheFormat(str, Enum):
    """KV-cache precision of one trial (`axes.kv_cache`). `auto` keeps the model dtype: FP8 weights
    do not imply an FP8 KV cache in TensorRT-LLM, so it must be asked for explicitly."""

    AUTO = "auto"
    FP8 = "fp8"
    INT8 = "int8"

    @property
    def spec(self) -> KVCacheSpec:
        return _KV_SPECS[self]

    def bytes_per_element(self) -> int:
        """Bytes per cached K or V element (`auto` = 2, the 16-bit model dtype)."""
        return self.spec.bytes_per_element or 2


_KV_SPECS: dict[KVCacheFormat, KVCacheSpec] = {
    KVCacheFormat.AUTO: KVCacheSpec(None, None, min_sm=0),
    KVCacheFormat.FP8: KVCacheSpec(1, "FP8", min_sm=89),
    KVCacheFormat.INT8: KVCacheSpec(1, "INT8", min_sm=0),
}
