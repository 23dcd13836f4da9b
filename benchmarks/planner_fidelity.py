"""Planner fidelity: every predictor against NVIDIA's published TensorRT-LLM throughput rows
(evaluation/planning/published/), at two assumptions for trtllm-bench's unpublished batch limit.
Prints a markdown report (the one in docs/planner-fidelity.md); asserts nothing (the tests do).

Run: .venv/bin/python benchmarks/planner_fidelity.py > docs/planner-fidelity.md
"""

from __future__ import annotations

import datetime
from collections import defaultdict

from enginesweep.evaluation.planning.fidelity import (
    PUBLISHED,
    PUBLISHED_MOE,
    compare,
    mean_abs_error_pct,
    published_rows,
)

BATCH_LIMITS = (512, 2048)


def main() -> None:
    rows = published_rows()
    results = {
        (p, b): compare(rows, predictor=p, max_batch_size=b)
        for p in ("aiconfigurator", "roofline")
        for b in BATCH_LIMITS
    }
    print("# Planner fidelity against NVIDIA's published TensorRT-LLM throughput\n")
    moe = sum(row.is_moe for row in rows)
    print(
        f"Generated {datetime.date.today()} by `benchmarks/planner_fidelity.py` from "
        f"`evaluation/planning/published/{PUBLISHED}` ({len(rows) - moe} dense rows) and "
        f"`{PUBLISHED_MOE}` ({moe} mixture-of-experts rows, their expert-parallel size and "
        "attention-DP assumed: the file says which and why): offline max throughput, "
        "trtllm-bench, total output tok/s of the TP group. Error = (predicted - published) / "
        "published. `max_batch_size` is our assumption for trtllm-bench's unpublished limit "
        "(per attention-DP rank where attention-DP is on).\n"
    )
    print("| predictor | max_batch_size | rows predicted | mean abs error, dense | mean abs error, MoE |")
    print("|---|---|---|---|---|")
    for (predictor, batch), got in results.items():
        done = [c for c in got if c.error_pct is not None]
        dense = mean_abs_error_pct([c for c in got if not c.row.is_moe])
        experts = mean_abs_error_pct([c for c in got if c.row.is_moe])
        print(f"| {predictor} | {batch} | {len(done)} / {len(got)} | {dense:.1f}% | {experts:.1f}% |")
    print(
        "\nMixture-of-experts rows: aiconfigurator predicts them with the layout the file assumes "
        "(EP = TP, attention-DP on; NVIDIA publishes neither per row), so part of their error may "
        "be the assumption's. The roofline has no term for the efficiency of expert GEMMs on "
        "small per-expert batches or for routing: it overpredicts MoE throughput severalfold and "
        "is a last resort there (plans say which predictor made each number). Sources: the "
        "header of each file.\n"
    )
    print("## Mean abs error by GPU and model (max_batch_size 512)\n")
    print("| GPU | model | format | layout | rows | aiconfigurator | roofline |")
    print("|---|---|---|---|---|---|---|")
    groups = defaultdict(lambda: defaultdict(list))
    for predictor in ("aiconfigurator", "roofline"):
        for c in results[(predictor, 512)]:
            layout = f"TP{c.row.tp}" + (f" EP{c.row.ep}" if c.row.ep > 1 else "")
            layout += " ADP" if c.row.attention_dp else ""
            groups[(c.row.gpu, c.row.model, c.row.quant, layout)][predictor].append(c)
    for (gpu, model, quant, tp), by in sorted(groups.items()):
        print(
            f"| {gpu} | {model} | {quant} | {tp} | {len(by['roofline'])} | "
            f"{mean_abs_error_pct(by['aiconfigurator']):.1f}% | {mean_abs_error_pct(by['roofline']):.1f}% |"
        )
    print("\n## Every row (max_batch_size 512)\n")
    print("| row | published tok/s | aiconfigurator | error | roofline | error |")
    print("|---|---|---|---|---|---|")
    for a, r in zip(results[("aiconfigurator", 512)], results[("roofline", 512)]):
        print(
            f"| {a.row.name} | {a.row.output_tok_s:,.0f} | {a.predicted_tok_s:,.0f} | {a.error_pct:+.1f}% | "
            f"{r.predicted_tok_s:,.0f} | {r.error_pct:+.1f}% |"
        )


if __name__ == "__main__":
    main()
