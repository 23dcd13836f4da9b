"""The GPU catalog (`gpus.yaml` beside this file) as typed records.

A target is named in a spec (`target.gpu`) and looked up here; unknown names are errors that list
the known ones. The `cpu` entry is the `reference` stack's target.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

GIB = 1024**3


class GPU(BaseModel):
    """One accelerator's sizing and speed facts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["gpu", "cpu"] = "gpu"
    memory_gib: float = Field(gt=0)
    hbm_tb_s: float = Field(gt=0)
    dense_tflops: dict[str, float]
    sm: int = Field(ge=0)
    interconnect_gb_s: float = Field(gt=0)
    interconnect_latency_us: float = Field(ge=0)
    usd_per_gpu_hour: float = Field(ge=0)

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * GIB

    @property
    def is_cpu(self) -> bool:
        return self.kind == "cpu"

    def tflops(self, compute_dtype: str) -> float:
        """Dense TFLOP/s for a GEMM in `compute_dtype`.

        On the CPU target quantized formats are fake-quantized and run in 16-bit math, so every
        dtype maps to the bf16 rate there. On a GPU a missing dtype is a planning bug (the SM rule
        rejects such trials first), so it raises.
        """
        if compute_dtype in self.dense_tflops:
            return self.dense_tflops[compute_dtype]
        if self.is_cpu:
            return self.dense_tflops["bf16"]
        raise KeyError(f"{self.name} has no {compute_dtype} tensor-core rate in the GPU catalog")


@lru_cache(maxsize=1)
def gpu_catalog() -> dict[str, GPU]:
    """All GPUs of the shipped catalog by name, in file order."""
    text = resources.files("enginesweep.build_configs").joinpath("gpus.yaml").read_text()
    raw = yaml.safe_load(text)
    return {name: GPU(name=name, **fields) for name, fields in raw.items()}


def get_gpu(name: str) -> GPU:
    """The catalog entry for `name`; KeyError with the known names otherwise."""
    catalog = gpu_catalog()
    if name not in catalog:
        raise KeyError(f"'{name}' is not in the GPU catalog (known: {', '.join(catalog)})")
    return catalog[name]


_SMI_NAMES: tuple[tuple[str, str], ...] = (
    # (a regular expression on nvidia-smi's name, the catalog entry); the first match wins
    (r"\bH100\b.*\b(PCIe|NVL)\b", "H100-PCIe-80GB"),
    (r"\bH100\b", "H100-SXM-80GB"),
    (r"\bH200\b(?!.*\bNVL\b)", "H200-SXM-141GB"),
    (r"\bA100-SXM\d?-80GB\b", "A100-SXM-80GB"),
    (r"\bL40S\b", "L40S"),
    (r"\bL4\b", "L4"),
    (r"\bB200\b", "B200"),
)
"""nvidia-smi names (`NVIDIA H100 80GB HBM3`, `NVIDIA A100-SXM4-80GB`, `NVIDIA L40S`, ...) to the
catalog; a GPU matching none (an A100 40GB, an H200 NVL) has no catalog entry of its own."""


def catalog_name(smi_name: str) -> str | None:
    """The catalog entry for a GPU as nvidia-smi names it, or None when the catalog has none."""
    import re

    for pattern, name in _SMI_NAMES:
        if re.search(pattern, smi_name):
            return name
    return None
