"""The closed loop: compare predictions with measurements, report the error, fit correction
factors, and let later plans use them (labelled `+calibrated`).

A `Pair` is one predicted and one measured value of one metric at one concurrency level of one
trial. Pairs are grouped by what changes the error's nature: hardware, stack, runtime version,
predictor and model. For each group and metric with at least `MIN_PAIRS` pairs (fewer are
reported, not fitted):

* MAPE = mean(|predicted - measured| / measured) * 100;
* factor = exp(median(log(measured / predicted))): the multiplicative correction, robust to a
  few outlier levels (one noisy CPU point must not drag the whole fit);
* MAPE after = the same error with predicted * factor (in-sample, so optimistic; the report says
  so and gives the pair count). A factor that does not lower it is not kept.

Measured values stay where they are (MLflow metrics without prefix); this module only reads them
and writes factors to a JSON store (`<workspace>/calibration.json`), never a measurement.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from enginesweep.evaluation.planning.prediction import CALIBRATED_METRICS
from enginesweep.evaluation.planning.records import Calibration

STORE_NAME = "calibration.json"
MIN_PAIRS = 3
"""Fewer pairs than this for a metric: no factor (one pair would fit itself to 0% error)."""


class Pair(BaseModel):
    """One predicted/measured pair of one metric."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trial: str
    model: str
    measured_at: str = Field(description="ISO time the trial's run started (newest wins).")
    workload: str = Field(description="ISL/OSL of the benchmark, e.g. 1024/256.")
    hardware: str
    stack: str
    runtime: str
    predictor: str = Field(description="The base source, e.g. predicted:roofline.")
    metric: str
    concurrency: int
    predicted: float = Field(gt=0)
    measured: float = Field(gt=0)


class GroupFit(BaseModel):
    """Errors and factors of one (hardware, stack, runtime, predictor) group."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hardware: str
    stack: str
    runtime: str
    predictor: str
    model: str
    workloads: list[str]
    last_measured_at: str
    trials: int
    pairs: dict[str, int]
    mape_before_pct: dict[str, float]
    mape_after_pct: dict[str, float]
    factors: dict[str, float]
    fitted_at: str

    @property
    def key(self) -> str:
        return f"{self.hardware}/{self.stack}/{self.runtime}/{self.predictor}/{self.model}"

    def calibration(self) -> Calibration:
        return Calibration(
            key=self.key,
            factors=self.factors,
            trials=self.trials,
            mape_before_pct={m: self.mape_before_pct[m] for m in self.factors},
            mape_after_pct=self.mape_after_pct,
        )


def mape(pairs: Iterable[tuple[float, float]], factor: float = 1.0) -> float:
    """Mean absolute percentage error of (predicted * factor) against measured."""
    errors = [abs(p * factor - m) / m for p, m in pairs]
    if not errors:
        raise ValueError("no pairs to compute an error from")
    return 100 * sum(errors) / len(errors)


def fit_factor(pairs: Sequence[tuple[float, float]]) -> float:
    """exp(median(log(measured / predicted))) over (predicted, measured) pairs."""
    if not pairs:
        raise ValueError("no pairs to fit a factor from")
    return math.exp(statistics.median(math.log(m / p) for p, m in pairs))


def fit(pairs: Sequence[Pair], *, now: datetime | None = None) -> list[GroupFit]:
    """One `GroupFit` per (hardware, stack, runtime, predictor, model); a metric gets a factor
    only with at least MIN_PAIRS pairs and when the factor lowers its in-sample MAPE (its MAPE is
    reported either way)."""
    stamp = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    groups: dict[tuple[str, str, str, str, str], list[Pair]] = defaultdict(list)
    for pair in pairs:
        groups[(pair.hardware, pair.stack, pair.runtime, pair.predictor, pair.model)].append(pair)
    fits = []
    for (hardware, stack, runtime, predictor, model), members in sorted(groups.items()):
        by_metric: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for pair in members:
            by_metric[pair.metric].append((pair.predicted, pair.measured))
        candidates = {
            metric: fit_factor(values) for metric, values in by_metric.items() if len(values) >= MIN_PAIRS
        }
        # A factor that does not lower the in-sample error (a skewed spread of ratios can make the
        # median ratio worse than none) is reported, not kept.
        factors = {
            metric: factor
            for metric, factor in candidates.items()
            if mape(by_metric[metric], factor) < mape(by_metric[metric])
        }
        fits.append(
            GroupFit(
                hardware=hardware,
                stack=stack,
                runtime=runtime,
                predictor=predictor,
                model=model,
                workloads=sorted({pair.workload for pair in members}),
                last_measured_at=max(pair.measured_at for pair in members),
                trials=len({pair.trial for pair in members}),
                pairs={metric: len(values) for metric, values in by_metric.items()},
                mape_before_pct={metric: mape(values) for metric, values in by_metric.items()},
                mape_after_pct={
                    metric: mape(by_metric[metric], factor) for metric, factor in factors.items()
                },
                factors=factors,
                fitted_at=stamp,
            )
        )
    return fits


class CalibrationStore(BaseModel):
    """Fitted groups, newest last; what plans read."""

    model_config = ConfigDict(extra="forbid")

    groups: list[GroupFit] = []

    @classmethod
    def load(cls, path: Path) -> CalibrationStore:
        """The store at `path`, empty when there is none yet."""
        if not path.is_file():
            return cls()
        return cls.model_validate_json(path.read_text())

    def save(self, path: Path) -> None:
        """Write atomically (a reader never sees half a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".json.partial")
        partial.write_text(self.model_dump_json(indent=2) + "\n")
        partial.replace(path)

    def update(self, fits: Sequence[GroupFit]) -> CalibrationStore:
        """A store where each of `fits` replaces the group with the same key."""
        keys = {fit.key for fit in fits}
        return CalibrationStore(groups=[g for g in self.groups if g.key not in keys] + list(fits))

    def lookup(self, hardware: str, stack: str, predictor: str, model: str) -> GroupFit | None:
        """The fit for this hardware, stack, base predictor and model whose measurements are the
        newest (plans do not know the runtime version a trial will run with: the most recently
        measured one is the best guess, and the key names it)."""
        base = predictor.removesuffix("+calibrated")
        found = [
            g
            for g in self.groups
            if (g.hardware, g.stack, g.predictor, g.model) == (hardware, stack, base, model)
            and set(g.factors) & set(CALIBRATED_METRICS)
        ]
        return max(found, key=lambda g: (g.last_measured_at, g.fitted_at)) if found else None
