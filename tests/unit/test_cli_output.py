"""The CLI's stable JSON schema, tables, listings and overrides."""

from __future__ import annotations

import json

import pytest

from enginesweep.build_configs.gpus import gpu_catalog

pytestmark = pytest.mark.unit

SIZE = [
    "size",
    "--model",
    "llama-3.1-8b",
    "--gpu",
    "H100-SXM-80GB",
    "--quant",
    "fp8",
    "--kv-cache",
    "fp8",
    "--tp",
    "1",
    "--pp",
    "1",
    "--isl",
    "1024",
    "--osl",
    "256",
    "--json",
]

DOCUMENTED_TRIAL_KEYS = {
    "slug",
    "feasible",
    "reasons",
    "memory.weights_bytes_per_gpu",
    "memory.kv_bytes_per_token",
    "memory.kv_capacity_tokens",
    "memory.max_concurrent_sequences",
    "predicted.source",
    "predicted.output_tok_s",
    "predicted.ttft_ms",
    "predicted.itl_ms",
    "predicted.usd_per_1m_output_tokens",
}


def _get(obj: dict, dotted: str):
    for part in dotted.split("."):
        obj = obj[part]
    return obj


def test_size_json_is_one_trial_with_the_documented_fields(cli):
    result = cli(*SIZE)
    assert result.exit_code == 0, result.output
    trial = json.loads(result.stdout)
    for key in DOCUMENTED_TRIAL_KEYS:
        _get(trial, key)
    assert trial["slug"] == "llama-3.1-8b__fp8__kv-fp8__tp1"
    assert trial["feasible"] is True and trial["reasons"] == []
    assert trial["memory"]["kv_bytes_per_token"] == 65_536
    assert trial["predicted"]["source"] == "predicted:roofline"
    assert trial["predicted"]["hardware"] == "H100-SXM-80GB"


def test_size_json_for_a_rejected_trial_has_reasons_and_no_prediction(cli):
    result = cli("size", "--model", "llama-3.3-70b", "--gpu", "H100-SXM-80GB", "--quant", "bf16", "--json")
    assert result.exit_code == 0
    trial = json.loads(result.stdout)
    assert trial["feasible"] is False
    assert trial["reasons"][0].startswith("memory: weights 141.1 GB")
    assert trial["predicted"] is None


def test_size_reads_a_config_json(cli, tmp_path):
    from pathlib import Path

    fixture = Path(__file__).parent.parent / "fixtures" / "smollm2-transformers5-config.json"
    result = cli("size", "--model", fixture, "--gpu", "cpu", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["memory"]["kv_bytes_per_token"] == 2 * 30 * 3 * 64 * 2


def test_size_table_labels_predictions(cli):
    result = cli("size", "--model", "llama-3.1-8b", "--gpu", "L4", "--quant", "fp8")
    assert result.exit_code == 0
    assert "pred ITL" in result.stdout and "not a measurement" in result.stdout


def test_size_of_a_moe_model_splits_each_gpus_weights_into_attention_dense_and_experts(cli):
    """Mixtral-8x7B bf16 on two H100s: 46.7e9 params, of which 45.1e9 in experts, split by TP."""
    result = cli("size", "--model", "mixtral-8x7b", "--gpu", "H100-SXM-80GB", "--tp", "2")
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.replace("│", " ").split())  # the table's cells, in order
    assert "attention + dense per GPU 1.6 GB (2 bytes/weight" in text
    assert "experts per GPU 45.1 GB (2 bytes/weight)" in text
    memory = json.loads(
        cli("size", "--model", "mixtral-8x7b", "--gpu", "H100-SXM-80GB", "--tp", "2", "--json").stdout
    )["memory"]
    assert memory["dense_bytes_per_gpu"] + memory["expert_bytes_per_gpu"] == memory["weights_bytes_per_gpu"]
    assert memory["kv_bytes_per_token"] == 131_072


def test_plan_json_lists_rejected_trials_too(cli):
    result = cli("plan", "llama-3.3-70b-h100", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert len(plan["trials"]) == 24
    rejected = [t for t in plan["trials"] if not t["feasible"]]
    assert len(rejected) == 2 and all(t["reasons"] for t in rejected)
    for trial in plan["trials"]:
        for key in DOCUMENTED_TRIAL_KEYS - {k for k in DOCUMENTED_TRIAL_KEYS if k.startswith("predicted.")}:
            _get(trial, key)


def test_plan_override_changes_the_sweep(cli):
    result = cli(
        "plan", "llama-3.1-8b-h100", "--set", "axes.tp=[1]", "--set", "axes.kv_cache=[auto]", "--json"
    )
    assert result.exit_code == 0, result.output
    slugs = [t["slug"] for t in json.loads(result.stdout)["trials"]]
    assert slugs == [
        "llama-3.1-8b-instruct__bf16__kv-auto__tp1",
        "llama-3.1-8b-instruct__fp8__kv-auto__tp1",
        "llama-3.1-8b-instruct__int4_awq__kv-auto__tp1",
    ]


def test_plan_with_no_feasible_trial_exits_1(cli):
    result = cli(
        "plan",
        "llama-3.3-70b-h100",
        "--set",
        "axes.tp=[1]",
        "--set",
        "axes.quant=[bf16]",
        "--set",
        "axes.kv_cache=[auto]",
    )
    assert result.exit_code == 1
    assert "no feasible trial" in result.stderr
    assert "rejected: memory" in result.stdout


def test_plan_table_marks_predictions(cli):
    result = cli("plan", "smollm2-cpu-smoke")
    assert result.exit_code == 0
    assert "pred = predicted (src says by what), not measured" in result.stdout
    assert all("roofline" in line for line in result.stdout.splitlines() if "smollm2-135m" in line)
    assert "cpu target" in result.stdout


@pytest.mark.parametrize(
    ("what", "expected"),
    [
        ("configs", ["smollm2-cpu-smoke", "llama-3.1-8b-h100"]),
        ("gpus", list(gpu_catalog())),
        ("models", ["llama-3.1-405b", "smollm2-135m", "qwen2.5-72b"]),
    ],
)
def test_ls(cli, what, expected):
    result = cli("ls", what)
    assert result.exit_code == 0
    for name in expected:
        assert name in result.stdout
