"""Expand a sweep spec into trials: every combination of the axes, each sized, predicted, and
either feasible or rejected with its reasons (a rejected trial is kept, never silently dropped).

Slugs are deterministic: `<model>__<quant>__kv-<kv>__tp<N>`, then `__pp<N>` when PP > 1,
`__ep<N>` when EP > 1 and `__adp` with attention-DP, then one
`__bs<N>` / `__nt<N>` / `__sl<N>` part for each build knob the spec sweeps over more than one
value, then `__<stack>` when the spec lists several stacks, then `__<gpu>` when it lists several
GPUs. The slug names the trial's folder and its
MLflow run.
"""

from __future__ import annotations

import itertools

from pydantic import BaseModel, ConfigDict, Field

from enginesweep.build_configs import rules
from enginesweep.build_configs.architectures import ModelArchitecture
from enginesweep.build_configs.gpus import GPU, get_gpu
from enginesweep.build_configs.loading import ResolvedSpec, longest_sequence
from enginesweep.build_configs.schema import SLA, Predictor, Stack, Workload
from enginesweep.build_configs.trial import TrialConfig
from enginesweep.evaluation.planning.calibration import STORE_NAME, CalibrationStore
from enginesweep.evaluation.planning.memory import memory_breakdown, memory_problems
from enginesweep.evaluation.planning.prediction import capacity
from enginesweep.evaluation.planning.predictors import refine_predictions
from enginesweep.evaluation.planning.prune import prune
from enginesweep.evaluation.planning.records import PlannedTrial
from enginesweep.evaluation.planning.roofline import Deployment, predict


class Plan(BaseModel):
    """Every trial of a sweep, feasible and rejected, in axis order (GPU outermost)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sweep: str
    architecture: str
    gpus: list[str]
    sweep_gpu: str | None = Field(
        description="The GPU the sweep runs on (None: several listed, no target.run_on)."
    )
    top_k: int | None = None
    target_request_rate: float | None = None
    notes: list[str] = Field(default=[], description="Predictor availability and calibration.")
    trials: list[PlannedTrial]

    @property
    def feasible(self) -> list[PlannedTrial]:
        return [trial for trial in self.trials if trial.feasible]

    @property
    def rejected(self) -> list[PlannedTrial]:
        return [trial for trial in self.trials if not trial.feasible]

    @property
    def pruned(self) -> list[PlannedTrial]:
        return [trial for trial in self.trials if trial.pruned is not None]

    @property
    def to_run(self) -> list[PlannedTrial]:
        """What a sweep builds: feasible, not pruned, on the GPU it runs on."""
        return [trial for trial in self.feasible if trial.pruned is None and trial.gpu == self.sweep_gpu]


def gpu_tag(gpu: str) -> str:
    """A GPU catalog name as a slug part (`H100-SXM-80GB` -> `h100-sxm-80gb`)."""
    return gpu.lower()


def trial_slug(
    model: str,
    cfg: TrialConfig,
    varied_knobs: frozenset[str] = frozenset(),
    gpu: str | None = None,
    stack: str | None = None,
) -> str:
    """The deterministic name of one trial (see the module docstring)."""
    parts = [model, cfg.quant.value, f"kv-{cfg.kv_cache.value}", f"tp{cfg.tp}"]
    if cfg.pp > 1:
        parts.append(f"pp{cfg.pp}")
    if cfg.ep > 1:
        parts.append(f"ep{cfg.ep}")
    if cfg.attention_dp:
        parts.append("adp")
    for knob, tag in (("max_batch_size", "bs"), ("max_num_tokens", "nt"), ("max_seq_len", "sl")):
        if knob in varied_knobs:
            parts.append(f"{tag}{getattr(cfg, knob)}")
    if stack is not None:
        parts.append(stack)
    if gpu is not None:
        parts.append(gpu_tag(gpu))
    return "__".join(parts)


def _warnings(trial_cfg: TrialConfig, max_sequences: int, kv_tokens: int, workload: Workload) -> list[str]:
    out = []
    peak = workload.peak_concurrency
    if max_sequences < peak:
        limit = "max_batch_size" if max_sequences == trial_cfg.max_batch_size else "the KV cache"
        out.append(f"{limit} fits {max_sequences} sequences in flight; concurrency {peak} queues")
    if kv_tokens < trial_cfg.max_seq_len:
        out.append(
            f"the KV cache holds {kv_tokens:,} tokens, fewer than one max_seq_len="
            f"{trial_cfg.max_seq_len:,} sequence"
        )
    return out


def plan_trial(
    arch: ModelArchitecture,
    gpu: GPU,
    cfg: TrialConfig,
    *,
    workload: Workload,
    sla: SLA,
    gpus_available: int,
    usd_per_gpu_hour: float,
    stack: Stack | None = None,
    model: str | None = None,
    awq_block_size: int = 128,
    kv_free_fraction: float = 0.9,
    varied_knobs: frozenset[str] = frozenset(),
    gpu_in_slug: bool = False,
    stack_in_slug: bool = False,
) -> PlannedTrial:
    """Apply the hard rules, size memory and predict one trial. `stack=None` skips the
    stack-specific rules (ad-hoc sizing)."""
    reasons = [
        reason
        for reason in (
            rules.stack_target(stack, gpu) if stack else None,
            rules.quant_supported(cfg.quant, gpu, stack or Stack.TRTLLM_ENGINE),
            rules.kv_supported(cfg.kv_cache, gpu, stack or Stack.TRTLLM_ENGINE),
            rules.quant_kv_combination(cfg.quant, cfg.kv_cache, stack or Stack.TRTLLM_ENGINE),
            rules.stack_runs_model(stack, arch) if stack else None,
            rules.stack_parallelism(stack, cfg.ep, cfg.attention_dp) if stack else None,
            rules.engine_expert_checkpoint(stack, cfg.quant, cfg.kv_cache, cfg.ep) if stack else None,
            rules.shipped_format_runs(arch, gpu),
            rules.tp_divides_heads(arch, cfg.tp, cfg.attention_dp),
            rules.expert_parallel(arch, cfg.tp, cfg.ep),
            rules.attention_dp_fits(arch, cfg.tp, cfg.attention_dp),
            rules.awq_divisible(arch, cfg.quant, cfg.tp, awq_block_size),
            rules.world_size_fits(cfg.tp, cfg.pp, gpus_available),
            rules.pp_fits_layers(arch, cfg.pp),
            rules.seq_len_fits(arch, cfg.max_seq_len, *longest_sequence(workload)),
        )
        if reason
    ]
    mem = memory_breakdown(
        arch, gpu, cfg, kv_free_fraction=kv_free_fraction, sequence_tokens=workload.sequence_tokens
    )
    reasons += memory_problems(mem, gpu, workload.sequence_tokens)
    feasible = not reasons
    prediction = None
    if feasible:
        prediction = predict(
            Deployment(arch=arch, gpu=gpu, cfg=cfg, mem=mem), workload, sla, usd_per_gpu_hour
        )
    name = model or arch.name.lower()
    return PlannedTrial(
        slug=trial_slug(
            name,
            cfg,
            varied_knobs,
            gpu.name if gpu_in_slug else None,
            stack.value if stack and stack_in_slug else None,
        ),
        model=arch.name,
        stack=stack.value if stack else "any",
        gpu=gpu.name,
        config=cfg,
        feasible=feasible,
        reasons=reasons,
        warnings=_warnings(cfg, mem.max_concurrent_sequences, mem.kv_capacity_tokens, workload)
        if feasible
        else [],
        memory=mem,
        predicted=prediction,
    )


def expand(
    resolved: ResolvedSpec,
    *,
    top_k: int | None = None,
    target_request_rate: float | None = None,
    predictor: Predictor | None = None,
    calibrated: bool | None = None,
) -> Plan:
    """Every trial of the spec's sweep space on every listed GPU and stack (GPU outermost, then
    stack, then quant), each
    sized and predicted; then the capacity plan and `top_k` pruning. Arguments left as None take
    the spec's `planner` section. Calibration factors come from `<workspace>/calibration.json`
    (written by `enginesweep calibrate`), when there is one."""
    spec = resolved.spec
    axes = spec.axes
    planner = spec.planner
    top_k = planner.top_k if top_k is None else top_k
    rate = planner.target_request_rate if target_request_rate is None else target_request_rate
    varied = frozenset(
        knob for knob in ("max_batch_size", "max_num_tokens", "max_seq_len") if len(getattr(axes, knob)) > 1
    )
    several = len(resolved.gpus) > 1
    trials = []
    for gpu, stack in itertools.product(resolved.gpus, spec.stack):
        for quant, kv, tp, pp, ep, adp, batch, tokens, seq in itertools.product(
            axes.quant,
            axes.kv_cache,
            axes.tp,
            axes.pp,
            axes.ep,
            axes.attention_dp,
            axes.max_batch_size,
            axes.max_num_tokens,
            axes.max_seq_len,
        ):
            cfg = TrialConfig(
                quant=quant,
                kv_cache=kv,
                tp=tp,
                pp=pp,
                ep=ep,
                attention_dp=adp,
                max_batch_size=batch,
                max_num_tokens=tokens,
                max_seq_len=seq,
            )
            if axes.excluded_by(cfg.model_dump(mode="json")) is not None:
                continue  # the user took this point out of the space on purpose
            trials.append(
                plan_trial(
                    resolved.architecture,
                    gpu,
                    cfg,
                    workload=spec.workload,
                    sla=spec.sla,
                    gpus_available=spec.target.gpus_available,
                    usd_per_gpu_hour=resolved.price(gpu),
                    stack=stack,
                    model=spec.model.slug,
                    awq_block_size=spec.build.awq_block_size,
                    kv_free_fraction=spec.build.kv_cache_free_gpu_mem_fraction,
                    varied_knobs=varied,
                    gpu_in_slug=several,
                    stack_in_slug=len(spec.stack) > 1,
                )
            )
    use_calibration = planner.calibrated if calibrated is None else calibrated
    store = CalibrationStore.load(spec.workspace / STORE_NAME) if use_calibration else None
    trials, notes = refine_predictions(trials, resolved, predictor or planner.predictor, store)
    if rate is not None:
        trials = [with_capacity(trial, rate, spec.workload.osl.mean, resolved) for trial in trials]
    if top_k is not None:
        trials = prune(trials, top_k, spec.sla.objective)
    return Plan(
        sweep=spec.name,
        architecture=resolved.architecture.name,
        gpus=[gpu.name for gpu in resolved.gpus],
        sweep_gpu=spec.target.sweep_gpu,
        top_k=top_k,
        target_request_rate=rate,
        notes=notes,
        trials=trials,
    )


def with_capacity(trial: PlannedTrial, rate: float, osl: int, resolved: ResolvedSpec) -> PlannedTrial:
    """`trial` with its capacity plan for `rate` requests/s (feasible, SLA-meeting trials)."""
    if trial.predicted is None:
        return trial
    plan = capacity(
        trial.predicted,
        target_request_rate=rate,
        osl=osl,
        gpus=trial.config.world_size,
        usd_per_gpu_hour=resolved.price(get_gpu(trial.gpu)),
    )
    return trial.model_copy(update={"capacity": plan})
