"""The aiconfigurator worker: runs in aiconfigurator's OWN virtualenv (`.venv-aic`, numpy>=2.1),
never in the project's (numpy<2 for nvidia-pytriton). Standard library + aiconfigurator only;
it must not import enginesweep.

Protocol: one JSON request on stdin, one JSON answer on stdout, nothing else on stdout.

    request  {"trials": [{"id", "config": {HF config.json fields}, "system", "backend_version",
                          "gemm", "kv", "fmha", "tp", "pp", "isl", "osl",
                          ["dp", "moe_tp", "moe_ep", "moe"] (attention-DP ranks; MoE layout),
                          "free_gpu_memory_fraction", "max_seq_len",
                          "points": [{"name", "batch", "ctx"}], "saturation": {"batch", "ctx_options"}}]}
    answer   {"versions": {"aiconfigurator": "0.12.0"},
              "results": {id: {"points": {name: row}, "saturated": row, "label": str}
                          | {"error": str}}}

A row is {"batch", "ctx", "ttft_ms", "tpot_ms", "tok_s", "memory_gb"}. The saturation point steps
its batch down until aiconfigurator's memory model fits it (no OOM, within its KV capacity); a
point asking for more runs that batch at its own context budget (its row says which batch), the
rest of its requests queue.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")  # aiconfigurator imports matplotlib: no display
# MPLCONFIGDIR comes from the caller (a temporary folder it removes), not ~/.config.
logging.disable(logging.WARNING)  # its warnings would go to stderr; the answer carries what matters

DATABASE_MODE = "SILICON"  # measured kernels only: no formula-based (HYBRID/EMPIRICAL) numbers


class PointError(Exception):
    """A point aiconfigurator cannot place: out of memory or over its KV capacity."""


def _estimate(cli_estimate, model_dir: str, trial: dict, batch: int, ctx: int) -> dict:
    try:
        result = cli_estimate(
            model_dir,
            trial["system"],
            mode="agg",
            backend_name="trtllm",
            backend_version=trial["backend_version"],
            database_mode=DATABASE_MODE,
            isl=trial["isl"],
            osl=trial["osl"],
            batch_size=batch,
            ctx_tokens=ctx,
            tp_size=trial["tp"],
            pp_size=trial["pp"],
            attention_dp_size=trial.get("dp", 1),
            moe_tp_size=trial.get("moe_tp"),
            moe_ep_size=trial.get("moe_ep"),
            moe_quant_mode=trial.get("moe"),
            gemm_quant_mode=trial["gemm"],
            kvcache_quant_mode=trial["kv"],
            fmha_quant_mode=trial["fmha"],
            free_gpu_memory_fraction=trial["free_gpu_memory_fraction"],
            max_seq_len=trial["max_seq_len"],
        )
    except RuntimeError as exc:
        if str(exc).startswith("OOM"):
            raise PointError(f"batch {batch} does not fit in memory ({str(exc)[:160]})") from None
        raise
    if result.kv_cache_warning:
        raise PointError(f"batch {batch} exceeds the KV-cache capacity ({result.kv_cache_warning})")
    row = result.get()
    return {
        "batch": batch,
        "ctx": ctx,
        "ttft_ms": float(result.ttft),
        "tpot_ms": float(result.tpot),
        "tok_s": float(row["tokens/s"]),
        "memory_gb": float(result.memory),
        "label": f"{row['system']} / {row['backend']} {row['version']} / {DATABASE_MODE}",
    }


def _saturated(cli_estimate, model_dir: str, trial: dict) -> dict:
    """The highest-throughput context budget at the saturation batch, the batch stepped down
    (x0.9 each time) until aiconfigurator's memory model fits it."""
    batch, isl, last = trial["saturation"]["batch"], trial["isl"], None
    while batch >= 1:
        rows = []
        for ctx in trial["saturation"]["ctx_options"]:
            if batch > 1 and batch - -(-ctx // isl) < 1:
                continue  # at least one decode request must share the step
            try:
                rows.append(_estimate(cli_estimate, model_dir, trial, batch, ctx if batch > 1 else isl))
            except PointError as exc:
                last = exc
        if rows:
            return max(rows, key=lambda row: row["tok_s"])
        batch = batch - 1 if batch < 10 else int(batch * 0.9)
    raise PointError(f"no batch size fits: {last}")


def _run_trial(cli_estimate, trial: dict, scratch: Path) -> dict:
    model_dir = scratch / trial["id"]
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(trial["config"]))
    try:
        saturated = _saturated(cli_estimate, str(model_dir), trial)
        points = {}
        for point in trial["points"]:
            # Beyond what fits, a level runs the saturated batch, but at its own steady-state
            # context budget (the saturation row's budget maximises throughput, not latency).
            batch, isl = min(point["batch"], saturated["batch"]), trial["isl"]
            ctx = isl if batch <= 1 else max(isl, min(point["ctx"], isl * (batch - 1)))
            points[point["name"]] = _estimate(cli_estimate, str(model_dir), trial, batch, ctx)
    except PointError as exc:
        return {"error": str(exc)}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    return {"points": points, "saturated": saturated, "label": saturated.pop("label")}


def main() -> int:
    request = json.load(sys.stdin)
    from aiconfigurator.cli.api import cli_estimate

    results = {}
    with tempfile.TemporaryDirectory(prefix="enginesweep-aic-") as scratch:
        for trial in request["trials"]:
            results[trial["id"]] = _run_trial(cli_estimate, trial, Path(scratch))
    for answer in results.values():
        for row in answer.get("points", {}).values():
            row.pop("label", None)
    json.dump(
        {
            "versions": {
                "aiconfigurator": metadata.version("aiconfigurator"),
                "aiconfigurator-core": metadata.version("aiconfigurator-core"),
            },
            "results": results,
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
