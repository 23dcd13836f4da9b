"""Sweep expansion: order, deterministic unique slugs, rejected trials kept."""

from __future__ import annotations

import pytest

from enginesweep.build_configs.loading import load_spec
from enginesweep.evaluation.planning import expand

pytestmark = pytest.mark.unit


def test_trials_follow_axis_order_quant_outermost(spec_file):
    plan = expand(load_spec(spec_file()))
    assert [t.slug for t in plan.trials] == [
        "llama-3.1-8b-instruct__bf16__kv-auto__tp1",
        "llama-3.1-8b-instruct__bf16__kv-auto__tp2",
        "llama-3.1-8b-instruct__fp8__kv-auto__tp1",
        "llama-3.1-8b-instruct__fp8__kv-auto__tp2",
    ]


def test_slugs_are_deterministic_and_unique_with_swept_knobs(spec_file):
    def edit(spec):
        spec["axes"].update(pp=[1, 2], max_batch_size=[64, 256], max_seq_len=[2048, 4096])
        spec["target"]["gpus_available"] = 4

    first = expand(load_spec(spec_file(edit)))
    second = expand(load_spec(spec_file(edit)))
    slugs = [t.slug for t in first.trials]
    assert slugs == [t.slug for t in second.trials]
    assert len(set(slugs)) == len(slugs) == 2 * 2 * 2 * 2 * 2
    assert "llama-3.1-8b-instruct__fp8__kv-auto__tp2__pp2__bs256__sl4096" in slugs


def test_model_name_overrides_the_slug_prefix(spec_file):
    plan = expand(load_spec(spec_file(lambda s: s["model"].update(name="l8b"))))
    assert plan.trials[0].slug == "l8b__bf16__kv-auto__tp1"


def test_infeasible_combinations_are_kept_with_reasons(spec_file):
    def edit(spec):
        spec["axes"].update(tp=[1, 2], pp=[1, 2])
        spec["target"]["gpus_available"] = 2

    plan = expand(load_spec(spec_file(edit)))
    rejected = {t.slug: t.reasons for t in plan.rejected}
    assert rejected == {
        "llama-3.1-8b-instruct__bf16__kv-auto__tp2__pp2": [
            "tp=2 x pp=2 = 4 GPUs exceeds target.gpus_available=2"
        ],
        "llama-3.1-8b-instruct__fp8__kv-auto__tp2__pp2": [
            "tp=2 x pp=2 = 4 GPUs exceeds target.gpus_available=2"
        ],
    }
    assert len(plan.feasible) == 6


def test_price_override_changes_cost_only(spec_file):
    base = expand(load_spec(spec_file()))
    cheap = expand(load_spec(spec_file(), ["target.usd_per_gpu_hour=1.5"]))
    for a, b in zip(base.trials, cheap.trials):
        assert b.predicted.output_tok_s == a.predicted.output_tok_s
        assert b.predicted.usd_per_1m_output_tokens == pytest.approx(a.predicted.usd_per_1m_output_tokens / 2)


def test_exclude_removes_matching_points_only(spec_file):
    def edit(spec):
        spec["axes"].update(
            kv_cache=["auto", "fp8"],
            exclude=[{"quant": "fp8", "kv_cache": "auto"}, {"tp": 2, "kv_cache": "fp8"}],
        )

    slugs = [t.slug for t in expand(load_spec(spec_file(edit))).trials]
    assert slugs == [
        "llama-3.1-8b-instruct__bf16__kv-auto__tp1",
        "llama-3.1-8b-instruct__bf16__kv-auto__tp2",
        "llama-3.1-8b-instruct__bf16__kv-fp8__tp1",
        "llama-3.1-8b-instruct__fp8__kv-fp8__tp1",
    ]
