"""What a scheduled sweep compares between runs (flows/schedule_state.py), the shipped
prefect.yaml read with Prefect's own loader, and the schedule verbs' bad-input messages.

Prefect reads its settings when imported, so whatever imports it runs in a fresh interpreter
with its own PREFECT_HOME: the test session's process never imports Prefect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from enginesweep.build_configs.loading import load_spec
from enginesweep.flows.schedule_state import (
    ScheduleInputs,
    changes,
    model_revision,
    pinned_overrides,
    spec_hash,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parent.parent.parent
SCRIPT = Path(sys.executable).parent / "enginesweep"
INPUTS = ScheduleInputs(
    revision="acme/m@main",
    revision_sha="a" * 40,
    runtime_version="aiperf=0.13.0, torch=2.13.0",
    spec_hash="0123456789abcdef",
)


def test_nothing_changed_is_an_empty_list_and_each_change_is_named():
    assert changes(INPUTS, INPUTS) == []
    assert changes(None, INPUTS) == ["no earlier scheduled run of this sweep completed"]
    moved = INPUTS.model_copy(update={"revision_sha": "b" * 40})
    assert changes(INPUTS, moved) == [f"model revision acme/m@main {'a' * 16} -> acme/m@main {'b' * 16}"]
    upgraded = INPUTS.model_copy(update={"runtime_version": "aiperf=0.13.0, torch=2.14.0"})
    assert changes(INPUTS, upgraded) == ["runtime torch 2.13.0 -> 2.14.0"]


def test_the_state_round_trips_through_mlflow_tags():
    tags = INPUTS.tags()
    assert tags["enginesweep.schedule.revision_sha"] == "a" * 40
    assert ScheduleInputs.from_tags(tags) == INPUTS
    del tags["enginesweep.schedule.spec_hash"]
    assert ScheduleInputs.from_tags(tags) is None


def test_the_pin_survives_yaml_even_for_an_all_digit_sha(spec_file):
    sha = "1234567890" * 4  # YAML would read it unquoted as an integer
    resolved = load_spec(spec_file())
    inputs = INPUTS.model_copy(update={"revision_sha": sha})
    pin = pinned_overrides(resolved, inputs)
    assert load_spec(spec_file(), pin).spec.model.revision == sha
    # A spec already pinned to that sha needs no override.
    assert pinned_overrides(load_spec(spec_file(), pin), inputs) == []


def test_the_watch_section_is_not_part_of_the_spec_hash(spec_file):
    base = spec_hash(load_spec(spec_file()))
    assert spec_hash(load_spec(spec_file(), ["watch.policy=auto", "watch.repeats=5"])) == base
    assert spec_hash(load_spec(spec_file(), ["sla.ttft_p99_ms=300"])) != base


def test_a_local_checkpoint_fingerprint_follows_its_files(spec_file, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    weights = model / "model.safetensors"
    weights.write_bytes(b"0" * 64)
    resolved = load_spec(spec_file(), [f"model.path={model}", "model.repo_id=null"])
    name, first = model_revision(resolved)
    assert name == f"path:{model}" and first.startswith("path-fingerprint:")
    assert model_revision(resolved)[1] == first
    os.utime(weights, ns=(1, 1))  # retrained weights of the same size: only the time differs
    assert model_revision(resolved)[1] != first


_PREFECT_YAML_CHECK = """
import json, sys
from pathlib import Path
from rich.console import Console
from prefect.cli.deploy._config import _load_deploy_configs_and_actions
from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule
from prefect.client.schemas.objects import ConcurrencyLimitStrategy
from prefect.flows import load_flow_from_entrypoint
from enginesweep.build_configs.loading import load_spec

console = Console(record=True, width=200)
configs, actions = _load_deploy_configs_and_actions(Path("prefect.yaml"), console=console)
out = {"warnings": console.export_text(), "deployments": []}
for config in configs:
    flow = load_flow_from_entrypoint(config["entrypoint"])
    flow.validate_parameters(config["parameters"])
    load_spec(config["parameters"]["config"], config["parameters"]["overrides"])
    schedules = [_schedule_config_to_deployment_schedule(s) for s in config["schedules"]]
    strategy = ConcurrencyLimitStrategy(config["concurrency_limit"]["collision_strategy"])
    out["deployments"].append({"name": config["name"], "flow": flow.name,
                               "schedules": [s["schedule"].cron for s in schedules],
                               "limit": config["concurrency_limit"]["limit"],
                               "strategy": strategy.value, "pool": config["work_pool"]["name"]})
print(json.dumps(out))
"""


def _fresh_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def test_prefect_yaml_loads_with_prefects_own_loader_and_its_entrypoint_runs_our_flow(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", _PREFECT_YAML_CHECK],
        cwd=ROOT,
        env=_fresh_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["warnings"] == ""  # Prefect prints validation problems instead of raising
    assert found["deployments"] == [
        {
            "name": "smollm2-cpu-smoke-nightly",
            "flow": "enginesweep-scheduled",
            "schedules": ["0 3 * * *"],
            "limit": 1,
            "strategy": "CANCEL_NEW",
            "pool": "enginesweep",
        }
    ]


def test_schedule_needs_exactly_one_of_cron_and_interval(cli, spec_file):
    for extra in ([], ["--cron", "0 3 * * *", "--interval", "60"]):
        result = cli("schedule", spec_file(), *extra)
        assert result.exit_code == 2 and "give exactly one of --cron or --interval" in result.stderr


def test_deploy_without_a_prefect_server_says_how_to_get_one(spec_file):
    from typer.testing import CliRunner

    from enginesweep.flows.cli import app

    result = CliRunner().invoke(
        app,
        ["deploy", str(spec_file()), "--pool", "p", "--interval", "60"],
        env={"PREFECT_API_URL": None, "COLUMNS": "240"},
    )
    assert result.exit_code == 2
    assert "deploy needs a Prefect server: export PREFECT_API_URL=" in result.stderr


def test_a_bad_cron_is_refused_naming_the_option(spec_file, tmp_path):
    spec = spec_file(lambda s: s.update(workspace=str(tmp_path / "ws")))
    done = subprocess.run(
        [str(SCRIPT), "schedule", str(spec), "--cron", "61 * * * *"],
        cwd=tmp_path,
        env=_fresh_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--cron: Invalid cron string" in done.stderr and "five fields" in done.stderr
    assert not (tmp_path / "ws" / "prefect" / "server.log").exists()  # refused before any server
