"""Can this host serve a bundle? A bundle names the runtime versions that built it and the
hardware it was built for (its manifest); serving it under other versions, or a TensorRT engine
on a GPU of another SM, fails late and obscurely (or, worse, runs with other numerics). Each
stack lists what differs with these helpers, and a trial refuses to serve before it starts."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping


class BundleMismatch(RuntimeError):
    """A bundle this host must not serve (the message lists why and what to do)."""


def version_mismatches(recorded: Mapping[str, str], installed: Mapping[str, str | None]) -> list[str]:
    """One line per package whose version at build time differs from this host's (packages the
    bundle did not record are not compared)."""
    problems = []
    for name, built_with in sorted(recorded.items()):
        if name in installed and installed[name] != built_with:
            problems.append(
                f"built with {name} {built_with}, this host has {installed[name] or 'no ' + name}"
            )
    return problems


def host_gpu() -> str | None:
    """`name, compute_cap` of the first GPU as nvidia-smi prints it; None without one."""
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else None


def sm_of(line: str | None) -> int | None:
    """The SM in nvidia-smi's `name, compute_cap` line (9.0 -> 90); None if there is none."""
    try:
        return round(float(line.rsplit(",", 1)[-1]) * 10) if line else None
    except ValueError:
        return None


def host_gpu_sm() -> int | None:
    """The first GPU's SM (compute capability 9.0 -> 90); None without a GPU."""
    return sm_of(host_gpu())


def refuse_mismatch(bundle: str, problems: list[str]) -> None:
    """Raise BundleMismatch naming every problem and the two ways out."""
    if problems:
        raise BundleMismatch(
            f"refusing to serve {bundle}: "
            + "; ".join(problems)
            + ". Rebuild it on this host (`enginesweep run SPEC --rerun`) or serve "
            "it where its runtime and GPU match."
        )
