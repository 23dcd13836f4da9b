"""Find the knee: the highest load (concurrency, or request rate) meeting the latency SLA, by
measuring, instead of reading it off a list the user spaced by hand.

A bracketing search. From a seed (the plan's prediction where it has one), the load doubles while
levels meet the SLA, or halves while they miss, until one level meets and a higher one misses;
then the bracket is split (at its geometric middle: latency grows with load faster than
linearly) until it is narrower than the tolerance, or the level budget is spent. Concurrency
levels are whole numbers, and a bracket of adjacent integers is exact. The answer is the highest
measured level that met the SLA, the same rule the operating point follows, so a noisy level
out of order cannot make the search and the selection disagree. The search itself is pure
(`next_level`, `search`): the caller measures.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from enginesweep.build_configs.schema import KneeSearch
from enginesweep.evaluation.records import KneeResult, KneeStep


def _bracket(steps: list[KneeStep]) -> tuple[float | None, float | None]:
    """The highest level that met the SLA and the lowest one above it that missed."""
    met = [s.value for s in steps if s.meets]
    low = max(met) if met else None
    missed = [s.value for s in steps if not s.meets and (low is None or s.value > low)]
    return low, (min(missed) if missed else None)


def _narrow_enough(low: float, high: float, tolerance: float, integer: bool) -> bool:
    if integer:
        return high - low <= max(1.0, tolerance * low)
    return high - low <= tolerance * low


def next_level(
    steps: list[KneeStep], *, knee: KneeSearch, integer: bool, floor: float
) -> tuple[float | None, str]:
    """The next load to measure after `steps`, or None and why the search stops."""
    low, high = _bracket(steps)
    tried = {s.value for s in steps}
    if len(steps) >= knee.max_levels:
        return None, f"the level budget ({knee.max_levels}) is spent"
    if high is None:  # nothing above the best level missed yet: go up
        assert low is not None  # steps is not empty, and no miss means a meet
        if low >= knee.max_level:
            return None, f"the SLA holds up to max_level {knee.max_level:g}: the knee is beyond it"
        value = min(knee.max_level, low * 2)
    elif low is None:  # every level missed: go down
        if high <= floor:
            return None, f"even {high:g} misses the SLA: no level meets it"
        value = max(floor, high / 2)
    else:
        if _narrow_enough(low, high, knee.tolerance, integer):
            return None, f"bracketed between {low:g} (meets) and {high:g} (misses)"
        value = math.sqrt(low * high)
    if integer:
        value = float(max(int(floor), round(value)))
        if value in tried:  # rounding landed on a measured level: step to a neighbour inside
            value = float(int(low) + 1) if low is not None else float(int(high) - 1)  # type: ignore[arg-type]
    if value in tried:
        return None, "no untried level is left in the bracket"
    return value, ""


def search(
    measure: Callable[[float], tuple[bool, str]],
    *,
    seed: float,
    seed_source: str,
    knee: KneeSearch,
    integer: bool,
    log: Callable[[str], None] = lambda _: None,
) -> KneeResult:
    """Measure levels from `seed` until the knee is bracketed (see the module docstring).
    `measure(level)` returns whether the level met the SLA and, if not, why."""
    floor = 1.0 if integer else 0.0
    value: float | None = min(knee.max_level, max(floor, float(round(seed)) if integer else seed))
    steps: list[KneeStep] = []
    stop = ""
    while value is not None:
        meets, why = measure(value)
        steps.append(KneeStep(value=value, meets=meets, why=why))
        log(f"  knee search: {value:g} {'meets the SLA' if meets else 'misses: ' + why}")
        value, stop = next_level(steps, knee=knee, integer=integer, floor=floor)
    low, high = _bracket(steps)
    return KneeResult(
        seed=steps[0].value,
        seed_source=seed_source,
        steps=steps,
        knee=low,
        first_miss=high,
        stopped=stop,
    )


def describe(result: KneeResult, unit: str = "") -> str:
    """The search in one line: its seed, each level with its verdict, the knee, why it stopped."""
    trail = ", ".join(f"{s.value:g}{unit} {'met' if s.meets else 'missed'}" for s in result.steps)
    knee = f"knee {result.knee:g}{unit}" if result.knee is not None else "no level met the SLA"
    return f"seeded at {result.seed:g}{unit} ({result.seed_source}): {trail}; {knee} ({result.stopped})"
