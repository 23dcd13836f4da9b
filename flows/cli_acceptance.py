"""`enginesweep gpu-acceptance` (also `scripts/gpu-acceptance`): the first thing to run on a GPU
host. For each GPU stack it prints `doctor`'s report; then, when there is a GPU, it runs the `gpu`
test tier (tests/gpu of this checkout) and a small real sweep of each stack whose checks pass
(`smollm2-gpu-acceptance`: the demo model converted from its package, so nothing is downloaded),
and writes a summary (`summary.json`, `summary.md`): versions, every check, pass/fail, and the
measured numbers labelled with the GPU nvidia-smi names. Exit 0 only when everything passed; on
a machine without a GPU it stops after the doctor's report with "no GPU" and exit 1.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import typer

from enginesweep.flows.cli_common import SetOpt, _fail, app, out

STACKS = ("trtllm-engine", "trtllm-pytorch")
SPEC = "smollm2-gpu-acceptance"
REPOSITORY = Path(__file__).resolve().parents[1]
VERSIONED = (
    "tensorrt_llm",
    "nvidia-modelopt",
    "torch",
    "transformers",
    "aiperf",
    "lm_eval",
    "prefect",
    "mlflow",
    "enginesweep",
)


def _versions() -> dict[str, str | None]:
    """The installed version of each package in VERSIONED (None when it is not installed)."""
    found: dict[str, str | None] = {}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _gpu_names() -> list[str]:
    """The GPUs' names as nvidia-smi prints them (empty without one)."""
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def _gpu_tests(folder: Path) -> dict[str, Any]:
    """The `gpu` tier of this checkout's tests, with its output kept beside the summary."""
    tests = REPOSITORY / "tests" / "gpu"
    if not tests.is_dir():
        return {"status": "skipped", "reason": f"no {tests}: run from a checkout of the repository"}
    try:
        import pytest  # noqa: F401 - only whether it is there
    except ImportError:
        return {"status": "skipped", "reason": "pytest is not installed: pip install -e '.[gpu,test]'"}
    log = folder / "gpu-tests.log"
    with log.open("w") as sink:
        code = subprocess.run(
            [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", str(tests)],
            cwd=REPOSITORY,
            stdout=sink,
            stderr=subprocess.STDOUT,
        ).returncode
    lines = log.read_text(errors="replace").strip().splitlines()
    return {
        "status": "passed" if code == 0 else "failed",
        "exit_code": code,
        "log": str(log),
        "last_line": lines[-1] if lines else "",
    }


def _sweep(
    spec: str, name: str, sets: list[str], stack: str, gpu: str, folder: Path, measured_on: str
) -> dict[str, Any]:
    """`enginesweep run` of the acceptance spec on one stack (its progress on this terminal), then
    each trial's outcome and numbers from its record."""
    workspace = (folder / stack).resolve()
    overrides = [*sets, f"stack={stack}", f"target.gpu={gpu}", f"workspace={workspace}"]
    argv = [
        str(Path(sys.executable).with_name("enginesweep")),
        "run",
        spec,
        *(arg for item in overrides for arg in ("--set", item)),
    ]
    code = subprocess.run(argv, check=False).returncode
    trials = []
    for path in sorted((workspace / "sweeps" / name).glob("*/record.json")):
        record = json.loads(path.read_text())
        levels = [
            {
                "concurrency": level["concurrency"],
                "ttft_p99_ms": level["ttft_ms"]["p99"],
                "itl_p99_ms": level["itl_ms"]["p99"],
                "output_tok_s_per_gpu": level["output_tok_s_per_gpu"],
                "errors": level["error_count"],
            }
            for level in (record.get("benchmark") or {}).get("levels", [])
        ]
        deltas = [
            {"metric": d["metric"], "delta": d["delta"], "n": d["n"]}
            for d in record.get("accuracy_deltas") or []
        ]
        trials.append(
            {
                "slug": record["slug"],
                "status": record["status"],
                "error": record.get("error"),
                "measured_on": measured_on,
                "levels": levels,
                "accuracy_deltas": deltas,
            }
        )
    return {
        "exit_code": code,
        "status": "passed" if code == 0 else "failed",
        "workspace": str(workspace),
        "trials": trials,
    }


def _markdown(summary: dict[str, Any]) -> str:
    """The summary as `summary.md`."""
    lines = [
        f"# GPU acceptance: {summary['verdict']}",
        "",
        f"GPU: {summary.get('gpu') or 'none'} (planned as {summary.get('catalog_gpu') or '-'})",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in summary["versions"].items() if v),
        "",
    ]
    for stack, checks in summary["doctor"].items():
        failed = [c for c in checks if not c["ok"]]
        lines.append(
            f"- doctor {stack}: {len(checks) - len(failed)} of {len(checks)} checks pass"
            + "".join(f"\n  - FAIL {c['name']}: {c['detail']} (fix: {c['fix']})" for c in failed)
        )
    tests = summary.get("gpu_tests")
    if tests:
        lines.append(
            f"- gpu test tier: {tests['status']} {tests.get('last_line') or tests.get('reason', '')}"
        )
    for stack, sweep in summary.get("sweeps", {}).items():
        lines += ["", f"## {stack}: {sweep['status']}"]
        if "reason" in sweep:
            lines.append(sweep["reason"])
        for trial in sweep.get("trials", []):
            lines.append(
                f"- {trial['slug']}: {trial['status']}"
                + (f" ({trial['error']})" if trial.get("error") else "")
            )
            for level in trial["levels"]:
                lines.append(
                    f"  - c={level['concurrency']}: TTFT p99 {level['ttft_p99_ms']:.1f} ms, ITL p99 "
                    f"{level['itl_p99_ms']:.2f} ms, {level['output_tok_s_per_gpu']:.0f} output "
                    f"tok/s/GPU (measured on {trial['measured_on']})"
                )
    return "\n".join(lines) + "\n"


def _resolve_stacks(spec: str, sets: list[str]) -> dict[str, Any]:
    """The spec resolved once per GPU stack; a spec error fails the command."""
    from enginesweep.build_configs.loading import SpecError, load_spec

    resolved = {}
    for stack in STACKS:
        try:  # each stack's own view: its server settings and sweep size
            resolved[stack] = load_spec(spec, [*sets, f"stack={stack}"])
        except SpecError as exc:
            raise _fail(str(exc)) from None
    return resolved


def _doctor(resolved: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Print each stack's doctor report; its checks as JSON, by stack."""
    from enginesweep.flows.gpu_doctor import as_json, diagnose

    found = {}
    for stack in STACKS:
        out.print(f"== enginesweep doctor --stack {stack}", highlight=False)
        checks = diagnose(stack, resolved[stack])
        for check in checks:
            out.print(check.line(), highlight=False, markup=False, soft_wrap=True)
        found[stack] = as_json(checks)["checks"]
    return found


def _catalog_target(gpu: str | None, names: list[str], out_dir: Path, summary: dict[str, Any]) -> str:
    """The catalog GPU to plan with; without a GPU or a catalog entry, write the summary and fail."""
    from enginesweep.build_configs.gpus import catalog_name, gpu_catalog

    if not names:
        summary["verdict"] = "no GPU"
        _write(out_dir, summary)
        raise _fail(
            "no GPU: nvidia-smi lists none here, so nothing can be accepted on this machine; "
            "run this inside NVIDIA's image on a GPU host (README, 'On a GPU machine')",
            code=1,
        )
    target = gpu or catalog_name(names[0])
    if target is None or target not in gpu_catalog():
        summary["verdict"] = "no catalog entry"
        _write(out_dir, summary)
        raise _fail(
            f"--gpu: {names[0]} has no entry of its own in the GPU catalog; pass --gpu with "
            f"the closest one ({', '.join(n for n in gpu_catalog() if n != 'cpu')}): the "
            f"numbers stay labelled with {names[0]}"
        )
    return target


def _sweeps(
    spec: str, resolved: dict[str, Any], sets: list[str], summary: dict[str, Any], out_dir: Path
) -> dict[str, dict[str, Any]]:
    """The acceptance sweep of each stack whose doctor checks all pass (the others skipped)."""
    gpu_name, target = summary["gpu"], summary["catalog_gpu"]
    sweeps: dict[str, dict[str, Any]] = {}
    for stack in STACKS:
        failed = [c["name"] for c in summary["doctor"][stack] if not c["ok"]]
        if failed:
            sweeps[stack] = {
                "status": "skipped",
                "trials": [],
                "reason": f"doctor checks failed: {', '.join(failed)}",
            }
            continue
        out.print(f"== {SPEC} on {stack} ({gpu_name})", highlight=False)
        sweeps[stack] = _sweep(spec, resolved[stack].spec.name, sets, stack, target, out_dir, gpu_name)
    return sweeps


def _passed(summary: dict[str, Any]) -> bool:
    """Whether every doctor check, the gpu test tier (when run) and every sweep passed."""
    return (
        all(c["ok"] for checks in summary["doctor"].values() for c in checks)
        and summary.get("gpu_tests", {"status": "passed"})["status"] == "passed"
        and all(s["status"] == "passed" for s in summary["sweeps"].values())
    )


@app.command("gpu-acceptance")
def gpu_acceptance(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Where the summary and the sweeps' workspaces go.")
    ] = Path("enginesweep-gpu-acceptance"),
    gpu: Annotated[
        str | None,
        typer.Option(
            "--gpu",
            help="The catalog entry to plan with (`enginesweep ls gpus`) when the "
            "detected GPU has none of its own.",
        ),
    ] = None,
    skip_tests: Annotated[bool, typer.Option("--skip-tests", help="Do not run the gpu test tier.")] = False,
    spec: Annotated[
        str,
        typer.Option(
            "--spec",
            help="The sweep to run on each stack (its stack, target.gpu and workspace are set here).",
        ),
    ] = SPEC,
    set_: SetOpt = None,
) -> None:
    """On a GPU host: doctor, the gpu test tier and a small real sweep of each GPU stack on the
    demo model, with a summary of versions, pass/fail and numbers measured on this GPU."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # The summary's keys keep this order in summary.json: versions, doctor, spec, gpu, then the rest.
    summary: dict[str, Any] = {"versions": _versions(), "doctor": {}, "spec": spec}
    resolved = _resolve_stacks(spec, set_ or [])
    summary["doctor"] = _doctor(resolved)
    names = _gpu_names()
    summary["gpu"] = names[0] if names else None
    summary["catalog_gpu"] = _catalog_target(gpu, names, out_dir, summary)
    if not skip_tests:
        out.print("== the gpu test tier", highlight=False)
        summary["gpu_tests"] = _gpu_tests(out_dir)
        out.print(f"gpu tests: {summary['gpu_tests']['status']}", highlight=False)
    summary["sweeps"] = _sweeps(spec, resolved, set_ or [], summary, out_dir)
    passed = _passed(summary)
    summary["verdict"] = "passed" if passed else "failed"
    _write(out_dir, summary)
    out.print(f"GPU acceptance {summary['verdict']}: {out_dir / 'summary.md'}", highlight=False)
    if not passed:
        raise typer.Exit(1)


def _write(folder: Path, summary: dict[str, Any]) -> None:
    """`summary.json` and `summary.md` in `folder`."""
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (folder / "summary.md").write_text(_markdown(summary))
