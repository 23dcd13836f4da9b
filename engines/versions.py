"""The versions of the libraries that do a trial's work: every trial and store key holds them, so
an upgrade of any re-runs what it could change (a scheduled sweep calls them its runtime)."""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version

KEY_PACKAGES = (
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
QUANTIZE_PACKAGES = ("torch", "transformers", "nvidia-modelopt", "tensorrt_llm")
"""What a quantized checkpoint's bytes depend on."""
ACCURACY_PACKAGES = ("lm_eval", "tensorrt_llm", "transformers", "torch")
"""What a cached baseline accuracy depends on (the harness and the runtime)."""


@lru_cache(maxsize=1)  # asked several times per trial; installed versions do not change
def package_versions() -> dict[str, str | None]:
    """Installed version of each of KEY_PACKAGES (None when absent)."""
    found: dict[str, str | None] = {}
    for name in KEY_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def versions_of(names: tuple[str, ...]) -> dict[str, str | None]:
    """The subset of `package_versions` named by `names`, in KEY_PACKAGES order."""
    return {k: v for k, v in package_versions().items() if k in names}
