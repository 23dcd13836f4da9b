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

Task items scored 0/1 (accuracy, exact match) also get McNemar's exact test. Of n paired items,
b are right on the baseline and wrong on the variant, c the reverse; under the null hypothesis
"same accuracy" each discordant item is b or c with probability 1/2, so b ~ Binomial(b + c, 1/2)
and the two-sided p-value is min(1, 2 * P(X <= min(b, c))). Concordant items carry no information
about the difference, which is why a paired test sees a 2-point drop that two unpaired accuracies
would hide. The exact binomial form is used at every size (it is exact and cheap: b + c <= n).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from enginesweep.evaluation.records import AccuracyResult, PairedDelta, TaskResult

Aggregate = Callable[[np.ndarray], np.ndarray]

# Bounds the index matrix of one chunk (rows x windows) to a few MB whatever the window count.
_CHUNK_ELEMENTS = 1 << 20


def perplexity_aggregate(window_nll: np.ndarray) -> np.ndarray:
    """exp(mean NLL) along the last axis: perplexity from per-window mean NLLs of equal size."""
    return np.exp(np.mean(window_nll, axis=-1))


def mean_aggregate(values: np.ndarray) -> np.ndarray:
    """Mean along the last axis: e.g. top-1 accuracy from per-window accuracies of equal size."""
    return np.mean(values, axis=-1)


def _as_paired(
    baseline_values: Sequence[float], variant_values: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    baseline = np.asarray(baseline_values, dtype=np.float64)
    variant = np.asarray(variant_values, dtype=np.float64)
    if baseline.ndim != 1 or variant.ndim != 1:
        raise ValueError("paired values must be flat sequences of per-window numbers")
    if baseline.shape != variant.shape:
        raise ValueError(
            f"unpaired input: {baseline.size} baseline windows vs "
            f"{variant.size} variant windows; both must be scored on the same windows"
        )
    if baseline.size < 2:
        raise ValueError(f"a paired bootstrap needs at least 2 windows, got {baseline.size}")
    if not (np.isfinite(baseline).all() and np.isfinite(variant).all()):
        raise ValueError("per-window values must be finite (a NaN or inf NLL means a broken model)")
    return baseline, variant


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided p-value of McNemar's exact test for discordant counts b and c (see module doc).

    No discordant pair (b = c = 0) gives 1.0: nothing distinguishes the two."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    # Exact integers until the one division: no float underflow for large n.
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2**n)


def discordant_counts(baseline_correct: Sequence[float], variant_correct: Sequence[float]) -> tuple[int, int]:
    """(b, c): items right on the baseline only, items right on the variant only. Items must be
    scored 0 or 1 and paired by position."""
    baseline, variant = _as_paired(baseline_correct, variant_correct)
    if not (np.isin(baseline, (0.0, 1.0)).all() and np.isin(variant, (0.0, 1.0)).all()):
        raise ValueError("McNemar's test needs items scored 0 or 1")
    return (
        int(np.sum((baseline == 1.0) & (variant == 0.0))),
        int(np.sum((baseline == 0.0) & (variant == 1.0))),
    )


def paired_delta(
    metric: str,
    baseline_values: Sequence[float],
    variant_values: Sequence[float],
    *,
    aggregate: Aggregate,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> PairedDelta:
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
    return PairedDelta(
        metric=metric,
        baseline=base_value,
        variant=variant_value,
        delta=variant_value - base_value,
        ci_low=float(ci_low),
        ci_high=float(ci_high),
        confidence=confidence,
        resamples=resamples,
        n=n,
    )


def compare_accuracy(
    baseline: AccuracyResult,
    variant: AccuracyResult,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> list[PairedDelta]:
    """Perplexity and top-1 deltas of two results measured on the same text and windows.

    Refuses results whose text (sha256) or window size differ: their windows are not paired.
    None when either side measured no perplexity (tasks only).
    """
    if baseline.perplexity is None or variant.perplexity is None:
        return []
    if (baseline.dataset_sha256, baseline.window_tokens) != (variant.dataset_sha256, variant.window_tokens):
        raise ValueError(
            f"unpaired results: baseline {baseline.dataset} ({baseline.dataset_sha256[:12]}, "
            f"{baseline.window_tokens}-token windows) vs variant {variant.dataset} "
            f"({variant.dataset_sha256[:12]}, {variant.window_tokens}-token windows)"
        )
    options = {"confidence": confidence, "resamples": resamples, "seed": seed}
    return [
        paired_delta(
            "perplexity", baseline.window_nll, variant.window_nll, aggregate=perplexity_aggregate, **options
        ),
        paired_delta(
            "top1_accuracy", baseline.window_top1, variant.window_top1, aggregate=mean_aggregate, **options
        ),
    ]


def compare_tasks(
    baseline: list[TaskResult],
    variant: list[TaskResult],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> list[PairedDelta]:
    """One delta per task both results scored, named `<task>.<metric>`: the mean item score's
    difference with a paired bootstrap interval, and McNemar's exact test where every item is
    0/1. Refuses a task whose items differ between the two (other ids, documents or metric) and
    a task scored on one side only: an unpaired comparison would be silently wrong."""
    by_task = {result.task: result for result in baseline}
    missing = sorted({r.task for r in variant} ^ set(by_task))
    if missing:
        raise ValueError(
            f"tasks scored on one side only: {', '.join(missing)}; the baseline and "
            "the variant must be evaluated on the same task list"
        )
    deltas: list[PairedDelta] = []
    for var in variant:
        base = by_task[var.task]
        if (base.metric, base.items_sha256, base.item_ids) != (var.metric, var.items_sha256, var.item_ids):
            raise ValueError(
                f"unpaired task {var.task}: the baseline scored {len(base.item_ids)} "
                f"items by {base.metric} ({base.items_sha256[:12]}), the variant "
                f"{len(var.item_ids)} by {var.metric} ({var.items_sha256[:12]}); "
                "re-evaluate both with the same task files and limit"
            )
        delta = paired_delta(
            f"{var.task}.{var.metric}",
            base.item_values,
            var.item_values,
            aggregate=mean_aggregate,
            confidence=confidence,
            resamples=resamples,
            seed=seed,
        )
        update: dict = {"higher_is_better": var.higher_is_better}
        if base.binary and var.binary:
            b, c = discordant_counts(base.item_values, var.item_values)
            update |= {"test": "mcnemar-exact", "p_value": mcnemar_exact(b, c), "discordant": (b, c)}
        deltas.append(delta.model_copy(update=update))
    return deltas
