"""Stand-in trees of the three TensorRT-LLM layouts a GPU host may have, built from the images'
documented file lists (docs/research/gpu-hosts-containers.md; engines/trtllm/layout.py), with
the stand-in tools of fixtures/trtllm_standins (NOT NVIDIA's code) in the files' places:

- `tritonserver`: `<root>/{examples,all_models,tools,scripts}` (tritonserver:<YY.MM>-trtllm-python-py3)
- `checkout`: `<root>/examples` + `<root>/triton_backend/{all_models,tools,scripts}`
- `release`: `<root>/examples` only (tensorrt-llm/release: no Triton)

Triton itself (a stand-in `tritonserver` binary and its backends' folders) lives apart, where
the images put it relative to the binary (`<triton>/bin`, `<triton>/backends/<name>`), and is
only there for the layouts that have Triton. `bin/` holds `trtllm-build`, `trtllm-serve` and an
H100 `nvidia-smi`; `environment()` puts it first on PATH."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

FIXTURES = Path(__file__).parents[1] / "fixtures"
STANDINS = FIXTURES / "trtllm_standins"
ENGINE_MODELS = ("preprocessing", "tensorrt_llm", "postprocessing", "ensemble", "tensorrt_llm_bls")
SHAPES = {
    # name: (examples, triton models, tools, scripts) below the root; None: not in this layout
    "tritonserver": ("examples", "all_models", "tools", "scripts"),
    "checkout": ("examples", "triton_backend/all_models", "triton_backend/tools", "triton_backend/scripts"),
    "release": ("examples", None, None, None),
}


@dataclass(frozen=True)
class StandinLayout:
    """One built tree and where its parts are."""

    shape: str
    root: Path
    bin_dir: Path
    tritonserver: Path | None

    def file(self, part: str, relative: str) -> Path:
        """The path of `relative` below the layout's `part` (examples, models, tools, scripts)."""
        index = ("examples", "models", "tools", "scripts").index(part)
        folder = SHAPES[self.shape][index]
        if folder is None:
            raise KeyError(f"the {self.shape} layout has no {part}")
        return self.root / folder / relative

    def apply(self, monkeypatch) -> None:
        """This process's environment set as `environment()` (undone by `monkeypatch`)."""
        for name, value in self.environment().items():
            if os.environ.get(name) != value:
                monkeypatch.setenv(name, value)
        for name in ("STANDIN_FAIL", "TRTLLM_ROOT"):
            monkeypatch.delenv(name, raising=False)

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """`base` (default os.environ) with bin/ first on PATH and the stand-ins' fixtures named."""
        env = dict(os.environ if base is None else base)
        # The stand-ins run as `python3 tool.py`: this environment's python3 (it has `datasets`),
        # and its console scripts (aiperf, enginesweep, lm-eval) come with it.
        env["PATH"] = os.pathsep.join(
            [str(self.bin_dir), str(Path(sys.executable).parent), env.get("PATH", "")]
        )
        env["STANDIN_FIXTURES"] = str(FIXTURES / "trtllm")
        env.pop("STANDIN_FAIL", None)
        env.pop("TRTLLM_ROOT", None)
        return env


def _executable(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def build_layout(base: Path, shape: str) -> StandinLayout:
    """The `shape` layout under `base` (its root is `base/<shape>`), with the stand-in tools."""
    examples, models, tools, scripts = SHAPES[shape]
    root = base / shape
    for target in ("quantization/quantize.py", "models/core/llama/convert_checkpoint.py"):
        (root / examples / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(STANDINS / "checkpoint_tool.py", root / examples / target)
    tritonserver = None
    if models is not None:
        shutil.copytree(FIXTURES / "triton_templates", root / models / "inflight_batcher_llm")
        shutil.copytree(STANDINS / "llmapi", root / models / "llmapi")
        (root / tools).mkdir(parents=True)
        shutil.copy(STANDINS / "fill_template.py", root / tools / "fill_template.py")
        (root / scripts).mkdir(parents=True)
        shutil.copy(STANDINS / "launch_triton_server.py", root / scripts / "launch_triton_server.py")
        triton = base / f"{shape}-tritonserver"
        tritonserver = _executable(
            triton / "bin" / "tritonserver", f'exec python3 {STANDINS / "fake_triton.py"} "$@"'
        )
        for backend in ("tensorrtllm", "python"):
            (triton / "backends" / backend).mkdir(parents=True)
    bin_dir = base / f"{shape}-bin"
    _executable(bin_dir / "trtllm-build", f'exec python3 {STANDINS / "trtllm_build.py"} "$@"')
    _executable(bin_dir / "trtllm-serve", f'exec python3 {STANDINS / "trtllm_serve.py"} "$@"')
    # An H100 as nvidia-smi lists it for each query the project makes.
    _executable(
        bin_dir / "nvidia-smi",
        """case "$*" in
    *memory.free*) echo '0, NVIDIA H100 80GB HBM3, 9.0, 80871, 81559' ;;
    *name,compute_cap*) echo 'NVIDIA H100 80GB HBM3, 9.0' ;;
    *query-gpu=name*) echo 'NVIDIA H100 80GB HBM3' ;;
    -L*) echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-0000-0000-0000-000000000000)' ;;
    *) echo "stand-in nvidia-smi: no answer for: $*" >&2; exit 2 ;;
esac""",
    )
    if tritonserver is not None:  # on PATH, as in the image (/opt/tritonserver/bin)
        os.symlink(tritonserver, bin_dir / "tritonserver")
    return StandinLayout(shape, root, bin_dir, tritonserver)
