"""The fetch stage against a real hub-protocol server: olah on loopback, serving git repos.

A tiny model repository (config, tokenizer files, a safetensors file and a pickled `*.bin` as Git
LFS objects) has a first commit tagged `v1.0`, a second commit on `main` and a third on branch
`dev`. Every fetch runs in a subprocess because `huggingface_hub` reads `HF_ENDPOINT` and `HF_HOME`
when it is imported. olah comes from `.venv-olah` (`scripts/setup-olah`); without it these tests
fail with that instruction. See hub_server.py for the mirror layout and the auth gate.
Marked `container`: they also run with huggingface_hub 0.x (requests), the line transformers 4.57
needs in TensorRT-LLM 1.2's images (.venv-trtllm).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
import pytest

from enginesweep.engines.checkpoints import local_checkpoint
from testkit.hub_server import REPO_ROOT, AuthGate, MirrorRepo, OlahServer, require_olah, tiny_safetensors

pytestmark = [pytest.mark.integration, pytest.mark.container]

HUB_1 = int(huggingface_hub.__version__.split(".")[0]) >= 1
# What "no connection" is called in messages: httpx's error (hub 1.x) or requests' (hub 0.x).
CONNECT_ERROR = "ConnectError" if HUB_1 else "ConnectionError"

REPO = "acme/tiny-llama"
GATED = "acme/gated-llama"
PICKLED = "acme/pickled-llama"
GATE_TOKEN = "hf_gate_token_for_tests"
WEIGHTS = {"v1": tiny_safetensors(0), "dev": tiny_safetensors(1)}
DEFAULT_FILES_V1 = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}

_FETCH = """
import json, sys
from enginesweep.engines.checkpoints import CheckpointError, fetch_checkpoint
try:
    record = fetch_checkpoint(**json.loads(sys.argv[1]), log=lambda m: print(m, file=sys.stderr))
except CheckpointError as error:
    print(json.dumps({"error": str(error)}))
else:
    print(record.model_dump_json())
"""


@dataclass(frozen=True)
class Mirror:
    path: Path
    shas: dict[str, str]  # v1 (tagged v1.0), main, dev


@dataclass(frozen=True)
class Fetched:
    result: dict
    stderr: str
    stdout: str


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Mirror:
    try:
        require_olah()
    except RuntimeError as missing:
        pytest.fail(str(missing))
    path = tmp_path_factory.mktemp("mirrors")
    repo = MirrorRepo(path, REPO)
    repo.write("config.json", {"model_type": "llama", "hidden_size": 4, "num_hidden_layers": 1})
    repo.write("tokenizer.json", {"version": "1.0", "model": {"type": "BPE", "vocab": {}}})
    repo.write("tokenizer_config.json", {"model_max_length": 16})
    repo.write("README.md", "---\nlicense: apache-2.0\n---\nA tiny test model.\n")
    repo.write_lfs("model.safetensors", WEIGHTS["v1"])
    repo.write_lfs("pytorch_model.bin", b"PK\x03\x04 pickled weights stand-in " * 8)
    shas = {"v1": repo.commit("first weights")}
    repo.git("tag", "v1.0")
    repo.write("config.json", {"model_type": "llama", "hidden_size": 4, "num_hidden_layers": 2})
    repo.write("generation_config.json", {"max_new_tokens": 4})
    shas["main"] = repo.commit("second commit")
    repo.git("checkout", "-q", "-b", "dev")
    repo.write_lfs("model.safetensors", WEIGHTS["dev"])
    shas["dev"] = repo.commit("retrained weights")
    repo.git("checkout", "-q", "main")
    gated = MirrorRepo(path, GATED)
    gated.write("config.json", {"model_type": "llama"})
    gated.write_lfs("model.safetensors", WEIGHTS["v1"])
    shas["gated"] = gated.commit("gated weights")
    pickled = MirrorRepo(path, PICKLED)
    pickled.write("config.json", {"model_type": "llama"})
    pickled.write_lfs("pytorch_model.bin", b"PK\x03\x04 pickled weights stand-in " * 8)
    pickled.commit("pickled weights only")
    return Mirror(path, shas)


@pytest.fixture(scope="module")
def hub(mirror: Mirror, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with OlahServer(mirror.path, tmp_path_factory.mktemp("olah"), probe_repo=REPO) as server:
        yield server.url


def fetch(
    endpoint: str, hf_home: Path, repo_id: str, revision: str, *, token: str | None = None, **kwargs: object
) -> Fetched:
    """`fetch_checkpoint` in a fresh interpreter pointed at `endpoint`, its cache in `hf_home`."""
    # No token, cache or offline switch of the caller's environment leaks in.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(hf_home), HF_HUB_DISABLE_PROGRESS_BARS="1")
    if token is not None:
        env["HF_TOKEN"] = token
    args = json.dumps({"repo_id": repo_id, "revision": revision, **kwargs})
    done = subprocess.run(
        [sys.executable, "-c", _FETCH, args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return Fetched(json.loads(done.stdout), done.stderr, done.stdout)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("revision, expected", [("v1.0", "v1"), ("main", "main"), ("dev", "dev")])
def test_branches_and_tags_resolve_to_their_commit(hub, mirror, tmp_path, revision, expected):
    record = fetch(hub, tmp_path / "hf", REPO, revision).result
    assert record["revision"] == revision
    assert record["commit_sha"] == mirror.shas[expected]
    local = Path(record["local_dir"])
    assert local.name == mirror.shas[expected] and local.is_relative_to(tmp_path / "hf")
    weights = WEIGHTS["dev" if expected == "dev" else "v1"]
    assert _sha256(local / "model.safetensors") == hashlib.sha256(weights).hexdigest()
    assert ("generation_config.json" in record["files"]) == (expected != "v1")


def test_pinned_sha_fetches_only_the_default_patterns(hub, mirror, tmp_path):
    record = fetch(hub, tmp_path / "hf", REPO, mirror.shas["v1"]).result
    assert record["commit_sha"] == record["revision"] == mirror.shas["v1"]
    # No pickled *.bin and no README: only what a build reads.
    assert set(record["files"]) == DEFAULT_FILES_V1
    assert record["files"]["model.safetensors"] == len(WEIGHTS["v1"])
    local = Path(record["local_dir"])
    assert record["config_sha256"] == _sha256(local / "config.json")
    assert not (local / "pytorch_model.bin").exists()
    # A local folder gets the same identity fields (and no commit).
    same = local_checkpoint(local)
    assert (same.files, same.config_sha256, same.commit_sha) == (
        record["files"],
        record["config_sha256"],
        None,
    )


def test_repo_with_only_pickled_weights_is_refused_by_default(hub, tmp_path):
    error = fetch(hub, tmp_path / "hf", PICKLED, "main").result["error"]
    assert error.startswith(f"{PICKLED}@main has no *.safetensors weights")
    assert "pass allow_patterns that include them" in error


def test_allow_patterns_are_passed_through(hub, mirror, tmp_path):
    record = fetch(
        hub, tmp_path / "hf", REPO, mirror.shas["v1"], allow_patterns=["config.json", "*.bin"]
    ).result
    assert set(record["files"]) == {"config.json", "pytorch_model.bin"}


def test_unknown_revision_names_the_revision_and_the_choices(hub, tmp_path):
    # olah answers an unknown branch with RepoNotFound (the hub: RevisionNotFound); either way
    # the message must be about the revision.
    error = fetch(hub, tmp_path / "hf", REPO, "no-such-branch").result["error"]
    assert error == (
        f"{REPO} has no revision 'no-such-branch' (branches: dev, main; tags: v1.0): "
        "use one of those or a full commit sha of the repository"
    )
    error = fetch(hub, tmp_path / "hf", REPO, "0" * 40).result["error"]
    if HUB_1:
        assert error.startswith(f"{REPO} has no revision '{'0' * 40}'"), error
    else:
        # hub 0.x asks /api/models/<repo>/revision/<sha>, where olah answers an unknown commit
        # with 500 (the hub: 404 RevisionNotFound); a 5xx is no answer, and nothing is cached.
        assert error.startswith(
            f"{REPO}@{'0' * 40}: no answer from the hub at {hub} (HfHubHTTPError: 500 Server Error"
        ), error


def test_unknown_repo_names_the_repo(hub, mirror, tmp_path):
    for revision in ("main", mirror.shas["v1"]):
        error = fetch(hub, tmp_path / "hf", "acme/no-such-model", revision).result["error"]
        assert error.startswith(f"repository acme/no-such-model not found on {hub}: check the repo id")
        assert "export HF_TOKEN=" in error


def test_warm_cache_serves_a_pinned_commit_with_the_hub_gone(mirror, tmp_path):
    hf_home = tmp_path / "hf"
    with OlahServer(mirror.path, tmp_path / "olah", probe_repo=REPO) as server:
        endpoint = server.url
        online = fetch(endpoint, hf_home, REPO, mirror.shas["v1"]).result
        fetch(endpoint, hf_home, REPO, "main")
    offline = fetch(endpoint, hf_home, REPO, mirror.shas["v1"]).result
    assert offline == online
    # A branch falls back to the commit cached for it, and the log says it may be stale.
    branch = fetch(endpoint, hf_home, REPO, "main")
    assert branch.result["commit_sha"] == mirror.shas["main"]
    assert f"no answer from the hub ({CONNECT_ERROR}" in branch.stderr
    assert "the branch or tag may have moved" in branch.stderr
    # A commit never fetched cannot come from anywhere.
    error = fetch(endpoint, hf_home, REPO, mirror.shas["dev"]).result["error"]
    assert error.startswith(
        f"{REPO}@{mirror.shas['dev']}: no answer from the hub at {endpoint} ({CONNECT_ERROR}"
    )
    assert "holds no complete copy of it" in error


def test_gated_repo_needs_the_token_from_the_environment(hub, mirror, tmp_path):
    with AuthGate(hub, GATED, GATE_TOKEN) as gate:
        error = fetch(gate.url, tmp_path / "hf", GATED, "main").result["error"]
        assert error.startswith(f"{GATED} is gated ($HF_TOKEN is not set): accept its terms")
        error = fetch(gate.url, tmp_path / "hf", GATED, "main", token="hf_wrong").result["error"]
        assert error.startswith(f"{GATED} is gated ($HF_TOKEN is set but has no access)")
        record = fetch(gate.url, tmp_path / "hf", GATED, "main", token=GATE_TOKEN).result
    assert record["commit_sha"] == mirror.shas["gated"]


def test_token_never_appears_in_records_logs_or_errors(hub, mirror, tmp_path):
    canary = "hf_canary_7f3c9e1d2b8a4f60"
    runs = [
        fetch(hub, tmp_path / "hf", REPO, "main", token=canary),
        fetch(hub, tmp_path / "hf", "acme/no-such-model", "main", token=canary),
        fetch(hub, tmp_path / "hf", REPO, "no-such-branch", token=canary),
    ]
    assert runs[0].result["commit_sha"] == mirror.shas["main"]
    assert "token from $HF_TOKEN" in runs[0].stderr
    assert "$HF_TOKEN is set" in runs[1].result["error"]
    for run in runs:
        assert canary not in run.stdout and canary not in run.stderr
    cache = [p for p in (tmp_path / "hf").rglob("*") if p.is_file()]
    assert cache and not [p for p in cache if canary.encode() in p.read_bytes()]


_RESOLVE = """
import json, sys
from enginesweep.engines.checkpoints import CheckpointError, resolve_revision
try:
    print(json.dumps({"sha": resolve_revision(*sys.argv[1:3])}))
except CheckpointError as error:
    print(json.dumps({"error": str(error)}))
"""


def resolve(endpoint: str, hf_home: Path, repo_id: str, revision: str) -> dict:
    """`resolve_revision` in a fresh interpreter pointed at `endpoint` (as `fetch` does)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(hf_home))
    done = subprocess.run(
        [sys.executable, "-c", _RESOLVE, repo_id, revision],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_resolve_revision_names_the_commit_without_downloading(hub, mirror, tmp_path):
    hf_home = tmp_path / "hf"
    for revision, expected in (("v1.0", "v1"), ("main", "main"), ("dev", "dev")):
        assert resolve(hub, hf_home, REPO, revision) == {"sha": mirror.shas[expected]}
    assert not list(hf_home.rglob("*.safetensors"))  # asked, not fetched
    assert resolve(hub, hf_home, REPO, "no-such-branch")["error"].startswith(
        f"{REPO} has no revision 'no-such-branch' (branches: dev, main; tags: v1.0)"
    )
    # No answer: whether the branch moved is unknown, and no cached ref may stand in for it.
    gone = resolve("http://127.0.0.1:9", hf_home, REPO, "main")["error"]
    assert gone.startswith(f"{REPO}@main: no answer from the hub at http://127.0.0.1:9 ({CONNECT_ERROR}")
    assert "pin model.revision to a full commit sha" in gone
