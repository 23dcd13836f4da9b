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
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError

from enginesweep.build_configs.architectures import ArchitectureError, ModelArchitecture, shipped_architecture
from enginesweep.build_configs.schema import Objective, Predictor, Stack
from enginesweep.evaluation.planning import Plan, expand
from enginesweep.evaluation.planning.adhoc import adhoc_spec
from enginesweep.evaluation.planning.predictors import PredictorError
from enginesweep.evaluation.reports.plan_tables import plan_report, size_table
from enginesweep.flows.cli_common import JsonOpt, _fail, app, out
from enginesweep.flows.cli_plan import CalibratedOpt, PredictorOpt, RpsOpt, TopKOpt, gpu_list

if TYPE_CHECKING:
    from enginesweep.build_configs.loading import ResolvedSpec


def _architecture(model: str) -> ModelArchitecture:
    """A config.json or checkpoint folder when `model` is a path, else a shipped architecture."""
    path = Path(model)
    if path.exists():
        return ModelArchitecture.from_file(path)
    return shipped_architecture(model)


def _ints(flag: str, value: str) -> list[int]:
    """A comma-separated list of positive integers; fail naming `flag` otherwise."""
    try:
        numbers = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise _fail(f"{flag}: '{value}' is not a comma-separated list of integers") from None
    if not numbers or min(numbers) < 1:
        raise _fail(f"{flag}: give positive integers")
    return numbers


def _words(value: str) -> list[str]:
    """A comma-separated list of words, blanks dropped."""
    return [part.strip() for part in value.split(",") if part.strip()]


def _switches(flag: str, value: str) -> list[bool]:
    """A comma-separated list of off/on; fail naming `flag` otherwise."""
    words = _words(value)
    unknown = [w for w in words if w not in ("off", "on")]
    if unknown or not words:
        raise _fail(f"{flag}: '{value}' is not off, on, or off,on")
    return [w == "on" for w in words]


_FLAG_OF = {
    "axes.quant": "--quant",
    "axes.kv_cache": "--kv-cache",
    "axes.tp": "--tp",
    "axes.pp": "--pp",
    "axes.ep": "--ep",
    "axes.attention_dp": "--attention-dp",
    "workload.concurrency": "--concurrency",
    "sla": "--ttft-p99-ms/--itl-p99-ms",
    "build.awq_block_size": "--awq-block-size",
    "target.usd_per_gpu_hour": "--usd-per-gpu-hour",
    "workload.isl": "--isl",
    "workload.osl": "--osl",
}


def _flag(loc: tuple) -> str:
    """The option a validation error's spec location came from (else the location itself)."""
    dotted = ".".join(str(part) for part in loc if not isinstance(part, int))
    for prefix, flag in _FLAG_OF.items():
        if dotted.startswith(prefix):
            return flag
    return dotted


# The options' help texts, kept here so that `size`'s signature stays one line per option.
_HELP_MODEL = "Shipped architecture name, a config.json, or a checkpoint dir."
_HELP_GPU = "GPU catalog name(s), comma-separated (`enginesweep ls gpus`)."
_HELP_QUANT = "Weight format(s), comma-separated."
_HELP_KV_CACHE = "KV-cache format(s), comma-separated."
_HELP_TP = "Tensor-parallel size(s), comma-separated."
_HELP_PP = "Pipeline-parallel size(s), comma-separated."
_HELP_EP = "Expert-parallel size(s) within TP (MoE models), comma-separated."
_HELP_ADP = "Attention data-parallelism (MoE, tp > 1): off, on, or off,on to compare."
_HELP_ISL = "Input tokens per request."
_HELP_OSL = "Output tokens per request."
_HELP_CONCURRENCY = "Concurrency levels to predict, comma-separated."
_HELP_TTFT = "SLA: TTFT p99 limit."
_HELP_ITL = "SLA: ITL p99 limit."
_HELP_OBJECTIVE = "What --top-k and the comparison rank by."
_HELP_MAX_SEQ_LEN = "Default: ISL+OSL."
_HELP_GPUS = "GPUs available (default: the largest TP*PP)."
_HELP_AWQ = "AWQ group size (64 or 128)."
_HELP_PRICE = "Override the catalog price (one GPU)."
_HELP_STACK = "Default: reference on cpu, else trtllm-engine (trtllm-pytorch for MoE models it cannot build)."
_HELP_WORKSPACE = "Where `calibrate` keeps its factors."


def _model_architecture(model: str) -> ModelArchitecture:
    """The --model architecture; fail when it cannot be read."""
    try:
        return _architecture(model)
    except ArchitectureError as exc:
        raise _fail(f"--model: {exc}") from None


def _priced_gpus(gpu: str, usd_per_gpu_hour: float | None) -> list[str]:
    """The --gpu names; fail when one --usd-per-gpu-hour would price several."""
    names = gpu_list(gpu)
    if usd_per_gpu_hour is not None and len(names) > 1:
        raise _fail(
            "--usd-per-gpu-hour: one price is for one GPU; with several --gpu use the "
            "catalog prices, or a spec file with a target.usd_per_gpu_hour mapping"
        )
    return names


def _sizing_spec(
    arch: ModelArchitecture,
    names: list[str],
    *,
    quant: str,
    kv_cache: str,
    tp: str,
    pp: str,
    ep: str,
    attention_dp: str,
    concurrency: str,
    calibrated: bool | None,
    **settings: Any,
) -> ResolvedSpec:
    """The ad-hoc spec of the options (`settings` go to `adhoc_spec` as they are); a bad value fails."""
    tps, pps = _ints("--tp", tp), _ints("--pp", pp)
    levels = _ints("--concurrency", concurrency)
    try:
        return adhoc_spec(
            arch,
            names,
            quant=_words(quant),
            kv_cache=_words(kv_cache),
            tp=tps,
            pp=pps,
            ep=_ints("--ep", ep),
            attention_dp=_switches("--attention-dp", attention_dp),
            concurrency=levels,
            calibrated=calibrated is not False,
            **settings,
        )
    except ValidationError as exc:
        problems = [
            f"{_flag(tuple(e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        ]
        raise _fail("; ".join(problems)) from None


def _plan(
    resolved: ResolvedSpec, top_k: int | None, target_rps: float | None, predictor: Predictor | None
) -> Plan:
    """The plan of the ad-hoc spec; a predictor error fails."""
    try:
        return expand(resolved, top_k=top_k, target_request_rate=target_rps, predictor=predictor)
    except PredictorError as exc:
        raise _fail(str(exc)) from None


def _print_sizing(plan: Plan, objective: Objective, json_: bool) -> None:
    """One configuration's sizing sheet, or several's comparison (as JSON with --json)."""
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


@app.command()
def size(
    model: Annotated[str, typer.Option(help=_HELP_MODEL)],
    gpu: Annotated[str, typer.Option(help=_HELP_GPU)],
    quant: Annotated[str, typer.Option(help=_HELP_QUANT)] = "bf16",
    kv_cache: Annotated[str, typer.Option(help=_HELP_KV_CACHE)] = "auto",
    tp: Annotated[str, typer.Option(help=_HELP_TP)] = "1",
    pp: Annotated[str, typer.Option(help=_HELP_PP)] = "1",
    ep: Annotated[str, typer.Option(help=_HELP_EP)] = "1",
    attention_dp: Annotated[str, typer.Option(help=_HELP_ADP)] = "off",
    isl: Annotated[int, typer.Option(min=1, help=_HELP_ISL)] = 1024,
    osl: Annotated[int, typer.Option(min=1, help=_HELP_OSL)] = 256,
    concurrency: Annotated[str, typer.Option(help=_HELP_CONCURRENCY)] = "1,8,32,128",
    ttft_p99_ms: Annotated[float | None, typer.Option(min=0.0, help=_HELP_TTFT)] = None,
    itl_p99_ms: Annotated[float | None, typer.Option(min=0.0, help=_HELP_ITL)] = None,
    objective: Annotated[Objective, typer.Option(help=_HELP_OBJECTIVE)] = Objective.MIN_COST_PER_1M_TOKENS,
    max_batch_size: Annotated[int, typer.Option(min=1)] = 256,
    max_num_tokens: Annotated[int, typer.Option(min=1)] = 8192,
    max_seq_len: Annotated[int | None, typer.Option(min=1, help=_HELP_MAX_SEQ_LEN)] = None,
    gpus: Annotated[int | None, typer.Option(min=1, help=_HELP_GPUS)] = None,
    awq_block_size: Annotated[int, typer.Option(help=_HELP_AWQ)] = 128,
    usd_per_gpu_hour: Annotated[float | None, typer.Option(min=0, help=_HELP_PRICE)] = None,
    stack: Annotated[Stack | None, typer.Option(help=_HELP_STACK)] = None,
    target_rps: RpsOpt = None,
    top_k: TopKOpt = None,
    predictor: PredictorOpt = None,
    calibrated: CalibratedOpt = None,
    workspace: Annotated[Path, typer.Option(help=_HELP_WORKSPACE)] = Path("enginesweep-workspace"),
    json_: JsonOpt = False,
) -> None:
    """Size deployments: memory, KV capacity, max concurrency under the SLA, predicted latency,
    throughput and cost, and (with --target-rps) replicas, GPUs and $/hour."""
    arch = _model_architecture(model)
    names = _priced_gpus(gpu, usd_per_gpu_hour)
    resolved = _sizing_spec(
        arch,
        names,
        quant=quant,
        kv_cache=kv_cache,
        tp=tp,
        pp=pp,
        ep=ep,
        attention_dp=attention_dp,
        concurrency=concurrency,
        calibrated=calibrated,
        isl=isl,
        osl=osl,
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
        workspace=workspace,
    )
    _print_sizing(_plan(resolved, top_k, target_rps, predictor), objective, json_)
