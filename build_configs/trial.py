"""One point of the sweep space: the build and runtime knobs of one trial, beside the spec that
spans them. Every layer reads it (the stacks build it, the planner sizes it, selection compares
it), so it lives in the lowest."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

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
    ep: int = Field(default=1, ge=1, description="Expert-parallel ranks within the TP group (MoE).")
    attention_dp: bool = Field(
        default=False, description="Attention data-parallel over the TP group's ranks (MoE)."
    )

    @property
    def world_size(self) -> int:
        # EP and attention-DP reuse the TP group's ranks: they add no GPUs.
        return self.tp * self.pp

    def identity(self) -> dict[str, object]:
        """The fields that name this trial in cache keys. Fields added after keys were first
        written (`ep`, `attention_dp`) are left out at their defaults, so a workspace made before
        them keeps its keys and reuses its trials."""
        return self.model_dump(mode="json", exclude_defaults=True)
