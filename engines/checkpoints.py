"""Fetch a Hugging Face checkpoint and pin it to a commit: the pipeline's fetch stage.

`fetch_checkpoint` downloads what a build needs (safetensors weights, configs, tokenizer files;
never pickled `*.bin`/`*.pth` or GGUF unless asked) into the Hugging Face cache (`HF_HOME` /
`HF_HUB_CACHE`, or `cache_dir`) with `huggingface_hub.snapshot_download`, resolves the revision
(branch, tag or sha) to its full commit sha and returns a `FetchedCheckpoint` record, the identity
later stages hash. A commit already in the cache is served without the network. `local_checkpoint`
gives the same record for a folder on disk; `resolve_revision` only asks the hub which commit a
revision names now (a scheduled sweep's "did it move?"). The hub token comes from one environment
variable and is never logged, stored or put in a message. Works with both huggingface_hub lines:
1.x (httpx transport) and 0.34-0.x (requests transport, the one transformers 4.57 in TensorRT-LLM
1.2's images needs); only the transport's "no answer" errors differ.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import huggingface_hub
from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
)
from pydantic import BaseModel, ConfigDict, Field

from enginesweep.engines.manifest import file_sha256

DEFAULT_PATTERNS: tuple[str, ...] = (
    "*.safetensors",
    "*.safetensors.index.json",
    "config*.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "*.model",
    "*.tiktoken",
)
"""What a build reads. No `*.bin`/`*.pth` (pickles run code when loaded) and no `*.gguf`."""

_SHA = re.compile(r"[0-9a-f]{40}")


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The no-connection and timeout errors of the HTTP library the installed hub client uses:
    httpx for huggingface_hub >= 1.0, requests before (each a dependency of its own hub line).
    Both count TLS and proxy failures as connection errors."""
    if int(huggingface_hub.__version__.split(".")[0]) >= 1:
        import httpx

        return httpx.ConnectError, httpx.TimeoutException
    import requests

    return requests.ConnectionError, requests.Timeout


# The hub gave no answer: no connection, a timeout, HF_HUB_OFFLINE=1, or a file whose metadata
# could not be read (LocalEntryNotFoundError: those, or a 5xx). Only these may use the cache.
_UNREACHABLE = (*_transport_errors(), OfflineModeIsEnabled, LocalEntryNotFoundError)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be fetched; the message names what is wrong and the fix."""


class FetchedCheckpoint(BaseModel):
    """A checkpoint on local disk and what identifies it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    repo_id: str | None = Field(description="Hub repository; None for a local folder.")
    revision: str | None = Field(description="The revision as asked: branch, tag or commit sha.")
    commit_sha: str | None = Field(description="The full commit it resolved to; None for a folder.")
    local_dir: Path = Field(description="The snapshot folder (files link into the hub cache).")
    files: dict[str, int] = Field(description="Relative path -> size in bytes, sorted.")
    config_sha256: str | None = Field(description="SHA-256 of config.json; None without one.")


def fetch_checkpoint(
    repo_id: str,
    revision: str,
    *,
    cache_dir: Path | None = None,
    token_env: str = "HF_TOKEN",
    allow_patterns: Sequence[str] = DEFAULT_PATTERNS,
    log: Callable[[str], None] = print,
) -> FetchedCheckpoint:
    """Download `repo_id` at `revision` (only files matching `allow_patterns`) and pin it.

    The token is read from the environment variable `token_env` alone (no stored login); the
    hub is `HF_ENDPOINT` and the cache `cache_dir` or the Hugging Face default. Raises
    `CheckpointError` for an unknown repo or revision, a gated or unauthorized repo, no
    safetensors weights under the default patterns, or no answer from the hub and no cached copy.
    """
    token = os.environ.get(token_env) or None
    api = HfApi(token=token or False)  # False: never a token saved by `hf auth login`
    where = f"{repo_id}@{revision}"
    log(f"fetching {where} from {constants.ENDPOINT} ({'token from $' + token_env if token else 'no token'})")
    download = dict(
        repo_id=repo_id,
        revision=revision,
        cache_dir=cache_dir,
        token=token or False,
        allow_patterns=list(allow_patterns),
    )
    try:
        if not _SHA.fullmatch(revision):
            # Ask the hub first: given a branch or tag, snapshot_download would quietly serve an
            # older cached copy when the hub answers an error (401, 404, 5xx). Those must surface.
            api.model_info(repo_id, revision=revision)
        folder = Path(snapshot_download(**download))
    except _UNREACHABLE as error:
        if (answer := _refusal(error)) is not None:
            raise _explain(api, repo_id, revision, token_env, token, answer) from error
        # The cache stands in only when the hub gives no answer, never after it answered "no"
        # (401, 403, 404). A full sha names immutable content, so its cached snapshot is exactly
        # what the hub would serve; a branch or tag resolves through the ref cached with it,
        # which may be stale, and the log says so. (For a sha, snapshot_download already skips
        # the network when its file listing is cached; this covers caches filled without it.)
        folder = _cached_snapshot(download, error, token, log)
    except (HfHubHTTPError, EntryNotFoundError) as error:
        raise _explain(api, repo_id, revision, token_env, token, error) from error
    return _record(repo_id, revision, folder, allow_patterns)


def resolve_revision(repo_id: str, revision: str, *, token_env: str = "HF_TOKEN") -> str:
    """The full commit sha that `revision` (branch, tag or sha) of `repo_id` names on the hub
    now, asked without downloading anything; a full sha is returned as it is. A scheduled sweep
    compares it with the last run's. Raises `CheckpointError` as `fetch_checkpoint` does, and also
    when the hub gives no answer: a cached ref could be stale, which is the very thing asked."""
    if _SHA.fullmatch(revision):
        return revision
    token = os.environ.get(token_env) or None
    api = HfApi(token=token or False)
    try:
        sha = api.model_info(repo_id, revision=revision).sha
    except _UNREACHABLE as error:
        reason = _redact(f"{error.__class__.__name__}: {error}".splitlines()[0], token)
        raise CheckpointError(
            f"{repo_id}@{revision}: no answer from the hub at {constants.ENDPOINT} ({reason}), so "
            "whether the revision moved is unknown: connect to the hub (or point HF_ENDPOINT at a "
            "mirror), or pin model.revision to a full commit sha"
        ) from error
    except (HfHubHTTPError, EntryNotFoundError) as error:
        raise _explain(api, repo_id, revision, token_env, token, error) from error
    if not sha or not _SHA.fullmatch(sha):
        raise CheckpointError(
            f"{repo_id}@{revision}: the hub at {constants.ENDPOINT} answered "
            f"no commit sha ({sha!r}); pin model.revision to a full commit sha"
        )
    return sha


def local_checkpoint(path: Path) -> FetchedCheckpoint:
    """The identity of a checkpoint folder on disk: its config.json hash and file sizes."""
    folder = path.resolve()
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder}: no config.json, so not a Hugging Face checkpoint")
    return FetchedCheckpoint(
        repo_id=None,
        revision=None,
        commit_sha=None,
        local_dir=folder,
        files=_files(folder),
        config_sha256=file_sha256(folder / "config.json"),
    )


def _cached_snapshot(download: dict, error: Exception, token: str | None, log: Callable[[str], None]) -> Path:
    """The cached snapshot of the download, or an error saying the hub gave no answer."""
    where = f"{download['repo_id']}@{download['revision']}"
    # A file's LocalEntryNotFoundError wraps the real reason (a ConnectError, a 5xx).
    cause = error.__cause__ if isinstance(error, LocalEntryNotFoundError) else None
    cause = cause or error
    reason = _redact(f"{cause.__class__.__name__}: {cause}".splitlines()[0], token)
    try:
        folder = Path(snapshot_download(**download, local_files_only=True))
    except LocalEntryNotFoundError as missing:
        cache = download["cache_dir"] or constants.HF_HUB_CACHE
        raise CheckpointError(
            f"{where}: no answer from the hub at {constants.ENDPOINT} ({reason}) and the cache "
            f"{cache} holds no complete copy of it: connect to the hub (or point HF_ENDPOINT at "
            "a mirror), or pin the revision to a full commit sha that is cached"
        ) from missing
    moved = "" if _SHA.fullmatch(download["revision"]) else "; the branch or tag may have moved"
    log(f"no answer from the hub ({reason}): using the cached snapshot {folder.name} of {where}{moved}")
    return folder


def _refusal(error: Exception) -> HfHubHTTPError | None:
    """The hub's 4xx answer behind a LocalEntryNotFoundError, if that is what it wraps: the 0.x
    hub client (requests) reports any HTTP error of its file listing, when nothing is cached,
    as a missing local entry, as if the hub had not answered. A 5xx stays "no answer"."""
    cause = error.__cause__ if isinstance(error, LocalEntryNotFoundError) else None
    status = getattr(getattr(cause, "response", None), "status_code", None)
    if isinstance(cause, HfHubHTTPError) and status is not None and status < 500:
        return cause
    return None


def _explain(
    api: HfApi, repo_id: str, revision: str, token_env: str, token: str | None, error: Exception
) -> CheckpointError:
    """One message naming the repo or revision at fault and the fix."""
    has_token = f"${token_env} is set but has no access" if token else f"${token_env} is not set"
    gated = CheckpointError(
        f"{repo_id} is gated ({has_token}): accept its terms on its hub "
        f"page, then export {token_env}=<a read token of that account>"
    )
    if isinstance(error, GatedRepoError):
        return gated
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status == 403:
        return CheckpointError(
            f"{repo_id}: access denied ({has_token}): export {token_env}=<a read token with access to it>"
        )
    if status in (401, 404) or isinstance(error, EntryNotFoundError):
        # Hubs disagree on what a bad revision returns (the hub: RevisionNotFound; mirrors such
        # as olah: RepoNotFound or EntryNotFound), so the repo's refs tell the two apart.
        try:
            refs = api.list_repo_refs(repo_id)
        except GatedRepoError:
            return gated
        except (HfHubHTTPError, EntryNotFoundError, *_UNREACHABLE):
            return CheckpointError(
                f"repository {repo_id} not found on {constants.ENDPOINT}: check the repo id; if "
                f"it is private, export {token_env}=<a read token with access> ({has_token})"
            )
        branches, tags = sorted(b.name for b in refs.branches), sorted(t.name for t in refs.tags)
        if revision not in (*branches, *tags):
            return CheckpointError(
                f"{repo_id} has no revision {revision!r} (branches: {', '.join(branches) or 'none'}"
                f"; tags: {', '.join(tags) or 'none'}): use one of those or a full commit sha of "
                "the repository"
            )
    message = _redact(str(error).splitlines()[0] if str(error) else "", token)
    return CheckpointError(
        f"{repo_id}@{revision}: the hub at {constants.ENDPOINT} answered "
        f"{error.__class__.__name__} ({message}); retry later"
    )


def _record(repo_id: str, revision: str, folder: Path, allow_patterns: Sequence[str]) -> FetchedCheckpoint:
    files = _files(folder)
    if tuple(allow_patterns) == DEFAULT_PATTERNS and not any(name.endswith(".safetensors") for name in files):
        raise CheckpointError(
            f"{repo_id}@{revision} has no *.safetensors weights (commit {folder.name}): pickled "
            "*.bin/*.pth weights are not fetched by default; pick a revision with safetensors, or "
            "pass allow_patterns that include them if you trust the repository"
        )
    config = folder / "config.json"
    # snapshot_download returns snapshots/<commit sha>: the folder name is the resolved commit.
    return FetchedCheckpoint(
        repo_id=repo_id,
        revision=revision,
        commit_sha=folder.name,
        local_dir=folder,
        files=files,
        config_sha256=file_sha256(config) if config.is_file() else None,
    )


def _files(folder: Path) -> dict[str, int]:
    """Relative path -> size (through the cache's symlinks) of every file, hidden ones aside."""
    paths = (p.relative_to(folder) for p in sorted(folder.rglob("*")) if p.is_file())
    return {
        p.as_posix(): (folder / p).stat().st_size
        for p in paths
        if not any(part.startswith(".") for part in p.parts)
    }


def _redact(text: str, token: str | None) -> str:
    """`text` without the token, whatever a library put in it."""
    return text.replace(token, "<token>") if token else text
