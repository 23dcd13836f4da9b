"""The requests a benchmark sends, written as an aiperf `single_turn` dataset, and their summary.

Synthetic traffic without shared prefixes is left to aiperf (`--synthetic-input-tokens-*`). Every
other workload is built here, so that what was sent is known exactly and is the same for every
trial of a sweep:

- a request log, replayed as recorded (every request once, at its logged time: aiperf's fixed
  schedule) or resampled (`request_count` requests drawn with the workload's seed);
- an ISL/OSL mixture, drawn per request by weight, lengths from each component's normal law;
- shared prefixes: each request starts with one of `pool_size` prefixes.

A prompt is text of the model's own tokenizer, cut from running Shakespeare (`textdata`): a
logged `hash_ids` block, or a shared prefix, is always the same text, so requests that share
leading blocks share a prefix a server can cache; each request's own text comes from a place of
its own. Each row carries `output_length`, which the payload renders as `max_tokens` (and
`min_tokens`: exactly that many tokens are decoded). Lengths are counted again on the final text,
because text cut at token boundaries can tokenize one or two tokens differently when joined; the
summary reports those counts, the histogram included.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from enginesweep.build_configs.request_log import LengthStats, LoggedRequest
from enginesweep.build_configs.schema import Workload
from enginesweep.engines.files import write_atomic
from enginesweep.evaluation.benchmark.results import TRAFFIC_SUMMARY
from enginesweep.evaluation.records import Histogram, LengthSummary, TrafficSummary

DATASET_NAME = "requests.jsonl"
HISTOGRAM_BINS = 10
BUILDER_VERSION = 1
"""Bumped when the same workload would produce different prompts (part of the trial key)."""


class TokenizerLike(Protocol):
    """What the builder needs of a tokenizer: ids of a text, and text of ids."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass(frozen=True)
class PlannedRequest:
    """One request to send: its prompt, its output length, (recorded replay) its time, and the
    shareable pieces its prompt starts with (their keys and token counts, for the reuse ratio)."""

    prompt: str
    output_length: int
    timestamp_ms: float | None = None
    shared: tuple[tuple[str, int], ...] = ()


class FastTokenizer:
    """A Hugging Face `tokenizer.json` through the `tokenizers` library: no transformers import,
    no special tokens added (the server adds its own)."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer  # transformers' own dependency: present wherever it is

        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: prompts are built with the model's fast tokenizer")
        self._tokenizer = Tokenizer.from_file(str(path))

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens."""
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`."""
        return self._tokenizer.decode(list(ids), skip_special_tokens=False)


class PromptMaker:
    """Prompts of exact token counts cut from one running text. A `key` always maps to the same
    place in the text, so equal keys give equal text (shared prefixes) and distinct keys give
    text from (almost always) distinct places."""

    def __init__(self, tokenizer: TokenizerLike, text: str):
        self._tokenizer = tokenizer
        self._ids = tokenizer.encode(text)
        if len(self._ids) < 2:
            raise ValueError("the prompt text is too short to cut prompts from")

    def piece(self, tokens: int, key: str) -> str:
        """`tokens` tokens of the running text from the place `key` names (wrapping around)."""
        start = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % len(self._ids)
        ids = [self._ids[(start + i) % len(self._ids)] for i in range(tokens)]
        return self._tokenizer.decode(ids)

    def count(self, text: str) -> int:
        """How many tokens `text` is."""
        return len(self._tokenizer.encode(text))


def _logged_request(
    maker: PromptMaker,
    request: LoggedRequest,
    block_tokens: int,
    index: int,
    timestamp_ms: float | None = None,
) -> PlannedRequest:
    if request.prompt is not None:
        return PlannedRequest(request.prompt, request.output_length, timestamp_ms)
    if not request.hash_ids:
        return PlannedRequest(
            maker.piece(request.input_length, f"request:{index}"), request.output_length, timestamp_ms
        )
    shared = []
    for position, block in enumerate(request.hash_ids):
        size = min(block_tokens, request.input_length - position * block_tokens)
        # A block's text depends on its id and, for the last (partial) one, its size.
        shared.append((f"block:{block}" if size == block_tokens else f"block:{block}:{size}", size))
    prompt = "".join(maker.piece(size, key) for key, size in shared)
    return PlannedRequest(prompt, request.output_length, timestamp_ms, tuple(shared))


def _draw_length(rng: random.Random, mean: int, stddev: int) -> int:
    return max(1, round(rng.gauss(mean, stddev))) if stddev else mean


def plan_requests(workload: Workload, maker: PromptMaker) -> list[PlannedRequest] | None:
    """The requests of `workload`, or None where aiperf synthesizes them itself (plain
    synthetic lengths)."""
    rng = random.Random(workload.seed)
    if workload.request_log is not None:
        log = workload.request_log.log
        block = workload.request_log.block_tokens
        if workload.request_log.replay == "recorded":
            first = log.requests[0].timestamp_ms or 0.0
            return [
                _logged_request(maker, r, block, i, (r.timestamp_ms or 0.0) - first)
                for i, r in enumerate(log.requests)
            ]
        indices = [rng.randrange(len(log.requests)) for _ in range(workload.request_count)]
        return [_logged_request(maker, log.requests[i], block, i) for i in indices]
    if workload.mixture is None and workload.shared_prefix is None:
        return None
    components = workload.mixture or []
    weights = [c.weight for c in components]
    requests = []
    for n in range(workload.request_count):
        if components:
            component = rng.choices(components, weights)[0]
            isl, osl = component.isl, component.osl
        else:
            isl, osl = workload.isl, workload.osl
        input_length = _draw_length(rng, isl.mean, isl.stddev)  # type: ignore[union-attr]
        output_length = _draw_length(rng, osl.mean, osl.stddev)  # type: ignore[union-attr]
        prompt, shared = "", ()
        if workload.shared_prefix is not None:
            prefix = workload.shared_prefix
            key = f"prefix:{rng.randrange(prefix.pool_size)}:{prefix.tokens}"
            prompt, shared = maker.piece(prefix.tokens, key), ((key, prefix.tokens),)
            input_length = max(1, input_length - prefix.tokens)
        own = maker.piece(input_length, f"request:{n}")
        requests.append(PlannedRequest(prompt + own, output_length, shared=shared))
    return requests


def histogram(values: list[int], bins: int = HISTOGRAM_BINS) -> Histogram:
    """Counts of `values` in `bins` equal-width bins from their minimum to their maximum."""
    low, high = min(values), max(values)
    width = max(1.0, (high - low) / bins)
    edges = [low + i * width for i in range(bins + 1)] if high > low else [low, low + 1]
    counts = [0] * (len(edges) - 1)
    for value in values:
        counts[min(int((value - low) / width), len(counts) - 1)] += 1
    return Histogram(edges=edges, counts=counts)


def _lengths(values: list[int]) -> LengthSummary:
    stats = LengthStats.of(values)
    return LengthSummary(
        mean=stats.mean, stddev=stats.stddev, min=stats.min, max=stats.max, histogram=histogram(values)
    )


def reuse_ratio(requests: list[PlannedRequest], input_tokens: list[int]) -> float:
    """The share of input tokens a perfect prefix cache could serve, sending `requests` in order:
    each request's leading shared pieces already sent by an earlier request (a prefix cache
    reuses only a prefix, so the run stops at the first new piece), over all input tokens."""
    seen: set[str] = set()
    reusable = 0
    for request, tokens in zip(requests, input_tokens, strict=True):
        leading = 0
        for key, size in request.shared:
            if key not in seen:
                break
            leading += size
        reusable += min(leading, tokens)
        seen.update(key for key, _ in request.shared)
    total = sum(input_tokens)
    return reusable / total if total else 0.0


def summarize(workload: Workload, requests: list[PlannedRequest], maker: PromptMaker) -> TrafficSummary:
    """What was sent: lengths counted on the final text, the share of input tokens a prefix cache
    could serve, and where the requests came from."""
    inputs = [maker.count(r.prompt) for r in requests]
    log = workload.request_log.log if workload.request_log is not None else None
    return TrafficSummary(
        source=workload.source,
        replay=workload.replay,
        requests=len(requests),
        input_tokens=_lengths(inputs),
        output_tokens=_lengths([r.output_length for r in requests]),
        prefix_reuse_ratio=reuse_ratio(requests, inputs),
        request_log_sha256=None if log is None else log.sha256,
        recorded_duration_s=log.duration_s if log is not None and workload.replay == "recorded" else None,
    )


@dataclass(frozen=True)
class TrafficDataset:
    """A written dataset: aiperf's input file, its summary, and how to run it."""

    path: Path
    summary: TrafficSummary
    fixed_schedule: bool


def write_dataset(
    workload: Workload, requests: list[PlannedRequest], folder: Path, summary: TrafficSummary
) -> TrafficDataset:
    """Write `requests` as an aiperf `single_turn` JSONL file in `folder`, with the summary
    beside it (`traffic.json`)."""
    rows: list[dict[str, Any]] = []
    for request in requests:
        row: dict[str, Any] = {"text": request.prompt, "output_length": request.output_length}
        if request.timestamp_ms is not None:
            row["timestamp"] = request.timestamp_ms
        rows.append(row)
    path = write_atomic(Path(folder) / DATASET_NAME, "".join(json.dumps(row) + "\n" for row in rows))
    summary.save(Path(folder) / TRAFFIC_SUMMARY)
    return TrafficDataset(path=path, summary=summary, fixed_schedule=workload.replay == "recorded")


def build_traffic(workload: Workload, tokenizer_dir: Path, text: str, folder: Path) -> TrafficDataset | None:
    """Plan, summarize and write the requests of `workload` into `folder`; None for plain
    synthetic traffic (aiperf makes it). What an earlier run wrote there goes first: a stale
    summary must not describe this run's requests."""
    for stale in (DATASET_NAME, TRAFFIC_SUMMARY):
        (Path(folder) / stale).unlink(missing_ok=True)
    if workload.source == "synthetic" and workload.shared_prefix is None:
        return None
    maker = PromptMaker(FastTokenizer(tokenizer_dir), text)
    requests = plan_requests(workload, maker)
    assert requests is not None  # not plain synthetic, checked above
    return write_dataset(workload, requests, folder, summarize(workload, requests, maker))
