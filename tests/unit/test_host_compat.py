"""Whether this host may serve a bundle: runtime versions, CPU architecture and GPU SM against
the bundle's manifest (engines/compat.py and each stack's `host_mismatches`)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from enginesweep.engines.compat import BundleMismatch, host_gpu_sm, refuse_mismatch, version_mismatches
from enginesweep.engines.manifest import write_manifest
from enginesweep.engines.quantize.modelopt_cpu import library_versions

pytestmark = pytest.mark.unit


def manifest(tmp_path: Path, versions: dict, target: dict):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "w.bin").write_bytes(b"w")
    return write_manifest(
        tmp_path / "b", slug="s", stack="x", inputs={}, versions=versions, target=target, trtllm_checkpoint={}
    )


def fake_nvidia_smi(tmp_path: Path, monkeypatch, line: str | None) -> None:
    """An `nvidia-smi` on PATH that prints `line` (or fails, as on a machine without a GPU)."""
    script = tmp_path / "bin" / "nvidia-smi"
    script.parent.mkdir()
    script.write_text(f"#!/bin/sh\necho '{line}'\n" if line else "#!/bin/sh\nexit 9\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")


def test_only_recorded_packages_that_differ_are_named():
    assert version_mismatches(
        {"torch": "2.13.0", "modelopt": "0.41.0", "other": "1"},
        {"torch": "2.14.1", "modelopt": "0.41.0", "tensorrt_llm": None},
    ) == ["built with torch 2.13.0, this host has 2.14.1"]
    assert version_mismatches({"tensorrt_llm": "1.2.0"}, {"tensorrt_llm": None}) == [
        "built with tensorrt_llm 1.2.0, this host has no tensorrt_llm"
    ]


def test_refusal_names_the_bundle_every_problem_and_the_fix():
    refuse_mismatch("/b", [])  # nothing to refuse
    with pytest.raises(
        BundleMismatch,
        match=r"refusing to serve /b: a; b\. Rebuild it on this host "
        r"\(`enginesweep run SPEC --rerun`\)",
    ):
        refuse_mismatch("/b", ["a", "b"])


@pytest.mark.parametrize(
    ("line", "sm"),
    [
        ("NVIDIA H100 80GB HBM3, 9.0", 90),
        ("NVIDIA A100-SXM4-80GB, 8.0", 80),
        ("NVIDIA L40S, 8.9", 89),
        (None, None),
    ],
)
def test_host_sm_is_read_from_nvidia_smi(tmp_path, monkeypatch, line, sm):
    fake_nvidia_smi(tmp_path, monkeypatch, line)
    assert host_gpu_sm() == sm


def test_reference_stack_refuses_other_library_versions_and_architectures(tmp_path):
    from enginesweep.engines.stacks.reference import ReferenceStack, _triton_version

    stack = ReferenceStack()
    here = {**library_versions(), **_triton_version()}
    import platform

    same = manifest(tmp_path, here, {"gpu": "cpu", "host": {"machine": platform.machine()}})
    assert stack.host_mismatches(same) == []
    other = same.model_copy(
        update={
            "versions": {**here, "transformers": "4.0.0"},
            "target": {"gpu": "cpu", "host": {"machine": "sparc64"}},
        }
    )
    assert stack.host_mismatches(other) == [
        f"built with transformers 4.0.0, this host has {here['transformers']}",
        f"built on sparc64, this host is {platform.machine()}",
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("NVIDIA H100 80GB HBM3, 9.0", []),
        ("NVIDIA A100-SXM4-80GB, 8.0", ["built for SM90 (H100-SXM-80GB), this host's GPU is SM80"]),
        (None, ["no NVIDIA GPU is visible here (nvidia-smi)"]),
    ],
)
def test_engine_stack_refuses_another_sm_or_no_gpu(tmp_path, monkeypatch, line, expected):
    from enginesweep.engines.stacks.trtllm_engine import TrtllmEngineStack

    fake_nvidia_smi(tmp_path, monkeypatch, line)
    stack = TrtllmEngineStack(version="1.2.0")
    built = manifest(
        tmp_path, {"stack": "trtllm-engine", "tensorrt_llm": "1.2.0"}, {"gpu": "H100-SXM-80GB", "sm": 90}
    )
    assert stack.host_mismatches(built) == expected
    newer = built.model_copy(update={"versions": {"tensorrt_llm": "1.1.0"}})
    assert stack.host_mismatches(newer)[0] == "built with tensorrt_llm 1.1.0, this host has 1.2.0"


def test_engine_stack_judges_by_the_gpu_the_engine_was_built_on(tmp_path, monkeypatch):
    """An H100 spec built on an A100 made an SM80 engine: fine on an A100, refused on an H100."""
    from enginesweep.engines.stacks.trtllm_engine import TrtllmEngineStack

    fake_nvidia_smi(tmp_path, monkeypatch, "NVIDIA A100-SXM4-80GB, 8.0")
    built = manifest(
        tmp_path,
        {"tensorrt_llm": "1.2.0"},
        {"gpu": "H100-SXM-80GB", "sm": 90, "gpu_detected": "NVIDIA A100-SXM4-80GB, 8.0"},
    )
    assert TrtllmEngineStack(version="1.2.0").host_mismatches(built) == []
    h100 = tmp_path / "h100"
    h100.mkdir()
    fake_nvidia_smi(h100, monkeypatch, "NVIDIA H100 80GB HBM3, 9.0")
    assert TrtllmEngineStack(version="1.2.0").host_mismatches(built) == [
        "built for SM80 (NVIDIA A100-SXM4-80GB, 8.0), this host's GPU is SM90"
    ]
