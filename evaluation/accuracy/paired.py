"""Paired bootstrap of a variant-minus-baseline accuracy difference over evaluation windows.

Baseline and variant are scored on the same windows of the same text, so their per-window values
are paired: window difficulty, which dominates the spread, cancels. One bootstrap resample draws
n window indices with replacement and applies the SAME indices to both series; its statistic is
aggregate(variant[idx]) - aggregate(baseline[idx]). The point estimate is
delta = aggregate(variant) - aggregate(baseline) on all windows, and the confidence interval is
the percentile interval of the resampled deltas: [q((1-c)/2), q((1+c)/2)] for confidence c.
Aggregates map per-window values of shape (..., n) to a statistic along the last axis:
`perplexity_aggregate(nll) = exp(mean(nll))` (windows hold equal token counts, so this is the
perplexity of all predicted tokens) and `mean_aggregate(x) = mean(x)` (top-1 accuracy).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from evaluation.records import AccuracyResult, PairedDelta

Aggregate = Callable[[np.ndarray], np.ndarray]

# Bounds the index matrix of one chunk (rows x windows) to a few MB whatever the window count.
_CHUNK_ELEMENTS = 1 << 20


def perplexity_aggregate(window_nll: np.ndarray) -> np.ndarray:
    """exp(mean NLL) along the last axis: perplexity from per-window mean NLLs of equal size."""
    return np.exp(np.mean(window_nll, axis=-1))


def mean_aggregate(values: np.ndarray) -> np.ndarray:
    """Mean along the last axis: e.g. top-1 accuracy from per-window accuracies of equal size."""
    return np.mean(values, axis=-1)


def _as_paired(baseline_values: Sequence[float], variant_values: Sequence[float]
               ) -> tuple[np.ndarray, np.ndarray]:
    baseline = np.asarray(baseline_values, dtype=np.float64)
    variant = np.asarray(variant_values, dtype=np.float64)
    if baseline.ndim != 1 or variant.ndim != 1:
        raise ValueError("paired values must be flat sequences of per-window numbers")
    if baseline.shape != variant.shape:
        raise ValueError(f"unpaired input: {baseline.size} baseline windows vs "
                         f"{variant.size} variant windows; both must be scored on the same windows")
    if baseline.size < 2:
        raise ValueError(f"a paired bootstrap needs at least 2 windows, got {baseline.size}")
    if not (np.isfinite(baseline).all() and np.isfinite(variant).all()):
        raise ValueError("per-window values must be finite (a NaN or inf NLL means a broken model)")
    return baseline, variant


def paired_delta(metric: str, baseline_values: Sequence[float], variant_values: Sequence[float],
                 *, aggregate: Aggregate, confidence: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> PairedDelta:
    """Variant minus baseline of `aggregate` over paired windows, with a percentile bootstrap CI.

    `baseline_values[i]` and `variant_values[i]` must describe the same window i. Raises
    ValueError for unpaired (different lengths), too short (< 2 windows) or non-finite input. The
    same `seed` always gives the same interval.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    baseline, variant = _as_paired(baseline_values, variant_values)
    n = baseline.size
    rng = np.random.default_rng(seed)
    deltas = np.empty(resamples, dtype=np.float64)
    rows = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, resamples, rows):
        stop = min(start + rows, resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        deltas[start:stop] = aggregate(variant[idx]) - aggregate(baseline[idx])
    tail = (1.0 - confidence) / 2.0
    ci_low, ci_high = np.quantile(deltas, [tail, 1.0 - tail])
    base_value = float(aggregate(baseline))
    variant_value = float(aggregate(variant))
    return PairedDelta(metric=metric, baseline=base_value, variant=variant_value,
                       delta=variant_value - base_value, ci_low=float(ci_low),
                       ci_high=float(ci_high), confidence=confidence, resamples=resamples)


def compare_accuracy(baseline: AccuracyResult, variant: AccuracyResult, *,
                     confidence: float = 0.95, resamples: int = 2000, seed: int = 0
                     ) -> list[PairedDelta]:
    """Perplexity and top-1 deltas of two results measured on the same text and windows.

    Refuses results whose text (sha256) or window size differ: their windows are not paired.
    """
    if (baseline.dataset_sha256, baseline.window_tokens) != (variant.dataset_sha256,
                                                              variant.window_tokens):
        raise ValueError(
            f"unpaired results: baseline {baseline.dataset} ({baseline.dataset_sha256[:12]}, "
            f"{baseline.window_tokens}-token windows) vs variant {variant.dataset} "
            f"({variant.dataset_sha256[:12]}, {variant.window_tokens}-token windows)")
    options = {"confidence": confidence, "resamples": resamples, "seed": seed}
    return [
        paired_delta("perplexity", baseline.window_nll, variant.window_nll,
                     aggregate=perplexity_aggregate, **options),
        paired_delta("top1_accuracy", baseline.window_top1, variant.window_top1,
                     aggregate=mean_aggregate, **options),
    ]
