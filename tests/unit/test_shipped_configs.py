"""Every shipped config documents itself, validates and plans."""

from __future__ import annotations

import itertools

import pytest

from enginesweep.build_configs.loading import load_spec, shipped_configs
from enginesweep.build_configs.schema import AXIS_NAMES
from enginesweep.evaluation.planning import expand

pytestmark = pytest.mark.unit

NAMES = sorted(shipped_configs())


def test_the_promised_configs_ship():
    assert {
        "smollm2-cpu-smoke",
        "llama-3.1-8b-h100",
        "llama-3.3-70b-h100",
        "llama-3.3-70b-h200",
        "example-annotated",
    } <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_config_opens_with_purpose_and_command(name):
    lines = shipped_configs()[name].read_text().splitlines()
    assert lines[0].startswith("# ") and len(lines[0]) > 20
    header = [line for line in lines if line.startswith("#")][:4]
    assert any(f"enginesweep plan {name}" in line for line in header), header


@pytest.mark.parametrize("name", NAMES)
def test_config_loads_and_plans(name):
    resolved = load_spec(name)
    plan = expand(resolved)
    axes = resolved.spec.axes
    values = [[getattr(v, "value", v) for v in getattr(axes, name)] for name in AXIS_NAMES]
    points = [dict(zip(AXIS_NAMES, point, strict=True)) for point in itertools.product(*values)]
    kept = sum(axes.excluded_by(point) is None for point in points)
    assert len(plan.trials) == kept * len(resolved.gpus) * len(resolved.spec.stack)
    assert plan.feasible, f"{name}: no feasible trial"
    for trial in plan.feasible:
        assert trial.predicted is not None and trial.predicted.output_tok_s > 0
        assert trial.memory.kv_capacity_tokens >= resolved.spec.workload.sequence_tokens
    for trial in plan.rejected:
        assert trial.reasons and trial.predicted is None


def test_validate_passes_every_shipped_config(cli):
    result = cli("validate", *NAMES)
    assert result.exit_code == 0, result.output
    assert result.stdout.count("ok: ") == len(NAMES)


def test_70b_h100_plan_rejects_bf16_on_one_gpu_only():
    plan = expand(load_spec("llama-3.3-70b-h100"))
    rejected = {trial.slug for trial in plan.rejected}
    assert rejected == {
        "llama-3.3-70b-instruct__bf16__kv-auto__tp1",
        "llama-3.3-70b-instruct__bf16__kv-fp8__tp1",
    }
