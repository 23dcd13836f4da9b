"""The aiperf parser on captured real outputs, and the aiperf command against aiperf's own CLI.

Fixtures (`tests/fixtures/aiperf/`, see its README) are unedited aiperf 0.13.0 outputs of a
concurrency-1,2 sweep, a level with failed requests and a level where every request failed.
The parser must agree with aiperf's own summary, skip warmup requests, count errors and refuse
levels without a successful request.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from enginesweep.build_configs.schema import SLA, Workload
from enginesweep.engines.endpoints import PAYLOAD_TEMPLATE
from enginesweep.evaluation.benchmark.aiperf_runner import (
    RESPONSE_FIELD,
    TEMPLATE_NAME,
    aiperf_command,
    aiperf_environment,
    tokenizer_hub_view,
)
from enginesweep.evaluation.benchmark.results import (
    RECORDS_FILE,
    SUMMARY_FILE,
    BenchmarkParseError,
    RequestTiming,
    meets_sla,
    parse_benchmark,
    percentiles,
)
from enginesweep.evaluation.records import BenchmarkResult

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent.parent / "fixtures" / "aiperf"
SWEEP = FIXTURES / "sweep_c1_c2"
ERRORS = FIXTURES / "errors_c2"
ALL_FAILED = FIXTURES / "all_failed_c1"
NO_SLA = SLA()
GENEROUS = SLA(ttft_p99_ms=60_000, itl_p99_ms=60_000)
IMPOSSIBLE = SLA(ttft_p99_ms=1e-6, itl_p99_ms=1e-6)
# Our metric -> aiperf's summary key.
SUMMARY_KEYS = {
    "ttft_ms": "time_to_first_token",
    "itl_ms": "inter_token_latency",
    "e2e_ms": "request_latency",
}


def workload(concurrency: list[int], requests: int, warmup: int = 0) -> Workload:
    """The workloads the fixtures were captured with."""
    return Workload(
        isl={"mean": 32, "stddev": 4},
        osl={"mean": 16},
        concurrency=concurrency,
        request_count=requests,
        warmup_request_count=warmup,
        seed=7,
    )


def sweep(sla: SLA = NO_SLA, gpus: int = 1) -> BenchmarkResult:
    return parse_benchmark(SWEEP, workload([1, 2], 8, 2), sla, hardware="cpu", gpus=gpus)


def summary(folder: Path) -> dict:
    return json.loads((folder / SUMMARY_FILE).read_text())


def test_percentiles_interpolate_linearly() -> None:
    p = percentiles([4.0, 1.0, 3.0, 2.0])
    assert (p.min, p.max, p.avg) == (1.0, 4.0, 2.5)
    assert p.p50 == pytest.approx(2.5)
    assert p.p90 == pytest.approx(3.7)
    assert p.p99 == pytest.approx(3.97)


def test_sweep_has_every_level_with_the_requests_asked_and_no_warmup() -> None:
    result = sweep()
    assert [level.concurrency for level in result.levels] == [1, 2]
    # Each jsonl holds 10 records: the 2 warmup requests are not counted.
    for level in result.levels:
        assert (level.request_count, level.error_count) == (8, 0)
    assert (result.tool, result.hardware, result.source) == ("aiperf 0.13.0", "cpu", "measured")
    assert result.endpoint.endswith("/v2/models/streamer/generate_stream")
    assert (result.isl, result.osl) == (32, 16)


def test_percentiles_are_ordered() -> None:
    for level in sweep().levels:
        for metric in (level.ttft_ms, level.itl_ms, level.e2e_ms):
            assert metric.min <= metric.p50 <= metric.p90 <= metric.p99 <= metric.max
            assert metric.min <= metric.avg <= metric.max
        # A request's first token comes before its end.
        assert level.ttft_ms.max < level.e2e_ms.max


@pytest.mark.parametrize("concurrency", [1, 2])
def test_percentiles_match_aiperfs_summary(concurrency: int) -> None:
    level = sweep().levels[[1, 2].index(concurrency)]
    own = summary(SWEEP / f"concurrency_{concurrency}")
    for ours, theirs in SUMMARY_KEYS.items():
        for stat in ("avg", "p50", "p90", "p99", "min", "max"):
            assert getattr(getattr(level, ours), stat) == pytest.approx(own[theirs][stat], rel=1e-9), (
                ours,
                stat,
            )
    assert level.output_tok_s_per_user == pytest.approx(
        own["output_token_throughput_per_user"]["avg"], rel=1e-9
    )
    # Our span is first request sent -> last response, which is aiperf's benchmark_duration.
    assert level.duration_s == pytest.approx(own["benchmark_duration"]["avg"], abs=1e-6)
    # aiperf divides by its phase window (slightly longer): close, not equal.
    assert level.request_rate == pytest.approx(own["request_throughput"]["avg"], rel=0.1)
    assert level.output_tok_s == pytest.approx(own["output_token_throughput"]["avg"], rel=0.1)


def test_throughputs_by_hand() -> None:
    for level in sweep(gpus=4).levels:
        # Every request produced exactly OSL = 16 tokens.
        assert level.output_tok_s == pytest.approx(16 * 8 / level.duration_s)
        assert level.request_rate == pytest.approx(8 / level.duration_s)
        assert level.output_tok_s_per_gpu == pytest.approx(level.output_tok_s / 4)
        # Per user: 1 / mean ITL, so between 1 / slowest and 1 / fastest request.
        assert 1000 / level.itl_ms.max <= level.output_tok_s_per_user <= 1000 / level.itl_ms.min


def test_goodput_bounds() -> None:
    for level in sweep().levels:
        assert level.goodput is None and level.sla_attainment is None
    for level in sweep(GENEROUS).levels:
        assert level.goodput == pytest.approx(level.request_rate)
        assert level.sla_attainment == 1.0
    for level in sweep(IMPOSSIBLE).levels:
        assert level.goodput == 0.0 and level.sla_attainment == 0.0


def test_goodput_counts_the_requests_under_the_ttft_bound() -> None:
    base = sweep().levels[0]
    middle = SLA(ttft_p99_ms=base.ttft_ms.p50)  # 8 requests: the median is between the 4th and 5th
    level = sweep(middle).levels[0]
    assert level.sla_attainment == 4 / 8
    assert level.goodput == pytest.approx(4 / level.duration_s)
    assert level.goodput <= level.request_rate


def test_sla_checks_ttft_and_mean_itl_each_when_set() -> None:
    request = RequestTiming(ttft_ms=100, itl_ms=20, e2e_ms=400, output_tokens=16, start_ns=0, end_ns=1)
    assert meets_sla(request, SLA(ttft_p99_ms=100, itl_p99_ms=20))
    assert not meets_sla(request, SLA(ttft_p99_ms=99))
    assert not meets_sla(request, SLA(itl_p99_ms=19))
    assert meets_sla(request, SLA(ttft_p99_ms=200))
    one_token = RequestTiming(ttft_ms=100, itl_ms=None, e2e_ms=100, output_tokens=1, start_ns=0, end_ns=1)
    assert meets_sla(one_token, SLA(itl_p99_ms=1))


def test_failed_requests_are_counted_and_cost_attainment() -> None:
    result = parse_benchmark(ERRORS, workload([2], 9), GENEROUS, hardware="cpu", gpus=1)
    (level,) = result.levels
    own = summary(ERRORS)
    assert (level.request_count, level.error_count) == (6, 3)
    assert own["error_request_count"]["avg"] == 3
    assert level.goodput == pytest.approx(level.request_rate)
    assert level.sla_attainment == pytest.approx(6 / 9)
    assert level.ttft_ms.p50 == pytest.approx(own["time_to_first_token"]["p50"], rel=1e-9)


def test_a_level_without_a_successful_request_raises_with_the_error() -> None:
    with pytest.raises(BenchmarkParseError, match=r"no successful request out of 4.*404"):
        parse_benchmark(ALL_FAILED, workload([1], 4), NO_SLA, hardware="cpu", gpus=1)


@pytest.mark.parametrize("missing", [SUMMARY_FILE, RECORDS_FILE])
def test_a_missing_file_raises_naming_it(tmp_path: Path, missing: str) -> None:
    shutil.copytree(ERRORS, tmp_path / "run")
    (tmp_path / "run" / missing).unlink()
    with pytest.raises(BenchmarkParseError, match=missing):
        parse_benchmark(tmp_path / "run", workload([2], 9), NO_SLA, hardware="cpu", gpus=1)


def test_a_level_folder_an_earlier_run_left_is_not_read(tmp_path: Path) -> None:
    """A single-level run writes its files into the folder itself: a `concurrency_2/` that an
    earlier run of other levels left there (a killed trial run again) is not this run's level."""
    shutil.copytree(ERRORS, tmp_path / "run")
    shutil.copytree(SWEEP / "concurrency_2", tmp_path / "run" / "concurrency_2")
    (level,) = parse_benchmark(tmp_path / "run", workload([2], 9), NO_SLA, hardware="cpu", gpus=1).levels
    assert (level.request_count, level.error_count) == (6, 3)  # ERRORS's, not the stale sweep's 8


def test_a_missing_level_raises() -> None:
    with pytest.raises(BenchmarkParseError, match="concurrency_4"):
        parse_benchmark(SWEEP, workload([1, 4], 8, 2), NO_SLA, hardware="cpu", gpus=1)


def test_records_that_disagree_with_the_summary_raise(tmp_path: Path) -> None:
    shutil.copytree(ERRORS, tmp_path / "run")
    records = tmp_path / "run" / RECORDS_FILE
    lines = records.read_text().splitlines()
    records.write_text("\n".join(line for line in lines if '"error":' not in line) + "\n")
    with pytest.raises(BenchmarkParseError, match="summary"):
        parse_benchmark(tmp_path / "run", workload([2], 9), NO_SLA, hardware="cpu", gpus=1)


def test_gpus_must_be_positive() -> None:
    with pytest.raises(ValueError, match="gpus"):
        sweep(gpus=0)


def test_result_round_trips_as_json(tmp_path: Path) -> None:
    result = sweep(GENEROUS)
    assert BenchmarkResult.load(result.save(tmp_path / "benchmark.json")) == result


# --- the aiperf command ---------------------------------------------------------------------

WORKLOAD = Workload(
    isl={"mean": 128, "stddev": 8},
    osl={"mean": 64, "stddev": 4},
    concurrency=[4, 1],
    request_count=20,
    warmup_request_count=3,
    seed=5,
)


def command(artifact_dir: Path, load: Workload = WORKLOAD) -> list[str]:
    return aiperf_command(
        url="http://127.0.0.1:8000",
        model="ensemble",
        workload=load,
        tokenizer=Path("/models/tok"),
        artifact_dir=artifact_dir,
        ipc_dir=Path("/tmp/aiperf-ipc-1"),
    )


def value(argv: list[str], flag: str) -> str:
    assert argv.count(flag) == 1, flag
    return argv[argv.index(flag) + 1]


def test_command_has_every_flag() -> None:
    art = Path("/runs/trial-1/bench")
    argv = command(art)
    assert Path(argv[0]).name == "aiperf" and argv[1] == "profile"
    expected = {
        "--model": "ensemble",
        "--url": "http://127.0.0.1:8000",
        "--endpoint-type": "template",
        "--custom-endpoint": "/v2/models/ensemble/generate_stream",
        "--synthetic-input-tokens-mean": "128",
        "--synthetic-input-tokens-stddev": "8",
        "--output-tokens-mean": "64",
        "--output-tokens-stddev": "4",
        "--concurrency": "1,4",
        "--request-count": "20",
        "--warmup-request-count": "3",
        "--random-seed": "5",
        "--tokenizer": "/models/tok",
        "--artifact-dir": str(art),
        "--export-level": "records",
        "--ui-type": "none",
        "--zmq-ipc-path": "/tmp/aiperf-ipc-1",
    }
    assert {flag: value(argv, flag) for flag in expected} == expected
    assert "--streaming" in argv
    extra = argv.index("--extra-inputs")
    assert argv[extra + 1 : extra + 3] == [
        f"payload_template:{art / TEMPLATE_NAME}",
        f"response_field:{RESPONSE_FIELD}",
    ]


def test_no_warmup_leaves_the_flag_out() -> None:
    # aiperf 0.13.0 rejects `--warmup-request-count 0`.
    argv = command(Path("/a"), WORKLOAD.model_copy(update={"warmup_request_count": 0}))
    assert "--warmup-request-count" not in argv


def test_a_comma_in_the_template_path_is_refused() -> None:
    with pytest.raises(ValueError, match="','"):
        command(Path("/runs/a,b"))


def test_template_renders_tensorrt_llm_fields_as_aiperf_renders_it() -> None:
    import jinja2  # comes with aiperf, part of the set-up

    text = 'He said "stop" <now> & then\n\\ left – ünïcode'
    # aiperf's TemplateEndpoint compiles the template with autoescaping on.
    rendered = (
        jinja2.Environment(autoescape=True)
        .from_string(PAYLOAD_TEMPLATE)
        .render(text=text, max_tokens=64, stream=True)
    )
    assert json.loads(rendered) == {"text_input": text, "max_tokens": 64, "min_tokens": 64, "stream": True}


def test_environment_is_offline_on_the_hub_view(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    env = aiperf_environment(tmp_path, tmp_path / "hub")
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["HF_HUB_CACHE"] == str(tmp_path / "hub") and env["TMPDIR"] == str(tmp_path)
    assert "HF_HUB_CACHE" not in aiperf_environment(tmp_path)


def test_the_hub_view_is_the_folders_files_under_the_refs_snapshot(tmp_path: Path) -> None:
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "tokenizer.json").write_text("{}")
    (folder / "tokenizer_config.json").write_text('{"x": 1}')
    (folder / "sub").mkdir()  # folders are not part of a tokenizer
    repo = tokenizer_hub_view(folder, tmp_path / "hub")
    entry = tmp_path / "hub" / ("models--" + repo.replace("/", "--"))
    commit = (entry / "refs" / "main").read_text()
    assert len(commit) == 40 and set(commit) <= set("0123456789abcdef")
    snapshot = entry / "snapshots" / commit
    assert {p.name: p.resolve() for p in snapshot.iterdir()} == {
        "tokenizer.json": (folder / "tokenizer.json").resolve(),
        "tokenizer_config.json": (folder / "tokenizer_config.json").resolve(),
    }
    (folder / "special_tokens_map.json").write_text("{}")
    assert tokenizer_hub_view(folder, tmp_path / "hub") == repo  # a rerun replaces the view
    assert [p.name for p in (entry / "snapshots").iterdir()] != [commit]


def test_aiperfs_own_parser_accepts_the_command(tmp_path: Path) -> None:
    """Contract: aiperf 0.13.0's CLI parses every flag, and reads the template as a file."""
    import aiperf  # noqa: F401 - part of the set-up: a missing aiperf fails here
    from aiperf.cli import app
    from aiperf.config.flags._converter_endpoint import build_endpoint

    art = tmp_path.resolve()
    (art / TEMPLATE_NAME).write_text(PAYLOAD_TEMPLATE)
    _, bound, _ = app.parse_args(command(art)[1:], exit_on_error=False, print_error=False)
    config = bound.kwargs["cli_config"]
    assert config.concurrency == [1, 4]
    assert (config.request_count, config.warmup_request_count, config.random_seed) == (20, 3, 5)
    assert (config.prompt_input_tokens_mean, config.prompt_input_tokens_stddev) == (128, 8)
    assert (config.prompt_output_tokens_mean, config.prompt_output_tokens_stddev) == (64, 4)
    assert config.streaming and str(config.artifact_directory) == str(art)
    assert str(config.zmq_ipc_path) == "/tmp/aiperf-ipc-1"
    endpoint = build_endpoint(config)
    assert endpoint["path"] == "/v2/models/ensemble/generate_stream"
    # A body equal to the file's text: aiperf found the file (else it uses the path as the body).
    assert endpoint["template"] == {"body": PAYLOAD_TEMPLATE, "response_field": RESPONSE_FIELD}


def test_request_streamed_in_one_chunk_does_not_break_per_user_speed():
    """All tokens in one SSE event: mean ITL 0, kept in the percentiles, left out of the per-user
    decode speed instead of dividing by zero."""
    from enginesweep.build_configs.schema import SLA
    from enginesweep.evaluation.benchmark.results import LevelRecords, RequestTiming, summarize_level

    records = LevelRecords(
        requests=[
            RequestTiming(
                ttft_ms=40.0, itl_ms=0.0, e2e_ms=40.0, output_tokens=4, start_ns=0, end_ns=40_000_000
            ),
            RequestTiming(
                ttft_ms=50.0,
                itl_ms=20.0,
                e2e_ms=110.0,
                output_tokens=4,
                start_ns=500_000_000,
                end_ns=1_000_000_000,
            ),
        ],
        errors=[],
        start_ns=0,
        end_ns=1_000_000_000,
    )
    level = summarize_level(1, records, SLA(), gpus=1)
    assert level.itl_ms.min == 0.0
    assert level.output_tok_s_per_user == pytest.approx(50.0)


def test_aiperf_runs_from_its_own_venv_when_there_is_one(tmp_path, monkeypatch) -> None:
    """`$ENGINESWEEP_AIPERF` first, then the checkout's `.venv-aiperf` (no torch: its processes
    load the tokenizer 4x faster), then the running environment's own console script."""
    import sys

    from enginesweep.evaluation.benchmark import aiperf_runner

    monkeypatch.delenv(aiperf_runner.AIPERF_ENV, raising=False)
    monkeypatch.setattr(aiperf_runner, "OWN_VENV", tmp_path / "missing")
    assert aiperf_runner.aiperf_executable() == Path(sys.executable).parent / "aiperf"
    own = tmp_path / ".venv-aiperf"
    (own / "bin").mkdir(parents=True)
    (own / "bin" / "aiperf").write_text("#!/bin/sh\n")
    monkeypatch.setattr(aiperf_runner, "OWN_VENV", own)
    assert aiperf_runner.aiperf_executable() == own / "bin" / "aiperf"
    monkeypatch.setenv(aiperf_runner.AIPERF_ENV, "/opt/aiperf/bin/aiperf")
    assert aiperf_runner.aiperf_executable() == Path("/opt/aiperf/bin/aiperf")
