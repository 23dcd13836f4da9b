"""The accuracy gate: each paired delta of a trial turned into a drop and compared with the SLA.

A drop is "how much worse than the unquantized baseline": variant - baseline for perplexity
(higher is worse), baseline - variant for top-1 accuracy (lower is worse); `relative` mode divides
it by the baseline value, `absolute` mode keeps it raw. The rule is deliberately simple for now:
a trial is rejected when the point estimate of any metric's drop exceeds `sla.max_accuracy_drop`
(equal passes); the bootstrap interval is recorded beside it for the statistical gate to come.
The unquantized baseline itself (bf16/fp16 weights, auto KV cache) always passes.
"""

from __future__ import annotations

import math

from build_configs.quant import KVCacheFormat
from build_configs.schema import SLA
from evaluation.planning.records import TrialConfig
from evaluation.records import PairedDelta
from evaluation.selection.models import AccuracyCheck

WORSE_WHEN_HIGHER: dict[str, bool] = {"perplexity": True, "top1_accuracy": False}
"""Direction of every metric the accuracy stage records (`compare_accuracy`)."""


def is_baseline(config: TrialConfig) -> bool:
    """True for the unquantized reference: 16-bit weights and the model-dtype KV cache."""
    return not config.quant.is_quantized and config.kv_cache is KVCacheFormat.AUTO


def _relative(value: float, baseline: float) -> float:
    if baseline != 0:
        return value / abs(baseline)
    # A zero baseline (top-1 of an untrained toy model) cannot get worse in relative terms
    # without becoming infinitely worse.
    return 0.0 if value <= 0 else float("inf")


def accuracy_check(delta: PairedDelta, sla: SLA, *, baseline_trial: bool) -> AccuracyCheck:
    """One metric's drop, its interval and the gate's verdict. Unknown metrics raise ValueError:
    without a direction the gate cannot tell better from worse."""
    if delta.metric not in WORSE_WHEN_HIGHER:
        raise ValueError(f"accuracy metric '{delta.metric}' has no known direction "
                         f"(known: {', '.join(WORSE_WHEN_HIGHER)})")
    sign = 1.0 if WORSE_WHEN_HIGHER[delta.metric] else -1.0
    drop = sign * delta.delta
    low, high = sorted((sign * delta.ci_low, sign * delta.ci_high))
    if sla.accuracy_drop_mode == "relative":
        drop, low, high = (_relative(v, delta.baseline) for v in (drop, low, high))
    allowed = sla.max_accuracy_drop
    return AccuracyCheck(metric=delta.metric, mode=sla.accuracy_drop_mode, baseline=delta.baseline,
                         variant=delta.variant, drop=drop, drop_ci_low=low, drop_ci_high=high,
                         confidence=delta.confidence, allowed=allowed,
                         passed=baseline_trial or allowed is None or _within(drop, allowed))


def _within(drop: float, allowed: float) -> bool:
    # Deltas are differences of floats (8.16 - 8.0 = 0.16000000000000014): a drop equal to the
    # allowance up to rounding passes, as "equal passes" promises.
    return drop <= allowed or math.isclose(drop, allowed, rel_tol=1e-9, abs_tol=1e-12)


def format_drop(value: float, mode: str) -> str:
    """A drop as people read it: a percentage in relative mode, a plain number in absolute mode."""
    return f"{value:.2%}" if mode == "relative" else f"{value:.4g}"


def rejection_reason(check: AccuracyCheck) -> str:
    """The human-readable reason of a failed check."""
    mode = check.mode
    return (f"accuracy drop {check.metric} {format_drop(check.drop, mode)} > allowed "
            f"{format_drop(check.allowed or 0.0, mode)} ({mode}; {check.confidence:.0%} CI "
            f"{format_drop(check.drop_ci_low, mode)} .. {format_drop(check.drop_ci_high, mode)})")


def accuracy_gate(deltas: list[PairedDelta], sla: SLA, *, baseline_trial: bool
                  ) -> tuple[list[AccuracyCheck], float | None, list[str]]:
    """Checks of every delta, the worst drop (None when none was measured) and the reasons to
    reject. A quantized trial without deltas is rejected when the SLA has an accuracy limit:
    an unmeasured drop is not a passing one. The baseline's worst drop is 0 when unmeasured."""
    checks = [accuracy_check(delta, sla, baseline_trial=baseline_trial) for delta in deltas]
    reasons = [rejection_reason(check) for check in checks if not check.passed]
    if checks:
        worst: float | None = max(check.drop for check in checks)
    else:
        worst = 0.0 if baseline_trial else None
        if not baseline_trial and sla.max_accuracy_drop is not None:
            reasons.append("accuracy not measured against the baseline (no paired deltas), so "
                           f"the drop limit {sla.max_accuracy_drop:g} cannot be checked")
    return checks, worst, reasons
