"""The `reference` stack: the whole pipeline for real on a CPU.

Quantize with ModelOpt (fake quantization, real TRT-LLM checkpoint export, checked against the
source); "build" = lay out a bundle (the fake-quantized model, the exported TRT-LLM checkpoint,
the build knobs) and hash it into its manifest, since there is no engine compiler on a CPU; serve
it with the real `tritonserver` binary and a decoupled Python-backend model that speaks
TensorRT-LLM's request fields. Every number it yields is a CPU measurement.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enginesweep.engines.compat import version_mismatches
from enginesweep.engines.manifest import Manifest, host_hardware, write_manifest
from enginesweep.engines.quantize.modelopt_cpu import QuantizeResult, library_versions, quantize_checkpoint
from enginesweep.engines.quantize.recipes import QuantRecipe
from enginesweep.engines.stacks.base import BuildKnobs, BuildResult
from enginesweep.engines.triton.repository import SERVED_MODEL, write_reference_repository
from enginesweep.engines.triton.server import TritonServer
from enginesweep.engines.trtllm.layout import Required

if TYPE_CHECKING:
    from enginesweep.build_configs.trial import TrialConfig

_TRTLLM_KEYS = (
    "architecture",
    "dtype",
    "vocab_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_size",
    "rotary_base",
    "mapping",
    "quantization",
)


def _link_tree(source: Path, target: Path) -> None:
    """Hard-link every file of `source` under `target` (copy across filesystems)."""
    for path in source.rglob("*"):
        if path.is_file():
            dest = target / path.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, dest)
            except OSError:
                shutil.copy2(path, dest)


class ReferenceStack:
    """CPU stack: ModelOpt fake quantization served by the real Triton server."""

    name = "reference"
    served_model = SERVED_MODEL
    accuracy_mode = "in_process"
    layout = None  # it uses none of TensorRT-LLM's or Triton's files (pytriton brings its server)

    def __init__(self, spec: Any = None) -> None:
        """The reference stack takes no settings from the spec."""

    def tokenizer_dir(self, build: BuildResult) -> Path:
        return Path(build.bundle_dir) / "model"

    def quantize(
        self,
        source_dir: Path,
        recipe: QuantRecipe,
        out_dir: Path,
        *,
        key: str,
        calibration_texts: list[str],
        log: Callable[[str], None] = print,
    ) -> QuantizeResult:
        return quantize_checkpoint(
            source_dir, recipe, out_dir, key=key, calibration_texts=calibration_texts, log=log
        )

    def build(
        self,
        quantized: QuantizeResult,
        knobs: BuildKnobs,
        bundle_dir: Path,
        *,
        slug: str,
        checkpoint: dict[str, Any],
        target: dict[str, Any],
    ) -> BuildResult:
        start = time.perf_counter()
        tmp = bundle_dir.with_name(bundle_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            manifest = self._assemble(tmp, quantized, knobs, slug=slug, checkpoint=checkpoint, target=target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written stays behind
            raise
        shutil.rmtree(bundle_dir, ignore_errors=True)
        tmp.rename(bundle_dir)
        return BuildResult(
            slug=slug,
            stack=self.name,
            bundle_dir=str(bundle_dir),
            knobs=knobs,
            manifest=manifest,
            build_seconds=time.perf_counter() - start,
        )

    def _assemble(
        self,
        tmp: Path,
        quantized: QuantizeResult,
        knobs: BuildKnobs,
        *,
        slug: str,
        checkpoint: dict[str, Any],
        target: dict[str, Any],
    ) -> Manifest:
        """Link the quantized checkpoint into `tmp` and write its build config and manifest."""
        _link_tree(Path(quantized.model_dir), tmp / "model")
        _link_tree(Path(quantized.trtllm_checkpoint_dir), tmp / "trtllm_checkpoint")
        (tmp / "build_config.json").write_text(json.dumps(knobs.key_fields(), indent=2) + "\n")
        recipe = quantized.recipe
        return write_manifest(
            tmp,
            slug=slug,
            stack=self.name,
            inputs={
                "checkpoint": checkpoint,
                "quant_recipe": recipe.model_dump(mode="json", exclude={"calibration"}),
                "calibration": recipe.calibration.model_dump() if recipe.calibration else None,
                "build_knobs": knobs.key_fields(),
            },
            versions={"stack": self.name, **quantized.versions, **_triton_version()},
            target={**target, "host": host_hardware()},
            trtllm_checkpoint=(
                {k: quantized.trtllm_config.get(k) for k in _TRTLLM_KEYS}
                if quantized.export_format == "trtllm-checkpoint"
                else {"format": quantized.export_format, **quantized.trtllm_config}
            ),
        )

    def write_model_repository(self, build: BuildResult, repo_dir: Path) -> Path:
        knobs = build.knobs
        return write_reference_repository(
            repo_dir,
            Path(build.bundle_dir) / "model",
            max_batch_size=knobs.max_batch_size,
            max_seq_len=knobs.max_seq_len,
        )

    def required(self, configs: Sequence[TrialConfig], *, accuracy: bool = False) -> list[Required]:
        """Nothing outside this environment: ModelOpt, the Triton binary and aiperf come with the
        reference extra, and `enginesweep setup` checks them."""
        return []

    def host_mismatches(self, manifest: Manifest) -> list[str]:
        """The libraries that load and run the model (torch, transformers, ModelOpt's fake
        quantization, the Triton server) must be those that built the bundle, on the same CPU
        architecture."""
        problems = version_mismatches(manifest.versions, {**library_versions(), **_triton_version()})
        built_on = manifest.target.get("host", {}).get("machine")
        if built_on and built_on != platform.machine():
            problems.append(f"built on {built_on}, this host is {platform.machine()}")
        return problems

    def bundle_settings(self) -> dict[str, Any]:
        """It writes no spec setting into its bundles."""
        return {}

    def accuracy_command(self, model_dir: Path, cfg: TrialConfig, accuracy: Any, **_: Path) -> Any:
        """Not this stack's way (its `accuracy_mode` is 'in_process')."""
        raise NotImplementedError(
            f"the {self.name} stack measures accuracy in_process, not by an lm-eval command"
        )

    def server(self, repo_dir: Path, workdir: Path) -> TritonServer:
        return TritonServer(repo_dir, workdir, models=(self.served_model,))


# The tritonserver each nvidia-pytriton release bundles (its release notes; the server logs it).
_BUNDLED_TRITON = {"0.7.0": "2.51.0"}


def _triton_version() -> dict[str, str]:
    from importlib.metadata import version

    pytriton = version("nvidia-pytriton")
    return {"nvidia-pytriton": pytriton, "tritonserver": _BUNDLED_TRITON.get(pytriton, "unknown")}
