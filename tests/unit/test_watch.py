"""The champion watch against numbers computed by hand (evaluation/selection/watch.py,
watch_metrics.py), the spec's `watch:` section and its error messages.

Hand computations, k = 3 and floor 5% unless said otherwise:
reference [100], current [90, 92, 94]: means 100 and 92; squared deviations 0 and 4 + 0 + 4 = 8;
n + m - 2 = 2, so s_p = sqrt(8 / 2) = 2; standard error factor sqrt(1/1 + 1/3) = 1.1547;
noise term 3 * 2 * 1.1547 = 6.9282 > floor 0.05 * 100 = 5, so the threshold is 6.9282.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from enginesweep.build_configs.schema import SLA, Watch
from enginesweep.evaluation.records import TrialRecord
from enginesweep.evaluation.selection.watch import Direction, Samples, compare, pooled_std, watch_verdict
from enginesweep.evaluation.selection.watch_metrics import candidate_samples, champion_samples

pytestmark = pytest.mark.unit

UP, DOWN = Direction.HIGHER_IS_BETTER, Direction.LOWER_IS_BETTER
NOISE = 3 * 2 * math.sqrt(1 + 1 / 3)  # 6.9282, see the module docstring
RECORDS = Path(__file__).parent.parent / "fixtures" / "records" / "h100_sweep"
SLA_GPU = SLA(ttft_p99_ms=500, itl_p99_ms=30, max_accuracy_drop=0.02, accuracy_drop_mode="relative")
PRICE = 3.0


def samples(reference, current, direction, floor=0.05, metric="m") -> Samples:
    return Samples(metric=metric, direction=direction, reference=reference, current=current, floor=floor)


def test_pooled_std_pools_each_sides_own_deviations():
    assert pooled_std([100], [90, 92, 94]) == pytest.approx(2.0)
    # (1 + 1) + (4 + 4) squared deviations over 2 + 2 - 2 degrees of freedom
    assert pooled_std([9, 11], [18, 22]) == pytest.approx(math.sqrt(10 / 2))
    assert pooled_std([5], [7]) is None


def test_a_higher_is_better_drop_beyond_the_noise_is_a_regression():
    check = compare(samples([100], [90, 92, 94], UP), noise_k=3)
    assert check.threshold == pytest.approx(NOISE) and check.basis == "noise"
    assert check.worse_by == pytest.approx(8.0)  # 100 - 92: a drop is worse for goodput
    assert check.worse and not check.better


def test_a_lower_is_better_rise_within_the_noise_is_not_a_regression():
    # Worse by 6: above the 5% floor, but within the noise (6.93): not flagged.
    check = compare(samples([100], [104, 106, 108], DOWN), noise_k=3)
    assert check.worse_by == pytest.approx(6.0)
    assert not check.worse and not check.better
    # Worse by 12 (> 6.93): flagged.
    assert compare(samples([100], [110, 112, 114], DOWN), noise_k=3).worse


def test_direction_decides_the_sign():
    # The same numbers are an improvement for a higher-is-better metric and a regression for a
    # lower-is-better one.
    up = compare(samples([100], [108, 110, 112], UP), noise_k=3)
    down = compare(samples([100], [108, 110, 112], DOWN), noise_k=3)
    assert up.worse_by == pytest.approx(-10.0) and up.better and not up.worse
    assert down.worse_by == pytest.approx(10.0) and down.worse and not down.better


def test_the_floor_applies_when_the_machine_is_quiet():
    # s_p = sqrt(50 / 2) = 5, noise 3 * 5 * sqrt(1/2 + 1/2) = 15 < floor 0.05 * 1000 = 50.
    check = compare(samples([1000, 1000], [1000, 1010], DOWN), noise_k=3)
    assert check.threshold == pytest.approx(50.0) and check.basis == "floor"
    assert check.worse_by == pytest.approx(5.0) and not check.worse


def test_one_measurement_on_each_side_uses_the_floor_and_says_so():
    check = compare(samples([200], [215], DOWN), noise_k=3)
    assert check.pooled_std is None and check.basis == "floor"
    assert check.threshold == pytest.approx(10.0)  # 5% of 200
    assert check.worse  # 15 > 10
    assert "no noise estimate" in check.note


def test_verdict_flags_regressions_and_names_the_first_dominating_candidate():
    champion = [
        samples([100], [90, 92, 94], UP, metric="goodput_req_s"),
        samples([50], [50, 50, 51], DOWN, metric="ttft_p99_ms@c8"),
    ]
    # "loser": better goodput but 20% worse latency; "winner": better goodput, same latency;
    # "also": dominates too but is ranked after "winner".
    candidates = [
        (
            "loser",
            [
                samples([100], [120], UP, metric="goodput_req_s"),
                samples([50], [60], DOWN, metric="ttft_p99_ms"),
            ],
        ),
        (
            "winner",
            [
                samples([100], [120], UP, metric="goodput_req_s"),
                samples([50], [50], DOWN, metric="ttft_p99_ms"),
            ],
        ),
        (
            "also",
            [
                samples([100], [130], UP, metric="goodput_req_s"),
                samples([50], [50], DOWN, metric="ttft_p99_ms"),
            ],
        ),
    ]
    verdict = watch_verdict("champ", champion, candidates, noise_k=3)
    assert verdict.regressed and verdict.dominated_by == "winner" and verdict.status == "dominated"
    assert len(verdict.regressions) == 1 and verdict.regressions[0].startswith("goodput_req_s: 100 -> 92")
    assert "dominated by winner (better on goodput_req_s)" in verdict.summary
    calm = watch_verdict("champ", [samples([100], [99, 100, 101], UP)], [], noise_k=3)
    assert calm.status == "ok" and not calm.regressed and calm.dominated_by is None


def test_no_sla_met_in_any_repeat_is_a_regression_even_within_thresholds():
    verdict = watch_verdict(
        "champ",
        [samples([100], [100, 100], UP)],
        [],
        noise_k=3,
        sla_misses=["champ measurement 1: latency SLA unmet"],
    )
    assert verdict.status == "regressed" and verdict.regressions == [
        "SLA: champ measurement 1: latency SLA unmet"
    ]


# -- records -> samples ------------------------------------------------------------------------


def record(name: str) -> TrialRecord:
    return TrialRecord.load(RECORDS / f"llama-3.1-8b__{name}.json")


def with_level(base: TrialRecord, concurrency: int, **changes) -> TrialRecord:
    """`base` with one concurrency level changed (ttft_p99, output_tok_s, ...)."""
    levels = []
    for level in base.benchmark.levels:
        if level.concurrency == concurrency:
            update = {}
            if "ttft_p99" in changes:
                update["ttft_ms"] = level.ttft_ms.model_copy(update={"p99": changes["ttft_p99"]})
            if "output_tok_s" in changes:
                update["output_tok_s"] = changes["output_tok_s"]
            level = level.model_copy(update=update)
        levels.append(level)
    return base.model_copy(update={"benchmark": base.benchmark.model_copy(update={"levels": levels})})


def test_champion_samples_compare_at_the_reference_operating_point():
    # fp8 tp1 operates at c=32 (TTFT p99 480 <= 500, goodput 3.0). A re-measurement with TTFT p99
    # 520 at c=32 misses the SLA there, so it operates at c=8 (goodput 2.8).
    champion = record("fp8__kv-auto__tp1")
    slower = with_level(champion, 32, ttft_p99=520.0)
    found, misses, notes = champion_samples([champion], [slower, slower], SLA_GPU, PRICE, Watch())
    by_name = {s.metric: s for s in found}
    assert by_name["ttft_p99_ms@c32"].reference == [480.0]
    assert by_name["ttft_p99_ms@c32"].current == [520.0, 520.0]
    assert by_name["goodput_req_s"].current == [2.8, 2.8] and by_name["goodput_req_s"].direction is UP
    assert by_name["perplexity"].floor == Watch().accuracy_min_change
    assert by_name["itl_p99_ms@c32"].floor == Watch().min_relative_change
    assert misses == [] and notes == []  # c=8 still meets the SLA


def test_champion_that_meets_the_sla_nowhere_reports_what_each_repeat_missed():
    champion = record("fp8__kv-auto__tp1")
    slow = champion
    for level in (1, 8, 32):
        slow = with_level(slow, level, ttft_p99=900.0)
    _, misses, _ = champion_samples([champion], [slow, slow], SLA_GPU, PRICE, Watch())
    assert len(misses) == 2 and "TTFT p99 900 ms > 500 ms" in misses[0]


def test_a_cheaper_faster_candidate_dominates_a_costlier_one_does_not():
    champion = record("fp8__kv-auto__tp1")  # c=32: $1.1111/1M, goodput 3.0, TTFT p99 480
    # 900 tok/s at c=32: good tok/s 900 * 3.0 / 3.2 = 843.75, $3 / (843.75 * 3600) * 1e6 = 0.98765
    # (better by 0.123 > 5% of 1.1111); TTFT 400 (better by 80 > 24); the rest equal.
    faster = with_level(champion, 32, ttft_p99=400.0, output_tok_s=900.0)
    found = {s.metric: s for s in candidate_samples([champion], [faster], SLA_GPU, PRICE, Watch())}
    assert found["usd_per_1m_output_tokens"].current[0] == pytest.approx(0.98765, abs=1e-5)
    # fp8 tp2: more goodput (4.0) and lower TTFT (350), but 2 GPUs: $1.6667 > $1.1111.
    costlier = candidate_samples(
        [champion], [record("fp8__kv-auto__tp2")], SLA_GPU, PRICE, Watch(accuracy_min_change=0.02)
    )
    verdict = watch_verdict(
        champion.slug, [], [("tp2", costlier), ("faster", list(found.values()))], noise_k=3
    )
    assert verdict.dominated_by == "faster" and not verdict.regressed
    tp2 = next(c for c in verdict.candidates if c.slug == "tp2")
    assert [c.metric for c in tp2.checks if c.worse] == ["usd_per_1m_output_tokens"]


def test_a_candidate_that_misses_the_sla_cannot_dominate():
    assert (
        candidate_samples(
            [record("fp8__kv-auto__tp1")], [record("fp8__kv-fp8__tp1")], SLA_GPU, PRICE, Watch()
        )
        == []
    )


# -- the spec section ----------------------------------------------------------------------------


def test_watch_defaults_are_manual_with_three_repeats():
    watch = Watch()
    assert (watch.policy, watch.repeats, watch.noise_k) == ("manual", 3, 3.0)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("policy", "sometimes", "watch.policy: Input should be 'manual' or 'auto'"),
        ("repeats", 0, "watch.repeats: Input should be greater than 0"),
        ("min_relative_change", 1.5, "watch.min_relative_change: Input should be less than 1"),
        ("cadence", 3, "watch.cadence: unknown key"),
    ],
)
def test_bad_watch_settings_name_the_field(cli, spec_file, field, value, expected):
    result = cli("validate", spec_file(lambda spec: spec.setdefault("watch", {}).update({field: value})))
    assert result.exit_code == 2, result.output
    assert expected in result.stderr, result.stderr


# -- which records of a run are measurements of the champion, which are candidates ---------------


def champion_of(record_: TrialRecord):
    from enginesweep.flows.champion_watch import Champion

    return Champion(
        model_name="m",
        version="1",
        run_id="r",
        slug=record_.slug,
        content_hash=record_.content_hash,
        record=record_,
    )


def gpu_spec(spec_file, *overrides: str):
    """BASE_SPEC (H100, ISL/OSL 1024/256 like the fixtures) under the fixtures' SLA."""
    from enginesweep.build_configs.loading import load_spec

    return load_spec(
        spec_file(), ["sla.ttft_p99_ms=500", "sla.itl_p99_ms=30", "target.usd_per_gpu_hour=3.0", *overrides]
    )


def test_judge_tells_the_champions_engine_from_a_new_one_of_the_same_slug(spec_file):
    from enginesweep.flows.champion_watch import judge

    base = record("fp8__kv-auto__tp1")
    champion = champion_of(base)
    again = with_level(base, 32, ttft_p99=470.0).model_copy(update={"executed_stages": ["serve+benchmark"]})
    rebuilt = with_level(base, 32, ttft_p99=400.0, output_tok_s=900.0).model_copy(
        update={"content_hash": "cd" * 32, "executed_stages": ["quantize", "build", "serve+benchmark"]}
    )
    reused = base.model_copy(update={"executed_stages": []})  # not a new measurement
    verdict = judge(champion, [again, rebuilt, reused], [base.slug], gpu_spec(spec_file))
    assert {c.metric for c in verdict.checks} >= {"ttft_p99_ms@c32", "goodput_req_s"}
    assert all(c.n_current == 1 for c in verdict.checks)  # `again` only; `reused` is no measurement
    assert [c.slug for c in verdict.candidates] == [base.slug]  # the rebuilt engine
    assert verdict.dominated_by == base.slug
    assert any("now builds another engine" in note for note in verdict.notes)


def test_judge_compares_nothing_across_workloads(spec_file):
    from enginesweep.flows.champion_watch import judge

    base = record("fp8__kv-auto__tp1")
    again = base.model_copy(update={"executed_stages": ["serve+benchmark"]})
    verdict = judge(champion_of(base), [again], [], gpu_spec(spec_file, "workload.isl.mean=2048"))
    assert verdict.checks == [] and verdict.candidates == [] and verdict.status == "unchecked"
    assert "another workload than ISL/OSL 2048/256" in verdict.notes[0]
    assert "not comparable" in verdict.unchecked_reason


# -- a check that measured nothing of the champion is never ok ------------------------------------


def test_a_verdict_with_nothing_compared_is_unchecked_not_ok():
    verdict = watch_verdict("champ", [], [], noise_k=3)
    assert verdict.status == "unchecked" and not verdict.regressed
    assert verdict.unchecked_reason == "nothing new was measured to compare"
    assert "not checked: nothing new was measured" in verdict.summary


def test_a_drift_check_whose_rebenchmark_failed_is_unchecked(spec_file):
    from enginesweep.flows.champion_watch import judge

    base = record("fp8__kv-auto__tp1")
    failed = base.model_copy(
        update={
            "status": "failed",
            "error": "ServerDied: the server died",
            "executed_stages": ["serve+benchmark"],
        }
    )
    verdict = judge(champion_of(base), [failed], [base.slug], gpu_spec(spec_file), drift_check=True)
    assert verdict.status == "unchecked" and verdict.checks == []
    assert "re-benchmark of the champion" in verdict.unchecked_reason
    assert "ServerDied: the server died" in verdict.unchecked_reason
    # A record of the slug that is another engine (or no record at all) is no measurement either.
    other = base.model_copy(update={"content_hash": "cd" * 32, "executed_stages": ["serve+benchmark"]})
    for records in ([other], []):
        verdict = judge(champion_of(base), records, [base.slug], gpu_spec(spec_file), drift_check=True)
        assert verdict.status == "unchecked", verdict.summary
        assert "no record of this run measured the champion's engine" in verdict.unchecked_reason
    # The same records in a sweep: the champion was reused, the candidate compared: not unchecked.
    verdict = judge(champion_of(base), [other], [base.slug], gpu_spec(spec_file))
    assert verdict.status == "ok" and verdict.unchecked_reason is None


class _Client:
    """Records the tags an MLflow client would set (record_report's calls)."""

    def __init__(self):
        self.run_tags: dict[str, str] = {}
        self.version_tags: dict[str, str] = {"enginesweep.watch.verdict": "regressed"}

    def set_tag(self, run_id, key, value):
        self.run_tags[key] = value

    def log_text(self, run_id, text, path):
        """verdict.json: not read back by these tests (the tags carry the verdict)."""

    def set_model_version_tag(self, name, version, key, value):
        self.version_tags[key] = value


def test_an_unchecked_verdict_is_recorded_on_the_run_and_leaves_the_versions_verdict(spec_file):
    from enginesweep.flows.champion_watch import WatchReport, judge, record_report
    from enginesweep.flows.schedule_state import ScheduleInputs

    base = record("fp8__kv-auto__tp1")
    verdict = judge(champion_of(base), [], [base.slug], gpu_spec(spec_file), drift_check=True)
    inputs = ScheduleInputs(revision="r@main", revision_sha="a" * 40, runtime_version="x=1", spec_hash="h")
    report = WatchReport(
        sweep="s",
        mode="drift-check",
        inputs=inputs,
        changes=[],
        parent_run_ids=["run-1"],
        policy="manual",
        champion=base.slug,
        champion_version="1",
        verdict=verdict,
        action="none",
        checked_at="now",
    )
    client = _Client()
    record_report(client, report, champion_of(base))
    assert client.run_tags["enginesweep.watch.verdict"] == "unchecked"
    assert "measured the champion's engine" in client.run_tags["enginesweep.watch.unchecked_reason"]
    # The version keeps its last real verdict (here a regression), and says it went unchecked.
    assert client.version_tags["enginesweep.watch.verdict"] == "regressed"
    assert client.version_tags["enginesweep.watch.unchecked_run"] == "run-1"


# -- numbers of another GPU are never compared --------------------------------------------------------


def on_hardware(base: TrialRecord, hardware: str) -> TrialRecord:
    """`base` as if measured on `hardware` (the record and its benchmark and accuracy results)."""
    parts = {
        name: getattr(base, name).model_copy(update={"hardware": hardware})
        for name in ("benchmark", "accuracy", "baseline_accuracy")
        if getattr(base, name)
    }
    return base.model_copy(update={"hardware": hardware, **parts})


def test_a_candidate_measured_on_another_gpu_cannot_dominate(spec_file):
    from enginesweep.flows.champion_watch import judge

    base = record("fp8__kv-auto__tp1")  # H100-SXM-80GB, as the spec's target
    faster = with_level(base, 32, ttft_p99=400.0, output_tok_s=900.0).model_copy(
        update={"slug": "other", "content_hash": "cd" * 32, "executed_stages": ["serve+benchmark"]}
    )
    assert judge(champion_of(base), [faster], ["other"], gpu_spec(spec_file)).dominated_by == "other"
    verdict = judge(
        champion_of(base), [on_hardware(faster, "H200-SXM-141GB")], ["other"], gpu_spec(spec_file)
    )
    assert verdict.dominated_by is None and verdict.candidates == []
    assert verdict.status == "unchecked"
    assert any(
        "left out, not measured on H100-SXM-80GB: other (H200-SXM-141GB)" in note for note in verdict.notes
    )


def test_a_champion_measured_on_another_gpu_is_compared_with_nothing(spec_file):
    from enginesweep.flows.champion_watch import judge

    base = record("fp8__kv-auto__tp1")
    faster = with_level(base, 32, ttft_p99=400.0, output_tok_s=900.0).model_copy(
        update={"slug": "other", "content_hash": "cd" * 32, "executed_stages": ["serve+benchmark"]}
    )
    sweep = gpu_spec(spec_file, "target.gpu=H200-SXM-141GB")
    verdict = judge(champion_of(base), [on_hardware(faster, "H200-SXM-141GB")], ["other"], sweep)
    assert verdict.status == "unchecked" and verdict.dominated_by is None
    assert "measured on H100-SXM-80GB, this sweep runs on H200-SXM-141GB" in verdict.unchecked_reason


# -- the reference is the registered measurement; re-measurements set the noise only -------------


def test_history_widens_the_noise_but_never_moves_the_reference_mean():
    # s_p pools [100, 110] (SS 50) and [100, 100] (SS 0) over 1 + 1 dof: 5; n stays 1.
    check = compare(
        Samples(metric="m", direction=UP, reference=[100], history=[100, 110], current=[100, 100], floor=0.0),
        noise_k=3,
    )
    assert check.reference_mean == 100 and check.n_reference == 1 and check.n_history == 2
    assert check.pooled_std == pytest.approx(5.0)
    assert check.threshold == pytest.approx(3 * 5 * math.sqrt(1 + 1 / 2))


def test_a_regression_is_not_absorbed_into_the_reference(spec_file):
    """The reviewer's numbers: registered 100 tok/s at c=32; day 2 measures 80, 80, 80
    (regressed); day 3 measures 80, 80, 80 again with day 2 in the history: still regressed,
    against the registered 100 and not the mean of [100, 80, 80, 80]."""
    from enginesweep.flows.champion_watch import judge

    base = record("fp8__kv-auto__tp1")
    registered = with_level(base, 32, output_tok_s=100.0)
    champion = champion_of(registered)
    day = [
        with_level(base, 32, output_tok_s=80.0).model_copy(update={"executed_stages": ["serve+benchmark"]})
        for _ in range(3)
    ]
    day2 = judge(champion, day, [base.slug], gpu_spec(spec_file), drift_check=True)
    day3 = judge(
        champion.model_copy(update={"history": day}), day, [base.slug], gpu_spec(spec_file), drift_check=True
    )
    for verdict in (day2, day3):
        check = next(c for c in verdict.checks if c.metric == "output_tok_s@c32")
        assert check.reference_mean == 100 and check.current_mean == 80 and check.worse
        assert verdict.status == "regressed" and verdict.regressed
    assert next(c for c in day3.checks if c.metric == "output_tok_s@c32").n_history == 3
