"""How close the planner's predictions come to NVIDIA's published TensorRT-LLM throughput.

The rows (`published/trtllm-perf-overview-v1.0.csv`, and `...-moe.csv` for the mixture-of-experts
models with their assumed expert layout) are offline max-throughput runs of
`trtllm-bench` (every request exactly ISL/OSL tokens, the GPU group saturated). Each row becomes
a one-trial plan on the row's GPU, model, format and TP, whose saturated output tok/s is the
prediction. `max_batch_size` is the one assumption: NVIDIA does not publish the batch limit
trtllm-bench chose, so it is a parameter (default 512, the largest batch aiconfigurator's
database measures; `benchmarks/planner_fidelity.py` reports 2048 too).

All aiconfigurator rows go to its worker in ONE call.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import enginesweep.evaluation.planning.aiconfigurator as aic
from enginesweep.build_configs.architectures import shipped_architecture
from enginesweep.build_configs.gpus import get_gpu
from enginesweep.build_configs.loading import ResolvedSpec
from enginesweep.build_configs.schema import Predictor, Stack
from enginesweep.evaluation.planning.adhoc import adhoc_spec
from enginesweep.evaluation.planning.expand import expand
from enginesweep.evaluation.planning.records import PlannedTrial

PUBLISHED = "trtllm-perf-overview-v1.0.csv"
PUBLISHED_MOE = "trtllm-perf-overview-v1.0-moe.csv"


@dataclass(frozen=True)
class PublishedRow:
    """One published throughput figure."""

    model: str
    gpu: str
    quant: str
    kv_cache: str
    tp: int
    pp: int
    isl: int
    osl: int
    output_tok_s: float
    ep: int = 1
    attention_dp: bool = False

    @property
    def name(self) -> str:
        layout = f"tp{self.tp}" + (f" ep{self.ep}" if self.ep > 1 else "")
        layout += " adp" if self.attention_dp else ""
        return f"{self.model} {self.quant} {self.gpu} {layout} {self.isl}/{self.osl}"

    @property
    def is_moe(self) -> bool:
        return shipped_architecture(self.model).is_moe


@dataclass(frozen=True)
class Comparison:
    """A prediction next to the published figure."""

    row: PublishedRow
    source: str
    predicted_tok_s: float | None
    note: str = ""

    @property
    def error_pct(self) -> float | None:
        if self.predicted_tok_s is None:
            return None
        return (self.predicted_tok_s - self.row.output_tok_s) / self.row.output_tok_s * 100


def published_rows() -> list[PublishedRow]:
    """Every row of the shipped published-figures files (dense, then mixture-of-experts)."""
    rows = []
    for name in (PUBLISHED, PUBLISHED_MOE):
        text = resources.files("enginesweep.evaluation.planning").joinpath("published", name).read_text()
        lines = [line for line in text.splitlines() if line and not line.startswith("#")]
        for item in csv.DictReader(lines):
            rows.append(
                PublishedRow(
                    model=item["model"],
                    gpu=item["gpu"],
                    quant=item["quant"],
                    kv_cache=item["kv_cache"],
                    tp=int(item["tp"]),
                    pp=int(item["pp"]),
                    isl=int(item["isl"]),
                    osl=int(item["osl"]),
                    output_tok_s=float(item["output_tok_s"]),
                    ep=int(item.get("ep") or 1),
                    attention_dp=item.get("attention_dp") == "true",
                )
            )
    return rows


def _planned(row: PublishedRow, max_batch_size: int) -> tuple[ResolvedSpec, PlannedTrial]:
    resolved = adhoc_spec(
        shipped_architecture(row.model),
        [row.gpu],
        quant=[row.quant],
        kv_cache=[row.kv_cache],
        tp=[row.tp],
        pp=[row.pp],
        ep=[row.ep],
        attention_dp=[row.attention_dp],
        isl=row.isl,
        osl=row.osl,
        concurrency=[1],
        max_batch_size=max_batch_size,
        calibrated=False,
    )
    (trial,) = expand(resolved, predictor=Predictor.ROOFLINE).trials
    # Rows differ only in ISL/OSL for one trial slug; the worker needs unique ids.
    return resolved, trial.model_copy(
        update={"slug": f"{trial.slug}__{row.gpu.lower()}__{row.isl}-{row.osl}"}
    )


def compare(rows: Sequence[PublishedRow], *, predictor: str, max_batch_size: int = 512) -> list[Comparison]:
    """Predict every row with `predictor` ('roofline' or 'aiconfigurator')."""
    planned = [_planned(row, max_batch_size) for row in rows]
    if predictor == "roofline":
        return [
            Comparison(
                row,
                "predicted:roofline",
                trial.predicted.output_tok_s if trial.predicted else None,
                "" if trial.feasible else "; ".join(trial.reasons),
            )
            for row, (_, trial) in zip(rows, planned)
        ]
    if predictor != "aiconfigurator":
        raise ValueError(f"unknown predictor {predictor!r}")
    requests, gaps = [], {}
    for row, (resolved, trial) in zip(rows, planned):
        gap = (
            aic.coverage_gap(
                resolved.architecture, get_gpu(row.gpu), trial.config, Stack(trial.stack), row.osl
            )
            if trial.feasible
            else "; ".join(trial.reasons)
        )
        if gap:
            gaps[trial.slug] = gap
        else:
            requests.append(aic.request_for(trial, resolved))
    answers = aic.predict_batch(requests) if requests else {}
    out = []
    for row, (resolved, trial) in zip(rows, planned):
        answer = answers.get(trial.slug)
        if answer is None or isinstance(answer, str):
            out.append(Comparison(row, "predicted:aiconfigurator", None, gaps.get(trial.slug) or str(answer)))
            continue
        pred = aic.to_prediction(answer, trial, resolved, usd_per_gpu_hour=1.0)
        out.append(Comparison(row, "predicted:aiconfigurator", pred.output_tok_s))
    return out


def mean_abs_error_pct(comparisons: Sequence[Comparison]) -> float:
    """Mean |error| in percent over the rows that were predicted."""
    errors = [abs(c.error_pct) for c in comparisons if c.error_pct is not None]
    if not errors:
        raise ValueError("no row was predicted")
    return sum(errors) / len(errors)
