"""lm-eval run out of process (as the GPU stacks run it) reads back into exactly the per-item
results of the in-process run: the real lm-eval command line on the tiny Llama, offline."""

from __future__ import annotations

import sys

import pytest
import transformers

from enginesweep.engines import textdata
from enginesweep.engines.trtllm.commands import Command
from enginesweep.evaluation.accuracy.external import evaluate_external, merged_include
from enginesweep.evaluation.accuracy.harness import TaskError, evaluate_tasks
from enginesweep.evaluation.accuracy.lm_eval_cli import read_cli_output
from enginesweep.evaluation.accuracy.tasks import write_builtin_tasks

pytestmark = pytest.mark.integration

TASKS = ["enginesweep_cloze", "enginesweep_recall"]


def test_cli_results_equal_the_in_process_ones_item_by_item(tiny_llama_dir, tmp_path):
    tasks = write_builtin_tasks(textdata.corpus_path(download=False), tmp_path / "tasks")
    include = merged_include([tasks], tmp_path / "merged")
    assert sorted(str(p.relative_to(include)) for p in include.rglob("*.yaml")) == [
        "0/enginesweep_cloze.yaml",
        "0/enginesweep_recall.yaml",
    ]
    command = Command(
        "lm-eval run",
        [
            sys.executable,
            "-m",
            "lm_eval",
            "run",
            "--model",
            "hf",
            "--model_args",
            f"pretrained={tiny_llama_dir}",
            "--tasks",
            ",".join(TASKS),
            "--include_path",
            str(include),
            "--limit",
            "16",
            "--batch_size",
            "8",
            "--log_samples",
            "--output_path",
            str(tmp_path / "out"),
            "--seed",
            "0",
        ],
    )
    result = evaluate_external(
        command,
        tmp_path / "out",
        hardware="cpu",
        tool="lm-eval (cli)",
        tasks_sha256="0" * 64,
        cache_dir=tmp_path / "cache",
        log_file=tmp_path / "lm_eval.log",
    )
    assert result.perplexity is None and [t.task for t in result.tasks] == TASKS
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_llama_dir)
    in_process = evaluate_tasks(
        model,
        tokenizer,
        tasks=TASKS,
        include_paths=[tasks],
        limit=16,
        hardware="cpu",
        cache_dir=tmp_path / "cache2",
        batch_size=8,
    )
    for cli, own in zip(result.tasks, in_process):
        assert (cli.task, cli.metric, cli.items_sha256, cli.item_ids) == (
            own.task,
            own.metric,
            own.items_sha256,
            own.item_ids,
        )
        assert cli.item_values == pytest.approx(own.item_values)
    assert "--model hf" in (tmp_path / "lm_eval.log").read_text()


def test_a_failed_or_silent_run_is_an_error_with_its_log(tmp_path):
    failing = Command("lm-eval run", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])
    with pytest.raises(TaskError, match="lm-eval exited with code 3(.|\n)*boom"):
        evaluate_external(
            failing,
            tmp_path / "out",
            hardware="cpu",
            tool="x",
            tasks_sha256="0",
            cache_dir=tmp_path,
            log_file=tmp_path / "log",
        )
    with pytest.raises(TaskError, match="wrote no results"):
        read_cli_output(tmp_path / "out", hardware="cpu", tool="x")


def test_the_merged_include_keeps_each_trees_layout(tmp_path):
    """Exported task trees reuse file names in subfolders: every file gets its own link."""
    for tree in ("a", "b"):
        for sub in ("default", "flan"):
            (tmp_path / tree / sub).mkdir(parents=True)
            (tmp_path / tree / sub / "x.yaml").write_text(f"task: {tree}_{sub}\n")
    folder = merged_include([tmp_path / "a", tmp_path / "b"], tmp_path / "merged")
    links = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.yaml"))
    assert links == ["0/default/x.yaml", "0/flan/x.yaml", "1/default/x.yaml", "1/flan/x.yaml"]
    assert (folder / "1" / "flan" / "x.yaml").read_text() == "task: b_flan\n"
    assert merged_include([tmp_path / "a", tmp_path / "b"], tmp_path / "merged") == folder  # shared
