"""The trial record's typed fields: `config` is a TrialConfig and `predicted` the plan's
Prediction, read back from what a sweep writes; records written before a Prediction field
existed still read, that field None (not recorded), never filled in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from enginesweep.build_configs.loading import load_spec
from enginesweep.build_configs.trial import TrialConfig
from enginesweep.evaluation.planning import expand
from enginesweep.evaluation.records import RecordedPrediction, TrialRecord

pytestmark = pytest.mark.unit

RECORDS = Path(__file__).parents[1] / "fixtures" / "records"
CAPTURED = sorted((RECORDS / "cpu_measured").glob("*.json"))


def _record(**changes) -> TrialRecord:
    base = json.loads(CAPTURED[0].read_text())
    return TrialRecord.model_validate({**base, **changes})


def test_the_captured_records_read_typed_with_what_they_lack_as_none():
    assert len(CAPTURED) == 4
    for path in CAPTURED:
        raw = json.loads(path.read_text())
        record = TrialRecord.load(path)
        assert isinstance(record.config, TrialConfig)
        assert record.config.quant.value == raw["config"]["quant"]
        assert record.predicted.source == raw["predicted"]["source"] == "predicted:roofline"
        assert record.predicted.ttft_ms == raw["predicted"]["ttft_ms"]
        # written before these fields existed: not recorded, so None
        assert record.predicted.source_version is None and record.predicted.goodput_req_s_at_sla is None
        assert [level.in_flight for level in record.predicted.per_concurrency] == [None, None]
        assert [level.concurrency for level in record.predicted.per_concurrency] == [
            level["concurrency"] for level in raw["predicted"]["per_concurrency"]
        ]


def test_a_prediction_the_planner_writes_round_trips_whole():
    resolved = load_spec("smollm2-cpu-smoke")
    planned = next(t for t in expand(resolved).trials if t.predicted is not None)
    record = _record(
        config=planned.config.model_dump(mode="json"), predicted=planned.predicted.model_dump(mode="json")
    )
    again = TrialRecord.model_validate_json(record.model_dump_json())
    assert again.config == planned.config
    assert again.predicted.model_dump() == planned.predicted.model_dump()  # every field, none lost
    assert again.predicted.source_version is not None


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"config": {"quant": "fp3"}}, "config.quant"),
        ({"predicted": {"source": "measured"}}, "predicted.source"),
    ],
)
def test_a_wrong_config_or_prediction_is_refused_naming_the_field(changes, where):
    base = json.loads(CAPTURED[0].read_text())
    for key, value in changes.items():
        base[key] = {**base[key], **value}
    with pytest.raises(ValidationError) as error:
        TrialRecord.model_validate(base)
    assert where in str(error.value).replace("\n", ".")


def test_a_recorded_prediction_keeps_the_required_fields_required():
    with pytest.raises(ValidationError, match="ttft_ms"):
        RecordedPrediction.model_validate(
            {"source": "predicted:roofline", "hardware": "cpu", "per_concurrency": []}
        )
