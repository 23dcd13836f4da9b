"""One point of the sweep space: the build and runtime knobs of one trial, beside the spec that
spans them. Every layer reads it (the stacks build it, the planner sizes it, selection compares
it), so it lives in the lowest."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from enginesweep.build_configs.quant import KVCacheFormat, QuantFormat


class TrialConfig(BaseModel):
    """One point of the sweep space."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quant: QuantFormat
    kv_cache: KVCacheFormat
    tp: int
    pp: int
    max_batch_size: int
    max_num_tokens: int
    max_seq_len: int

    @property
    def world_size(self) -> int:
        return self.tp * self.pp
