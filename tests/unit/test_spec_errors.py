"""Bad input through the CLI: each case checks the exit code and that the message names the field
(with its YAML path) and says what to do about it."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent.parent / "fixtures"


def _set(path: str, value):
    """An edit that sets `a.b.c` = value in the spec dict."""

    def edit(spec: dict) -> None:
        node = spec
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    return edit


def _drop(path: str):
    def edit(spec: dict) -> None:
        node = spec
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[part]
        del node[leaf]

    return edit


def _both(*edits):
    def edit(spec: dict) -> None:
        for one in edits:
            one(spec)

    return edit


# (case id, edit of BASE_SPEC, texts the error must contain)
CASES = [
    ("unknown-top-level-key", _set("sweeep", 1), ["sweeep: unknown key (allowed: name, description"]),
    ("unknown-nested-key", _set("sla.ttft_p95_ms", 300), ["sla.ttft_p95_ms: unknown key", "ttft_p99_ms"]),
    ("wrong-type", _set("axes.tp", ["two"]), ["axes.tp[0]: Input should be a valid integer"]),
    ("empty-axis", _set("axes.quant", []), ["axes.quant: List should have at least 1 item"]),
    ("unknown-quant", _set("axes.quant", ["bf16", "fp9"]), ["axes.quant[1]: Input should be 'bf16'"]),
    ("duplicate-axis-value", _set("axes.tp", [1, 1]), ["axes.tp: duplicate values [1]"]),
    (
        "tp-not-dividing-heads",
        _both(_set("axes.tp", [1, 3]), _set("target.gpus_available", 4)),
        [
            "axes.tp[1]: tp=3 does not split num_attention_heads=32 and num_key_value_heads=8 of "
            "Llama-3.1-8B: heads must divide by tp, KV heads divide by tp or tp by them "
            "(valid tp: [1, 2, 4, 8, 16, 32])"
        ],
    ),
    (
        "fp8-on-sm80",
        _set("target.gpu", "A100-SXM-80GB"),
        ["axes.quant[1]: fp8 needs SM89+; A100-SXM-80GB is SM80"],
    ),
    (
        "fp8-kv-on-sm80",
        _both(
            _set("target.gpu", "A100-SXM-80GB"),
            _set("axes.quant", ["bf16"]),
            _set("axes.kv_cache", ["auto", "fp8"]),
        ),
        ["axes.kv_cache[1]: kv_cache fp8 needs SM89+; A100-SXM-80GB is SM80"],
    ),
    (
        "awq-divisibility",
        _both(
            _set("model", {"path": str(FIXTURES / "llama-2-7b-config.json")}),
            _set("axes.quant", ["int4_awq"]),
            _set("axes.tp", [4]),
            _set("target.gpus_available", 4),
        ),
        [
            "axes.quant[0]: no tp in axes.tp works: int4_awq with tp=4 needs intermediate_size/tp=11008/4 "
            "divisible by build.awq_block_size=128"
        ],
    ),
    (
        "tp-times-pp-exceeds-gpus",
        _both(_set("axes.tp", [4]), _set("axes.pp", [2]), _set("target.gpus_available", 4)),
        ["axes.tp[0]: tp=4 x pp=2 = 8 GPUs exceeds target.gpus_available=4", "axes.pp[0]"],
    ),
    (
        "model-path-missing",
        _set("model", {"path": "/nonexistent/model"}),
        ["model.path: /nonexistent/model does not exist"],
    ),
    (
        "unknown-gpu",
        _set("target.gpu", "H100"),
        ["target.gpu: 'H100' is not in the GPU catalog (known: H100-SXM-80GB"],
    ),
    ("negative-length", _set("workload.isl.mean", -5), ["workload.isl.mean: Input should be greater than 0"]),
    (
        "negative-stddev",
        _set("workload.osl", {"mean": 10, "stddev": -1}),
        ["workload.osl.stddev: Input should be greater than or equal to 0"],
    ),
    (
        "zero-gpus",
        _set("target.gpus_available", 0),
        ["target.gpus_available: Input should be greater than 0"],
    ),
    (
        "repo-and-path",
        _set("model.path", str(FIXTURES)),
        ["model: give exactly one of model.repo_id or model.path"],
    ),
    ("no-model-source", _set("model", {"architecture": "llama-3.1-8b"}), ["model: give exactly one"]),
    ("bad-repo-id", _set("model.repo_id", "llama"), ["model.repo_id: 'llama' is not a hub repo id"]),
    (
        "unknown-architecture",
        _set("model.architecture", "llama-9"),
        ["model.architecture: 'llama-9' is not a shipped architecture (known: "],
    ),
    (
        "unmodelled-architecture-key",
        _set("model.architecture", str(FIXTURES / "unmodelled-shared-expert-config.json")),
        [
            "model.architecture:",
            "config.json key 'shared_expert_intermediate_size' (a shared expert of its own width"
            " (Qwen2-MoE)) is not sized yet",
        ],
    ),
    ("missing-section", _drop("workload"), ["workload: Field required"]),
    (
        "reference-stack-on-gpu",
        _set("stack", "reference"),
        ["stack: the reference stack runs on the CPU only; set target.gpu to cpu"],
    ),
    (
        "gpu-stack-on-cpu",
        _both(_set("target.gpu", "cpu"), _set("target.gpus_available", 2)),
        ["stack: the trtllm-engine stack needs a GPU target"],
    ),
    (
        "int8-kv-on-pytorch-stack",
        _both(_set("stack", "trtllm-pytorch"), _set("axes.kv_cache", ["int8"])),
        ["axes.kv_cache[0]: kv_cache int8 is not supported by the trtllm-pytorch stack"],
    ),
    (
        "seq-len-too-short",
        _set("axes.max_seq_len", [1024]),
        ["axes.max_seq_len[0]: max_seq_len=1024 is shorter than the workload's ISL+OSL=1280"],
    ),
    (
        "seq-len-beyond-context",
        _set("axes.max_seq_len", [200000]),
        ["axes.max_seq_len[0]: max_seq_len=200000 exceeds max_position_embeddings=131072"],
    ),
    (
        "pp-exceeds-layers",
        _both(_set("axes.pp", [64]), _set("target.gpus_available", 128)),
        ["axes.pp[0]: pp=64 exceeds the 32 layers of Llama-3.1-8B"],
    ),
    (
        "bad-alias",
        _set("registry", {"alias": "my champion"}),
        ["registry.alias: 'my champion' is not a valid MLflow alias"],
    ),
    ("bad-name", _set("name", "My Sweep"), ["name: 'My Sweep' must be lowercase letters, digits"]),
    (
        "name-escaping-the-workspace",
        _set("name", "../../etc"),
        ["name: '../../etc' must be lowercase letters, digits"],
    ),
    (
        "model-name-escaping-the-workspace",
        _set("model.name", "../x"),
        ["model.name: '../x' must be lowercase letters, digits"],
    ),
    (
        "unknown-accuracy-gate",
        _set("sla.accuracy_gate", "loose"),
        ["sla.accuracy_gate: Input should be 'strict' or 'lenient'"],
    ),
    (
        "task-limit-of-one",
        _set("accuracy.task_limit", 1),
        ["accuracy.task_limit: Input should be greater than or equal to 2"],
    ),
    (
        "duplicate-task",
        _set("accuracy.tasks", ["enginesweep_cloze", "enginesweep_cloze"]),
        ["accuracy.tasks: duplicate values ['enginesweep_cloze']"],
    ),
    (
        "exclude-unknown-axis",
        _set("axes.exclude", [{"quantization": "fp8"}]),
        ["axes: exclude[0].quantization: not an axis (axes: quant, kv_cache"],
    ),
    (
        "exclude-value-not-in-axis",
        _set("axes.exclude", [{"quant": "int4_awq"}]),
        ["exclude[0].quant: 'int4_awq' is not in axes.quant"],
    ),
    ("exclude-empty-entry", _set("axes.exclude", [{}]), ["exclude[0] is empty"]),
    (
        "bad-objective",
        _set("sla.objective", "cheapest"),
        ["sla.objective: Input should be 'min_cost_per_1m_tokens'"],
    ),
    (
        "bad-awq-block",
        _set("build", {"awq_block_size": 96}),
        ["build.awq_block_size: Input should be 64 or 128"],
    ),
]


@pytest.mark.parametrize(("edit", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_spec_is_rejected_naming_the_field(cli, spec_file, edit, expected):
    result = cli("validate", spec_file(edit))
    assert result.exit_code == 2, result.output
    for text in expected:
        assert text in result.stderr, f"{text!r} not in:\n{result.stderr}"


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_malformed_yaml_names_line_and_column(cli, spec_file, command):
    result = cli(command, spec_file(text="name: x\naxes: {quant: [bf16\nstack: reference\n"))
    assert result.exit_code == 2
    assert "malformed YAML at line 3, column" in result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the file is empty"),
        ("- a\n- b\n", "the top level must be a mapping of sections"),
    ],
)
def test_empty_or_non_mapping_file(cli, spec_file, text, expected):
    result = cli("validate", spec_file(text=text))
    assert result.exit_code == 2
    assert expected in result.stderr


def test_every_problem_is_listed_in_one_error(cli, spec_file):
    edit = _both(
        _set("target.gpu", "H100"), _set("axes.tp", ["x"]), _set("sla.bogus", 1), _set("workload.osl.mean", 0)
    )
    result = cli("validate", spec_file(edit))
    assert result.exit_code == 2
    assert "is not a valid sweep spec (4 problems)" in result.stderr
    for path in ("target.gpu:", "axes.tp[0]:", "sla.bogus:", "workload.osl.mean:"):
        assert path in result.stderr


def test_rule_problems_are_listed_together(cli, spec_file):
    edit = _both(
        _set("target.gpu", "A100-SXM-80GB"), _set("axes.tp", [1, 3]), _set("target.gpus_available", 4)
    )
    result = cli("validate", spec_file(edit))
    assert result.exit_code == 2
    assert "(2 problems)" in result.stderr
    assert "axes.quant[1]: fp8 needs SM89+" in result.stderr
    assert "axes.tp[1]: tp=3 does not split" in result.stderr


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("axes.tp.x=1", "--set axes.tp.x: axes.tp is not a section"),
        ("target.gpus_available=0", "target.gpus_available: Input should be greater than 0"),
        ("no-equals-sign", "--set no-equals-sign: expected KEY.PATH=VALUE"),
        ("axes.quant=[bf16", "--set axes.quant: value is not valid YAML"),
    ],
)
def test_bad_override_names_it(cli, spec_file, override, expected):
    result = cli("validate", spec_file(), "--set", override)
    assert result.exit_code == 2
    assert expected in result.stderr


def test_unknown_config_name_lists_shipped_ones(cli):
    result = cli("plan", "no-such-config")
    assert result.exit_code == 2
    assert "no-such-config is not a valid sweep spec" in result.stderr
    assert "not a shipped config (shipped: " in result.stderr
    assert "llama-3.1-8b-h100" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--gpu", "H100"], "--gpu: 'H100' is not in the GPU catalog"),
        (
            ["--gpu", "H100-SXM-80GB", "--model", "llama-9"],
            "--model: 'llama-9' is not a shipped architecture",
        ),
        (["--gpu", "H100-SXM-80GB", "--quant", "fp9"], "--quant: Input should be 'bf16'"),
        (["--gpu", "H100-SXM-80GB", "--tp", "0"], "--tp: give positive integers"),
        (["--gpu", "H100-SXM-80GB", "--tp", "1,x"], "--tp: '1,x' is not a comma-separated list of integers"),
        (["--gpu", "H100-SXM-80GB,B9000"], "--gpu: 'B9000' is not in the GPU catalog"),
        (["--gpu", "H100-SXM-80GB", "--awq-block-size", "96"], "--awq-block-size: Input should be 64 or 128"),
    ],
)
def test_size_bad_options_name_the_option(cli, args, expected):
    argv = ["size", "--model", "llama-3.1-8b", *args]
    result = cli(*argv)
    assert result.exit_code == 2
    assert expected in result.output


# --- bad input found before a sweep starts (flows/preflight.py) ------------------------------


def test_an_unreachable_tracking_server_is_refused_before_any_trial(cli, tmp_path):
    from enginesweep.engines.triton.server import free_port

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = cli(
        "run",
        "smollm2-cpu-smoke",
        "--set",
        f"tracking.mlflow_uri={uri}",
        "--set",
        f"workspace={tmp_path / 'ws'}",
    )
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert f"tracking.mlflow_uri: {uri} cannot be reached" in message
    assert "start the MLflow server, fix the address, or remove the field" in message
    assert not (tmp_path / "ws" / "sweeps").exists()


@pytest.mark.parametrize("verb", ["run", "trial"])
def test_a_workspace_that_cannot_be_written_is_refused(cli, tmp_path, verb):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    args = ["--slug", "smollm2-135m-instruct__bf16__kv-auto__tp1"] if verb == "trial" else []
    result = cli(verb, "smollm2-cpu-smoke", *args, "--set", f"workspace={blocker / 'ws'}")
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert f"workspace: {blocker / 'ws'} is not writable" in message
    assert "point `workspace` at a folder you can write" in message


def test_a_busy_ui_port_is_refused_naming_the_option(cli, tmp_path):
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = cli("ui", "smollm2-cpu-smoke", "--port", str(port), "--set", f"workspace={tmp_path}")
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert f"--port: {port} on 127.0.0.1 cannot be used (Address already in use); pick another" in message
