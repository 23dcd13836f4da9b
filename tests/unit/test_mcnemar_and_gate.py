"""McNemar's exact test, paired task deltas, bootstrap coverage and the strict/lenient gate,
against values that can be checked by hand (and, for McNemar, against SciPy's binomial test)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from enginesweep.build_configs.schema import SLA
from enginesweep.evaluation.accuracy.paired import (
    compare_tasks,
    discordant_counts,
    mcnemar_exact,
    mean_aggregate,
    paired_delta,
)
from enginesweep.evaluation.records import PairedDelta, TaskResult
from enginesweep.evaluation.selection.accuracy_gate import accuracy_check, accuracy_gate

pytestmark = pytest.mark.unit


# --- McNemar -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (10, 2, 2 * (1 + 12 + 66) / 2**12),  # 0.0386: sum_{k<=2} C(12,k) / 2^12, doubled
        (2, 10, 2 * (1 + 12 + 66) / 2**12),  # symmetric in b and c
        (0, 6, 2 / 2**6),  # 0.03125: all six discordant pairs one way
        (0, 5, 2 / 2**5),  # 0.0625: five are not enough at alpha 0.05
        (5, 5, 1.0),  # balanced: capped at 1
        (0, 0, 1.0),  # no discordant pair: no evidence
        (1, 0, 1.0),
    ],
)
def test_mcnemar_exact_by_hand(b: int, c: int, expected: float) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_exact_matches_scipys_binomial_test_on_a_grid() -> None:
    from scipy.stats import binomtest

    for b in range(0, 40, 3):
        for c in range(0, 40, 5):
            if b + c == 0:
                continue
            assert mcnemar_exact(b, c) == pytest.approx(binomtest(b, b + c, 0.5).pvalue, rel=1e-9), (b, c)


def test_mcnemar_stays_finite_for_thousands_of_items() -> None:
    p = mcnemar_exact(2100, 1900)
    assert 0.0 < p < 0.01 and math.isfinite(p)


def test_discordant_counts_of_a_hand_built_table() -> None:
    # Items: both right x3, baseline only x2, variant only x1, both wrong x2.
    baseline = [1, 1, 1, 1, 1, 0, 0, 0]
    variant = [1, 1, 1, 0, 0, 1, 0, 0]
    assert discordant_counts(baseline, variant) == (2, 1)
    with pytest.raises(ValueError, match="scored 0 or 1"):
        discordant_counts([0.5, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="unpaired input"):
        discordant_counts([1, 0, 1], [1, 0])


# --- bootstrap coverage ----------------------------------------------------------------------


def test_bootstrap_interval_covers_the_true_accuracy_difference_about_95_percent() -> None:
    """Paired 0/1 items with a known true difference (0.70 vs 0.65 with correlated errors):
    over 300 simulated evaluations the 95% interval holds the truth about 95% of the time."""
    rng = np.random.default_rng(7)
    n, trials, covered = 300, 300, 0
    for seed in range(trials):
        latent = rng.random(n)
        baseline = (latent < 0.70).astype(float)
        variant = (latent < 0.65).astype(float)  # wrong on a subset of the baseline's items...
        flip = rng.random(n) < 0.10  # ...plus symmetric noise on 10% of items
        variant[flip] = 1.0 - variant[flip]
        truth = (0.65 * 0.9 + 0.35 * 0.1) - 0.70  # E[variant] - E[baseline] = -0.08
        d = paired_delta("acc", baseline, variant, aggregate=mean_aggregate, resamples=1000, seed=seed)
        covered += d.ci_low <= truth <= d.ci_high
    assert 0.91 <= covered / trials <= 0.985


# --- paired task deltas ----------------------------------------------------------------------


def task(
    name: str,
    values: list[float],
    *,
    ids: list[int] | None = None,
    sha: str = "s" * 64,
    metric: str = "acc",
    higher: bool = True,
) -> TaskResult:
    return TaskResult(
        hardware="cpu",
        task=name,
        metric=metric,
        higher_is_better=higher,
        tool="lm_eval 0.4.13",
        items_sha256=sha,
        score=sum(values) / len(values),
        item_ids=ids if ids is not None else list(range(len(values))),
        item_values=values,
    )


def test_compare_tasks_gives_the_mean_difference_with_mcnemar_for_binary_items() -> None:
    base = task("cloze", [1, 1, 1, 1, 1, 0, 0, 0])
    var = task("cloze", [1, 1, 1, 0, 0, 1, 0, 0])
    (delta,) = compare_tasks([base], [var])
    assert delta.metric == "cloze.acc" and delta.test == "mcnemar-exact"
    assert delta.delta == pytest.approx(4 / 8 - 5 / 8)
    assert delta.discordant == (2, 1) and delta.p_value == pytest.approx(1.0)
    assert delta.n == 8 and delta.higher_is_better is True
    assert delta.ci_low <= delta.delta <= delta.ci_high


def test_compare_tasks_uses_the_bootstrap_alone_for_graded_scores() -> None:
    (delta,) = compare_tasks(
        [task("summ", [0.5, 0.7, 0.2], metric="rouge1")], [task("summ", [0.4, 0.7, 0.1], metric="rouge1")]
    )
    assert delta.test == "bootstrap" and delta.p_value is None and delta.discordant is None


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        (task("cloze", [1, 0, 1], ids=[0, 1, 3]), "unpaired task cloze"),
        (task("cloze", [1, 0, 1], sha="t" * 64), "unpaired task cloze"),
        (task("cloze", [1, 0, 1], metric="acc_norm"), "unpaired task cloze"),
        (task("recall", [1, 0, 1]), "tasks scored on one side only: cloze, recall"),
    ],
)
def test_compare_tasks_refuses_unpaired_items(variant: TaskResult, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compare_tasks([task("cloze", [1, 1, 0])], [variant])


# --- the gate --------------------------------------------------------------------------------


def binary_delta(baseline: float, variant: float, low: float, high: float, p: float) -> PairedDelta:
    return PairedDelta(
        metric="cloze.acc",
        baseline=baseline,
        variant=variant,
        delta=variant - baseline,
        ci_low=low,
        ci_high=high,
        confidence=0.95,
        resamples=2000,
        higher_is_better=True,
        n=400,
        test="mcnemar-exact",
        p_value=p,
        discordant=(30, 10),
    )


SLA_ABS = SLA(max_accuracy_drop=0.02, accuracy_drop_mode="absolute")


@pytest.mark.parametrize(
    ("delta", "strict", "lenient"),
    [
        # A large, significant drop (5 points, p=0.001): rejected by both.
        (binary_delta(0.70, 0.65, -0.08, -0.02, 0.001), False, False),
        # 5 points but not significant (p=0.2): lenient keeps it, strict cannot rule out > 2 points.
        (binary_delta(0.70, 0.65, -0.11, 0.01, 0.2), False, True),
        # 1 point, interval up to a 3-point drop: strict rejects (cannot rule out), lenient keeps.
        (binary_delta(0.70, 0.69, -0.03, 0.01, 0.5), False, True),
        # 1 point, interval within 2 points: both keep.
        (binary_delta(0.70, 0.69, -0.015, 0.005, 0.4), True, True),
        # Significant but small (1 point, p=0.01, interval within the allowance): both keep.
        (binary_delta(0.70, 0.69, -0.018, -0.002, 0.01), True, True),
        # Better than the baseline: both keep.
        (binary_delta(0.70, 0.72, 0.0, 0.04, 0.03), True, True),
    ],
)
def test_strict_and_lenient_gates(delta: PairedDelta, strict: bool, lenient: bool) -> None:
    got_strict = accuracy_check(delta, SLA_ABS, baseline_trial=False)
    got_lenient = accuracy_check(
        delta, SLA_ABS.model_copy(update={"accuracy_gate": "lenient"}), baseline_trial=False
    )
    assert (got_strict.passed, got_lenient.passed) == (strict, lenient)
    assert got_strict.gate == "strict" and got_lenient.gate == "lenient"
    assert got_strict.p_value == delta.p_value and got_strict.verdict


def test_significance_follows_mcnemar_not_the_interval_for_binary_items() -> None:
    # The bootstrap interval excludes 0 but McNemar's p is 0.06 > 0.05: not significant.
    check = accuracy_check(
        binary_delta(0.70, 0.64, -0.1, -0.01, 0.06),
        SLA_ABS.model_copy(update={"accuracy_gate": "lenient"}),
        baseline_trial=False,
    )
    assert not check.significant and check.passed
    assert "but not significant" in check.verdict and "McNemar p=0.06" in check.verdict


def test_a_broken_variant_is_rejected_with_the_reason_in_words() -> None:
    checks, worst, reasons = accuracy_gate(
        [binary_delta(0.63, 0.05, -0.64, -0.52, 1e-30)], SLA(max_accuracy_drop=0.05), baseline_trial=False
    )
    assert not checks[0].passed and worst == pytest.approx(0.58 / 0.63)
    assert reasons == [
        "accuracy drop cloze.acc 92.06% > allowed 5.00% (relative) and "
        "significant (95% CI 82.54% .. 101.59%; McNemar p=1e-30)"
    ]


def test_a_task_metric_where_lower_is_better_flips_the_drop() -> None:
    delta = PairedDelta(
        metric="wer.wer",
        baseline=0.10,
        variant=0.13,
        delta=0.03,
        ci_low=0.02,
        ci_high=0.04,
        confidence=0.95,
        resamples=100,
        higher_is_better=False,
    )
    check = accuracy_check(delta, SLA_ABS, baseline_trial=False)
    assert check.drop == pytest.approx(0.03) and check.significant and not check.passed
