"""Perplexity and next-token top-1 accuracy of a causal LM on held-out text, per window.

The text is tokenized once without special tokens and cut into non-overlapping windows of W
tokens (a tail shorter than W is dropped, so every window weighs the same). Each window is one
forward pass with no earlier context; positions 1..W-1 are predicted from the tokens before them,
so a window contributes W-1 predictions. Per window k: NLL_k = -(1/(W-1)) sum_t log p(x_t | x_<t)
and top1_k = (1/(W-1)) sum_t [argmax p(. | x_<t) == x_t]. Overall, with equal token counts,
perplexity = exp(mean_k NLL_k) = exp(mean NLL over all predicted tokens) and top-1 = mean_k top1_k.
The per-window lists are kept because variants scored on the same windows are compared pairwise
(`evaluation.accuracy.paired`). Any Hugging Face causal LM works, a ModelOpt fake-quantized one
included: it is an ordinary `nn.Module` whose forward returns `.logits`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from enginesweep.engines.textdata import text_sha256
from enginesweep.evaluation.records import AccuracyResult

if TYPE_CHECKING:
    import torch


def token_windows(token_ids: list[int], window_tokens: int, max_windows: int | None) -> list[list[int]]:
    """Non-overlapping windows of `window_tokens` ids from the start; at most `max_windows`."""
    if window_tokens < 2:
        raise ValueError(f"window_tokens must be at least 2 (one context, one target), got {window_tokens}")
    if max_windows is not None and max_windows < 1:
        raise ValueError(f"max_windows must be positive, got {max_windows}")
    count = len(token_ids) // window_tokens
    if max_windows is not None:
        count = min(count, max_windows)
    if count == 0:
        raise ValueError(f"the text has {len(token_ids)} tokens, fewer than one {window_tokens}-token window")
    return [token_ids[i * window_tokens : (i + 1) * window_tokens] for i in range(count)]


def evaluate_perplexity(
    model: Any,
    tokenizer: Any,
    text: str,
    *,
    window_tokens: int,
    max_windows: int | None,
    hardware: str,
    dataset_name: str,
    batch_size: int = 1,
) -> AccuracyResult:
    """Score `model` on `text` in windows of `window_tokens`; per-window NLL and top-1 kept.

    `max_windows` caps the number of windows (None: all whole windows). `batch_size` windows go
    through one forward pass; every window has the same length, so no padding or mask is needed.
    Raise it only where about batch_size * window_tokens * vocab * 12 bytes (logits and their
    float32 log-softmax) fit beside the model. The model is put in eval mode for the pass and its
    previous mode restored afterwards.
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    # verbose=False: the whole text is longer than the model's context on purpose; the
    # tokenizer's "sequence too long" warning does not apply to windows.
    token_ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    windows = token_windows(list(token_ids), window_tokens, max_windows)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    window_nll: list[float] = []
    window_top1: list[float] = []
    try:
        with torch.inference_mode():
            for start in range(0, len(windows), batch_size):
                batch = torch.tensor(windows[start : start + batch_size], device=device)
                nll, top1 = _score_batch(model, batch)
                window_nll.extend(nll)
                window_top1.extend(top1)
    finally:
        model.train(was_training)
    mean_nll = math.fsum(window_nll) / len(window_nll)
    return AccuracyResult(
        hardware=hardware,
        dataset=dataset_name,
        dataset_sha256=text_sha256(text),
        window_tokens=window_tokens,
        perplexity=math.exp(mean_nll),
        top1_accuracy=math.fsum(window_top1) / len(window_top1),
        window_nll=window_nll,
        window_top1=window_top1,
    )


def _score_batch(model: Any, batch: torch.Tensor) -> tuple[list[float], list[float]]:
    import torch

    # use_cache=False: a KV cache is only cost when nothing is generated.
    logits = model(input_ids=batch, use_cache=False).logits[:, :-1, :]
    targets = batch[:, 1:]
    # float32 log-softmax: bf16/fp16 logits would round the NLL we are trying to compare.
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    hits = (logits.argmax(dim=-1) == targets).float()
    return (nll.double().mean(dim=1).tolist(), hits.double().mean(dim=1).tolist())
