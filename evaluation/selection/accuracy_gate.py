"""The accuracy gate: each paired delta of a trial turned into a drop, tested, and judged.

A drop is "how much worse than the unquantized baseline": variant - baseline for perplexity
(higher is worse), baseline - variant for accuracies and task scores (lower is worse); `relative`
mode divides it by the baseline value, `absolute` mode keeps it raw. Its interval is the paired
bootstrap interval mapped the same way.

A drop is *significant* when the data tell it from no drop at all: McNemar's exact p-value below
1 - confidence (0/1 task items), else (perplexity, non-binary scores) a bootstrap interval that
lies wholly on the "worse" side. With A = sla.max_accuracy_drop, a quantized trial's metric fails
- in both modes, when drop > A and the drop is significant: a real loss larger than allowed;
- in `strict` mode (the default) also when the interval's upper end exceeds A: the evaluation
  cannot rule out a loss larger than allowed (too few items, or a real loss), so the engine is
  not promoted on the strength of an evaluation that could not have caught it.
`lenient` mode keeps a variant whose point drop exceeds A without significance: the choice for
small evaluations where strict would reject every variant. The unquantized baseline (bf16/fp16
weights, auto KV cache) always passes. Every metric is judged on its own; one failure rejects
(a task group is one metric over its pooled items: `evaluation.accuracy.harness.task_results`).
"""

from __future__ import annotations

import math

from enginesweep.build_configs.quant import KVCacheFormat
from enginesweep.build_configs.schema import SLA
from enginesweep.build_configs.trial import TrialConfig
from enginesweep.evaluation.records import PairedDelta
from enginesweep.evaluation.selection.models import AccuracyCheck

WORSE_WHEN_HIGHER: dict[str, bool] = {"perplexity": True, "top1_accuracy": False}
"""Direction of the held-out-text metrics (`compare_accuracy`); task deltas carry their own."""


def is_baseline(config: TrialConfig) -> bool:
    """True for the unquantized reference: 16-bit weights and the model-dtype KV cache."""
    return not config.quant.is_quantized and config.kv_cache is KVCacheFormat.AUTO


def _relative(value: float, baseline: float) -> float:
    if baseline != 0:
        return value / abs(baseline)
    # A zero baseline (top-1 of an untrained toy model) cannot get worse in relative terms
    # without becoming infinitely worse.
    return 0.0 if value <= 0 else float("inf")


def _direction(delta: PairedDelta) -> bool:
    if delta.metric in WORSE_WHEN_HIGHER:
        return WORSE_WHEN_HIGHER[delta.metric]
    if delta.higher_is_better is not None:
        return not delta.higher_is_better
    raise ValueError(
        f"accuracy metric '{delta.metric}' has no known direction "
        f"(known: {', '.join(WORSE_WHEN_HIGHER)}; task metrics carry their own)"
    )


def accuracy_check(delta: PairedDelta, sla: SLA, *, baseline_trial: bool) -> AccuracyCheck:
    """One metric's drop, its interval, its significance and the gate's verdict (module doc).
    A metric without a known direction raises ValueError: the gate cannot tell better from
    worse."""
    sign = 1.0 if _direction(delta) else -1.0
    drop = sign * delta.delta
    low, high = sorted((sign * delta.ci_low, sign * delta.ci_high))
    mode = sla.accuracy_drop_mode
    if mode == "relative":
        drop, low, high = (_relative(v, delta.baseline) for v in (drop, low, high))
    if delta.p_value is not None:
        significant = drop > 0 and delta.p_value < 1.0 - delta.confidence
    else:
        significant = low > 0
    allowed = sla.max_accuracy_drop
    check = AccuracyCheck(
        metric=delta.metric,
        mode=mode,
        baseline=delta.baseline,
        variant=delta.variant,
        drop=drop,
        drop_ci_low=low,
        drop_ci_high=high,
        confidence=delta.confidence,
        allowed=allowed,
        gate=sla.accuracy_gate,
        test=delta.test,
        p_value=delta.p_value,
        significant=significant,
        passed=True,
    )
    passed, verdict = _verdict(check, baseline_trial)
    return check.model_copy(update={"passed": passed, "verdict": verdict})


def _evidence(check: AccuracyCheck) -> str:
    mode = check.mode
    parts = [
        f"{check.confidence:.0%} CI {format_drop(check.drop_ci_low, mode)} .. "
        f"{format_drop(check.drop_ci_high, mode)}"
    ]
    if check.p_value is not None:
        parts.append(f"McNemar p={check.p_value:.3g}")
    return "; ".join(parts)


def _verdict(check: AccuracyCheck, baseline_trial: bool) -> tuple[bool, str]:
    mode, allowed = check.mode, check.allowed
    drop = f"accuracy drop {check.metric} {format_drop(check.drop, mode)}"
    if baseline_trial:
        return True, f"{drop}: the unquantized baseline itself"
    if allowed is None:
        return True, f"{drop}: no limit (sla.max_accuracy_drop unset)"
    limit = f"allowed {format_drop(allowed, mode)} ({mode})"
    exceeds = not _within(check.drop, allowed)
    if exceeds and check.significant:
        return False, f"{drop} > {limit} and significant ({_evidence(check)})"
    if check.gate == "strict" and not _within(check.drop_ci_high, allowed):
        return False, (
            f"{drop}: the evaluation cannot rule out a drop > {limit} "
            f"({_evidence(check)}); evaluate more items or set sla.accuracy_gate: "
            "lenient"
        )
    if exceeds:
        return True, f"{drop} > {limit} but not significant ({_evidence(check)}; lenient gate)"
    return True, f"{drop} <= {limit} ({_evidence(check)})"


def _within(drop: float, allowed: float) -> bool:
    # Deltas are differences of floats (8.16 - 8.0 = 0.16000000000000014): a drop equal to the
    # allowance up to rounding passes, as "equal passes" promises.
    return drop <= allowed or math.isclose(drop, allowed, rel_tol=1e-9, abs_tol=1e-12)


def format_drop(value: float, mode: str) -> str:
    """A drop as people read it: a percentage in relative mode, a plain number in absolute mode."""
    return f"{value:.2%}" if mode == "relative" else f"{value:.4g}"


def rejection_reason(check: AccuracyCheck) -> str:
    """The human-readable reason of a failed check (its verdict)."""
    return check.verdict


def accuracy_gate(
    deltas: list[PairedDelta], sla: SLA, *, baseline_trial: bool
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
            reasons.append(
                "accuracy not measured against the baseline (no paired deltas), so "
                f"the drop limit {sla.max_accuracy_drop:g} cannot be checked"
            )
    return checks, worst, reasons
