"""The headline numbers of one trial: the stable set every trial run carries in MLflow and the
report's Pareto plots use, all measured (never predicted).

| name | what | where from |
|---|---|---|
| `goodput_rps_at_sla` | requests/s meeting the SLA at the operating point | selection row |
| `ttft_p99_ms` | TTFT p99 at the operating point | selection row |
| `itl_p99_ms` | ITL p99 at the operating point | selection row |
| `output_tok_s_per_gpu` | output tok/s per GPU at the operating point | selection row |
| `usd_per_1m_tokens` | $ per 1M good output tokens at the operating point | selection row |
| `accuracy_delta` | worst accuracy change vs the unquantized baseline (< 0: worse) | selection row |
| `engine_size_gb` | the engine bundle on disk, 1e9 bytes | trial record |

Every level's numbers are also logged as curves (`by_concurrency/<name>`, step = concurrency;
the calibration loop reads those); the headline names hold the operating point's alone, so a
runs-table row never pairs goodput at one concurrency with latency at another.
`accuracy_delta` is `-accuracy_drop` in the SLA's mode (absolute units, or a fraction of the
baseline in `relative` mode): one sign for every metric, where a drop is "how much worse" (a rise
in perplexity, a fall in accuracy). A trial without an operating point (failed, or no level met
the latency SLA) has no number at the SLA: nothing is logged rather than a made-up zero.
"""

from __future__ import annotations

from enginesweep.evaluation.records import TrialRecord
from enginesweep.evaluation.selection.models import TrialSelection

HEADLINE_METRICS = (
    "goodput_rps_at_sla",
    "ttft_p99_ms",
    "itl_p99_ms",
    "output_tok_s_per_gpu",
    "usd_per_1m_tokens",
    "accuracy_delta",
    "engine_size_gb",
)


def accuracy_delta(row: TrialSelection) -> float | None:
    """-accuracy_drop (negative = lost accuracy); None when accuracy was not measured."""
    # 0.0 - x, not -x: a baseline's drop of 0.0 must read 0.0, not -0.0.
    return None if row.accuracy_drop is None else 0.0 - row.accuracy_drop


def engine_size_gb(record: TrialRecord) -> float | None:
    """The engine bundle's size in GB (1e9 bytes); None when no bundle was built."""
    return None if record.engine_bytes is None else record.engine_bytes / 1e9


def selection_headlines(row: TrialSelection) -> dict[str, float]:
    """The headline numbers selection derives for one trial (at its operating point, and its
    accuracy delta), plus the operating concurrency (and request rate, at an open-loop level)
    they were taken at; only those it has."""
    at_point = row.operating_concurrency is not None  # else the row's latencies met no SLA
    values = {
        "goodput_rps_at_sla": row.goodput,
        "usd_per_1m_tokens": row.usd_per_1m_output_tokens,
        "ttft_p99_ms": row.ttft_p99_ms if at_point else None,
        "itl_p99_ms": row.itl_p99_ms if at_point else None,
        "output_tok_s_per_gpu": row.tok_s_per_gpu if at_point else None,
        "accuracy_delta": accuracy_delta(row),
        "operating_concurrency": row.operating_concurrency,
        "operating_request_rate": row.operating_request_rate,
    }
    return {name: float(value) for name, value in values.items() if value is not None}
