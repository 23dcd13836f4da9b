"""Selection: trial records + SLA -> feasible set, Pareto front, ranked choice, capacity plan.

A pure function over measured `TrialRecord`s (no I/O beyond the optional JSON loaders). Per trial
with status `ok`, a concurrency level meets the latency SLA when TTFT p99 <= `ttft_p99_ms` and ITL
p99 <= `itl_p99_ms` (unset = unconstrained) with at most 1% failed requests; the operating point is
the highest such level. There: goodput G (requests/s meeting the SLA, as the benchmark counted
them), good output tok/s T_g = output_tok_s * G / request_rate, and cost $/1M output tokens =
GPUs * usd_per_gpu_hour / (T_g * 3600) * 1e6 with GPUs = TP*PP. The accuracy drop of a metric is
variant - baseline for perplexity and baseline - variant for top-1 accuracy, divided by the
baseline in `relative` mode; a trial is rejected when a drop's point estimate exceeds
`max_accuracy_drop` (the unquantized bf16/fp16 + auto-KV baseline always passes). Feasible trials
form a Pareto front on (cost, accuracy drop, TTFT p99), all lower-is-better, and are ranked by the
objective (min cost; max G/GPU; max T_g; min TTFT p99), ties by cost then slug; rank 1 is the
champion. Replicas for a target rate R = ceil(R / G); GPUs = replicas * TP*PP; $/hour = GPUs *
usd_per_gpu_hour. Records measured on different hardware are refused, never ranked together.
"""

from enginesweep.evaluation.selection.accuracy_gate import accuracy_check, accuracy_gate, is_baseline
from enginesweep.evaluation.selection.choose import capacity_plan, common_hardware, judge_trial, select
from enginesweep.evaluation.selection.loading import load_records, load_sweep_records
from enginesweep.evaluation.selection.models import (
    AccuracyCheck,
    CapacityPlan,
    MixedHardwareError,
    Selection,
    TrialSelection,
)
from enginesweep.evaluation.selection.operating_point import level_misses, operating_point, point_metrics
from enginesweep.evaluation.selection.ranking import dominates, pareto_front, rank_key
from enginesweep.evaluation.selection.render import selection_caption, selection_table, selection_table_text

__all__ = [
    "AccuracyCheck",
    "CapacityPlan",
    "MixedHardwareError",
    "Selection",
    "TrialSelection",
    "accuracy_check",
    "accuracy_gate",
    "capacity_plan",
    "common_hardware",
    "dominates",
    "is_baseline",
    "judge_trial",
    "level_misses",
    "load_records",
    "load_sweep_records",
    "operating_point",
    "pareto_front",
    "point_metrics",
    "rank_key",
    "select",
    "selection_caption",
    "selection_table",
    "selection_table_text",
]
