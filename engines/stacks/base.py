"""The `Stack` protocol every runtime implements, and the lazy registry that picks one by name.

A stack quantizes a checkpoint, builds an engine bundle (with its `manifest.json`), writes a
Triton model repository for the bundle and starts a server for it. Stacks are imported only when
asked for, so GPU-only imports (`tensorrt_llm`) never happen on a CPU machine.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from enginesweep.engines.manifest import Manifest
from enginesweep.engines.quantize.modelopt_cpu import QuantizeResult
from enginesweep.engines.quantize.recipes import QuantRecipe
from enginesweep.engines.trtllm.layout import Required, check_required

if TYPE_CHECKING:  # types only: a stack module imports what it uses itself
    from enginesweep.build_configs.schema import Accuracy
    from enginesweep.build_configs.trial import TrialConfig
    from enginesweep.engines.endpoints import Endpoint
    from enginesweep.engines.trtllm.commands import Command
    from enginesweep.engines.trtllm.layout import Layout

AccuracyMode = Literal["in_process", "command", "served"]
"""How a stack's trials get their accuracy: evaluated in this process on the bundle's model
(reference), by an lm-eval command out of process on the bundle's checkpoint (trtllm-pytorch), or
scored through the running server, the engine as served (trtllm-engine: generative tasks only)."""

# name -> "module:Class"; a stack listed in _PLANNED is known but not implemented yet.
_REGISTRY = {
    "reference": "enginesweep.engines.stacks.reference:ReferenceStack",
    "trtllm-engine": "enginesweep.engines.stacks.trtllm_engine:TrtllmEngineStack",
    "trtllm-pytorch": "enginesweep.engines.stacks.trtllm_pytorch:TrtllmPytorchStack",
}
_PLANNED: dict[str, str] = {}
_NEEDS = {
    "reference": "install the project with its reference extra: pip install -e '.[reference]'",
    "trtllm-engine": (
        "it runs on a GPU machine with TensorRT-LLM 1.2 installed (NVIDIA's Triton + "
        "TensorRT-LLM container); here, `enginesweep plan SPEC --emit-scripts DIR` "
        "writes its commands as scripts"
    ),
    "trtllm-pytorch": (
        "it runs on a GPU machine with TensorRT-LLM 1.2 installed (NVIDIA's Triton + "
        "TensorRT-LLM container); here, `enginesweep plan SPEC --emit-scripts DIR` "
        "writes its commands as scripts"
    ),
}


class StackUnavailable(RuntimeError):
    """A stack that does not exist, is not implemented yet, or cannot run on this machine."""


class BuildKnobs(BaseModel):
    """Engine build limits (trtllm-build flags of the same names)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int
    max_num_tokens: int
    max_seq_len: int
    # Runtime layout of a MoE model on the PyTorch backend (the engine path fixes EP in its
    # checkpoint instead). Keys leave them out at their defaults (`key_fields`).
    ep: int = 1
    attention_dp: bool = False

    def key_fields(self) -> dict[str, Any]:
        """The knobs as they enter store keys and manifests: `ep` and `attention_dp` left out at
        their defaults, so bundles stored before they existed keep their keys."""
        return self.model_dump(exclude_defaults=True)


class BuildResult(BaseModel):
    """An engine bundle ready to serve, saved as `build.json` beside the bundle."""

    model_config = ConfigDict(extra="forbid")

    slug: str
    stack: str
    bundle_dir: str
    knobs: BuildKnobs
    manifest: Manifest
    build_seconds: float


class Server(Protocol):
    """A running, health-checked inference server (what `Stack.server` yields)."""

    url: str
    metrics_url: str | None
    """Where the server exports Prometheus metrics; None when it exports none."""
    model: str
    """The model clients call."""
    endpoint: Endpoint
    """How the load generator and the accuracy client talk to it."""

    def alive(self) -> bool:
        """False once the server died."""
        ...


class Stack(Protocol):
    """One runtime: how to quantize, build, lay out a Triton repository and serve."""

    name: str
    served_model: str
    """The Triton model that clients call (`/v2/models/<served_model>/generate_stream`)."""

    def quantize(
        self,
        source_dir: Path,
        recipe: QuantRecipe,
        out_dir: Path,
        *,
        key: str,
        calibration_texts: list[str],
        log: Callable[[str], None],
    ) -> QuantizeResult: ...

    def build(
        self,
        quantized: QuantizeResult,
        knobs: BuildKnobs,
        bundle_dir: Path,
        *,
        slug: str,
        checkpoint: dict[str, Any],
        target: dict[str, Any],
    ) -> BuildResult: ...

    accuracy_mode: AccuracyMode
    layout: Layout | None
    """Where TensorRT-LLM's and Triton's files were found on this host (None: the stack uses none)."""

    def write_model_repository(self, build: BuildResult, repo_dir: Path) -> Path: ...

    def tokenizer_dir(self, build: BuildResult) -> Path:
        """The tokenizer the load generator counts tokens with."""
        ...

    def host_mismatches(self, manifest: Manifest) -> list[str]:
        """Why this host must not serve the bundle of `manifest` (runtime versions, CPU
        architecture or GPU SM other than those it was built with); empty when it may."""
        ...

    def required(self, configs: Sequence[TrialConfig], *, accuracy: bool = False) -> list[Required]:
        """Every file and program of this host the trials `configs` will use (with `accuracy`:
        the accuracy run's too), for the preflight that fails before any work
        (`engines.trtllm.layout.check_required`)."""
        ...

    def bundle_settings(self) -> dict[str, Any]:
        """The spec's settings a stack writes into its bundles (part of a bundle's store key);
        empty when it writes none."""
        ...

    def accuracy_command(
        self, model_dir: Path, cfg: TrialConfig, accuracy: Accuracy, *, include_path: Path, output_path: Path
    ) -> Command:
        """The lm-eval command scoring `model_dir` on the spec's tasks (`accuracy_mode`
        "command" only; the other stacks raise NotImplementedError)."""
        ...

    def server(self, repo_dir: Path, workdir: Path) -> AbstractContextManager[Server]:
        """A context manager that starts a health-checked server and always stops it."""
        ...


def get_stack(name: str, spec: Any = None) -> Stack:
    """The stack called `name`, imported on first use, configured from `spec` (a SweepSpec:
    build settings, execution.trtllm_root) where the stack takes settings."""
    if name in _PLANNED:
        raise StackUnavailable(_PLANNED[name])
    if name not in _REGISTRY:
        raise StackUnavailable(f"unknown stack '{name}' (known: {', '.join([*_REGISTRY, *_PLANNED])})")
    module_name, _, class_name = _REGISTRY[name].partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, class_name)(spec=spec)
    except ImportError as exc:
        raise StackUnavailable(f"the {name} stack cannot run here ({exc}); {_NEEDS[name]}") from exc
    except RuntimeError as exc:  # e.g. an unsupported TensorRT-LLM version
        raise StackUnavailable(f"the {name} stack cannot run here: {exc}") from exc


def preflight_stack(stack: Stack, configs: Sequence[TrialConfig], *, accuracy: bool) -> None:
    """Raise LayoutError (every missing file or program, the layouts probed, the fix) before a
    trial of `stack` does any work on this host; nothing when all it will use is there."""
    check_required(stack.required(configs, accuracy=accuracy), stack.name, stack.layout)
