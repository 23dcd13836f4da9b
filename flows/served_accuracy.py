"""The accuracy stage of stacks whose accuracy is measured on what they serve
(`Stack.accuracy_mode == "served"`: trtllm-engine, whose TensorRT engines lm-eval cannot load).

The variant is scored on the trial's own running server after the benchmark (same server, same
GPUs). The baseline is the unquantized engine of the same TP/PP, build knobs and settings (bf16
weights, or the sweep's own 16-bit format when it lists only fp16; model-dtype KV cache), taken
from the content-addressed store the trial's bundle comes from (a bf16 trial of the sweep and
this baseline are one bundle), served on the trial's GPUs once the trial's server has stopped,
scored once per key and cached as `<workspace>/accuracy/served-baseline-<key>.json` (the key:
checkpoint identity, evaluated accuracy settings, task files, stack and serving kind, TP/PP,
knobs, build settings, hardware, library versions). An unquantized trial's own result is that
baseline, saved under the key when none is cached, so nothing is served twice. Only generative
tasks are served (`evaluation.accuracy.served`); the others are recorded as skipped in
`AccuracyResult.skipped_tasks` with their reason and said in the trial log.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from enginesweep.build_configs.loading import ResolvedSpec
from enginesweep.build_configs.quant import KVCacheFormat, QuantFormat
from enginesweep.build_configs.schema import SweepSpec
from enginesweep.build_configs.trial import TrialConfig
from enginesweep.engines import progress
from enginesweep.engines.compat import refuse_mismatch
from enginesweep.engines.locks import key_lock
from enginesweep.engines.manifest import inputs_hash
from enginesweep.engines.progress import StageClock
from enginesweep.engines.stacks import BuildResult, Stack
from enginesweep.engines.stacks.base import Server
from enginesweep.engines.store import Workspace, get_or_build
from enginesweep.engines.versions import ACCURACY_PACKAGES, versions_of
from enginesweep.evaluation.accuracy.external import cached
from enginesweep.evaluation.accuracy.trial_accuracy import AccuracyInputs
from enginesweep.evaluation.accuracy.variant import tasks_fingerprint
from enginesweep.evaluation.planning import PlannedTrial
from enginesweep.evaluation.planning.expand import trial_slug
from enginesweep.evaluation.records import AccuracyResult
from enginesweep.evaluation.selection.accuracy_gate import is_baseline

MAX_CONCURRENCY = 8
"""Requests in flight at once while scoring (and never more than the engine's batch)."""


def baseline_config(cfg: TrialConfig, quants: Sequence[QuantFormat]) -> TrialConfig:
    """The unquantized point of `cfg` (itself when it is one): bf16 weights unless the sweep's
    only 16-bit format is fp16, model-dtype KV cache, same TP/PP and knobs."""
    if is_baseline(cfg):
        return cfg
    unquantized = [q for q in quants if not q.is_quantized]
    quant = QuantFormat.BF16 if QuantFormat.BF16 in unquantized or not unquantized else unquantized[0]
    return cfg.model_copy(update={"quant": quant, "kv_cache": KVCacheFormat.AUTO})


def baseline_key(
    *,
    checkpoint: dict[str, Any],
    spec: SweepSpec,
    tasks_sha256: str,
    stack: str,
    cfg: TrialConfig,
    hardware: str,
    versions: dict[str, str | None],
) -> str:
    """The cache key of a served baseline (module docstring); `cfg` is the baseline's point."""
    return inputs_hash(
        {
            "evaluator": "served",
            "checkpoint": checkpoint,
            "accuracy": spec.accuracy.model_dump(mode="json", include={"tasks", "task_limit", "batch_size"}),
            "tasks": tasks_sha256,
            "stack": stack,
            "serving": spec.execution.model_dump(mode="json", include={"engine_server", "pytorch_server"}),
            "config": cfg.identity(),
            "build": spec.build.key_fields(),
            "hardware": hardware,
            "versions": versions,
        }
    )[:16]


class ServedAccuracy:
    """One trial's served accuracy: `evaluate_variant` inside the trial's server block, then
    `baseline` (cached, or served now) for the pairing."""

    def __init__(
        self,
        *,
        stack: Stack,
        spec: SweepSpec,
        cfg: TrialConfig,
        checkpoint: dict[str, Any],
        include_paths: list[Path],
        workspace: Path,
        trial_dir: Path,
        hardware: str,
        versions: dict[str, str | None],
        baseline_bundle: Callable[[TrialConfig], BuildResult],
        log: Callable[[str], None],
    ) -> None:
        self.stack, self.spec, self.workspace, self.trial_dir = stack, spec, workspace, trial_dir
        self.include_paths, self.hardware, self.log = include_paths, hardware, log
        self.baseline_bundle = baseline_bundle
        self.baseline_cfg = baseline_config(cfg, spec.axes.quant)
        self.own_baseline = self.baseline_cfg == cfg
        self.concurrency = max(1, min(spec.accuracy.batch_size, cfg.max_batch_size, MAX_CONCURRENCY))
        self.key = baseline_key(
            checkpoint=checkpoint,
            spec=spec,
            tasks_sha256=tasks_fingerprint(include_paths),
            stack=stack.name,
            cfg=self.baseline_cfg,
            hardware=hardware,
            versions=versions,
        )
        self.path = workspace / "accuracy" / f"served-baseline-{self.key}.json"
        self.variant: AccuracyResult | None = None
        self.variant_seconds = 0.0

    @classmethod
    def for_trial(
        cls,
        stack: Stack,
        resolved: ResolvedSpec,
        planned: PlannedTrial,
        inputs: AccuracyInputs,
        corpus: Path,
        workspace: Workspace,
        log: Callable[[str], None],
    ) -> ServedAccuracy:
        """The served accuracy of trial `planned`; its baseline engine, when it must be served,
        comes from the same store as the trial's bundle (built there once)."""

        def baseline_bundle(base: TrialConfig) -> BuildResult:
            slug = trial_slug(planned.model, base)
            source = (inputs.source_dir, inputs.checkpoint)
            # The baseline's quantize/build are not this trial's stages: a clock of their own.
            clock = StageClock(log)
            return get_or_build(stack, resolved, base, slug, source, corpus, workspace, clock, log).build

        return cls(
            stack=stack,
            spec=resolved.spec,
            cfg=planned.config,
            checkpoint=inputs.checkpoint,
            include_paths=inputs.include_paths,
            workspace=workspace.root,
            trial_dir=workspace.trial_dir(resolved.spec.name, planned.slug),
            hardware=inputs.hardware,
            versions=versions_of(ACCURACY_PACKAGES),
            baseline_bundle=baseline_bundle,
            log=log,
        )

    def evaluate_variant(self, server: Server) -> None:
        """Score the trial's engine on its running server (after the benchmark)."""
        start = time.perf_counter()
        accuracy = self.spec.accuracy
        log_file = self.trial_dir / "accuracy" / "lm_eval.log"
        self.log(
            f"[accuracy] tasks {', '.join(accuracy.tasks)} (limit {accuracy.task_limit}) on "
            f"the running server, {self.concurrency} requests at once (lm-eval log: {log_file})"
        )
        progress.stage_started("accuracy")
        self.variant = self._evaluate(server, log_file)
        for name, reason in self.variant.skipped_tasks.items():
            self.log(f"  accuracy: task {name} skipped: {reason}")
        self.variant_seconds = round(time.perf_counter() - start, 3)

    def baseline(self) -> AccuracyResult | None:
        """The baseline engine's result for pairing: this trial's own when it is the baseline,
        else the cached one, else served and scored now (and cached). None when the variant
        scored no task: there is nothing to pair."""
        if self.variant is None:
            raise RuntimeError("evaluate_variant must run (on the trial's server) before baseline")
        if not self.variant.tasks:
            self.log(
                "  accuracy: no generative task to serve; the selection rejects this trial "
                "when the spec sets sla.max_accuracy_drop"
            )
            return None
        variant = self.variant
        with key_lock(self.path.with_suffix(".lock"), f"the served baseline {self.path.name}", self.log):
            if self.own_baseline:
                self.log(f"  baseline: this unquantized trial itself (key {self.key})")
                return cached(self.path, lambda: variant)
            if self.path.exists():
                self.log(f"  baseline: reusing the served baseline {self.path.name}")
            return cached(self.path, self._serve_baseline)

    def _serve_baseline(self) -> AccuracyResult:
        cfg = self.baseline_cfg
        self.log(
            f"  baseline: the {cfg.quant.value} engine (kv {cfg.kv_cache.value}, TP{cfg.tp} "
            f"PP{cfg.pp}) from the store, served and scored once (key {self.key})"
        )
        build = self.baseline_bundle(cfg)
        progress.stage_started("accuracy")  # the store may have built it: the view says so
        refuse_mismatch(build.bundle_dir, self.stack.host_mismatches(build.manifest))
        work = self.workspace / "accuracy" / f"served-baseline-{self.key}"
        repo = self.stack.write_model_repository(build, work / "triton_repo")
        with self.stack.server(repo, work / "server") as server:
            return self._evaluate(server, work / "lm_eval.log")

    def _evaluate(self, server: Server, log_file: Path) -> AccuracyResult:
        # lm-eval is imported only when a trial measures accuracy this way.
        from enginesweep.evaluation.accuracy.served import evaluate_served, served_endpoint

        accuracy = self.spec.accuracy
        return evaluate_served(
            served_endpoint(server.url, server.model, server.endpoint),
            tasks=list(accuracy.tasks),
            include_paths=self.include_paths,
            limit=accuracy.task_limit,
            hardware=self.hardware,
            cache_dir=self.workspace / "cache" / "datasets",
            concurrency=self.concurrency,
            log_file=log_file,
        )
