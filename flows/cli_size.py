"""`enginesweep size`: the sizing calculator, with no spec file.

Every sizing option takes one value or a comma-separated list (`--gpu H100-SXM-80GB,H200-SXM-141GB
--quant bf16,fp8 --tp 1,2`); the product of the lists is planned exactly like a sweep (same rules,
memory model, predictors, calibration and capacity plan), so `size` and `plan` never disagree.
One configuration prints its sizing sheet; several print the comparison (per GPU, best first).
`--json` prints one `PlannedTrial` for one configuration and a `Plan` for several.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from enginesweep.build_configs.architectures import ArchitectureError, ModelArchitecture, shipped_architecture
from enginesweep.build_configs.schema import Objective, Stack
from enginesweep.evaluation.planning import expand
from enginesweep.evaluation.planning.adhoc import adhoc_spec
from enginesweep.evaluation.planning.predictors import PredictorError
from enginesweep.evaluation.reports.plan_tables import plan_report, size_table
from enginesweep.flows.cli_common import JsonOpt, _fail, app, out
from enginesweep.flows.cli_plan import CalibratedOpt, PredictorOpt, RpsOpt, TopKOpt, gpu_list


def _architecture(model: str) -> ModelArchitecture:
    path = Path(model)
    if path.exists():
        return ModelArchitecture.from_file(path)
    return shipped_architecture(model)


def _ints(flag: str, value: str) -> list[int]:
    try:
        numbers = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise _fail(f"{flag}: '{value}' is not a comma-separated list of integers") from None
    if not numbers or min(numbers) < 1:
        raise _fail(f"{flag}: give positive integers")
    return numbers


def _words(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


_FLAG_OF = {
    "axes.quant": "--quant",
    "axes.kv_cache": "--kv-cache",
    "axes.tp": "--tp",
    "axes.pp": "--pp",
    "workload.concurrency": "--concurrency",
    "sla": "--ttft-p99-ms/--itl-p99-ms",
    "build.awq_block_size": "--awq-block-size",
    "target.usd_per_gpu_hour": "--usd-per-gpu-hour",
    "workload.isl": "--isl",
    "workload.osl": "--osl",
}


def _flag(loc: tuple) -> str:
    dotted = ".".join(str(part) for part in loc if not isinstance(part, int))
    for prefix, flag in _FLAG_OF.items():
        if dotted.startswith(prefix):
            return flag
    return dotted


@app.command()
def size(
    model: Annotated[
        str, typer.Option(help="Shipped architecture name, a config.json, or a checkpoint dir.")
    ],
    gpu: Annotated[str, typer.Option(help="GPU catalog name(s), comma-separated (`enginesweep ls gpus`).")],
    quant: Annotated[str, typer.Option(help="Weight format(s), comma-separated.")] = "bf16",
    kv_cache: Annotated[str, typer.Option(help="KV-cache format(s), comma-separated.")] = "auto",
    tp: Annotated[str, typer.Option(help="Tensor-parallel size(s), comma-separated.")] = "1",
    pp: Annotated[str, typer.Option(help="Pipeline-parallel size(s), comma-separated.")] = "1",
    isl: Annotated[int, typer.Option(min=1, help="Input tokens per request.")] = 1024,
    osl: Annotated[int, typer.Option(min=1, help="Output tokens per request.")] = 256,
    concurrency: Annotated[
        str, typer.Option(help="Concurrency levels to predict, comma-separated.")
    ] = "1,8,32,128",
    ttft_p99_ms: Annotated[float | None, typer.Option(min=0.0, help="SLA: TTFT p99 limit.")] = None,
    itl_p99_ms: Annotated[float | None, typer.Option(min=0.0, help="SLA: ITL p99 limit.")] = None,
    objective: Annotated[
        Objective, typer.Option(help="What --top-k and the comparison rank by.")
    ] = Objective.MIN_COST_PER_1M_TOKENS,
    max_batch_size: Annotated[int, typer.Option(min=1)] = 256,
    max_num_tokens: Annotated[int, typer.Option(min=1)] = 8192,
    max_seq_len: Annotated[int | None, typer.Option(min=1, help="Default: ISL+OSL.")] = None,
    gpus: Annotated[
        int | None, typer.Option(min=1, help="GPUs available (default: the largest TP*PP).")
    ] = None,
    awq_block_size: Annotated[int, typer.Option(help="AWQ group size (64 or 128).")] = 128,
    usd_per_gpu_hour: Annotated[
        float | None, typer.Option(min=0, help="Override the catalog price (one GPU).")
    ] = None,
    stack: Annotated[
        Stack | None, typer.Option(help="Default: reference on cpu, else trtllm-engine.")
    ] = None,
    target_rps: RpsOpt = None,
    top_k: TopKOpt = None,
    predictor: PredictorOpt = None,
    calibrated: CalibratedOpt = None,
    workspace: Annotated[Path, typer.Option(help="Where `calibrate` keeps its factors.")] = Path(
        "enginesweep-workspace"
    ),
    json_: JsonOpt = False,
) -> None:
    """Size deployments: memory, KV capacity, max concurrency under the SLA, predicted latency,
    throughput and cost, and (with --target-rps) replicas, GPUs and $/hour."""
    try:
        arch = _architecture(model)
    except ArchitectureError as exc:
        raise _fail(f"--model: {exc}") from None
    names = gpu_list(gpu)
    if usd_per_gpu_hour is not None and len(names) > 1:
        raise _fail(
            "--usd-per-gpu-hour: one price is for one GPU; with several --gpu use the "
            "catalog prices, or a spec file with a target.usd_per_gpu_hour mapping"
        )
    tps, pps = _ints("--tp", tp), _ints("--pp", pp)
    levels = _ints("--concurrency", concurrency)
    try:
        resolved = adhoc_spec(
            arch,
            names,
            quant=_words(quant),
            kv_cache=_words(kv_cache),
            tp=tps,
            pp=pps,
            isl=isl,
            osl=osl,
            concurrency=levels,
            max_batch_size=max_batch_size,
            max_num_tokens=max_num_tokens,
            max_seq_len=max_seq_len,
            stack=stack,
            ttft_p99_ms=ttft_p99_ms,
            itl_p99_ms=itl_p99_ms,
            objective=objective,
            gpus_available=gpus,
            awq_block_size=awq_block_size,
            usd_per_gpu_hour=usd_per_gpu_hour,
            calibrated=calibrated is not False,
            workspace=workspace,
        )
    except ValidationError as exc:
        problems = [
            f"{_flag(tuple(e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        ]
        raise _fail("; ".join(problems)) from None
    try:
        plan = expand(resolved, top_k=top_k, target_request_rate=target_rps, predictor=predictor)
    except PredictorError as exc:
        raise _fail(str(exc)) from None
    single = len(plan.trials) == 1
    if json_:
        sys.stdout.write((plan.trials[0] if single else plan).model_dump_json(indent=2) + "\n")
        return
    if single:
        out.print(size_table(plan.trials[0]))
        for note in plan.notes:
            out.print(f"note: {note}", highlight=False)
    else:
        for renderable in plan_report(plan, objective):
            out.print(renderable)
