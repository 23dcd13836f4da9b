"""Engine bundles and their `manifest.json`: what went in, what came out, and a content hash.

A bundle is a folder that a stack's server can serve. Its manifest records the input hashes
(checkpoint identity, quantization recipe, calibration set, build knobs), the stack and runtime
versions, the target hardware, every file's size, and a content hash over the files (path and
SHA-256 of each file except the manifest itself), so a bundle can be verified before it is served
or promoted. Files reached through symlinks are hashed by their content.
"""

from __future__ import annotations

import hashlib
import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MANIFEST = "manifest.json"
_CHUNK = 1 << 20


class ManifestError(RuntimeError):
    """A bundle whose files do not match its manifest."""


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_files(bundle: Path) -> dict[str, int]:
    """Relative path -> size of every file in `bundle` except the manifest, sorted."""
    files = {}
    for path in sorted(bundle.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            files[path.relative_to(bundle).as_posix()] = path.stat().st_size
    return files


def content_hash(bundle: Path) -> str:
    """SHA-256 over (relative path, file SHA-256) of every file except the manifest."""
    digest = hashlib.sha256()
    for relative in bundle_files(bundle):
        digest.update(relative.encode() + b"\0" + file_sha256(bundle / relative).encode() + b"\n")
    return digest.hexdigest()


def inputs_hash(inputs: dict[str, Any]) -> str:
    """A stable hash of a JSON-able description of a build's inputs."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def host_hardware() -> dict[str, Any]:
    """What this machine is, for CPU measurements' provenance."""
    import os

    return {
        "kind": "cpu",
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cpu_count": os.cpu_count(),
        "system": platform.system(),
    }


class Manifest(BaseModel):
    """The `manifest.json` of one engine bundle."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    slug: str
    stack: str
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    inputs: dict[str, Any] = Field(description="checkpoint, quant_recipe, calibration, build_knobs")
    inputs_hash: str
    versions: dict[str, str] = Field(description="stack and runtime versions")
    target: dict[str, Any] = Field(description="target hardware (GPU name and SM, or the CPU)")
    trtllm_checkpoint: dict[str, Any] = Field(
        description="Key fields of the exported TRT-LLM checkpoint config.json."
    )
    files: dict[str, int]
    total_bytes: int
    content_hash: str

    @classmethod
    def load(cls, bundle: Path) -> Manifest:
        path = bundle / MANIFEST
        if not path.is_file():
            raise ManifestError(f"{bundle} has no {MANIFEST}")
        try:
            return cls.model_validate_json(path.read_text())
        except ValueError as exc:
            raise ManifestError(f"{path} is not a valid manifest: {exc}") from exc


def write_manifest(bundle: Path, **fields: Any) -> Manifest:
    """Hash `bundle` and write its manifest (fields: slug, stack, inputs, versions, target,
    trtllm_checkpoint)."""
    files = bundle_files(bundle)
    manifest = Manifest(
        inputs_hash=inputs_hash(fields["inputs"]),
        files=files,
        total_bytes=sum(files.values()),
        content_hash=content_hash(bundle),
        **fields,
    )
    (bundle / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest


def verify_bundle(bundle: Path) -> Manifest:
    """Load the manifest and check the files still hash to it; raise `ManifestError` if not."""
    manifest = Manifest.load(bundle)
    files = bundle_files(bundle)
    if files != manifest.files:
        missing = sorted(set(manifest.files) - set(files))
        extra = sorted(set(files) - set(manifest.files))
        changed = sorted(k for k in set(files) & set(manifest.files) if files[k] != manifest.files[k])
        raise ManifestError(
            f"{bundle}: files differ from the manifest (missing {missing}, "
            f"unexpected {extra}, resized {changed})"
        )
    actual = content_hash(bundle)
    if actual != manifest.content_hash:
        raise ManifestError(
            f"{bundle}: content hash {actual[:12]} does not match the manifest's {manifest.content_hash[:12]}"
        )
    return manifest
