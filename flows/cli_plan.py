"""Planning verbs: `validate`, `plan`, `ls`, `size`. Light imports only (no torch), so they
answer in well under a second. `--json` output is a stable schema (docs/json-output.md)."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from build_configs.architectures import (
    ArchitectureError,
    ModelArchitecture,
    shipped_architecture,
    shipped_architectures,
)
from build_configs.gpus import get_gpu, gpu_catalog
from build_configs.loading import SpecError, config_summary, load_spec, shipped_configs
from build_configs.quant import KVCacheFormat, QuantFormat
from build_configs.schema import SLA, LengthDistribution, Workload
from evaluation.planning import TrialConfig, expand, plan_trial
from evaluation.reports.plan_tables import plan_table, size_table
from flows.cli_common import ConfigArg, JsonOpt, SetOpt, _fail, app, err, out


@app.command()
def validate(configs: Annotated[list[str], typer.Argument(help="Spec paths or shipped names.")],
             set_: SetOpt = None) -> None:
    """Check specs: schema, model architecture, GPU and the hard rules. Lists every problem."""
    bad = 0
    for config in configs:
        try:
            resolved = load_spec(config, set_ or [])
        except SpecError as exc:
            bad += 1
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            continue
        count = len(expand(resolved).trials)
        out.print(f"ok: {config} ({resolved.architecture.name} on {resolved.gpu.name}, "
                  f"{count} trials)", highlight=False)
    if bad:
        raise typer.Exit(2)


@app.command()
def plan(config: ConfigArg, set_: SetOpt = None, json_: JsonOpt = False) -> None:
    """Expand a spec into trials; size and predict each, and say why any is rejected."""
    try:
        resolved = load_spec(config, set_ or [])
    except SpecError as exc:
        raise _fail(str(exc)) from None
    result = expand(resolved)
    if json_:
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
    else:
        out.print(plan_table(result))
    if not result.feasible:
        if not json_:
            err.print("[bold red]error:[/] no feasible trial in this sweep (see the reasons above)")
        raise typer.Exit(1)


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
        table = Table("name", "memory GiB", "HBM TB/s", "bf16 TFLOP/s", "fp8 TFLOP/s", "SM",
                      "link GB/s", "$/GPU-h")
        for gpu in gpu_catalog().values():
            table.add_row(gpu.name, f"{gpu.memory_gib:g}", f"{gpu.hbm_tb_s:g}",
                          f"{gpu.dense_tflops.get('bf16', 0):g}",
                          f"{gpu.dense_tflops['fp8']:g}" if "fp8" in gpu.dense_tflops else "-",
                          str(gpu.sm) if not gpu.is_cpu else "cpu", f"{gpu.interconnect_gb_s:g}",
                          f"{gpu.usd_per_gpu_hour:.2f}")
    else:
        table = Table("name", "params (B)", "layers", "hidden", "heads", "KV heads", "vocab")
        for name in shipped_architectures():
            arch = shipped_architecture(name)
            table.add_row(name, f"{arch.total_params / 1e9:.2f}", str(arch.num_layers),
                          str(arch.hidden_size), str(arch.num_attention_heads),
                          str(arch.num_kv_heads), str(arch.vocab_size))
    out.print(table)


def _architecture(model: str) -> ModelArchitecture:
    path = Path(model)
    if path.exists():
        return ModelArchitecture.from_file(path)
    return shipped_architecture(model)


@app.command()
def size(
    model: Annotated[str, typer.Option(help="Shipped architecture name, a config.json, or a checkpoint dir.")],
    gpu: Annotated[str, typer.Option(help="GPU catalog name (`enginesweep ls gpus`).")],
    quant: Annotated[QuantFormat, typer.Option(help="Weight format.")] = QuantFormat.BF16,
    kv_cache: Annotated[KVCacheFormat, typer.Option(help="KV-cache format.")] = KVCacheFormat.AUTO,
    tp: Annotated[int, typer.Option(min=1, help="Tensor-parallel size.")] = 1,
    pp: Annotated[int, typer.Option(min=1, help="Pipeline-parallel size.")] = 1,
    isl: Annotated[int, typer.Option(min=1, help="Input tokens per request.")] = 1024,
    osl: Annotated[int, typer.Option(min=1, help="Output tokens per request.")] = 256,
    max_batch_size: Annotated[int, typer.Option(min=1)] = 256,
    max_num_tokens: Annotated[int, typer.Option(min=1)] = 8192,
    max_seq_len: Annotated[Optional[int], typer.Option(min=1, help="Default: ISL+OSL.")] = None,
    gpus: Annotated[Optional[int], typer.Option(min=1, help="GPUs available (default TP*PP).")] = None,
    awq_block_size: Annotated[int, typer.Option(help="AWQ group size (64 or 128).")] = 128,
    usd_per_gpu_hour: Annotated[Optional[float], typer.Option(min=0, help="Override the catalog price.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Size one deployment: memory, KV capacity, max concurrency, predicted latency and cost."""
    try:
        arch = _architecture(model)
    except ArchitectureError as exc:
        raise _fail(f"--model: {exc}") from None
    try:
        target = get_gpu(gpu)
    except KeyError as exc:
        raise _fail(f"--gpu: {exc.args[0]}") from None
    if awq_block_size not in (64, 128):
        raise _fail(f"--awq-block-size: {awq_block_size} is not 64 or 128")
    cfg = TrialConfig(quant=quant, kv_cache=kv_cache, tp=tp, pp=pp, max_batch_size=max_batch_size,
                      max_num_tokens=max_num_tokens, max_seq_len=max_seq_len or isl + osl)
    workload = Workload(isl=LengthDistribution(mean=isl), osl=LengthDistribution(mean=osl))
    trial = plan_trial(
        arch, target, cfg, workload=workload, sla=SLA(), gpus_available=gpus or tp * pp,
        usd_per_gpu_hour=target.usd_per_gpu_hour if usd_per_gpu_hour is None else usd_per_gpu_hour,
        awq_block_size=awq_block_size,
    )
    if json_:
        sys.stdout.write(trial.model_dump_json(indent=2) + "\n")
    else:
        out.print(size_table(trial))
