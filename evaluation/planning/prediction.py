"""Turn per-concurrency predictions (from any predictor) into a `Prediction`, judge them against
the SLA, rescale them with calibration factors, and size replicas for a request rate.

One assembly for every source, so the roofline, aiconfigurator and calibrated predictions answer
the same questions the same way:

* request_rate at a level = output_tok_s / OSL (every request emits OSL tokens);
* a level meets the SLA when its predicted TTFT and ITL are within the SLA's p99 limits (raw
  predictors give steady-state typical values, so this is optimistic by the p99/typical spread;
  calibration fits TTFT and ITL against measured p99s, which closes that gap);
* the SLA operating point is the highest workload concurrency that meets it; cost at the SLA is
  computed from the throughput there, never from peak throughput;
* replicas for R requests/s = ceil(R / goodput at the operating point).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from enginesweep.build_configs.schema import SLA
from enginesweep.evaluation.planning.records import (
    Calibration,
    CapacityPrediction,
    ConcurrencyPrediction,
    Prediction,
)

CALIBRATED_METRICS = ("ttft_ms", "itl_ms", "output_tok_s")
"""What calibration rescales (each by its own factor)."""


def usd_per_1m_tokens(gpus: int, usd_per_gpu_hour: float, tok_s: float) -> float:
    """Dollars per million output tokens at a sustained `tok_s` (which must be positive)."""
    if tok_s <= 0:
        raise ValueError(f"cannot price a throughput of {tok_s} tok/s")
    return gpus * usd_per_gpu_hour / (tok_s * 3600) * 1e6


def replicas_for(target_request_rate: float, goodput_per_replica: float) -> int:
    """ceil(rate / goodput), at least 1; 1e-9 absorbs float noise (0.3 / 0.1 = 2.9999999999999996,
    or 1.0000000000000002) so an exact fit never asks for one replica more."""
    if target_request_rate <= 0:
        raise ValueError(f"target_request_rate must be positive, got {target_request_rate}")
    return max(1, math.ceil(target_request_rate / goodput_per_replica - 1e-9))


def meets(sla: SLA, ttft_ms: float, itl_ms: float) -> bool | None:
    """Whether predicted latencies are within the SLA; None when the SLA sets no latency limit."""
    if sla.ttft_p99_ms is None and sla.itl_p99_ms is None:
        return None
    return (sla.ttft_p99_ms is None or ttft_ms <= sla.ttft_p99_ms) and (
        sla.itl_p99_ms is None or itl_ms <= sla.itl_p99_ms
    )


def level(
    *,
    concurrency: int,
    in_flight: int,
    ttft_ms: float,
    itl_ms: float,
    output_tok_s: float,
    osl: int,
    sla: SLA,
) -> ConcurrencyPrediction:
    """One predicted concurrency level, judged against `sla`."""
    return ConcurrencyPrediction(
        concurrency=concurrency,
        in_flight=in_flight,
        ttft_ms=ttft_ms,
        itl_ms=itl_ms,
        output_tok_s=output_tok_s,
        request_rate=output_tok_s / osl,
        meets_sla=meets(sla, ttft_ms, itl_ms),
    )


def assemble(
    *,
    source: str,
    source_version: str,
    hardware: str,
    gpus: int,
    usd_per_gpu_hour: float,
    lone: ConcurrencyPrediction,
    saturated: ConcurrencyPrediction,
    levels: Sequence[ConcurrencyPrediction],
    notes: Sequence[str] = (),
    calibration: Calibration | None = None,
) -> Prediction:
    """A `Prediction` from a lone-request level, the saturated level and the workload's levels."""
    meeting = [lvl for lvl in levels if lvl.meets_sla]
    best = max(meeting, key=lambda lvl: lvl.concurrency) if meeting else None
    return Prediction(
        source=source,
        source_version=source_version,
        hardware=hardware,
        ttft_ms=lone.ttft_ms,
        itl_ms=lone.itl_ms,
        output_tok_s=saturated.output_tok_s,
        output_tok_s_per_gpu=saturated.output_tok_s / gpus,
        saturation_concurrency=saturated.in_flight,
        usd_per_1m_output_tokens=usd_per_1m_tokens(gpus, usd_per_gpu_hour, saturated.output_tok_s),
        per_concurrency=list(levels),
        max_concurrency_meeting_sla=best.concurrency if best else None,
        output_tok_s_at_sla=best.output_tok_s if best else None,
        goodput_req_s_at_sla=best.request_rate if best else None,
        usd_per_1m_output_tokens_at_sla=(
            usd_per_1m_tokens(gpus, usd_per_gpu_hour, best.output_tok_s) if best else None
        ),
        calibration=calibration,
        notes=list(notes),
    )


def rescale(
    pred: Prediction, calibration: Calibration, *, sla: SLA, osl: int, gpus: int, usd_per_gpu_hour: float
) -> Prediction:
    """`pred` with every TTFT, ITL and throughput multiplied by the calibration's factors,
    re-judged against the SLA and labelled `+calibrated`. Only a raw prediction can be rescaled:
    factors are fitted against raw predictions, so applying them twice would compound."""
    if pred.calibration is not None:
        raise ValueError(f"the prediction is already calibrated ({pred.calibration.key})")
    factor = {metric: calibration.factors.get(metric, 1.0) for metric in CALIBRATED_METRICS}

    def scaled(lvl: ConcurrencyPrediction) -> ConcurrencyPrediction:
        return level(
            concurrency=lvl.concurrency,
            in_flight=lvl.in_flight,
            ttft_ms=lvl.ttft_ms * factor["ttft_ms"],
            itl_ms=lvl.itl_ms * factor["itl_ms"],
            output_tok_s=lvl.output_tok_s * factor["output_tok_s"],
            osl=osl,
            sla=sla,
        )

    lone = scaled(
        level(
            concurrency=1,
            in_flight=1,
            ttft_ms=pred.ttft_ms,
            itl_ms=pred.itl_ms,
            output_tok_s=1.0,
            osl=osl,
            sla=sla,
        )
    )
    saturated = level(
        concurrency=pred.saturation_concurrency,
        in_flight=pred.saturation_concurrency,
        ttft_ms=0.0,
        itl_ms=0.0,
        output_tok_s=pred.output_tok_s * factor["output_tok_s"],
        osl=osl,
        sla=sla,
    )
    base = pred.source.removesuffix("+calibrated")
    return assemble(
        source=f"{base}+calibrated",
        source_version=pred.source_version,
        hardware=pred.hardware,
        gpus=gpus,
        usd_per_gpu_hour=usd_per_gpu_hour,
        lone=lone,
        saturated=saturated,
        levels=[scaled(level) for level in pred.per_concurrency],
        notes=[
            *pred.notes,
            f"calibrated with factors fitted for {calibration.key} on {calibration.trials} measured trial(s)",
        ],
        calibration=calibration,
    )


def capacity(
    pred: Prediction, *, target_request_rate: float, osl: int, gpus: int, usd_per_gpu_hour: float
) -> CapacityPrediction | None:
    """Replicas, GPUs and dollars to serve `target_request_rate` requests/s within the SLA, or
    None when no workload concurrency is predicted to meet it. The cost per 1M output tokens is
    what those replicas cost per token actually served (R * OSL tokens/s), so it includes the
    idle share of the last, partly used replica."""
    if target_request_rate <= 0:
        raise ValueError(f"target_request_rate must be positive, got {target_request_rate}")
    if pred.max_concurrency_meeting_sla is None or not pred.goodput_req_s_at_sla:
        return None
    replicas = replicas_for(target_request_rate, pred.goodput_req_s_at_sla)
    total = replicas * gpus
    return CapacityPrediction(
        target_request_rate=target_request_rate,
        max_concurrency_meeting_sla=pred.max_concurrency_meeting_sla,
        goodput_req_s_per_replica=pred.goodput_req_s_at_sla,
        replicas=replicas,
        gpus_per_replica=gpus,
        total_gpus=total,
        usd_per_hour=total * usd_per_gpu_hour,
        usd_per_1m_output_tokens=usd_per_1m_tokens(total, usd_per_gpu_hour, target_request_rate * osl),
    )
