"""lm-eval's output turned into paired items (`task_results`), and the offline environment of
an evaluation put back as it was afterwards."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from enginesweep.evaluation.accuracy.harness import TaskError, offline_harness, task_results

pytestmark = pytest.mark.unit


def sample(doc: int, value, *, metric: str = "acc", filt: str = "none") -> dict:
    return {"doc_id": doc, "doc_hash": f"hash-{doc}", "metrics": [metric], metric: value, "filter": filt}


def results(samples: dict, groups: dict | None = None) -> dict:
    return {
        "samples": samples,
        "group_subtasks": groups or {name: [] for name in samples},
        "higher_is_better": {name: {"acc": True, "exact_match": True} for name in samples},
    }


def test_a_group_is_one_metric_over_its_pooled_items() -> None:
    out = task_results(
        results(
            {
                "mmlu_a": [sample(0, 1), sample(1, 0)],
                "mmlu_b": [sample(0, 1)],
                "solo": [sample(3, 1), sample(5, 0)],
            },
            {"mmlu": ["mmlu_a", "mmlu_b"], "solo": []},
        ),
        hardware="cpu",
        tool="lm_eval 0.4.13",
    )
    by_task = {r.task: r for r in out}
    assert set(by_task) == {"mmlu", "solo"}  # no separately gated subtasks
    assert by_task["mmlu"].item_ids == [0, 1, 2] and by_task["mmlu"].item_values == [1.0, 0.0, 1.0]
    assert by_task["solo"].item_ids == [3, 5]  # a standalone task keeps its doc ids


def test_a_nested_group_pools_its_leaves() -> None:
    out = task_results(
        results(
            {"x1": [sample(0, 1)], "x2": [sample(0, 0)], "y": [sample(0, 1)]},
            {"top": ["mid", "y"], "mid": ["x1", "x2"]},
        ),
        hardware="cpu",
        tool="t",
    )
    assert [(r.task, r.item_values) for r in out] == [("top", [1.0, 0.0, 1.0])]


def test_several_filters_keep_the_first_and_never_double_count() -> None:
    gsm = [
        sample(0, 1, metric="exact_match", filt="strict-match"),
        sample(0, 0, metric="exact_match", filt="flexible-extract"),
        sample(1, 0, metric="exact_match", filt="strict-match"),
        sample(1, 1, metric="exact_match", filt="flexible-extract"),
    ]
    (result,) = task_results(results({"gsm8k": gsm}), hardware="cpu", tool="t")
    assert result.metric == "exact_match,strict-match"
    assert result.item_ids == [0, 1] and result.item_values == [1.0, 0.0]


def test_items_that_cannot_be_paired_are_refused() -> None:
    with pytest.raises(TaskError, match="logged some documents twice"):
        task_results(results({"t": [sample(0, 1), sample(0, 0)]}), hardware="cpu", tool="t")
    with pytest.raises(TaskError, match="metric bleu gives tuple per item"):
        task_results(results({"t": [sample(0, ("ref", "hyp"), metric="bleu")]}), hardware="cpu", tool="t")


def test_the_offline_environment_is_put_back(tmp_path: Path) -> None:
    import datasets.config
    import huggingface_hub.constants

    before = (
        os.environ.get("HF_HUB_OFFLINE"),
        datasets.config.HF_DATASETS_OFFLINE,
        datasets.config.HF_DATASETS_CACHE,
        huggingface_hub.constants.HF_HUB_OFFLINE,
    )
    with offline_harness(tmp_path / "cache"):
        assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "1"
        assert datasets.config.HF_DATASETS_OFFLINE and huggingface_hub.constants.HF_HUB_OFFLINE
        assert tmp_path / "cache" == datasets.config.HF_DATASETS_CACHE
    assert (
        os.environ.get("HF_HUB_OFFLINE"),
        datasets.config.HF_DATASETS_OFFLINE,
        datasets.config.HF_DATASETS_CACHE,
        huggingface_hub.constants.HF_HUB_OFFLINE,
    ) == before


def test_an_evaluation_leaves_torchs_environment_report_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """lm-eval's `add_env_info`, which `simple_evaluate` calls last, no longer runs torch's
    `collect_env` (`pip list`, `cmake --version`, ... as subprocesses); the versions stay."""
    import subprocess
    from importlib.metadata import version

    import lm_eval.evaluator
    import transformers

    from enginesweep.evaluation.accuracy import harness

    monkeypatch.setattr(lm_eval.evaluator, "add_env_info", lm_eval.evaluator.add_env_info)  # put back after
    started: list = []
    monkeypatch.setattr(subprocess, "Popen", lambda *args, **kwargs: started.append(args))
    harness._skip_environment_report()
    harness._skip_environment_report()  # twice is once
    storage: dict = {}
    lm_eval.evaluator.add_env_info(storage)
    assert started == []
    assert storage["pretty_env_info"].startswith("not collected")
    assert storage["transformers_version"] == transformers.__version__
    assert storage["lm_eval_version"] == version("lm_eval")
