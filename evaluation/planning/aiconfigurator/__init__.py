"""NVIDIA aiconfigurator as a predictor (`predicted:aiconfigurator`), run in its own virtualenv.

aiconfigurator 0.12.0 (Apache-2.0) predicts TensorRT-LLM latency and throughput from kernel
timings measured on real GPUs. It needs numpy>=2.1 and nvidia-pytriton (the reference stack)
needs numpy<2, so it lives in `.venv-aic` (`scripts/setup-aic`) and is driven through
`worker.py` as ONE subprocess per plan (start + import + database load ~2.5 s, then ~10 ms a
point). See docs/decisions.md.

What it covers here (the rest keeps the roofline, with the reason in the prediction's notes):

* GPUs with a measured TRT-LLM database: H100-SXM, H200-SXM, B200, L40S (trtllm 1.3.0rc20) and
  A100-SXM (trtllm 1.0.0). H100-PCIe and L4 have none.
* Dense Llama-family models (LlamaForCausalLM, Qwen2ForCausalLM); not Mistral. Mixture-of-experts
  families its support matrix lists as passing on TRT-LLM 1.3.0rc20 for H100/H200/B200 (Qwen3-MoE,
  DeepSeek-V3/R1, gpt-oss); not Mixtral. A MoE trial is asked with its layout: attention TP = tp
  (1 with attention-DP, whose ranks are then `attention_dp_size` = tp), expert TP = tp/ep, EP = ep;
  its experts in the format the checkpoint ships (DeepSeek FP8 block scales, gpt-oss MXFP4 as
  W4A16) or the trial's. With attention-DP a point's batch is per rank: a level of B sequences is
  asked as ceil(B/tp) per rank and its throughput is the group's.
* Weights bf16 and FP8 (ModelOpt per-tensor = its `fp8_static`) everywhere, NVFP4 on B200,
  int4 weight-only (our int4_awq), int8 weight-only and SmoothQuant on A100 only; KV cache 16-bit
  or FP8. Its SILICON mode is used: measured kernels only, never its formula-based estimates.

How a trial is asked (points are batch sizes; TRT-LLM's in-flight batcher is what they model):

* each workload concurrency c runs min(c, the trial's max concurrent sequences) requests at once;
  requests beyond that queue for whole requests (same rule as the roofline);
* context tokens per step at a workload level = the fewest whole prefills per step that keep up
  with the batch finishing every OSL steps (steady state, closed loop): a larger budget would
  model a backlog of simultaneous arrivals and inflate TTFT;
* saturation = the trial's max concurrent sequences, stepped down until aiconfigurator's own
  memory model fits it, at the context budget (ISL x 1, 2, 4, ... within max_num_tokens) with
  the highest throughput, as its own sweep does. Its database measures batch sizes up to 512 and
  its own sweep stops there; a larger saturation batch (short sequences on big GPUs) is
  extrapolated and the note says so;
* its throughput counts OSL-1 tokens per request (not the first); we scale by OSL/(OSL-1) to count
  every output token, as aiperf and trtllm-bench do. Its TTFT is under load (it includes its
  queueing factor), which is what a TTFT p99 SLA is about.
* The database was measured on TRT-LLM's PyTorch flow; for the `trtllm-engine` stack the notes say
  that this is an approximation of the TensorRT engine path.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from enginesweep.build_configs.architectures import ModelArchitecture
from enginesweep.build_configs.gpus import GPU
from enginesweep.build_configs.loading import ResolvedSpec
from enginesweep.build_configs.quant import KVCacheFormat, QuantFormat
from enginesweep.build_configs.schema import Stack
from enginesweep.build_configs.trial import TrialConfig
from enginesweep.evaluation.planning.prediction import assemble, level
from enginesweep.evaluation.planning.records import ConcurrencyPrediction, PlannedTrial, Prediction

PYTHON_ENV = "ENGINESWEEP_AICONFIGURATOR_PYTHON"
"""Environment variable naming the python of aiconfigurator's venv (default: <repo>/.venv-aic)."""
WORKER = Path(__file__).with_name("worker.py")
TIMEOUT_S = 300
MEASURED_BATCH_LIMIT = 512
FAMILIES = ("LlamaForCausalLM", "Qwen2ForCausalLM")
MOE_FAMILIES = ("Qwen3MoeForCausalLM", "DeepseekV3ForCausalLM", "GptOssForCausalLM")
_MOE_SYSTEMS = ("h100_sxm", "h200_sxm", "b200_sxm")
_MOE_MODES = {QuantFormat.BF16: "bfloat16", QuantFormat.FP8: "fp8", QuantFormat.NVFP4: "nvfp4"}
_SHIPPED_MODES = {"fp8_block": ("fp8_block", "fp8_block"), "mxfp4": (None, "w4a16_mxfp4")}
"""A checkpoint's own format as aiconfigurator's (GEMM mode, MoE mode); None keeps the trial's."""

_HOPPER_LIKE = {QuantFormat.BF16: "bfloat16", QuantFormat.FP8: "fp8_static"}
SYSTEMS: dict[str, tuple[str, str, dict[QuantFormat, str]]] = {
    # catalog name: (aiconfigurator system, pinned trtllm database version, weight formats)
    "H100-SXM-80GB": ("h100_sxm", "1.3.0rc20", _HOPPER_LIKE),
    "H200-SXM-141GB": ("h200_sxm", "1.3.0rc20", _HOPPER_LIKE),
    "L40S": ("l40s", "1.3.0rc20", _HOPPER_LIKE),
    "B200": ("b200_sxm", "1.3.0rc20", {**_HOPPER_LIKE, QuantFormat.NVFP4: "nvfp4"}),
    "A100-SXM-80GB": (
        "a100_sxm",
        "1.0.0",
        {
            QuantFormat.BF16: "bfloat16",
            QuantFormat.INT4_AWQ: "int4_wo",
            QuantFormat.INT8_WO: "int8_wo",
            QuantFormat.INT8_SQ: "sq",
        },
    ),
}
_KV = {KVCacheFormat.AUTO: "bfloat16", KVCacheFormat.FP8: "fp8"}


class AiconfiguratorError(RuntimeError):
    """The worker could not run (missing venv, import error, timeout, bad answer)."""


def python_path() -> Path:
    """The interpreter of aiconfigurator's venv."""
    configured = os.environ.get(PYTHON_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[3] / ".venv-aic" / "bin" / "python"


def unavailable_reason() -> str | None:
    """Why aiconfigurator cannot be used here, or None (checks the venv, does not start it)."""
    python = python_path()
    if not python.is_file():
        return (
            f"aiconfigurator is not installed ({python} does not exist; run scripts/setup-aic "
            f"or set {PYTHON_ENV})"
        )
    return None


def coverage_gap(arch: ModelArchitecture, gpu: GPU, cfg: TrialConfig, stack: Stack, osl: int) -> str | None:
    """What of this trial aiconfigurator's database does not cover, or None."""
    if osl < 2:
        return "an OSL of 1 (it counts the OSL-1 tokens after the first)"
    if gpu.name not in SYSTEMS:
        return f"{gpu.name} (no measured database for it)"
    system, _, gemms = SYSTEMS[gpu.name]
    if arch.family in MOE_FAMILIES and system not in _MOE_SYSTEMS:
        return f"the {arch.family} model family on {system} (not in its support matrix)"
    if arch.family not in FAMILIES + MOE_FAMILIES:
        return f"the {arch.family or 'unknown'} model family"
    if arch.is_moe and cfg.quant not in _MOE_MODES and arch.shipped_expert_format not in _SHIPPED_MODES:
        return f"{cfg.quant.value} experts (no measured MoE kernels)"
    if cfg.quant not in gemms:
        return f"{cfg.quant.value} weights on {system} (no measured kernels)"
    if cfg.kv_cache not in _KV or (cfg.kv_cache is KVCacheFormat.FP8 and system == "a100_sxm"):
        return f"a {cfg.kv_cache.value} KV cache on {system} (no measured kernels)"
    if stack is Stack.REFERENCE:
        return "the reference stack"
    return None


def ctx_tokens(batch: int, isl: int, osl: int, max_num_tokens: int) -> int:
    """Context-token budget per step in steady state: the fewest whole prefills per step that keep
    up with `batch` requests finishing every OSL steps (aiconfigurator throttles decode when the
    prefills of the batch take OSL steps or more), within max_num_tokens."""
    if batch <= 1 or isl >= max_num_tokens:
        return isl
    return isl * max(1, min(batch // osl + 1, batch - 1, max_num_tokens // isl))


def ctx_options(batch: int, isl: int, max_num_tokens: int) -> list[int]:
    """Budgets tried at saturation (best throughput wins): ISL times 1, 2, 4, ... within
    max_num_tokens, leaving one decode request in the batch."""
    if batch <= 1 or isl >= max_num_tokens:
        return [isl]
    limit = min(batch - 1, max_num_tokens // isl)
    return [isl * k for k in (2**i for i in range(16)) if k <= limit] or [isl]


def _fmha(quant: QuantFormat, kv: KVCacheFormat, mla: bool = False) -> str:
    # FP8 context attention needs FP8 Q/K/V: an FP8 KV cache with FP8 (or FP4) GEMMs. Its
    # database has no FP8 context-MLA kernels: MLA's context attention is timed in bf16.
    fp8 = kv is KVCacheFormat.FP8 and quant in (QuantFormat.FP8, QuantFormat.NVFP4) and not mla
    return "fp8" if fp8 else "bfloat16"


def _in_flight(trial: PlannedTrial, concurrency: int) -> int:
    return max(1, min(concurrency, trial.memory.max_concurrent_sequences))


def moe_layout(arch: ModelArchitecture, cfg: TrialConfig, gemm: str) -> dict[str, Any]:
    """The worker's layout and formats of a trial: attention TP and DP, and for a MoE model its
    expert TP, EP and expert format (the checkpoint's own where it ships one)."""
    dp = cfg.tp if cfg.attention_dp else 1
    layout: dict[str, Any] = {"tp": cfg.tp // dp, "dp": dp, "gemm": gemm}
    if arch.is_moe:
        shipped_gemm, shipped_moe = _SHIPPED_MODES.get(arch.shipped_expert_format or "", (None, None))
        dense_gemm, _ = _SHIPPED_MODES.get(arch.shipped_dense_format or "", (None, None))
        layout.update(
            moe_tp=cfg.tp // cfg.ep,
            moe_ep=cfg.ep,
            moe=shipped_moe or _MOE_MODES[cfg.quant],
            gemm=dense_gemm or shipped_gemm or gemm,
        )
    return layout


def request_for(trial: PlannedTrial, resolved: ResolvedSpec) -> dict[str, Any]:
    """The worker's request for one covered, feasible trial of `resolved` (points by in-flight
    sequences per attention-DP rank: the whole group's, without attention-DP)."""
    spec, cfg, arch = resolved.spec, trial.config, resolved.architecture
    system, version, gemms = SYSTEMS[trial.gpu]
    layout = moe_layout(arch, cfg, gemms.get(cfg.quant, "bfloat16"))
    isl, osl = spec.workload.isl.mean, spec.workload.osl.mean
    dp = layout["dp"]
    batches = sorted({1, *(-(-_in_flight(trial, c) // dp) for c in spec.workload.concurrency)})
    saturation = max(1, trial.memory.max_concurrent_sequences // dp)
    return {
        "id": trial.slug,
        "config": arch.hf_config(),
        "system": system,
        "backend_version": version,
        **layout,
        "kv": _KV[cfg.kv_cache],
        "fmha": _fmha(cfg.quant, cfg.kv_cache, arch.is_mla),
        "pp": cfg.pp,
        "isl": isl,
        "osl": osl,
        "free_gpu_memory_fraction": spec.build.kv_cache_free_gpu_mem_fraction,
        # Paged KV holds the tokens sequences actually use: size its check like our memory model,
        # by the workload's ISL+OSL (max_seq_len would reserve worst-case sequences).
        "max_seq_len": isl + osl,
        "points": [
            {"name": str(b), "batch": b, "ctx": ctx_tokens(b, isl, osl, cfg.max_num_tokens)} for b in batches
        ],
        "saturation": {"batch": saturation, "ctx_options": ctx_options(saturation, isl, cfg.max_num_tokens)},
    }


@lru_cache(maxsize=1)
def version_label() -> str:
    """`aiconfigurator X (core Y)` from the venv's metadata, without importing it."""
    python = python_path()
    code = (
        "from importlib import metadata as m; "
        "print(m.version('aiconfigurator'), m.version('aiconfigurator-core'))"
    )
    try:
        done = subprocess.run(
            [str(python), "-c", code], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise AiconfiguratorError(f"cannot read aiconfigurator's version with {python}: {exc}") from exc
    main, core = done.stdout.split()
    return f"aiconfigurator {main} (core {core})"


def predict_batch(requests: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any] | str]:
    """Run the worker once for every request: slug -> its answer, or the reason it failed."""
    python = python_path()
    payload = json.dumps({"trials": list(requests)})
    # matplotlib (imported by aiconfigurator) writes a config cache: a folder that goes with
    # the call, not one left in /tmp per plan.
    try:
        with tempfile.TemporaryDirectory(prefix="enginesweep-aic-mpl-") as mpl_dir:
            done = subprocess.run(
                [str(python), str(WORKER)],
                input=payload,
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
                env={**os.environ, "PYTHONNOUSERSITE": "1", "MPLCONFIGDIR": mpl_dir},
            )
    except subprocess.TimeoutExpired:
        raise AiconfiguratorError(
            f"aiconfigurator took over {TIMEOUT_S} s for {len(requests)} trial(s)"
        ) from None
    except OSError as exc:
        raise AiconfiguratorError(f"cannot start {python}: {exc}") from exc
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-5:]
        raise AiconfiguratorError(f"aiconfigurator worker exited {done.returncode}: " + " | ".join(tail))
    try:
        answer = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise AiconfiguratorError(f"aiconfigurator worker answered no JSON: {exc}") from exc
    return {slug: got.get("error", got) for slug, got in answer["results"].items()}


def to_prediction(
    answer: dict[str, Any], trial: PlannedTrial, resolved: ResolvedSpec, *, usd_per_gpu_hour: float
) -> Prediction:
    """A `Prediction` from the worker's answer for `trial`."""
    spec = resolved.spec
    sla, osl = spec.sla, spec.workload.osl.mean
    first_token = osl / (osl - 1)  # it counts OSL-1 tokens per request (coverage needs OSL >= 2)
    points = answer["points"]

    dp = trial.config.tp if trial.config.attention_dp else 1

    def at(concurrency: int) -> ConcurrencyPrediction:
        row = points[str(-(-_in_flight(trial, concurrency) // dp))]
        batch = row["batch"] * dp  # per rank; its memory model may fit fewer than asked
        # With attention-DP its row fills every rank; fewer sequences leave ranks partly idle.
        in_flight = min(batch, _in_flight(trial, concurrency))
        ttft = row["ttft_ms"]
        waves = math.ceil(concurrency / batch)
        if waves > 1:  # beyond the KV / batch limit, later requests wait for whole requests
            ttft += (waves - 1) * (row["ttft_ms"] + osl * row["tpot_ms"])
        return level(
            concurrency=concurrency,
            in_flight=in_flight,
            ttft_ms=ttft,
            itl_ms=row["tpot_ms"],
            output_tok_s=row["tok_s"] * first_token * in_flight / batch,
            osl=osl,
            sla=sla,
        )

    sat = {**answer["saturated"], "batch": answer["saturated"]["batch"] * dp}
    saturated = level(
        concurrency=sat["batch"],
        in_flight=sat["batch"],
        ttft_ms=sat["ttft_ms"],
        itl_ms=sat["tpot_ms"],
        output_tok_s=sat["tok_s"] * first_token,
        osl=osl,
        sla=sla,
    )
    notes = [
        "aiconfigurator database measured on TRT-LLM's PyTorch flow"
        + (
            ": an approximation of the TensorRT engine path"
            if trial.stack == Stack.TRTLLM_ENGINE.value
            else ""
        )
    ]
    arch = resolved.architecture
    if arch.is_mla and trial.config.kv_cache is KVCacheFormat.FP8:
        notes.append("context attention timed in bf16: its database has no FP8 context-MLA kernels")
    wanted = max(1, trial.memory.max_concurrent_sequences)
    if sat["batch"] < wanted:
        notes.append(
            f"aiconfigurator's memory model fits {sat['batch']} sequences, not the planner's "
            f"{wanted}; saturation predicted at {sat['batch']}"
        )
    if sat["batch"] > MEASURED_BATCH_LIMIT:
        notes.append(
            f"saturation batch {sat['batch']} is beyond the {MEASURED_BATCH_LIMIT} its database "
            "measures (extrapolated)"
        )
    return assemble(
        source="predicted:aiconfigurator",
        source_version=f"{version_label()} / {answer['label']}",
        hardware=trial.gpu,
        gpus=trial.config.world_size,
        usd_per_gpu_hour=usd_per_gpu_hour,
        lone=at(1),
        saturated=saturated,
        levels=[at(c) for c in spec.workload.concurrency],
        notes=notes,
    )
