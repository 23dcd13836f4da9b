"""Provenance labels: where a number came from, in the words the tags, tables and figures use.

A measured number says on what it was measured (`cpu` for the reference stack, a GPU catalog
name otherwise); a predicted one says by what (`predicted:roofline`, `predicted:aiconfigurator`,
`+calibrated` when measured-vs-predicted factors were applied). The MLflow tag `provenance`
holds the kind of measurement (`cpu-measured`, `gpu-measured`), so runs can be filtered by it;
figures and tables carry the longer label.
"""

from __future__ import annotations

from enginesweep.build_configs.gpus import gpu_catalog


def measured_kind(hardware: str) -> str:
    """`cpu` or `gpu` for a catalog entry; `unknown` for a name the catalog does not hold."""
    entry = gpu_catalog().get(hardware)
    if entry is None:
        return "unknown"
    return "cpu" if entry.is_cpu else "gpu"


def provenance_tag(hardware: str) -> str:
    """The `provenance` tag of a trial's run: `cpu-measured`, `gpu-measured`, or `measured` for
    hardware the catalog does not name (the `hardware` tag says what it was)."""
    kind = measured_kind(hardware)
    return "measured" if kind == "unknown" else f"{kind}-measured"


def measured_label(hardware: str) -> str:
    """`measured on cpu (CPU reference stack: not GPU figures)`, `measured on H100-SXM-80GB (GPU)`."""
    kind = measured_kind(hardware)
    if kind == "cpu":
        return f"measured on {hardware} (CPU reference stack: not GPU figures)"
    if kind == "gpu":
        return f"measured on {hardware} (GPU)"
    return f"measured on {hardware}"


def predicted_label(sources: set[str] | list[str]) -> str:
    """The prediction sources of a figure or table, e.g. `predicted:roofline`, or several joined;
    `predicted (no source recorded)` when none is known."""
    names = sorted(set(sources))
    return ", ".join(names) if names else "predicted (no source recorded)"
