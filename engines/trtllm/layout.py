"""Where TensorRT-LLM's example scripts and Triton's model templates are on a GPU host.

NVIDIA's images lay the same files out differently (docs/research/gpu-hosts-containers.md):

| layout | root | examples | Triton models, fill_template.py, launch_triton_server.py |
|---|---|---|---|
| tritonserver image (`tritonserver:<YY.MM>-trtllm-python-py3`) | `/app` | `examples/` | `all_models/`, `tools/`, `scripts/` |
| source checkout (`git clone --branch v<version>`) | the checkout | `examples/` | `triton_backend/{all_models,tools,scripts}/` |
| release image (`tensorrt-llm/release:1.2.x`) | `/app/tensorrt_llm` | `examples/` | none: no Triton in the image |

`resolve_layout` probes, in this order, and takes the first root that holds a layout:
`execution.trtllm_root`, `$TRTLLM_ROOT`, `/app`, `/app/tensorrt_llm`, and the source checkout the
installed `tensorrt_llm` package was installed from (an editable install). Each path of
`execution.trtllm_paths` then wins over the layout's, file by file. `missing` lists what a trial
would use but is not there, and `LayoutError` says which file, which layouts were tried and how
to get the files, before any work starts. Emitted scripts probe in the same order
(`layout_shell`). Nothing here imports `tensorrt_llm` (it asks `importlib` where it is).
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from enginesweep.build_configs.schema import TrtllmPaths

TRITONSERVER_DEFAULT = "/opt/tritonserver/bin/tritonserver"
"""Where NVIDIA's Triton images keep the server (launch_triton_server.py's `--tritonserver` default)."""


@dataclass(frozen=True)
class Shape:
    """How one kind of installation lays the files out below its root."""

    name: str
    marker: str
    """A folder below the root that only this shape has (how a root is recognised)."""
    examples: str
    triton_models: str | None
    tools: str | None
    scripts: str | None


SOURCE_CHECKOUT = Shape(  # a NVIDIA/TensorRT-LLM checkout at the installed version's tag
    "source checkout",
    marker="triton_backend",
    examples="examples",
    triton_models="triton_backend/all_models",
    tools="triton_backend/tools",
    scripts="triton_backend/scripts",
)
TRITONSERVER_IMAGE = Shape(  # nvcr.io/nvidia/tritonserver:<YY.MM>-trtllm-python-py3
    "tritonserver image",
    marker="all_models",
    examples="examples",
    triton_models="all_models",
    tools="tools",
    scripts="scripts",
)
RELEASE_IMAGE = Shape(  # nvcr.io/nvidia/tensorrt-llm/release:<version>: no Triton
    "release image", marker="examples", examples="examples", triton_models=None, tools=None, scripts=None
)
SHAPES = (SOURCE_CHECKOUT, TRITONSERVER_IMAGE, RELEASE_IMAGE)
"""Tried in this order on a root: the most specific marker first (a checkout also has examples/)."""

DEFAULT_ROOTS = ("/app", "/app/tensorrt_llm")
"""The images' roots: the tritonserver image's, then the release image's."""


class LayoutError(RuntimeError):
    """Files a trial needs are not where any known layout puts them (the message says which,
    what was tried and how to get them)."""


@dataclass(frozen=True)
class Required:
    """One file or program a trial will use."""

    what: str
    path: str
    program: bool = False
    """A program found on PATH (or a path to an executable) rather than a file."""


@dataclass(frozen=True)
class ToolPaths:
    """The paths of TensorRT-LLM's tools one trial's commands use (PurePosixPath: they may be
    shell variables in emitted scripts)."""

    examples: PurePosixPath
    triton_models: PurePosixPath | None
    fill_template: PurePosixPath | None
    launch_triton_server: PurePosixPath | None
    tritonserver: PurePosixPath | None
    triton_backends: PurePosixPath | None = None
    """Triton's backends folder (`<install>/backends`, beside `<install>/bin/tritonserver`)."""

    @property
    def quantize_py(self) -> PurePosixPath:
        return self.examples / "quantization/quantize.py"

    @property
    def convert_checkpoint_py(self) -> PurePosixPath:
        return self.examples / "models/core/llama/convert_checkpoint.py"

    @property
    def engine_templates(self) -> PurePosixPath:
        """The `inflight_batcher_llm` model templates (preprocessing, tensorrt_llm, ...)."""
        return self._triton("triton_models") / "inflight_batcher_llm"

    @property
    def llmapi_model(self) -> PurePosixPath:
        """Triton's `llmapi` model folder (the PyTorch backend behind Triton)."""
        return self._triton("triton_models") / "llmapi"

    def _triton(self, field: str) -> PurePosixPath:
        value = getattr(self, field)
        if value is None:
            raise LayoutError(
                f"this layout has no Triton files ({field}): it is the release image "
                "(no Triton), so serve with trtllm-serve (execution.engine_server / "
                "execution.pytorch_server: trtllm-serve) or use the tritonserver image"
            )
        return value


@dataclass(frozen=True)
class Layout:
    """The layout found on this machine, and how it was found."""

    shape: Shape | None
    root: Path | None
    source: str
    """Why this root: `execution.trtllm_root`, `$TRTLLM_ROOT`, `default`, `tensorrt_llm package`."""
    tried: tuple[str, ...]
    """One line per root probed, with what it lacked."""
    tools: ToolPaths | None
    """None when no layout was found and no override names the examples."""

    def require_tools(self, what: str) -> ToolPaths:
        """The layout's tool paths; LayoutError naming `what` needed them, the roots probed and
        the fix when no layout was found."""
        if self.tools is None:
            raise LayoutError(
                f"{what}: no TensorRT-LLM layout found (probed: "
                f"{' | '.join(self.tried) or 'nothing'}); "
                f"{checkout_fix(tensorrt_llm_version())}"
            )
        return self.tools

    def describe(self) -> str:
        if self.shape is None or self.root is None:
            return "no known layout found"
        return f"{self.shape.name} at {self.root} (from {self.source})"


def _shape_of(root: Path) -> Shape | None:
    for shape in SHAPES:
        if (root / shape.marker).is_dir():
            return shape
    return None


def _installed_checkout() -> Path | None:
    """The source tree an editable `tensorrt_llm` was installed from (its parent folder holds
    `examples/`), else None; found without importing the package."""
    try:
        spec = importlib.util.find_spec("tensorrt_llm")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    root = Path(spec.origin).resolve().parent.parent
    return root if (root / "examples").is_dir() else None


def candidate_roots(configured: str | None) -> list[tuple[str, Path]]:
    """The roots to probe, in order, each with where it came from."""
    found: list[tuple[str, Path]] = []
    if configured:
        found.append(("execution.trtllm_root", Path(configured)))
    if os.environ.get("TRTLLM_ROOT"):
        found.append(("$TRTLLM_ROOT", Path(os.environ["TRTLLM_ROOT"])))
    found += [("default", Path(root)) for root in DEFAULT_ROOTS]
    checkout = _installed_checkout()
    if checkout is not None:
        found.append(("tensorrt_llm package", checkout))
    return found


def which_tritonserver() -> str:
    """The tritonserver binary: on PATH (links followed: its backends lie beside the real
    file), else where NVIDIA's images keep it."""
    found = shutil.which("tritonserver")
    return str(Path(found).resolve()) if found else TRITONSERVER_DEFAULT


def backends_beside(tritonserver: PurePosixPath) -> PurePosixPath:
    """`<install>/backends` for `<install>/bin/tritonserver`, where NVIDIA's images install them."""
    return tritonserver.parent.parent / "backends"


def resolve_layout(configured_root: str | None = None, overrides: TrtllmPaths | None = None) -> Layout:
    """The first root (`candidate_roots` order) holding a known layout, with `overrides` applied
    file by file. An explicitly configured root that holds no layout stops the probe: the user
    named it, so falling back to another tree would run other files than they meant."""
    overrides = overrides or TrtllmPaths()
    tried: list[str] = []
    chosen: tuple[Shape, Path, str] | None = None
    for source, root in candidate_roots(configured_root):
        shape = _shape_of(root)
        if shape is not None:
            chosen = (shape, root, source)
            tried.append(f"{root} ({source}): {shape.name}")
            break
        tried.append(
            f"{root} ({source}): "
            + ("no such folder" if not root.is_dir() else "no examples/ with all_models/ or triton_backend/")
        )
        if source == "execution.trtllm_root":
            break
    tools = None
    if chosen is not None:
        shape, root, _ = chosen
        tools = ToolPaths(
            examples=PurePosixPath(root / shape.examples),
            triton_models=PurePosixPath(root / shape.triton_models) if shape.triton_models else None,
            fill_template=PurePosixPath(root / shape.tools / "fill_template.py") if shape.tools else None,
            launch_triton_server=(
                PurePosixPath(root / shape.scripts / "launch_triton_server.py") if shape.scripts else None
            ),
            tritonserver=PurePosixPath(which_tritonserver()),
        )
    tools = _overridden(tools, overrides)
    if tools is not None and tools.tritonserver is not None:
        tools = replace(tools, triton_backends=backends_beside(tools.tritonserver))
    if chosen is None:
        return Layout(None, None, "nowhere", tuple(tried), tools)
    return Layout(chosen[0], chosen[1], chosen[2], tuple(tried), tools)


def _overridden(tools: ToolPaths | None, overrides: TrtllmPaths) -> ToolPaths | None:
    given = {
        field: PurePosixPath(value) for field, value in overrides.model_dump().items() if value is not None
    }
    if tools is None:
        if "examples" not in given:
            return None
        tools = ToolPaths(
            examples=given["examples"],
            triton_models=None,
            fill_template=None,
            launch_triton_server=None,
            tritonserver=PurePosixPath(which_tritonserver()),
        )
    return replace(tools, **given)


def tensorrt_llm_version() -> str | None:
    """The installed `tensorrt_llm` distribution's version (read from its metadata, not by
    importing it, which needs a GPU), or None."""
    from importlib.metadata import PackageNotFoundError, version

    for name in ("tensorrt_llm", "tensorrt-llm"):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


def checkout_fix(version: str | None) -> str:
    """The command that gets every file of a source checkout at the installed version."""
    tag = f"v{version}" if version else "v<installed tensorrt_llm version>"
    return (
        f"git clone --depth 1 --branch {tag} https://github.com/NVIDIA/TensorRT-LLM "
        "/opt/TensorRT-LLM && set execution.trtllm_root: /opt/TensorRT-LLM (or "
        "TRTLLM_ROOT=/opt/TensorRT-LLM), or point execution.trtllm_paths at the files"
    )


def is_missing(item: Required) -> bool:
    """True when `item` is not on this machine (a program: neither on PATH nor a path)."""
    if item.program:
        return shutil.which(item.path) is None and not (
            os.path.isfile(item.path) and os.access(item.path, os.X_OK)
        )
    return not os.path.exists(item.path)


def missing(required: Iterable[Required]) -> list[Required]:
    """What of `required` this machine lacks, each once, in order."""
    seen: set[str] = set()
    out = []
    for item in required:
        if item.path not in seen and is_missing(item):
            out.append(item)
        seen.add(item.path)
    return out


def check_required(required: Sequence[Required], stack: str, layout: Layout | None) -> None:
    """Raise LayoutError naming every missing file or program, the layouts tried and the fix;
    nothing when all are there."""
    lacking = missing(required)
    if not lacking:
        return
    names = "; ".join(f"{item.what} ({item.path})" for item in lacking)
    programs = [item for item in lacking if item.program]
    fixes = []
    if len(programs) < len(lacking):
        fixes.append(checkout_fix(tensorrt_llm_version()))
    if programs:
        fixes.append(
            "run inside NVIDIA's image for this stack (README, 'On a GPU machine'), "
            "where " + ", ".join(item.path for item in programs) + " is on PATH"
        )
    where = (
        f" Layout: {layout.describe()}; probed: {' | '.join(layout.tried) or 'nothing'}."
        if layout is not None
        else ""
    )
    raise LayoutError(
        f"the {stack} stack cannot run here: missing {names}.{where} Fix: {'; or '.join(fixes)}"
        " (`enginesweep doctor --stack " + stack + "` lists every check)."
    )


SCRIPT_TOOLS = ToolPaths(
    examples=PurePosixPath("$TRTLLM_EXAMPLES"),
    triton_models=PurePosixPath("$TRITON_MODELS"),
    fill_template=PurePosixPath("$FILL_TEMPLATE"),
    launch_triton_server=PurePosixPath("$LAUNCH_TRITON_SERVER"),
    tritonserver=PurePosixPath("$TRITONSERVER"),
    triton_backends=PurePosixPath("$TRITON_BACKENDS"),
)
"""The tool paths of emitted scripts: shell variables that `layout_shell` sets."""

_SCRIPT_VARIABLES = (
    ("TRTLLM_EXAMPLES", "examples", ""),
    ("TRITON_MODELS", "triton_models", ""),
    ("FILL_TEMPLATE", "tools", "/fill_template.py"),
    ("LAUNCH_TRITON_SERVER", "scripts", "/launch_triton_server.py"),
)


def layout_shell(configured_root: str | None, overrides: TrtllmPaths | None = None) -> str:
    """Shell for an emitted script that finds the layout as `resolve_layout` does (same roots,
    same order, same shapes), sets TRTLLM_EXAMPLES, TRITON_MODELS, FILL_TEMPLATE,
    LAUNCH_TRITON_SERVER and TRITONSERVER (each one already set in the environment, or given
    in the spec's execution.trtllm_paths, wins), and defines `require WHAT PATH` and
    `require_program WHAT NAME`, which stop the script before any work when a file is missing,
    naming it, the layout, the roots probed and the fix."""
    overrides = overrides or TrtllmPaths()
    given = {
        "TRTLLM_EXAMPLES": overrides.examples,
        "TRITON_MODELS": overrides.triton_models,
        "FILL_TEMPLATE": overrides.fill_template,
        "LAUNCH_TRITON_SERVER": overrides.launch_triton_server,
        "TRITONSERVER": overrides.tritonserver,
    }
    defaults = "\n".join(
        f': "${{{name}:={shlex.quote(value)}}}"' for name, value in given.items() if value is not None
    )
    branches = []
    for i, shape in enumerate(SHAPES):
        sets = []
        for variable, part, tail in _SCRIPT_VARIABLES:
            folder = getattr(shape, part)
            if folder is not None:
                sets.append(f'        : "${{{variable}:=$root/{folder}{tail}}}"')
        keyword = "if" if i == 0 else "elif"
        branches.append(
            f'    {keyword} [ -d "$root/{shape.marker}" ]; then\n'
            f'        LAYOUT="{shape.name} at $root"\n' + "\n".join(sets)
        )
    # A root the spec names is the only one probed (as in `resolve_layout`): the user meant it.
    roots = (
        shlex.quote(configured_root)
        if configured_root
        else '"${TRTLLM_ROOT:-}" '
        + " ".join(f'"{root}"' for root in DEFAULT_ROOTS)
        + ' "$TRTLLM_PACKAGE_ROOT"'
    )
    return f"""# Where TensorRT-LLM's files are in this container, probed as the stacks probe them
# (engines/trtllm/layout.py): execution.trtllm_root, $TRTLLM_ROOT, {", ".join(DEFAULT_ROOTS)}, then the
# checkout the installed tensorrt_llm package came from; the first root holding a known layout
# wins, and TRTLLM_EXAMPLES, TRITON_MODELS, FILL_TEMPLATE, LAUNCH_TRITON_SERVER and TRITONSERVER
# set in the environment win over it.
{defaults + chr(10) if defaults else ""}LAYOUT="no known layout"
LAYOUT_TRIED=""
TRTLLM_PACKAGE_ROOT=$(python3 -c 'import importlib.util, pathlib
spec = importlib.util.find_spec("tensorrt_llm")
print(pathlib.Path(spec.origin).resolve().parent.parent if spec and spec.origin else "")' 2>/dev/null || true)
for root in {roots}; do
    [ -n "$root" ] || continue
{chr(10).join(branches)}
    fi
    if [ "$LAYOUT" != "no known layout" ]; then break; fi
    LAYOUT_TRIED="$LAYOUT_TRIED $root"
done
: "${{TRITONSERVER:=$(command -v tritonserver || echo {TRITONSERVER_DEFAULT})}}"
# Triton's backends lie beside the real binary (<install>/bin/tritonserver -> <install>/backends).
: "${{TRITON_BACKENDS:=$(dirname "$(dirname "$(readlink -f "$TRITONSERVER" || echo "$TRITONSERVER")")")/backends}}"
TRTLLM_VERSION=$(python3 -c 'import importlib.metadata as m; print(m.version("tensorrt_llm"))' 2>/dev/null || echo "<installed version>")
export TRTLLM_EXAMPLES TRITON_MODELS FILL_TEMPLATE LAUNCH_TRITON_SERVER TRITONSERVER TRITON_BACKENDS
require() {{  # require WHAT PATH: stop before any work unless PATH exists
    if [ ! -e "$2" ]; then
        echo "missing $1 ($2). Layout: $LAYOUT (probed:${{LAYOUT_TRIED:- nothing else}}). Fix: git clone --depth 1 --branch v$TRTLLM_VERSION https://github.com/NVIDIA/TensorRT-LLM /opt/TensorRT-LLM and run again with TRTLLM_ROOT=/opt/TensorRT-LLM, or set the variable that names it (TRTLLM_EXAMPLES, TRITON_MODELS, FILL_TEMPLATE, LAUNCH_TRITON_SERVER, TRITONSERVER)" >&2
        exit 2
    fi
}}
require_program() {{  # require_program WHAT NAME: stop before any work unless NAME runs here
    if ! command -v "$2" >/dev/null; then
        echo "missing $1 ($2 is not on PATH): run this script inside NVIDIA's image for this stack (see README.md)" >&2
        exit 2
    fi
}}"""
