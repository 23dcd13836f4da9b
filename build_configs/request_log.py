"""A request log: the user's own traffic, one JSON object per line, read and checked.

Each line is one request:

    {"input_length": 182, "output_length": 12, "timestamp": 1520.0, "hash_ids": [0, 1, 7]}

- `input_length` and `output_length` (tokens, required): the prompt's length and how many tokens
  the request decoded.
- `timestamp` (ms since the log's start, optional): when it arrived. Either every line has one or
  none does; they never go backwards. Replaying a log "as recorded" needs them.
- `prompt` (optional): the request's text, sent verbatim (its logged `input_length` is kept for
  the statistics; the server counts the tokens it actually gets).
- `hash_ids` (optional): Mooncake-trace style prompt blocks. The prompt is `len(hash_ids)` blocks
  of `block_tokens` tokens (the last one possibly partial); two requests sharing the leading ids
  share that prefix, which is what a server's prefix cache (block reuse) can skip.

Mooncake traces (`timestamp`, `input_length`, `output_length`, `hash_ids`) are read as they are.
Every problem is reported as `file:line: field: what is wrong`, all of them at once (up to a
limit), so that a user fixes a log in one pass. Only the standard library is used: this layer is
imported by the spec loader on every machine.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_REPORTED_PROBLEMS = 20
KNOWN_FIELDS = frozenset({"input_length", "output_length", "timestamp", "prompt", "hash_ids"})


class RequestLogError(ValueError):
    """A request log that cannot be used; the message lists its problems, line by line."""


@dataclass(frozen=True)
class LoggedRequest:
    """One request of a log, as logged."""

    input_length: int
    output_length: int
    timestamp_ms: float | None = None
    prompt: str | None = None
    hash_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class LengthStats:
    """Count, mean, standard deviation and range of a list of token lengths."""

    mean: float
    stddev: float
    min: int
    max: int

    @classmethod
    def of(cls, values: list[int]) -> LengthStats:
        """The statistics of `values` (population standard deviation)."""
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / len(values)
        return cls(mean=mean, stddev=math.sqrt(var), min=min(values), max=max(values))


@dataclass(frozen=True)
class RequestLog:
    """A validated request log and its content hash."""

    path: Path
    sha256: str
    requests: tuple[LoggedRequest, ...]
    block_tokens: int

    @property
    def timed(self) -> bool:
        """Every request carries its arrival time."""
        return self.requests[0].timestamp_ms is not None

    @property
    def duration_s(self) -> float | None:
        """From the first arrival to the last (None without timestamps)."""
        if not self.timed:
            return None
        return (self.requests[-1].timestamp_ms - self.requests[0].timestamp_ms) / 1000.0  # type: ignore[operator]

    def input_lengths(self) -> list[int]:
        """Each request's logged input length."""
        return [r.input_length for r in self.requests]

    def output_lengths(self) -> list[int]:
        """Each request's output length."""
        return [r.output_length for r in self.requests]

    def prefix_reuse_ratio(self) -> float:
        """The share of logged input tokens a perfect prefix cache could serve: for each request,
        its leading blocks whose ids an earlier request already sent (a prefix cache reuses only
        a prefix, so the run stops at the first new block), over every input token."""
        seen: set[int] = set()
        reusable = total = 0
        for request in self.requests:
            total += request.input_length
            leading = 0
            for block in request.hash_ids:
                if block not in seen:
                    break
                leading += 1
            reusable += min(leading * self.block_tokens, request.input_length)
            seen.update(request.hash_ids)
        return reusable / total if total else 0.0


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_request_log(path: Path, block_tokens: int = 512) -> RequestLog:
    """Read and check a request log; raise `RequestLogError` naming every bad line and field."""
    path = Path(path)
    if not path.is_file():
        raise RequestLogError(f"{path}: no such file")
    problems: list[str] = []
    requests: list[LoggedRequest] = []
    last_time: float | None = None
    timed: bool | None = None
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{where}: not JSON ({exc.msg})")
                continue
            if not isinstance(row, dict):
                problems.append(f"{where}: expected a JSON object, got {type(row).__name__}")
                continue
            request, row_problems = _request(row, block_tokens)
            problems += [f"{where}: {p}" for p in row_problems]
            if request is None:
                continue
            has_time = request.timestamp_ms is not None
            if timed is None:
                timed = has_time
            elif has_time != timed:
                problems.append(
                    f"{where}: timestamp: {'present' if has_time else 'missing'} here but "
                    f"{'missing' if has_time else 'present'} on the first request; give it on every "
                    "line or on none"
                )
            if has_time and last_time is not None and request.timestamp_ms < last_time:  # type: ignore[operator]
                problems.append(
                    f"{where}: timestamp: {request.timestamp_ms:g} ms is before the previous "
                    f"request's {last_time:g} ms; sort the log by arrival time"
                )
            if has_time:
                last_time = request.timestamp_ms
            requests.append(request)
            if len(problems) > MAX_REPORTED_PROBLEMS:
                break
    if not requests and not problems:
        problems.append(f"{path}: the log holds no request")
    if problems:
        shown = problems[:MAX_REPORTED_PROBLEMS]
        more = f"\n  ... and more (first {MAX_REPORTED_PROBLEMS} shown)" if len(problems) > len(shown) else ""
        raise RequestLogError(
            f"{path} is not a usable request log ({len(shown)} problem{'s' * (len(shown) != 1)}):\n  "
            + "\n  ".join(shown)
            + more
        )
    return RequestLog(
        path=path, sha256=file_sha256(path), requests=tuple(requests), block_tokens=block_tokens
    )


def _positive_int(row: dict[str, Any], name: str, problems: list[str]) -> int | None:
    value = row.get(name)
    if value is None:
        problems.append(f"{name}: missing (a positive token count)")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems.append(f"{name}: {value!r} is not a positive whole number of tokens")
        return None
    return value


def _request(row: dict[str, Any], block_tokens: int) -> tuple[LoggedRequest | None, list[str]]:
    problems: list[str] = []
    unknown = sorted(set(row) - KNOWN_FIELDS)
    if unknown:
        problems.append(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_FIELDS))}")
    prompt = row.get("prompt")
    if prompt is not None and (not isinstance(prompt, str) or not prompt):
        problems.append("prompt: must be a non-empty string")
        prompt = None
    input_length = _positive_int(row, "input_length", problems)
    output_length = _positive_int(row, "output_length", problems)
    timestamp = row.get("timestamp")
    if timestamp is not None and (
        isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)) or timestamp < 0
    ):
        problems.append(f"timestamp: {timestamp!r} is not a non-negative number of milliseconds")
        timestamp = None
    hash_ids = row.get("hash_ids", [])
    if not isinstance(hash_ids, list) or not all(
        isinstance(h, int) and not isinstance(h, bool) and h >= 0 for h in hash_ids
    ):
        problems.append("hash_ids: must be a list of non-negative integers")
        hash_ids = []
    if hash_ids and prompt is not None:
        problems.append("hash_ids and prompt: give one (a prompt is sent verbatim, blocks are synthesized)")
    if hash_ids and input_length is not None:
        needed = math.ceil(input_length / block_tokens)
        if len(hash_ids) != needed:
            problems.append(
                f"hash_ids: {len(hash_ids)} blocks for input_length {input_length}, expected "
                f"{needed} of {block_tokens} tokens (workload.request_log.block_tokens)"
            )
    if problems or output_length is None or input_length is None:
        return None, problems
    return (
        LoggedRequest(
            input_length=input_length,
            output_length=output_length,
            timestamp_ms=None if timestamp is None else float(timestamp),
            prompt=prompt,
            hash_ids=tuple(hash_ids),
        ),
        problems,
    )
