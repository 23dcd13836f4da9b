"""Bundle manifests (hashing, verification) and the Triton repository's config.pbtxt."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from enginesweep.engines.manifest import ManifestError, content_hash, verify_bundle, write_manifest
from enginesweep.engines.triton.repository import SERVED_MODEL, write_reference_repository

pytestmark = pytest.mark.unit


def make_bundle(root: Path) -> Path:
    (root / "model").mkdir(parents=True)
    (root / "model" / "weights.bin").write_bytes(b"\x00" * 1000)
    (root / "config.json").write_text('{"a": 1}')
    return root


def manifest_fields():
    return dict(
        slug="m__fp8__kv-auto__tp1",
        stack="reference",
        inputs={"checkpoint": {"sha": "x"}, "build_knobs": {"max_batch_size": 8}},
        versions={"torch": "2.13.0"},
        target={"gpu": "cpu"},
        trtllm_checkpoint={},
    )


def test_manifest_records_files_sizes_and_hash(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    manifest = write_manifest(bundle, **manifest_fields())
    assert manifest.files == {"config.json": 8, "model/weights.bin": 1000}
    assert manifest.total_bytes == 1008
    assert manifest.content_hash == content_hash(bundle)
    assert verify_bundle(bundle).content_hash == manifest.content_hash


def test_content_hash_ignores_location_but_not_bytes(tmp_path):
    a = make_bundle(tmp_path / "a")
    b = make_bundle(tmp_path / "b")
    assert content_hash(a) == content_hash(b)
    (b / "config.json").write_text('{"a": 2}')
    assert content_hash(a) != content_hash(b)


def test_tampered_bundle_is_refused(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    write_manifest(bundle, **manifest_fields())
    (bundle / "config.json").write_text('{"b": 1}')  # same size, other bytes
    with pytest.raises(ManifestError, match="content hash"):
        verify_bundle(bundle)
    (bundle / "extra.txt").write_text("x")
    with pytest.raises(ManifestError, match=r"unexpected \['extra.txt'\]"):
        verify_bundle(bundle)


def test_missing_or_corrupt_manifest_is_refused(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    with pytest.raises(ManifestError, match="has no manifest.json"):
        verify_bundle(bundle)
    (bundle / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="is not a valid manifest"):
        verify_bundle(bundle)


def test_repository_config_parses_with_tritons_schema(tmp_path):
    repo = write_reference_repository(
        tmp_path / "repo", tmp_path / "bundle" / "model", max_batch_size=4, max_seq_len=512
    )
    text = (repo / SERVED_MODEL / "config.pbtxt").read_text()
    config = text_format.Parse(text, mc.ModelConfig())
    assert config.backend == "python" and config.model_transaction_policy.decoupled
    assert [i.name for i in config.input] == ["text_input", "max_tokens", "min_tokens", "stream"]
    assert [i.optional for i in config.input] == [False, False, True, True]
    assert config.output[0].name == "text_output" and config.output[0].data_type == mc.TYPE_STRING
    assert config.parameters["max_batch_size"].string_value == "4"
    assert config.parameters["model_dir"].string_value == str(tmp_path / "bundle" / "model")
    assert (repo / SERVED_MODEL / "1" / "model.py").read_text().startswith('"""Triton Python-backend')
