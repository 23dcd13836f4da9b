"""Run aiperf against a Triton server that speaks TensorRT-LLM's `generate_stream` contract.

aiperf (NVIDIA's load generator, pinned to 0.13.0) has no Triton mode, so the request body comes
from its `template` endpoint: a Jinja2 file written into the artifact folder renders each request
as TensorRT-LLM's fields (`text_input`, `max_tokens`, `min_tokens`, `stream`) and the streamed
`text_output` field is read back through `response_field`. `min_tokens` equals `max_tokens` so
every request decodes exactly the workload's OSL even when the model would stop early. One
invocation with a comma list runs every concurrency level of the workload. `aiperf_command` is a
pure function (tested flag by flag against aiperf's own CLI); `run_aiperf` runs it as a process
group with a timeout and fails loudly with the tail of its log.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from enginesweep.build_configs.schema import Workload
from enginesweep.engines.endpoints import Endpoint, triton_endpoint
from enginesweep.engines.interrupts import raise_if_stopped
from enginesweep.engines.processes import (
    kill_marked,
    kill_with_parent,
    reap_stale_session,
    stop_process_group,
)

AIPERF_VERSION = "0.13.0"
TEMPLATE_NAME = "payload_template.json"
LOG_NAME = "aiperf.log"
PID_NAME = "aiperf.pid"  # the session id of the running aiperf
TMP_NAME = "tmp"
RESPONSE_FIELD = "text_output"
DEFAULT_TIMEOUT_S = 3600.0

HUB_VIEW_NAME = "hub"  # the tokenizer laid out as a hub cache, under the scratch folder
HUB_VIEW_REPO = "enginesweep/tokenizer"


class AiperfError(RuntimeError):
    """aiperf could not run or did not finish; the message carries the tail of its log."""


AIPERF_ENV = "ENGINESWEEP_AIPERF"
"""Environment variable naming an `aiperf` executable to run instead of the default."""
OWN_VENV = Path(__file__).resolve().parents[2] / ".venv-aiperf"
"""aiperf's own virtualenv beside a checkout (`scripts/setup-aiperf`): no torch or scikit-learn,
so each of its processes loads the tokenizer in about 1.5 CPU-seconds instead of 6."""


def aiperf_executable() -> Path:
    """The `aiperf` to run: `$ENGINESWEEP_AIPERF`, else the checkout's `.venv-aiperf`, else the
    console script of the running environment (never whatever is first on PATH)."""
    configured = os.environ.get(AIPERF_ENV)
    if configured:
        return Path(configured)
    own = OWN_VENV / "bin" / "aiperf"
    if own.is_file():
        return own
    return Path(sys.executable).parent / "aiperf"


def aiperf_command(
    *,
    url: str,
    model: str,
    workload: Workload,
    tokenizer: Path | str,
    artifact_dir: Path,
    ipc_dir: Path | None = None,
    executable: Path | None = None,
    endpoint: Endpoint | None = None,
    input_file: Path | None = None,
    fixed_schedule: bool = False,
) -> list[str]:
    """The argv of one `aiperf profile` run covering every concurrency level of `workload`.

    With `input_file` (a `single_turn` dataset, `traffic.write_dataset`) the requests come from
    that file, in order, instead of aiperf's synthetic lengths; with `fixed_schedule` too, each
    is sent once at its `timestamp` (a recorded replay: one level, open loop, no concurrency).

    `endpoint` defaults to Triton's `generate_stream` of `model`. A template endpoint's payload
    is expected at `artifact_dir / TEMPLATE_NAME` (`run_aiperf` writes it).
    `artifact_dir` should be absolute and free of symlinks: aiperf silently treats a template
    path with a symlinked component as an inline template string. `ipc_dir` holds aiperf's
    internal Unix sockets (default: a folder under TMPDIR).
    """
    endpoint = endpoint or triton_endpoint(model)
    route: list[str] = ["--custom-endpoint", endpoint.path] if endpoint.path else []
    extra = list(endpoint.extra_inputs)
    if endpoint.kind == "template":
        template = artifact_dir / TEMPLATE_NAME
        if "," in str(template):
            # aiperf splits every --extra-inputs value on commas before it splits key:value.
            raise ValueError(f"aiperf cannot take a template path containing ',': {template}")
        extra = [f"payload_template:{template}", f"response_field:{RESPONSE_FIELD}", *extra]
    command = [
        str(executable or aiperf_executable()),
        "profile",
        "--model",
        model,
        "--url",
        url,
        "--endpoint-type",
        endpoint.kind,
        *route,
        "--streaming",
        *(["--extra-inputs", *extra] if extra else []),
        *_requests_flags(workload, input_file, fixed_schedule),
        "--random-seed",
        str(workload.seed),
        "--tokenizer",
        str(tokenizer),
        "--artifact-dir",
        str(artifact_dir),
        # The parser reads the per-request records: ask for them rather than rely on a default.
        "--export-level",
        "records",
        "--ui-type",
        "none",
        # Neither is read: the trial samples the server's metrics itself (server_metrics.py), and
        # GPU telemetry would probe DCGM ports on localhost. Off, they are two fewer services.
        "--no-server-metrics",
        "--no-gpu-telemetry",
    ]
    if workload.warmup_request_count > 0:
        # aiperf 0.13.0 rejects `--warmup-request-count 0`; leaving it out means no warmup.
        command += ["--warmup-request-count", str(workload.warmup_request_count)]
    if ipc_dir is not None:
        command += ["--zmq-ipc-path", str(ipc_dir)]
    return command


def _requests_flags(workload: Workload, input_file: Path | None, fixed_schedule: bool) -> list[str]:
    """Where the requests come from and how they are paced."""
    if input_file is None:
        if fixed_schedule:
            raise ValueError("a fixed schedule replays a dataset file: give input_file")
        source = [
            "--synthetic-input-tokens-mean",
            str(workload.isl.mean),  # type: ignore[union-attr]
            "--synthetic-input-tokens-stddev",
            str(workload.isl.stddev),  # type: ignore[union-attr]
            "--output-tokens-mean",
            str(workload.osl.mean),  # type: ignore[union-attr]
            "--output-tokens-stddev",
            str(workload.osl.stddev),  # type: ignore[union-attr]
        ]
    else:
        # Rows in file order: the builder already drew (or kept) them; each row's
        # `output_length` is the request's max_tokens.
        source = [
            "--input-file",
            str(input_file),
            "--custom-dataset-type",
            "single_turn",
            "--dataset-sampling-strategy",
            "sequential",
        ]
    if fixed_schedule:
        # Every row once, at its timestamp from the first one's.
        return [*source, "--fixed-schedule", "--fixed-schedule-auto-offset"]
    count = ["--request-count", str(workload.request_count)]
    if workload.request_rate is None:
        return [*source, "--concurrency", ",".join(str(c) for c in workload.concurrency), *count]
    pacing = [
        "--request-rate",
        ",".join(format_rate(r) for r in workload.request_rate),
        "--arrival-pattern",
        workload.arrival,
    ]
    if workload.arrival_smoothness is not None:
        pacing += ["--arrival-smoothness", f"{workload.arrival_smoothness:g}"]
    if workload.max_concurrency is not None:
        # With a rate, aiperf's --concurrency is a cap on requests in flight.
        pacing += ["--concurrency", str(workload.max_concurrency)]
    if workload.warmup_request_count > 0:
        # aiperf 0.13 gives the warm-up phase the rate list too and then runs every warm-up rate
        # with every profiling rate (a grid: measured, 4 runs for 2 rates); one warm-up rate,
        # the lowest, keeps one run per level.
        pacing += ["--warmup-request-rate", format_rate(workload.request_rate[0])]
    return [*source, *pacing, *count]


def format_rate(rate: float) -> str:
    """A rate as aiperf is given it, and as it names the level's folder (`request_rate_<R>`):
    Python's float text, so 2 is `2.0`."""
    return str(float(rate))


def aiperf_environment(tmp_dir: Path, hub_cache: Path | None = None) -> dict[str, str]:
    """This process's environment with TMPDIR at `tmp_dir`; with `hub_cache` (see
    `tokenizer_hub_view`), offline with that folder as the Hugging Face hub cache."""
    env = dict(os.environ)
    # aiperf leaves aiperf_mmap_* folders (the dataset) and torch caches in TMPDIR.
    env["TMPDIR"] = str(tmp_dir)
    if hub_cache is not None:
        env |= {"HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return env


def tokenizer_hub_view(tokenizer: Path, cache: Path) -> str:
    """Lay the local tokenizer folder out as a Hugging Face hub cache entry in `cache` (links to
    its files) and return the repo id to pass as `--tokenizer`.

    Why: aiperf 0.13 either goes online or refuses a local path. Given a path, its parent process
    first "prefetches" the tokenizer in a subprocess (about 5 CPU-seconds of imports, for every
    concurrency level) and it is not offline; with HF_HUB_OFFLINE set it resolves even a path as a
    hub repo id and fails. A hub-cache entry read offline is neither: no prefetch, no network.
    """
    files = sorted(p for p in Path(tokenizer).iterdir() if p.is_file())
    # A commit-shaped name for the snapshot: the hub's offline lookup reads refs/main for it.
    commit = hashlib.sha1("\n".join(f"{p.name}:{p.stat().st_size}" for p in files).encode()).hexdigest()
    repo = cache / ("models--" + HUB_VIEW_REPO.replace("/", "--"))
    shutil.rmtree(repo, ignore_errors=True)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for path in files:
        (snapshot / path.name).symlink_to(path.resolve())
    return HUB_VIEW_REPO


def log_tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file (empty when it does not exist)."""
    if not path.is_file():
        return ""
    return "\n".join(path.read_bytes().decode(errors="replace").splitlines()[-lines:])


def run_aiperf(
    *,
    url: str,
    model: str,
    workload: Workload,
    tokenizer: Path,
    artifact_dir: Path,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    endpoint: Endpoint | None = None,
    input_file: Path | None = None,
    fixed_schedule: bool = False,
) -> Path:
    """Benchmark `model` at `url` with aiperf; returns the artifact folder (absolute).

    Writes the payload template, `aiperf.log` (stdout and stderr) and aiperf's outputs into
    `artifact_dir`. Raises `AiperfError` when aiperf is missing, exits non-zero (aiperf does so
    when every request of a level failed) or runs past `timeout_s`; partial failures are left
    for `results.parse_benchmark` to count. `tokenizer` must be a local directory: aiperf would
    otherwise download one from the Hugging Face hub. `input_file` and `fixed_schedule`: see
    `aiperf_command`.
    """
    executable = aiperf_executable()
    if not executable.is_file():
        raise AiperfError(
            f"aiperf is not installed in this environment ({executable} is missing):"
            f" pip install aiperf=={AIPERF_VERSION}"
        )
    if not Path(tokenizer).is_dir():
        raise AiperfError(f"the tokenizer must be a local directory, got {tokenizer!s}")
    artifact_dir = Path(artifact_dir).resolve()
    artifact_dir.mkdir(parents=True, exist_ok=True)
    # What an earlier, SIGKILLed run of this folder left running is stopped first (it would
    # write on); then its level folders go: aiperf leaves them, and with other levels this time
    # a stale `concurrency_<N>/` would be read as this run's.
    reap_stale_session(artifact_dir / PID_NAME, str(artifact_dir))
    for pattern in ("concurrency_*", "rate_*"):
        for stale in artifact_dir.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)
    endpoint = endpoint or triton_endpoint(model)
    if endpoint.payload is not None:
        (artifact_dir / TEMPLATE_NAME).write_text(endpoint.payload)
    tmp_dir = artifact_dir / TMP_NAME
    tmp_dir.mkdir(exist_ok=True)
    # aiperf's ZMQ sockets are Unix sockets, whose paths may not exceed 107 bytes: under a deep
    # artifact folder they fail to bind, so they get a short folder of their own.
    ipc_dir = Path(tempfile.mkdtemp(prefix="aiperf-ipc-"))
    hub_cache = tmp_dir / HUB_VIEW_NAME
    command = aiperf_command(
        url=url,
        model=model,
        workload=workload,
        tokenizer=tokenizer_hub_view(Path(tokenizer), hub_cache),
        artifact_dir=artifact_dir,
        ipc_dir=ipc_dir,
        executable=executable,
        endpoint=endpoint,
        input_file=None if input_file is None else Path(input_file).resolve(),
        fixed_schedule=fixed_schedule,
    )
    try:
        returncode = _run(command, artifact_dir / LOG_NAME, aiperf_environment(tmp_dir, hub_cache), timeout_s)
    finally:
        shutil.rmtree(ipc_dir, ignore_errors=True)
    if returncode != 0:
        raise AiperfError(
            f"aiperf exited with code {returncode} (log: {artifact_dir / LOG_NAME}):"
            f"\n{log_tail(artifact_dir / LOG_NAME)}"
        )
    # Only scratch data lives there (the memory-mapped dataset); keep it when aiperf failed.
    shutil.rmtree(tmp_dir, ignore_errors=True)
    return artifact_dir


def _run(command: list[str], log_path: Path, env: dict[str, str], timeout_s: float) -> int:
    """Run `command` with its output in `log_path`; its exit code, or AiperfError on timeout."""
    with log_path.open("wb") as log:
        log.write(("$ " + " ".join(command) + "\n").encode())
        log.flush()
        # A session of its own: aiperf spawns a dozen service processes, and a timeout or an
        # interrupt must stop all of them, not only the parent.
        pidfile = log_path.with_name(PID_NAME)  # read by the next run's reaper (run_aiperf)
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=kill_with_parent(),
        )
        pidfile.write_text(str(process.pid))
        try:
            returncode = wait_stoppable(process, timeout_s)
        except subprocess.TimeoutExpired:
            _stop(process, log_path)
            raise AiperfError(
                f"aiperf did not finish within {timeout_s:.0f} s (log: {log_path}):\n{log_tail(log_path)}"
            ) from None
        except BaseException:
            _stop(process, log_path)
            raise
    _stop(process, log_path)  # services that outlived a finished parent
    return returncode


def wait_stoppable(process: subprocess.Popen, timeout_s: float) -> int:
    """`process.wait(timeout_s)` in one-second steps, raising a recorded stop request again (a
    swallowed SIGTERM must not leave the benchmark running to its end)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return process.wait(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            raise_if_stopped()
            if time.monotonic() >= deadline:
                raise


def _stop(process: subprocess.Popen, log_path: Path) -> None:
    """aiperf's process group, then its runners that left it (their command lines name the
    artifact folder)."""
    stop_process_group(process)
    kill_marked(str(log_path.parent))
