"""A stop request that outlives the exception it raised.

SIGTERM unwinds like Ctrl-C (a KeyboardInterrupt), but a library on the way up may catch and
drop that exception; the request stays recorded here, and the long waits (a benchmark, a stage
boundary) check it, so a stop asked for is never lost.
"""

from __future__ import annotations

_requested: list[str] = []


def request_stop(reason: str) -> None:
    """Record a stop request (the signal handler calls it before raising)."""
    _requested.append(reason)


def raise_if_stopped() -> None:
    """Raise KeyboardInterrupt again when a stop was requested."""
    if _requested:
        raise KeyboardInterrupt(_requested[0])


def stop_requested() -> bool:
    """Whether a stop was requested (for waits that must pass it on, not raise it)."""
    return bool(_requested)
