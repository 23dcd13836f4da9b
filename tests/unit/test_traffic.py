"""Workloads from the user's traffic: the request log's checks, the spec's workload sources, the
requests built from them (with a character tokenizer, so lengths are exact), aiperf's command for
a dataset (parsed by aiperf's own CLI), a recorded replay parsed from a captured aiperf run, and
the report's traffic section."""

from __future__ import annotations

import json
import random
import shutil
import string
from collections import Counter
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from enginesweep.build_configs import loading
from enginesweep.build_configs.loading import SpecError, validate_data
from enginesweep.build_configs.request_log import RequestLogError, read_request_log
from enginesweep.build_configs.schema import SLA, Workload
from enginesweep.evaluation.benchmark.aiperf_runner import TEMPLATE_NAME, aiperf_command
from enginesweep.evaluation.benchmark.results import parse_benchmark, read_records
from enginesweep.evaluation.benchmark.traffic import (
    PromptMaker,
    build_traffic,
    histogram,
    plan_requests,
    reuse_ratio,
    summarize,
    write_dataset,
)
from enginesweep.evaluation.records import BenchmarkResult
from enginesweep.evaluation.reports.report_sections import traffic_section, workload_words
from enginesweep.evaluation.reports.report_trials import TrialView

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent.parent / "fixtures"
LOG = FIXTURES / "traffic" / "request_log.jsonl"
REPLAY = FIXTURES / "aiperf" / "replay_12"
# Random letters: windows of a few characters at distinct places differ (almost surely).
TEXT = "".join(random.Random(0).choices(string.ascii_lowercase, k=20000))


class CharTokenizer:
    """One token per character: lengths in tokens are lengths in characters."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids) -> str:
        return "".join(chr(i) for i in ids)


def maker() -> PromptMaker:
    return PromptMaker(CharTokenizer(), TEXT)


def log_workload(path: Path = LOG, replay: str = "recorded", **more) -> Workload:
    return Workload(request_log={"path": str(path), "replay": replay, "block_tokens": 16}, **more)


def write_log(tmp_path: Path, rows: list, name: str = "log.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


@pytest.fixture
def spec_data() -> dict:
    """The shipped CPU smoke spec, as a dictionary to edit."""
    return yaml.safe_load((Path(loading.__file__).parent / "smollm2-cpu-smoke.yaml").read_text())


# -- the request log -------------------------------------------------------------------------------


def test_the_shipped_log_has_two_length_clusters_and_shared_prefixes() -> None:
    log = read_request_log(LOG, block_tokens=16)
    assert len(log.requests) == 200 and log.timed
    inputs = log.input_lengths()
    short, long = [n for n in inputs if n < 80], [n for n in inputs if n >= 96]
    assert len(short) + len(long) == 200 and len(short) > 100 and len(long) > 40
    assert 10 < log.duration_s < 15  # about 16 requests/s over 200 requests
    assert 0.4 < log.prefix_reuse_ratio() < 0.8


def test_prefix_reuse_counts_only_a_leading_run_of_blocks_seen_before(tmp_path: Path) -> None:
    rows = [
        {"input_length": 40, "output_length": 2, "hash_ids": [1, 2, 3]},  # all new
        {"input_length": 40, "output_length": 2, "hash_ids": [1, 2, 4]},  # 2 blocks reused: 32 tokens
        {"input_length": 20, "output_length": 2, "hash_ids": [9, 2]},  # 9 is new: the run stops
        {"input_length": 10, "output_length": 2, "hash_ids": [1]},  # 1 block, but only 10 tokens
    ]
    log = read_request_log(write_log(tmp_path, rows), block_tokens=16)
    assert log.prefix_reuse_ratio() == pytest.approx((32 + 10) / 110)


def test_every_bad_line_is_named_with_its_field(tmp_path: Path) -> None:
    rows = [
        {"input_length": 10, "output_length": 2, "timestamp": 5},
        "not json",
        {"input_length": 0, "output_length": 2, "timestamp": 6},
        {"input_length": 10, "timestamp": 7},
        {"input_length": 10, "output_length": 2, "timestamp": 1},
        {"input_length": 10, "output_length": 2},
        {"input_length": 40, "output_length": 2, "timestamp": 9, "hash_ids": [1]},
        {"input_length": 10, "output_length": 2, "timestamp": 9, "tokens": 3},
    ]
    path = write_log(tmp_path, rows)
    with pytest.raises(RequestLogError) as raised:
        read_request_log(path, block_tokens=16)
    text = str(raised.value)
    for expected in (
        f"{path}:2: not JSON",
        f"{path}:3: input_length: 0 is not a positive whole number",
        f"{path}:4: output_length: missing",
        f"{path}:5: timestamp: 1 ms is before the previous request's 5 ms",
        f"{path}:6: timestamp: missing here but present on the first request",
        f"{path}:7: hash_ids: 1 blocks for input_length 40, expected 3 of 16 tokens",
        f"{path}:8: unknown field(s) tokens",
    ):
        assert expected in text, text
    assert "(7 problems)" in text


def test_an_empty_or_missing_log_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RequestLogError, match="no such file"):
        read_request_log(tmp_path / "none.jsonl")
    with pytest.raises(RequestLogError, match="holds no request"):
        read_request_log(write_log(tmp_path, ["", ""]))


# -- the spec ----------------------------------------------------------------------------------------


def test_a_log_sets_the_planning_lengths_from_its_requests() -> None:
    workload = log_workload()
    log = read_request_log(LOG, 16)
    mean_in = sum(log.input_lengths()) / 200
    assert workload.source == "request_log" and workload.replay == "recorded"
    assert workload.isl.mean == round(mean_in) and workload.isl.stddev > 30
    assert workload.longest_sequence_tokens == max(r.input_length + r.output_length for r in log.requests)
    # The dump (records, MLflow) carries the derived lengths and validates again as it is.
    assert Workload.model_validate(workload.model_dump(mode="json")).isl == workload.isl


def test_a_spec_error_names_the_log_and_its_line(tmp_path: Path, spec_data) -> None:
    path = write_log(tmp_path, [{"input_length": 3}])
    spec_data["workload"] = {"request_log": {"path": str(path)}}
    with pytest.raises(SpecError) as raised:
        validate_data(spec_data, "spec.yaml")
    assert f"workload.request_log: {path} is not a usable request log" in str(raised.value)
    assert f"{path}:1: output_length: missing" in str(raised.value)


def test_a_request_longer_than_max_seq_len_is_a_spec_error(tmp_path: Path, spec_data) -> None:
    path = write_log(
        tmp_path, [{"input_length": 30, "output_length": 4}, {"input_length": 600, "output_length": 8}]
    )
    spec_data["workload"] = {"request_log": {"path": str(path)}}
    spec_data["axes"]["max_seq_len"] = [512]
    with pytest.raises(
        SpecError, match=r"max_seq_len=512 is shorter than the request log's longest ISL\+OSL=608"
    ):
        validate_data(spec_data, "spec.yaml")


@pytest.mark.parametrize(
    ("workload", "message"),
    [
        ({}, "give isl and osl"),
        (
            {
                "request_log": {"path": str(LOG)},
                "mixture": [{"isl": {"mean": 5}, "osl": {"mean": 5}, "weight": 1}],
            },
            "not both",
        ),
        (
            {"request_log": {"path": str(LOG)}, "isl": {"mean": 5}},
            "isl: the lengths come from workload.request_log",
        ),
        (
            {"request_log": {"path": str(LOG), "replay": "recorded"}, "concurrency": [1, 4]},
            "runs the log once",
        ),
        (
            {"request_log": {"path": str(LOG)}, "shared_prefix": {"pool_size": 2, "tokens": 8}},
            "carries its own prefixes",
        ),
        (
            {"isl": {"mean": 64}, "osl": {"mean": 8}, "shared_prefix": {"pool_size": 2, "tokens": 64}},
            "leaves no room",
        ),
    ],
)
def test_conflicting_workload_sources_are_refused(workload: dict, message: str) -> None:
    if "request_log" in workload:
        workload["request_log"]["block_tokens"] = 16
    with pytest.raises(ValidationError, match=message):
        Workload.model_validate(workload)


def test_recorded_replay_needs_timestamps(tmp_path: Path) -> None:
    path = write_log(tmp_path, [{"input_length": 30, "output_length": 4}])
    with pytest.raises(ValidationError, match="replay: recorded needs a timestamp"):
        log_workload(path)
    assert log_workload(path, replay="resample").isl.mean == 30


def test_a_mixture_plans_with_its_weighted_mean_and_pooled_spread() -> None:
    workload = Workload(
        mixture=[
            {"isl": {"mean": 100, "stddev": 10}, "osl": {"mean": 10}, "weight": 1},
            {"isl": {"mean": 300}, "osl": {"mean": 30}, "weight": 3},
        ]
    )
    # mean 0.25*100 + 0.75*300 = 250; variance 0.25*(100 + 150^2) + 0.75*(0 + 50^2) = 7525
    assert (workload.isl.mean, workload.isl.stddev) == (250, 87)
    assert (workload.osl.mean, workload.osl.stddev) == (25, 9)
    assert Workload.model_validate(workload.model_dump(mode="json")) == workload


def test_the_key_follows_the_logs_content_not_its_path(tmp_path: Path) -> None:
    copy = shutil.copy(LOG, tmp_path / "moved.jsonl")
    assert log_workload(Path(copy)).key_fields() == log_workload().key_fields()
    changed = write_log(tmp_path, [*LOG.read_text().splitlines()[:-1]], "shorter.jsonl")
    assert log_workload(changed).key_fields() != log_workload().key_fields()
    # A synthetic workload's key has no new fields: records keyed before them stay reusable.
    synthetic = Workload(isl={"mean": 8}, osl={"mean": 4}).key_fields()
    assert not {"mixture", "request_log", "shared_prefix"} & set(synthetic)


# -- the requests built ----------------------------------------------------------------------------


def test_a_recorded_replay_sends_every_logged_request_at_its_offset() -> None:
    workload = log_workload()
    log = workload.request_log.log
    requests = plan_requests(workload, maker())
    first = log.requests[0].timestamp_ms
    assert [r.timestamp_ms for r in requests] == [r.timestamp_ms - first for r in log.requests]
    assert [len(r.prompt) for r in requests] == log.input_lengths()
    assert [r.output_length for r in requests] == log.output_lengths()
    # Equal leading hash ids give equal leading text: the prefix a server can cache.
    by_head: dict[tuple, set[str]] = {}
    for logged, sent in zip(log.requests, requests, strict=True):
        by_head.setdefault(logged.hash_ids[:2], set()).add(sent.prompt[:32])
    shared = [heads for ids, heads in by_head.items() if ids[0] < 1000]
    assert shared and all(len(heads) == 1 for heads in shared)
    summary = summarize(workload, requests, maker())
    assert summary.prefix_reuse_ratio == pytest.approx(log.prefix_reuse_ratio())
    assert summary.recorded_duration_s == pytest.approx(log.duration_s)


def test_resampling_draws_request_count_requests_reproducibly() -> None:
    workload = log_workload(replay="resample", request_count=50, seed=7, concurrency=[1, 4])
    first, again = plan_requests(workload, maker()), plan_requests(workload, maker())
    assert first == again and len(first) == 50
    assert all(r.timestamp_ms is None for r in first)
    logged = {(r.input_length, r.output_length) for r in workload.request_log.log.requests}
    assert {(len(r.prompt), r.output_length) for r in first} <= logged
    other = plan_requests(workload.model_copy(update={"seed": 8}), maker())
    assert [r.prompt for r in other] != [r.prompt for r in first]


def test_a_mixture_draws_each_kind_by_its_weight() -> None:
    workload = Workload(
        mixture=[
            {"isl": {"mean": 20}, "osl": {"mean": 2}, "weight": 1},
            {"isl": {"mean": 60}, "osl": {"mean": 6}, "weight": 3},
        ],
        request_count=400,
    )
    requests = plan_requests(workload, maker())
    kinds = Counter((len(r.prompt), r.output_length) for r in requests)
    assert set(kinds) == {(20, 2), (60, 6)}
    assert 0.68 < kinds[(60, 6)] / 400 < 0.82


def test_shared_prefixes_come_from_a_pool_and_count_as_reusable() -> None:
    workload = Workload(
        isl={"mean": 40}, osl={"mean": 4}, shared_prefix={"pool_size": 3, "tokens": 24}, request_count=30
    )
    requests = plan_requests(workload, maker())
    assert all(len(r.prompt) == 40 for r in requests)
    heads = {r.prompt[:24] for r in requests}
    assert len(heads) == 3
    assert len({r.prompt[24:] for r in requests}) == 30  # each request's own text is its own
    # Every request after the first of its prefix could reuse 24 of its 40 tokens.
    assert reuse_ratio(requests, [40] * 30) == pytest.approx((30 - 3) * 24 / (30 * 40))


def test_plain_synthetic_lengths_are_left_to_aiperf(tmp_path: Path) -> None:
    workload = Workload(isl={"mean": 40}, osl={"mean": 4})
    assert plan_requests(workload, maker()) is None
    (tmp_path / "traffic.json").write_text("{}")  # an earlier run's summary must not survive
    assert build_traffic(workload, tmp_path, "", tmp_path) is None
    assert not (tmp_path / "traffic.json").exists()


def test_the_dataset_is_aiperfs_single_turn_rows(tmp_path: Path) -> None:
    workload = log_workload()
    requests = plan_requests(workload, maker())
    dataset = write_dataset(workload, requests, tmp_path, summarize(workload, requests, maker()))
    rows = [json.loads(line) for line in dataset.path.read_text().splitlines()]
    assert dataset.fixed_schedule and len(rows) == 200
    assert set(rows[0]) == {"text", "output_length", "timestamp"} and rows[0]["timestamp"] == 0
    from aiperf.dataset.loader.models import SingleTurn  # aiperf's own row model

    for row in rows:
        SingleTurn.model_validate(row)
    assert json.loads((tmp_path / "traffic.json").read_text())["requests"] == 200


def test_histogram_bins_by_hand() -> None:
    result = histogram([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], bins=5)
    assert result.edges == [0, 2, 4, 6, 8, 10]
    assert result.counts == [2, 2, 2, 2, 3]  # the last bin is closed: 10 falls in it
    assert histogram([7, 7, 7]).counts == [3]


# -- aiperf ------------------------------------------------------------------------------------------


def dataset_command(art: Path, workload: Workload, fixed: bool) -> list[str]:
    (art / TEMPLATE_NAME).write_text("{}")
    (art / "requests.jsonl").write_text('{"text": "a", "output_length": 2}\n')
    return aiperf_command(
        url="http://127.0.0.1:8000",
        model="ensemble",
        workload=workload,
        tokenizer=Path("/models/tok"),
        artifact_dir=art,
        input_file=art / "requests.jsonl",
        fixed_schedule=fixed,
    )


def test_aiperfs_own_parser_accepts_a_recorded_replay(tmp_path: Path) -> None:
    """Contract (aiperf 0.13.0): the dataset file, its type, sequential rows and the fixed
    schedule; no synthetic lengths, concurrency or count beside them."""
    from aiperf.cli import app

    art = tmp_path.resolve()
    argv = dataset_command(art, log_workload(), fixed=True)
    _, bound, _ = app.parse_args(argv[1:], exit_on_error=False, print_error=False)
    config = bound.kwargs["cli_config"]
    assert str(config.input_file) == str(art / "requests.jsonl")
    assert str(config.custom_dataset_type) == "single_turn"
    assert str(config.dataset_sampling_strategy) == "sequential"
    assert config.fixed_schedule and config.fixed_schedule_auto_offset
    for absent in (
        "--concurrency",
        "--request-count",
        "--synthetic-input-tokens-mean",
        "--output-tokens-mean",
    ):
        assert absent not in argv


def test_aiperfs_own_parser_accepts_a_resampled_log_at_each_concurrency(tmp_path: Path) -> None:
    from aiperf.cli import app

    art = tmp_path.resolve()
    workload = log_workload(replay="resample", request_count=30, concurrency=[1, 4])
    argv = dataset_command(art, workload, fixed=False)
    _, bound, _ = app.parse_args(argv[1:], exit_on_error=False, print_error=False)
    config = bound.kwargs["cli_config"]
    assert config.concurrency == [1, 4] and config.request_count == 30
    assert not config.fixed_schedule and str(config.custom_dataset_type) == "single_turn"
    assert "--synthetic-input-tokens-mean" not in argv


def test_a_fixed_schedule_without_a_dataset_is_refused() -> None:
    with pytest.raises(ValueError, match="give input_file"):
        aiperf_command(
            url="u",
            model="m",
            workload=Workload(isl={"mean": 4}, osl={"mean": 2}),
            tokenizer=Path("t"),
            artifact_dir=Path("/a"),
            fixed_schedule=True,
        )


def test_a_recorded_replay_is_one_level_keyed_by_its_peak_in_flight() -> None:
    """Parsed from a captured aiperf 0.13.0 replay of the log's first 12 requests."""
    workload = log_workload(REPLAY / "request_log.jsonl")
    result = parse_benchmark(REPLAY, workload, SLA(ttft_p99_ms=60_000), hardware="cpu", gpus=1)
    (level,) = result.levels
    assert level.pacing == "schedule" and level.request_count == 12 and level.error_count == 0
    records = read_records(REPLAY / "profile_export.jsonl")
    spans = [(r.start_ns, r.end_ns) for r in records.requests]
    peak = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert level.concurrency == peak and level.label == f"replay (peak {peak} in flight)"
    # aiperf sent each request at its logged offset, and decoded each logged output length.
    log = workload.request_log.log
    starts = sorted(r.start_ns for r in records.requests)
    offsets_ms = [(s - starts[0]) / 1e6 for s in starts]
    logged_ms = [r.timestamp_ms - log.requests[0].timestamp_ms for r in log.requests]
    assert max(abs(a - b) for a, b in zip(offsets_ms, logged_ms, strict=True)) < 50
    assert sorted(r.output_tokens for r in records.requests) == sorted(log.output_lengths())


# -- the report -------------------------------------------------------------------------------------


def test_the_report_shows_the_traffic_sent_with_its_histograms(tmp_path: Path) -> None:
    from testkit.records import ok_record

    workload = log_workload()
    requests = plan_requests(workload, maker())
    summary = summarize(workload, requests, maker())
    benchmark = BenchmarkResult(
        hardware="cpu",
        tool="aiperf 0.13.0",
        endpoint="e",
        isl=1,
        osl=1,
        levels=[],
        artifact_dir="a",
        traffic=summary,
    )
    record = ok_record("t", benchmark=benchmark)
    view = TrialView(slug="t", planned=None, record=record, row=None, outcome="ok", why="")
    section = traffic_section([view])
    text = " ".join(section.paragraphs)
    assert "200 requests built from a request log, replayed recorded over 11.9 s as logged" in text
    assert f"Prefix reuse: {summary.prefix_reuse_ratio:.1%}" in text
    assert workload.request_log.log.sha256 in text
    inputs, outputs = section.tables
    assert sum(int(row[1]) for row in inputs.rows) == 200 and sum(int(row[1]) for row in outputs.rows) == 200
    assert "replayed once at its logged arrival times" in workload_words(workload)


# -- the warm-up at server start ---------------------------------------------------------------------


def test_the_warm_up_sends_what_the_benchmark_sends() -> None:
    from enginesweep.engines.endpoints import OPENAI_COMPLETIONS, triton_endpoint
    from enginesweep.evaluation.benchmark.warmup import request_body, route

    triton = triton_endpoint("ensemble")
    assert json.loads(request_body(triton, "ensemble", 'say "hi"', 4)) == {
        "text_input": 'say "hi"',
        "max_tokens": 4,
        "min_tokens": 4,
        "stream": True,
    }
    assert route(triton) == "/v2/models/ensemble/generate_stream"
    assert json.loads(request_body(OPENAI_COMPLETIONS, "/models/m", "x", 2)) == {
        "model": "/models/m",
        "prompt": "x",
        "max_tokens": 2,
        "stream": True,
        "ignore_eos": True,
    }
    assert route(OPENAI_COMPLETIONS) == "/v1/completions"


# -- request-rate levels ---------------------------------------------------------------------------


def rate_workload(**more) -> Workload:
    return Workload(isl={"mean": 32}, osl={"mean": 8}, request_rate=[4, 0.5], **more)


@pytest.mark.parametrize(
    ("more", "message"),
    [
        ({"concurrency": [1, 8]}, "concurrency: a request-rate workload is paced by request_rate"),
        ({"arrival_smoothness": 2.0}, "arrival_smoothness: shapes gamma arrivals"),
    ],
)
def test_rate_levels_refuse_what_does_not_apply(more: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        rate_workload(**more)


@pytest.mark.parametrize("field", [{"max_concurrency": 4}, {"arrival": "gamma"}, {"arrival_smoothness": 1.5}])
def test_rate_options_without_a_rate_are_refused(field: dict) -> None:
    with pytest.raises(ValidationError, match="applies to request_rate levels"):
        Workload(isl={"mean": 32}, osl={"mean": 8}, **field)


def test_a_recorded_replay_keeps_its_own_times() -> None:
    with pytest.raises(ValidationError, match="keeps the log's own arrival times"):
        log_workload(request_rate=[2])


def test_rate_levels_are_sorted_and_stay_out_of_older_keys() -> None:
    workload = rate_workload(max_concurrency=16)
    assert workload.request_rate == [0.5, 4.0] and workload.pacing == "request_rate"
    assert workload.peak_concurrency == 16
    assert workload.key_fields()["request_rate"] == [0.5, 4.0]
    assert "arrival" not in workload.key_fields()  # at its default


def test_aiperfs_own_parser_accepts_rate_levels(tmp_path: Path) -> None:
    """Contract (aiperf 0.13.0): the rate list, the arrival pattern and its shape, the in-flight
    cap, and one warm-up rate (a list there makes aiperf run a grid of warm-up x profiling rates)."""
    from aiperf.cli import app

    art = tmp_path.resolve()
    (art / TEMPLATE_NAME).write_text("{}")
    workload = rate_workload(
        arrival="gamma", arrival_smoothness=2.5, max_concurrency=16, warmup_request_count=2, request_count=40
    )
    argv = aiperf_command(
        url="http://127.0.0.1:8000", model="m", workload=workload, tokenizer=Path("/t"), artifact_dir=art
    )
    assert value(argv, "--request-rate") == "0.5,4.0" and value(argv, "--warmup-request-rate") == "0.5"
    _, bound, _ = app.parse_args(argv[1:], exit_on_error=False, print_error=False)
    config = bound.kwargs["cli_config"]
    assert config.request_rate == [0.5, 4.0] and config.warmup_request_rate == 0.5
    assert str(config.arrival_pattern) == "gamma" and config.arrival_smoothness == 2.5
    assert config.concurrency == 16 and config.request_count == 40


def value(argv: list[str], flag: str) -> str:
    assert argv.count(flag) == 1, flag
    return argv[argv.index(flag) + 1]


def test_levels_are_named_and_keyed_by_how_they_were_paced() -> None:
    from enginesweep.evaluation.records import ConcurrencyResult, Percentiles
    from enginesweep.evaluation.tracking import CURVE, RATE_CURVE, REPLAY_CURVE, curve_key

    p = Percentiles(avg=1, p50=1, p90=1, p99=1, min=1, max=1)
    common = dict(
        request_count=1, error_count=0, duration_s=1, ttft_ms=p, itl_ms=p, e2e_ms=p, output_tok_s=1,
        output_tok_s_per_gpu=1, output_tok_s_per_user=1, request_rate=1, goodput=None, sla_attainment=None,
    )  # fmt: skip
    closed = ConcurrencyResult(concurrency=4, **common)
    rate = ConcurrencyResult(concurrency=7, pacing="request_rate", target_request_rate=2.5, **common)
    replay = ConcurrencyResult(concurrency=6, pacing="schedule", **common)
    assert [lvl.label for lvl in (closed, rate, replay)] == ["c=4", "2.5 req/s", "replay (peak 6 in flight)"]
    assert [lvl.key for lvl in (closed, rate, replay)] == ["c4", "r2.5", "replay"]
    assert [curve_key(lvl) for lvl in (closed, rate, replay)] == [
        (CURVE, 4),
        (RATE_CURVE, 2500),
        (REPLAY_CURVE, 0),
    ]
    assert rate.load_value == 2.5 and closed.load_value == 4


def test_the_operating_point_of_rate_levels_is_the_highest_rate_meeting_the_sla() -> None:
    from enginesweep.evaluation.records import ConcurrencyResult, Percentiles
    from enginesweep.evaluation.selection.operating_point import operating_point

    def level(rate: float, peak: int, ttft_p99: float) -> ConcurrencyResult:
        p = Percentiles(avg=1, p50=1, p90=1, p99=1, min=1, max=1)
        ttft = Percentiles(avg=1, p50=1, p90=1, p99=ttft_p99, min=1, max=ttft_p99)
        return ConcurrencyResult(
            concurrency=peak, pacing="request_rate", target_request_rate=rate, request_count=10,
            error_count=0, duration_s=1, ttft_ms=ttft, itl_ms=p, e2e_ms=p, output_tok_s=1,
            output_tok_s_per_gpu=1, output_tok_s_per_user=1, request_rate=rate, goodput=rate,
            sla_attainment=1.0,
        )  # fmt: skip

    # The peaks in flight need not follow the rates (arrivals are random): the rate orders.
    levels = [level(1.0, 5, 100), level(3.0, 3, 200), level(6.0, 9, 900)]
    benchmark = BenchmarkResult(
        hardware="cpu", tool="aiperf", endpoint="e", isl=1, osl=1, levels=levels, artifact_dir="a"
    )
    chosen, _ = operating_point(benchmark, SLA(ttft_p99_ms=500))
    assert chosen.target_request_rate == 3.0
    none, why = operating_point(benchmark, SLA(ttft_p99_ms=50))
    assert none is None and "1 req/s: TTFT p99 100 ms > 50 ms" in why


# -- the knee search ------------------------------------------------------------------------------


def knee_run(true_knee: float, seed: float, integer: bool = True, **knee) -> tuple:
    from enginesweep.build_configs.schema import KneeSearch
    from enginesweep.evaluation.benchmark.knee import search

    measured: list[float] = []

    def measure(value: float) -> tuple[bool, str]:
        measured.append(value)
        return value <= true_knee, "" if value <= true_knee else "TTFT p99 too high"

    result = search(measure, seed=seed, seed_source="test", knee=KneeSearch(**knee), integer=integer)
    return result, measured


@pytest.mark.parametrize(
    ("true_knee", "seed"), [(6, 2), (6, 16), (6, 6), (1, 8), (23, 1), (37, 40), (12, 13)]
)
def test_the_knee_is_bracketed_within_the_tolerance_in_at_most_six_levels(true_knee, seed) -> None:
    result, measured = knee_run(true_knee, seed)
    assert len(measured) == len(set(measured)) <= 6
    assert result.knee is not None and result.knee <= true_knee  # never above the true knee
    assert result.first_miss is not None and result.first_miss > true_knee
    # Within the tolerance: the bracket is at most 25% of its lower end, or adjacent integers;
    # or the budget ran out with the bracket already found.
    width_ok = result.first_miss - result.knee <= max(1, 0.25 * result.knee)
    assert width_ok or len(measured) == 6, (result.steps, result.stopped)
    assert [s.value for s in result.steps] == measured and result.seed == seed


def test_a_knee_beyond_max_level_and_none_at_all_are_said() -> None:
    result, measured = knee_run(1000, 8, max_level=32)
    assert measured == [8, 16, 32] and result.knee == 32 and result.first_miss is None
    assert "the SLA holds up to max_level 32" in result.stopped
    result, measured = knee_run(0, 8)
    assert measured == [8, 4, 2, 1] and result.knee is None
    assert "even 1 misses the SLA: no level meets it" in result.stopped


def test_a_rate_knee_is_bracketed_relatively() -> None:
    result, measured = knee_run(3.3, 1.0, integer=False, tolerance=0.2, max_levels=8)
    assert result.knee <= 3.3 < result.first_miss
    assert (result.first_miss - result.knee) <= 0.2 * result.knee
    assert measured[:3] == [1.0, 2.0, 4.0]


def test_the_knee_needs_a_latency_bound(spec_data) -> None:
    spec_data["workload"]["knee"] = {"max_level": 16}
    spec_data["sla"] = {"max_accuracy_drop": 0.05}
    with pytest.raises(
        SpecError, match="workload.knee: the knee is the highest load meeting the latency SLA"
    ):
        validate_data(spec_data, "spec.yaml")


def test_the_knee_is_seeded_by_the_prediction_or_the_listed_levels() -> None:
    from enginesweep.flows.trial_benchmark import knee_seed

    workload = Workload(isl={"mean": 8}, osl={"mean": 4}, concurrency=[1, 4], knee={})
    assert knee_seed(workload, None) == (4.0, "the workload's highest concurrency")
    from types import SimpleNamespace

    predicted = SimpleNamespace(
        max_concurrency_meeting_sla=16, goodput_req_s_at_sla=3.5, source="predicted:roofline"
    )
    assert knee_seed(workload, predicted) == (16.0, "predicted:roofline: concurrency meeting the SLA")
    rates = Workload(isl={"mean": 8}, osl={"mean": 4}, request_rate=[1, 2], knee={})
    assert knee_seed(rates, predicted) == (3.5, "predicted:roofline: goodput at the SLA")


# -- the capacity replay -----------------------------------------------------------------------------


def replay_level(ttft_p99: float, goodput: float):
    from enginesweep.evaluation.records import ConcurrencyResult, Percentiles

    p = Percentiles(avg=1, p50=1, p90=1, p99=1, min=1, max=1)
    ttft = Percentiles(avg=1, p50=1, p90=1, p99=ttft_p99, min=1, max=ttft_p99)
    return ConcurrencyResult(
        concurrency=3, pacing="request_rate", target_request_rate=5.0, request_count=20, error_count=0,
        duration_s=4, ttft_ms=ttft, itl_ms=p, e2e_ms=p, output_tok_s=1, output_tok_s_per_gpu=1,
        output_tok_s_per_user=1, request_rate=5.0, goodput=goodput, sla_attainment=goodput / 5.0,
    )  # fmt: skip


def capacity_plan():
    from enginesweep.evaluation.selection.models import CapacityPlan

    return CapacityPlan(
        slug="t", target_request_rate=20.0, goodput_per_replica=5.2, operating_concurrency=8, replicas=4,
        gpus_per_replica=1, total_gpus=4, usd_per_gpu_hour=2.0, usd_per_hour=8.0,
    )  # fmt: skip


def test_a_capacity_replay_that_holds_keeps_the_plan() -> None:
    from enginesweep.flows.capacity_check import judge_capacity

    check = judge_capacity("t", capacity_plan(), replay_level(600, 5.0), SLA(ttft_p99_ms=800))
    assert check.ran and check.holds and check.replicas_needed == 4
    assert (
        check.verdict
        == "planned 4 replica(s); at 5 req/s per replica TTFT p99 600 ms, ITL p99 1 ms: the SLA holds"
    )


def test_a_capacity_replay_that_misses_says_what_and_estimates_the_replicas() -> None:
    from enginesweep.flows.capacity_check import judge_capacity

    check = judge_capacity("t", capacity_plan(), replay_level(1300, 4.0), SLA(ttft_p99_ms=800))
    assert check.ran and check.holds is False and check.replicas_needed == 5  # ceil(20 / 4.0)
    assert "planned 4 replica(s); at 5 req/s per replica TTFT p99 1300 ms" in check.verdict
    assert (
        "TTFT p99 1300 ms > 800 ms; needs about 5" in check.verdict
        and "an estimate, not re-measured" in check.verdict
    )


def test_the_replay_sends_the_workloads_requests_at_the_per_replica_rate() -> None:
    from enginesweep.flows.capacity_check import replay_workload

    replay = replay_workload(log_workload(), 2.5)
    assert replay.request_rate == [2.5] and replay.arrival == "poisson" and replay.pacing == "request_rate"
    assert replay.request_log.replay == "resample"  # the log's requests, not its own times
    knee = replay_workload(Workload(isl={"mean": 8}, osl={"mean": 4}, concurrency=[2, 8], knee={}), 1.0)
    assert knee.knee is None and knee.concurrency == [1] and knee.request_rate == [1.0]


def test_a_capacity_check_on_a_gpu_stack_says_it_did_not_run() -> None:
    from enginesweep.flows.capacity_check import verify_capacity
    from testkit.records import ok_record

    record = ok_record("t").model_copy(update={"stack": "trtllm-pytorch"})
    check = verify_capacity(None, record, capacity_plan(), print)  # type: ignore[arg-type]
    assert not check.ran and check.holds is None and "reference stack only for now" in check.verdict


# -- KV-block reuse from the servers' metrics ------------------------------------------------------


def test_trtllm_serves_iteration_statistics_are_read_as_kv_blocks() -> None:
    from enginesweep.engines.trtllm.outputs import OutputFormatError, iteration_kv_stats

    # The keys and order of cpp/tensorrt_llm/executor/jsonSerialization.cpp (KvCacheStats).
    stats = {
        "allocNewBlocks": 600, "allocTotalBlocks": 900, "cacheHitRate": 0.3333, "freeNumBlocks": 6100,
        "maxNumBlocks": 6239, "missedBlocks": 600, "reusedBlocks": 300, "tokensPerBlock": 32,
        "usedNumBlocks": 139,
    }  # fmt: skip
    text = json.dumps(
        [{"iter": 7, "kvCacheStats": {**stats, "reusedBlocks": 1}}, {"iter": 8, "kvCacheStats": stats}]
    )
    found = iteration_kv_stats(text)
    assert found == {
        "max": 6239, "free": 6100, "used": 139, "tokens_per": 32, "reused": 300, "missed": 600,
        "fraction": pytest.approx(139 / 6239),
    }  # fmt: skip
    assert iteration_kv_stats("[]") is None  # drained: nothing ran since the last read
    with pytest.raises(OutputFormatError, match="no kvCacheStats"):
        iteration_kv_stats('[{"iter": 1}]')
    with pytest.raises(OutputFormatError, match="not JSON"):
        iteration_kv_stats("nv_trt_llm_kv_cache_block_metrics 1")


def test_reuse_over_a_run_is_the_difference_of_the_servers_counters() -> None:
    from enginesweep.evaluation.benchmark.server_metrics import reuse_summary

    first = {"max": 100, "reused": 40, "missed": 60, "tokens_per": 32}
    last = {"max": 100, "reused": 70, "missed": 70, "tokens_per": 32}
    assert reuse_summary([first, {"max": 100}, last]) == {
        "kv_reused_blocks": 30, "kv_reused_tokens": 960, "kv_missed_blocks": 10, "kv_cache_hit_rate": 0.75,
    }  # fmt: skip
    triton = [{"reused": 5, "tokens_per": 32}, {"reused": 9, "tokens_per": 32}]  # no misses counted
    assert reuse_summary(triton) == {"kv_reused_blocks": 4, "kv_reused_tokens": 128}
    assert reuse_summary([{"max": 100, "used": 3}]) == {}
