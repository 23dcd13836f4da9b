"""Expand a sweep spec into trials: every combination of the axes, each sized, predicted, and
either feasible or rejected with its reasons (a rejected trial is kept, never silently dropped).

Slugs are deterministic: `<model>__<quant>__kv-<kv>__tp<N>`, then `__pp<N>` when PP > 1, then one
`__bs<N>` / `__nt<N>` / `__sl<N>` part for each build knob the spec sweeps over more than one
value. The slug names the trial's folder and its MLflow run.
"""

from __future__ import annotations

import itertools

from pydantic import BaseModel, ConfigDict

from build_configs import rules
from build_configs.architectures import ModelArchitecture
from build_configs.gpus import GPU
from build_configs.loading import ResolvedSpec
from build_configs.schema import SLA, Stack, Workload
from evaluation.planning.memory import memory_breakdown, memory_problems
from evaluation.planning.records import PlannedTrial, TrialConfig
from evaluation.planning.roofline import Deployment, predict


class Plan(BaseModel):
    """Every trial of a sweep, feasible and rejected, in axis order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sweep: str
    architecture: str
    gpu: str
    trials: list[PlannedTrial]

    @property
    def feasible(self) -> list[PlannedTrial]:
        return [trial for trial in self.trials if trial.feasible]

    @property
    def rejected(self) -> list[PlannedTrial]:
        return [trial for trial in self.trials if not trial.feasible]


def trial_slug(model: str, cfg: TrialConfig, varied_knobs: frozenset[str] = frozenset()) -> str:
    """The deterministic name of one trial (see the module docstring)."""
    parts = [model, cfg.quant.value, f"kv-{cfg.kv_cache.value}", f"tp{cfg.tp}"]
    if cfg.pp > 1:
        parts.append(f"pp{cfg.pp}")
    for knob, tag in (("max_batch_size", "bs"), ("max_num_tokens", "nt"), ("max_seq_len", "sl")):
        if knob in varied_knobs:
            parts.append(f"{tag}{getattr(cfg, knob)}")
    return "__".join(parts)


def _warnings(trial_cfg: TrialConfig, max_sequences: int, kv_tokens: int, workload: Workload
              ) -> list[str]:
    out = []
    peak = max(workload.concurrency)
    if max_sequences < peak:
        limit = "max_batch_size" if max_sequences == trial_cfg.max_batch_size else "the KV cache"
        out.append(f"{limit} fits {max_sequences} sequences in flight; concurrency {peak} queues")
    if kv_tokens < trial_cfg.max_seq_len:
        out.append(f"the KV cache holds {kv_tokens:,} tokens, fewer than one max_seq_len="
                   f"{trial_cfg.max_seq_len:,} sequence")
    return out


def plan_trial(arch: ModelArchitecture, gpu: GPU, cfg: TrialConfig, *, workload: Workload,
               sla: SLA, gpus_available: int, usd_per_gpu_hour: float, stack: Stack | None = None,
               model: str | None = None, awq_block_size: int = 128, kv_free_fraction: float = 0.9,
               varied_knobs: frozenset[str] = frozenset()) -> PlannedTrial:
    """Apply the hard rules, size memory and predict one trial. `stack=None` skips the
    stack-specific rules (ad-hoc sizing)."""
    reasons = [
        reason for reason in (
            rules.stack_target(stack, gpu) if stack else None,
            rules.quant_supported(cfg.quant, gpu, stack or Stack.TRTLLM_ENGINE),
            rules.kv_supported(cfg.kv_cache, gpu, stack or Stack.TRTLLM_ENGINE),
            rules.tp_divides_heads(arch, cfg.tp),
            rules.awq_divisible(arch, cfg.quant, cfg.tp, awq_block_size),
            rules.world_size_fits(cfg.tp, cfg.pp, gpus_available),
            rules.pp_fits_layers(arch, cfg.pp),
            rules.seq_len_fits(arch, cfg.max_seq_len, workload.sequence_tokens),
        ) if reason
    ]
    mem = memory_breakdown(arch, gpu, cfg, kv_free_fraction=kv_free_fraction,
                           sequence_tokens=workload.sequence_tokens)
    reasons += memory_problems(mem, gpu, workload.sequence_tokens)
    feasible = not reasons
    prediction = None
    if feasible:
        prediction = predict(Deployment(arch=arch, gpu=gpu, cfg=cfg, mem=mem), workload, sla,
                             usd_per_gpu_hour)
    name = model or arch.name.lower()
    return PlannedTrial(
        slug=trial_slug(name, cfg, varied_knobs),
        model=arch.name,
        stack=stack.value if stack else "any",
        gpu=gpu.name,
        config=cfg,
        feasible=feasible,
        reasons=reasons,
        warnings=_warnings(cfg, mem.max_concurrent_sequences, mem.kv_capacity_tokens, workload)
        if feasible else [],
        memory=mem,
        predicted=prediction,
    )


def expand(resolved: ResolvedSpec) -> Plan:
    """Every trial of the spec's sweep space, in axis order (quant outermost)."""
    spec = resolved.spec
    axes = spec.axes
    varied = frozenset(
        knob for knob in ("max_batch_size", "max_num_tokens", "max_seq_len")
        if len(getattr(axes, knob)) > 1
    )
    trials = []
    for quant, kv, tp, pp, batch, tokens, seq in itertools.product(
            axes.quant, axes.kv_cache, axes.tp, axes.pp, axes.max_batch_size, axes.max_num_tokens,
            axes.max_seq_len):
        cfg = TrialConfig(quant=quant, kv_cache=kv, tp=tp, pp=pp, max_batch_size=batch,
                          max_num_tokens=tokens, max_seq_len=seq)
        if axes.excluded_by(cfg.model_dump(mode="json")) is not None:
            continue  # the user took this point out of the space on purpose
        trials.append(plan_trial(
            resolved.architecture, resolved.gpu, cfg, workload=spec.workload, sla=spec.sla,
            gpus_available=spec.target.gpus_available, usd_per_gpu_hour=resolved.usd_per_gpu_hour,
            stack=spec.stack, model=spec.model.slug, awq_block_size=spec.build.awq_block_size,
            kv_free_fraction=spec.build.kv_cache_free_gpu_mem_fraction, varied_knobs=varied,
        ))
    return Plan(sweep=spec.name, architecture=resolved.architecture.name, gpu=resolved.gpu.name,
                trials=trials)
