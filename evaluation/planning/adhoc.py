"""A spec built in code rather than read from YAML: what `enginesweep size` and the fidelity check
plan with, so that they go through exactly the same rules, predictors and capacity plan as a
sweep. Architecture-dependent axis checks are NOT applied here (a configuration that cannot work
shows up as a rejected trial with its reason, which is what a sizing question wants)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from enginesweep.build_configs.architectures import ModelArchitecture
from enginesweep.build_configs.gpus import get_gpu
from enginesweep.build_configs.loading import ResolvedSpec
from enginesweep.build_configs.rules import stack_runs_model
from enginesweep.build_configs.schema import Objective, Stack, SweepSpec


def default_stack(arch: ModelArchitecture, gpus: Sequence[str]) -> Stack:
    """reference on the CPU; on GPUs the engine path, unless it cannot build the model (most
    mixture-of-experts families are PyTorch-backend models): then trtllm-pytorch."""
    if list(gpus) == ["cpu"]:
        return Stack.REFERENCE
    return Stack.TRTLLM_PYTORCH if stack_runs_model(Stack.TRTLLM_ENGINE, arch) else Stack.TRTLLM_ENGINE


def adhoc_spec(
    arch: ModelArchitecture,
    gpus: Sequence[str],
    *,
    quant: Sequence[str],
    kv_cache: Sequence[str],
    tp: Sequence[int],
    pp: Sequence[int] = (1,),
    ep: Sequence[int] = (1,),
    attention_dp: Sequence[bool] = (False,),
    isl: int,
    osl: int,
    concurrency: Sequence[int],
    max_batch_size: int = 256,
    max_num_tokens: int = 8192,
    max_seq_len: int | None = None,
    stack: Stack | None = None,
    ttft_p99_ms: float | None = None,
    itl_p99_ms: float | None = None,
    objective: Objective = Objective.MIN_COST_PER_1M_TOKENS,
    gpus_available: int | None = None,
    awq_block_size: int = 128,
    usd_per_gpu_hour: float | None = None,
    calibrated: bool = True,
    workspace: Path = Path("enginesweep-workspace"),
) -> ResolvedSpec:
    """A resolved spec for these lists (their product is the sweep space). Raises pydantic's
    ValidationError for bad values (its `loc` names the spec field)."""
    chosen = stack or default_stack(arch, gpus)
    data: dict[str, Any] = {
        "name": "size",
        "model": {"repo_id": "size/adhoc", "name": re.sub(r"[^a-z0-9.]+", "-", arch.name.lower())},
        "stack": chosen.value,
        "target": {
            "gpu": list(gpus),
            "gpus_available": gpus_available or max(t * p for t in tp for p in pp),
            "usd_per_gpu_hour": usd_per_gpu_hour,
        },
        "axes": {
            "quant": list(quant),
            "kv_cache": list(kv_cache),
            "tp": list(tp),
            "pp": list(pp),
            "ep": list(ep),
            "attention_dp": list(attention_dp),
            "max_batch_size": [max_batch_size],
            "max_num_tokens": [max_num_tokens],
            "max_seq_len": [max_seq_len or isl + osl],
        },
        "build": {"awq_block_size": awq_block_size},
        "workload": {"isl": {"mean": isl}, "osl": {"mean": osl}, "concurrency": list(concurrency)},
        "sla": {"ttft_p99_ms": ttft_p99_ms, "itl_p99_ms": itl_p99_ms, "objective": objective.value},
        "planner": {"calibrated": calibrated},
        "workspace": str(workspace),
    }
    spec = SweepSpec.model_validate(data)
    return ResolvedSpec(spec=spec, architecture=arch, gpus=tuple(get_gpu(n) for n in gpus), source="size")
