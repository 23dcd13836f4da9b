"""The paired bootstrap against cases that can be checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from enginesweep.evaluation.accuracy.paired import (
    compare_accuracy,
    mean_aggregate,
    paired_delta,
    perplexity_aggregate,
)
from enginesweep.evaluation.records import AccuracyResult

pytestmark = pytest.mark.unit


def noise(n: int, seed: int, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, scale, n)


@pytest.mark.parametrize("aggregate", [mean_aggregate, perplexity_aggregate])
def test_identical_inputs_give_zero_delta_and_zero_interval(aggregate) -> None:
    values = 3.0 + noise(40, seed=1, scale=0.5)
    result = paired_delta("m", values, values.copy(), aggregate=aggregate)
    assert result.delta == 0.0
    assert (result.ci_low, result.ci_high) == (0.0, 0.0)
    assert result.baseline == result.variant == pytest.approx(float(aggregate(values)))


def test_constant_shift_of_the_mean_is_the_delta_and_lies_in_the_interval() -> None:
    baseline = noise(50, seed=2)
    result = paired_delta("top1", baseline, baseline + 0.25, aggregate=mean_aggregate)
    assert result.delta == pytest.approx(0.25, abs=1e-12)
    # Every resample shifts by exactly 0.25 as well, so the interval collapses onto it.
    assert result.ci_low == pytest.approx(0.25, abs=1e-12)
    assert result.ci_high == pytest.approx(0.25, abs=1e-12)


def test_perplexity_of_a_constant_nll_shift_by_ln2_doubles() -> None:
    # NLL 2 everywhere -> perplexity e^2; NLL 2 + ln 2 -> 2 e^2; delta e^2 in every resample.
    baseline = [2.0] * 10
    variant = [2.0 + math.log(2.0)] * 10
    result = paired_delta("perplexity", baseline, variant, aggregate=perplexity_aggregate)
    assert result.baseline == pytest.approx(math.e**2)
    assert result.variant == pytest.approx(2 * math.e**2)
    assert result.delta == pytest.approx(math.e**2)
    assert result.ci_low == pytest.approx(math.e**2)
    assert result.ci_high == pytest.approx(math.e**2)


def test_two_windows_percentile_interval_by_hand() -> None:
    # Resampled variant means are 0, 0.5, 1 with probability 1/4, 1/2, 1/4: the central 95%
    # interval runs from 0 to 1, and the full-sample delta is 0.5.
    result = paired_delta("m", [0.0, 0.0], [0.0, 1.0], aggregate=mean_aggregate)
    assert result.delta == 0.5
    assert (result.ci_low, result.ci_high) == (0.0, 1.0)


def test_interval_narrows_with_more_windows() -> None:
    def width(n: int) -> float:
        baseline = noise(n, seed=3)
        variant = baseline + 0.1 + noise(n, seed=4)
        result = paired_delta("m", baseline, variant, aggregate=mean_aggregate)
        assert result.ci_low <= result.delta <= result.ci_high
        return result.ci_high - result.ci_low

    # Width goes as 1/sqrt(n): 100x the windows, about a tenth of the width.
    assert width(2000) < width(20) / 4


def test_same_seed_same_interval_other_seed_other_interval() -> None:
    baseline, variant = noise(30, seed=5), noise(30, seed=6)
    first = paired_delta("m", baseline, variant, aggregate=mean_aggregate, seed=7)
    again = paired_delta("m", baseline, variant, aggregate=mean_aggregate, seed=7)
    other = paired_delta("m", baseline, variant, aggregate=mean_aggregate, seed=8)
    assert first == again
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)
    assert first.delta == other.delta


def test_small_shift_buried_in_noise_is_not_significant() -> None:
    baseline = noise(50, seed=9)
    variant = baseline + 0.01 + noise(50, seed=10)
    result = paired_delta("m", baseline, variant, aggregate=mean_aggregate)
    assert result.ci_low < 0.0 < result.ci_high


def test_pairing_removes_shared_window_difficulty() -> None:
    # Windows differ a lot in difficulty (sd 1) but the variant is consistently 0.1 worse
    # (sd 0.01 per window): paired, the shift stands far outside the noise.
    difficulty = noise(50, seed=11)
    variant = difficulty + 0.1 + noise(50, seed=12, scale=0.01)
    result = paired_delta("m", difficulty, variant, aggregate=mean_aggregate)
    assert 0.09 < result.ci_low < result.ci_high < 0.11


def test_confidence_and_resamples_are_recorded() -> None:
    result = paired_delta(
        "m", noise(20, 13), noise(20, 14), aggregate=mean_aggregate, confidence=0.9, resamples=500
    )
    assert (result.metric, result.confidence, result.resamples) == ("m", 0.9, 500)


@pytest.mark.parametrize(
    ("baseline", "variant", "message"),
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0], "unpaired input: 3 baseline windows vs 2 variant"),
        ([], [], "at least 2 windows, got 0"),
        ([1.0], [1.0], "at least 2 windows, got 1"),
        ([1.0, float("nan")], [1.0, 2.0], "must be finite"),
        ([1.0, 2.0], [1.0, float("inf")], "must be finite"),
        ([[1.0, 2.0]], [[1.0, 2.0]], "flat sequences"),
    ],
)
def test_unpaired_or_unusable_input_is_refused(baseline, variant, message) -> None:
    with pytest.raises(ValueError, match=message):
        paired_delta("m", baseline, variant, aggregate=mean_aggregate)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"confidence": 1.0}, "confidence must lie strictly between 0 and 1"),
        ({"confidence": 0.0}, "confidence must lie strictly between 0 and 1"),
        ({"resamples": 0}, "resamples must be positive"),
    ],
)
def test_bad_options_are_refused(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        paired_delta("m", [1.0, 2.0], [1.0, 2.0], aggregate=mean_aggregate, **options)


def accuracy(
    nll: list[float], top1: list[float], sha: str = "a" * 64, window_tokens: int = 128
) -> AccuracyResult:
    return AccuracyResult(
        hardware="cpu",
        dataset="text",
        dataset_sha256=sha,
        window_tokens=window_tokens,
        perplexity=math.exp(np.mean(nll)),
        top1_accuracy=float(np.mean(top1)),
        window_nll=nll,
        window_top1=top1,
    )


def test_compare_accuracy_gives_perplexity_and_top1_deltas() -> None:
    baseline = accuracy([2.0, 2.0, 2.0], [0.5, 0.5, 0.5])
    variant = accuracy([2.0 + math.log(2.0)] * 3, [0.25, 0.25, 0.25])
    perplexity, top1 = compare_accuracy(baseline, variant)
    assert (perplexity.metric, top1.metric) == ("perplexity", "top1_accuracy")
    assert perplexity.baseline == pytest.approx(baseline.perplexity)
    assert perplexity.delta == pytest.approx(math.e**2)
    assert top1.delta == pytest.approx(-0.25)


@pytest.mark.parametrize("changes", [{"sha": "b" * 64}, {"window_tokens": 256}])
def test_compare_accuracy_refuses_results_from_other_windows(changes) -> None:
    baseline = accuracy([2.0, 2.1], [0.5, 0.4])
    variant = accuracy([2.0, 2.1], [0.5, 0.4], **changes)
    with pytest.raises(ValueError, match="unpaired results"):
        compare_accuracy(baseline, variant)
