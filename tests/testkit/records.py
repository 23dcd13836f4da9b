"""Hand-made trial records for tests that need a record but not its numbers."""

from __future__ import annotations

from typing import Any

from enginesweep.evaluation.records import TrialRecord

# A trial's point in the sweep space (TrialConfig's required fields), as a record stores it.
TRIAL_CONFIG = {
    "quant": "bf16",
    "kv_cache": "auto",
    "tp": 1,
    "pp": 1,
    "max_batch_size": 4,
    "max_num_tokens": 256,
    "max_seq_len": 128,
}


def ok_record(slug: str = "t", **fields: Any) -> TrialRecord:
    """A successful reference-stack record of sweep `s` on the CPU, with no measurements and no
    prediction; `fields` set the rest (bundle_dir, trial_key, ...)."""
    return TrialRecord(
        slug=slug,
        sweep="s",
        stack="reference",
        hardware="cpu",
        status="ok",
        config=TRIAL_CONFIG,
        predicted=None,
        **fields,
    )
