"""GPU slots: which GPUs of this machine a trial may use, never shared by two trials at once.

Each GPU is one `flock`ed file in a machine-wide folder (not the workspace: two sweeps of two
workspaces on one machine must not share a GPU either, and a workspace on a network filesystem
is no place for locks). A trial takes all the GPUs it needs at once or none, under an allocator
lock, so two TP2 trials never each hold one GPU and wait for a second. The kernel drops the locks
of a holder that dies in any way, SIGKILL included: a failed trial cannot keep its GPUs.

The trial sees its GPUs as `CUDA_VISIBLE_DEVICES` (set by the caller on the trial's process).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from enginesweep.engines.interrupts import raise_if_stopped

POLL_S = 0.5
"""How often a waiting trial looks for free GPUs again (locks are not queued: a wait is a poll)."""


class NoGpus(RuntimeError):
    """No GPU to run on, or a trial needs more GPUs than the machine has."""


def lock_dir() -> Path:
    """The machine-wide folder of GPU locks (`ENGINESWEEP_GPU_LOCK_DIR` moves it: tests)."""
    return Path(os.environ.get("ENGINESWEEP_GPU_LOCK_DIR") or f"/tmp/enginesweep-gpu-slots-{os.getuid()}")


def detect_gpus() -> list[int]:
    """The GPU indices this process may use: `CUDA_VISIBLE_DEVICES` when set (a cluster worker's
    or the user's restriction), else every GPU NVML reports (nvidia-ml-py), else `nvidia-smi -L`;
    empty without a GPU."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return parse_visible(visible)
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return list(range(pynvml.nvmlDeviceGetCount()))
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        pass
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listed = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [i for i, line in enumerate(row for row in listed.splitlines() if row.startswith("GPU "))]


def parse_visible(value: str) -> list[int]:
    """`CUDA_VISIBLE_DEVICES` as indices; UUIDs (`GPU-...`) are refused with the fix."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not all(item.isdigit() for item in items):
        raise NoGpus(
            f"CUDA_VISIBLE_DEVICES={value!r}: give GPU indices (0,1,...), not UUIDs, or "
            "set execution.gpus in the spec"
        )
    return [int(item) for item in items]


def preferred_groups(free: Sequence[int], count: int, universe: Sequence[int]) -> list[int] | None:
    """`count` GPUs out of `free`: an aligned block of the machine's order first (GPUs 0-1, 2-3 of
    an NVLink board pair best for TP2), else the lowest free ones; None when too few are free."""
    if len(free) < count:
        return None
    free_set = set(free)
    for start in range(0, len(universe) - count + 1, count):
        block = list(universe[start : start + count])
        if free_set.issuperset(block):
            return block
    return sorted(free)[:count]


@dataclass(frozen=True)
class Lease:
    """GPUs held for one trial: their indices, and the lock files' descriptors, which the trial's
    process inherits (`pass_fds`) so the GPUs stay held until it has exited too, even when the
    sweep that took them dies first."""

    devices: list[int]
    fds: tuple[int, ...]

    @property
    def visible(self) -> str:
        """The value of `CUDA_VISIBLE_DEVICES` for the trial's process."""
        return ",".join(str(d) for d in self.devices)


class GpuSlots:
    """The GPUs `devices` of this machine, lent to one trial at a time each."""

    def __init__(self, devices: Sequence[int], folder: Path | None = None):
        if len(set(devices)) != len(devices):
            raise NoGpus(f"execution.gpus lists a GPU twice: {list(devices)}")
        self.devices = list(devices)
        self.folder = folder or lock_dir()

    @contextmanager
    def hold(
        self,
        count: int,
        *,
        what: str = "a trial",
        log: Callable[[str], None] = print,
        poll_s: float = POLL_S,
        stop_file: Path | None = None,
    ) -> Iterator[Lease]:
        """Wait until `count` GPUs are free, hold them for the block and yield the lease. A stop
        request, or `stop_file` appearing, ends the wait with KeyboardInterrupt."""
        if count > len(self.devices):
            raise NoGpus(
                f"{what} needs {count} GPUs; this machine lends {len(self.devices)} "
                f"({self.devices or 'none'}): lower TP*PP or set execution.gpus"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        said = False
        while True:
            held = self._try_take(count)
            if held is not None:
                break
            if not said:
                log(f"  {what} waits for {count} free GPUs of {self.devices}")
                said = True
            raise_if_stopped()  # a stopped sweep must not start a trial once GPUs free up
            if stop_file is not None and stop_file.exists():
                raise KeyboardInterrupt(f"stop requested ({stop_file})")
            time.sleep(poll_s)
        lease, stack = held
        with stack:
            yield lease

    def _try_take(self, count: int) -> tuple[Lease, ExitStack] | None:
        """All `count` GPUs or none, under the allocator lock (so two takers never split the last
        free ones between them)."""
        with _locked(self.folder / ".allocator.lock"):
            handles: dict[int, IO[str]] = {}
            for device in self.devices:
                handle = _open_locked(self.folder / f"gpu{device}.lock")
                if handle is not None:
                    handles[device] = handle
            picked = preferred_groups(list(handles), count, self.devices)
            stack = ExitStack()
            fds = []
            try:
                for device, handle in handles.items():
                    if picked is not None and device in picked:
                        stack.callback(_release, handle)
                        fds.append(handle.fileno())
                        with suppress(OSError):  # who holds it, for a person looking (a full /tmp)
                            handle.seek(0)
                            handle.truncate()
                            handle.write(str(os.getpid()))
                            handle.flush()
                    else:
                        _release(handle)
            except BaseException:
                stack.close()
                for handle in handles.values():
                    handle.close()
                raise
            return (Lease(picked, tuple(fds)), stack) if picked is not None else None


def _open_locked(path: Path) -> IO[str] | None:
    """`path` opened and locked exclusively without waiting; None when another holder has it."""
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _release(handle: IO[str]) -> None:
    # Close, not LOCK_UN: an unlock would also release the copy a still-running trial process
    # inherited; the lock goes when the last descriptor of it is closed.
    handle.close()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
