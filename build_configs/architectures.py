"""Model architectures without weights.

The planner needs a model's shape, never its weights: layers, hidden size, attention and KV heads,
head dim, MLP size, vocabulary, context length, tied embeddings. These are read from a checkpoint's
Hugging Face `config.json` (a local file or directory, or the hub's config file alone), or from the
architecture files shipped in `architectures/` (same field names) so that planning works offline.

Decoder-only transformers with a gated MLP are sized: dense ones (Llama, Mistral, Qwen2) and
mixture-of-experts ones (Mixtral, Qwen3-MoE, gpt-oss, DeepSeek-V3), with multi-head latent attention
(MLA: one compressed KV vector per token and layer, not one per head) and sliding-window layers
(which hold at most their window of each sequence). How a `config.json` maps onto these numbers,
and which keys are refused because they would change memory or compute unmodelled, is in
`hf_architecture.py`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from enginesweep.build_configs.hf_architecture import HFConfigError, architecture_fields


class ArchitectureError(ValueError):
    """A config.json that cannot be sized (missing fields, unsupported family)."""


_OWN_KEYS = ("_comment", "display_name", "repo_ids", "published")
"""Keys of the shipped architecture files that are not config.json's."""


class ModelArchitecture(BaseModel):
    """The numbers that size a decoder-only transformer, dense or mixture-of-experts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    hidden_size: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    num_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    max_position_embeddings: int = Field(gt=0)
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    rope_theta: float | None = None
    family: str | None = Field(
        default=None, description="config.json `architectures[0]`, e.g. LlamaForCausalLM."
    )
    model_type: str | None = None
    source_config: str | None = Field(
        default=None,
        exclude=True,
        repr=False,
        description="The config.json it was read from, as JSON text (for tools that read one).",
    )
    # -- mixture of experts (num_experts = 0: a dense model) -------------------------------------
    num_experts: int = Field(default=0, ge=0, description="Routed experts per MoE layer.")
    experts_per_token: int = Field(default=0, ge=0, description="Routed experts each token uses.")
    num_shared_experts: int = Field(default=0, ge=0, description="Experts every token uses (DeepSeek).")
    expert_intermediate_size: int | None = Field(default=None, gt=0, description="FFN width of one expert.")
    num_dense_layers: int = Field(
        default=0, ge=0, description="Layers of a MoE model with a dense MLP (DeepSeek-V3's first 3)."
    )
    expert_bias: bool = Field(default=False, description="Experts and router carry biases (gpt-oss).")
    # -- multi-head latent attention (DeepSeek) --------------------------------------------------
    kv_lora_rank: int | None = Field(default=None, gt=0)
    q_lora_rank: int | None = Field(default=None, gt=0)
    qk_rope_head_dim: int | None = Field(default=None, gt=0)
    qk_nope_head_dim: int | None = Field(default=None, gt=0)
    v_head_dim: int | None = Field(default=None, gt=0)
    # -- attention windows -----------------------------------------------------------------------
    sliding_window: int | None = Field(default=None, gt=0, description="Tokens a sliding layer attends.")
    num_sliding_layers: int = Field(default=0, ge=0, description="Layers with the sliding window.")
    attention_sinks: bool = Field(default=False, description="A learned sink logit per head (gpt-oss).")
    # -- weights as the checkpoint ships them ----------------------------------------------------
    shipped_expert_format: Literal["mxfp4", "fp8_block"] | None = Field(
        default=None, description="Expert weights' format in the checkpoint: mxfp4 or fp8_block."
    )
    shipped_dense_format: Literal["fp8_block"] | None = Field(
        default=None, description="Attention and dense weights' format in the checkpoint: fp8_block."
    )

    @model_validator(mode="after")
    def _consistent(self) -> ModelArchitecture:
        if self.num_experts and not (0 < self.experts_per_token <= self.num_experts):
            raise ValueError(f"experts_per_token {self.experts_per_token} must be 1..{self.num_experts}")
        if self.num_dense_layers > self.num_layers or self.num_sliding_layers > self.num_layers:
            raise ValueError("more dense or sliding layers than layers")
        if self.num_sliding_layers and self.sliding_window is None:
            raise ValueError("sliding layers without a sliding_window")
        mla = (self.kv_lora_rank, self.qk_rope_head_dim, self.qk_nope_head_dim, self.v_head_dim)
        if any(v is not None for v in mla) and any(v is None for v in mla):
            raise ValueError("MLA needs kv_lora_rank, qk_rope_head_dim, qk_nope_head_dim and v_head_dim")
        return self

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank is not None

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.num_dense_layers if self.is_moe else 0

    def hf_config(self) -> dict[str, Any]:
        """A Hugging Face `config.json` for tools that read one (aiconfigurator): the one it was
        read from (less enginesweep's own keys), else one with the dense sizing fields."""
        if self.source_config is not None:
            config = json.loads(self.source_config)
            return {k: v for k, v in config.items() if k not in _OWN_KEYS}
        return {
            "architectures": [self.family] if self.family else [],
            "model_type": self.model_type,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "rope_theta": self.rope_theta,
            "torch_dtype": "bfloat16",
            "hidden_act": "silu",
        }

    # -- parameter counts ------------------------------------------------------------------------
    @property
    def attention_params_per_layer(self) -> int:
        """Attention GEMM weights of one layer (q, k, v, o; MLA's down- and up-projections)."""
        h, heads = self.hidden_size, self.num_attention_heads
        if self.is_mla:
            qk_head = self.qk_nope_head_dim + self.qk_rope_head_dim
            q = (
                h * self.q_lora_rank + self.q_lora_rank * heads * qk_head
                if self.q_lora_rank
                else h * heads * qk_head
            )
            kv = h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank * heads * (
                self.qk_nope_head_dim + self.v_head_dim
            )
            return q + kv + heads * self.v_head_dim * h
        q_out, kv_out = heads * self.head_dim, self.num_kv_heads * self.head_dim
        return h * (q_out + 2 * kv_out) + q_out * h

    @property
    def dense_mlp_params(self) -> int:
        """One dense gated MLP (gate, up, down)."""
        return 3 * self.hidden_size * self.intermediate_size

    @property
    def expert_params(self) -> int:
        """One expert's gated MLP (gate, up, down)."""
        return 3 * self.hidden_size * (self.expert_intermediate_size or self.intermediate_size)

    @property
    def router_params(self) -> int:
        return self.hidden_size * self.num_experts

    @property
    def attention_params(self) -> int:
        """Attention of every layer (kept with the dense part: split by TP, never by EP)."""
        return self.num_layers * self.attention_params_per_layer

    @property
    def dense_params(self) -> int:
        """Dense MLPs, shared experts and routers: every GPU of a TP group holds its TP share."""
        dense_layers = self.num_layers - self.num_moe_layers
        shared = self.num_moe_layers * (self.num_shared_experts * self.expert_params + self.router_params)
        return dense_layers * self.dense_mlp_params + shared

    @property
    def routed_expert_params(self) -> int:
        """Routed experts of every MoE layer (split across the GPUs by EP x expert-TP)."""
        return self.num_moe_layers * self.num_experts * self.expert_params

    @property
    def linear_params(self) -> int:
        """All quantizable GEMM weights of the decoder layers (attention, MLPs, experts)."""
        return self.attention_params + self.dense_params + self.routed_expert_params

    @property
    def linear_params_per_layer(self) -> int:
        """Mean GEMM weights of one layer."""
        return self.linear_params // self.num_layers

    @property
    def embedding_params(self) -> int:
        """Input embedding plus LM head (one matrix when tied). Kept in 16 bits by TRT-LLM's
        default quantization recipes, which exclude `lm_head`."""
        matrices = 1 if self.tie_word_embeddings else 2
        return matrices * self.vocab_size * self.hidden_size

    @property
    def other_params(self) -> int:
        """Norms, biases and attention sinks: small, kept in 16 bits."""
        layers, heads = self.num_layers, self.num_attention_heads
        norms = (2 * layers + 1) * self.hidden_size
        if self.is_mla:  # the latent vectors' own norms
            norms += layers * (self.kv_lora_rank + (self.q_lora_rank or 0))
        bias = 0
        if self.attention_bias:  # q, k and v (o's, where a model has one, is H more)
            bias = layers * (heads + 2 * self.num_kv_heads) * self.head_dim
        if self.expert_bias:  # every expert's gate/up and down, and the router
            width = self.expert_intermediate_size or self.intermediate_size
            bias += self.num_moe_layers * (
                self.num_experts * (2 * width + self.hidden_size) + self.num_experts
            )
        sinks = layers * heads if self.attention_sinks else 0
        return norms + bias + sinks

    @property
    def total_params(self) -> int:
        return self.linear_params + self.embedding_params + self.other_params

    @property
    def idle_expert_params(self) -> int:
        """Routed-expert weights one token is not sent to (0 for a dense model)."""
        return self.num_moe_layers * (self.num_experts - self.experts_per_token) * self.expert_params

    @property
    def active_params(self) -> int:
        """Parameters one token computes with: all but the routed experts it is not sent to."""
        return self.total_params - self.idle_expert_params

    @property
    def active_linear_params(self) -> int:
        """GEMM weights one token multiplies with (the roofline's compute)."""
        return self.linear_params - self.idle_expert_params

    # -- KV cache --------------------------------------------------------------------------------
    @property
    def kv_elements_per_token_per_layer(self) -> int:
        """Elements one layer caches per token: K and V of every KV head, or MLA's one latent
        vector (kv_lora_rank + qk_rope_head_dim) shared by all heads."""
        if self.is_mla:
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.num_kv_heads * self.head_dim

    @property
    def kv_elements_per_token(self) -> int:
        """Elements cached per token, summed over layers, as if every layer held every token."""
        return self.num_layers * self.kv_elements_per_token_per_layer

    def kv_held_fraction(self, sequence_tokens: int) -> float:
        """The share of one `sequence_tokens`-long sequence the mean layer holds in its KV cache:
        full layers all of it, sliding-window layers at most their window (1.0 without them)."""
        sliding = self.num_sliding_layers
        window = min(self.sliding_window or sequence_tokens, sequence_tokens)
        held = (self.num_layers - sliding) * sequence_tokens + sliding * window
        return held / (self.num_layers * sequence_tokens)

    # -- readers ---------------------------------------------------------------------------------
    @classmethod
    def from_hf_config(cls, config: dict[str, Any], name: str) -> ModelArchitecture:
        """Read the sizing numbers from a Hugging Face `config.json` dictionary."""
        try:
            return cls(name=name, source_config=json.dumps(config), **architecture_fields(config))
        except HFConfigError as exc:
            raise ArchitectureError(f"{name}: {exc}") from None
        except ValidationError as exc:
            raise ArchitectureError(f"{name}: inconsistent config.json ({exc.errors()[0]['msg']})") from None

    @classmethod
    def from_file(cls, path: Path) -> ModelArchitecture:
        """Read a `config.json` file, or the `config.json` inside a checkpoint directory."""
        path = Path(path)
        file = path / "config.json" if path.is_dir() else path
        if not file.is_file():
            raise ArchitectureError(f"{file} does not exist")
        try:
            config = json.loads(file.read_text())
        except json.JSONDecodeError as exc:
            raise ArchitectureError(f"{file} is not valid JSON: {exc}") from exc
        if not isinstance(config, dict):
            raise ArchitectureError(f"{file} is not a JSON object")
        name = config.get("display_name") or (path.name if path.is_dir() else path.parent.name)
        return cls.from_hf_config(config, name=name)


@lru_cache(maxsize=1)
def _shipped_configs() -> dict[str, dict[str, Any]]:
    folder = resources.files("enginesweep.build_configs").joinpath("architectures")
    return {
        entry.name.removesuffix(".json"): json.loads(entry.read_text())
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".json")
    }


def shipped_architectures() -> list[str]:
    """Names of the architecture files that ship with enginesweep."""
    return list(_shipped_configs())


def shipped_architecture(name: str) -> ModelArchitecture:
    """A shipped architecture by file name (`llama-3.1-8b`) or by one of its hub repo ids."""
    configs = _shipped_configs()
    key = name.lower()
    if key not in configs:
        key = next(
            (n for n, c in configs.items() if name.lower() in (r.lower() for r in c.get("repo_ids", []))),
            "",
        )
    if not key:
        raise ArchitectureError(
            f"'{name}' is not a shipped architecture (known: {', '.join(configs)}); "
            "give a path to a config.json instead"
        )
    config = configs[key]
    return ModelArchitecture.from_hf_config(config, name=config.get("display_name", key))


def architecture_for_repo(repo_id: str, revision: str) -> ModelArchitecture:
    """The architecture of a hub repo: a shipped file when one matches, else the hub's
    `config.json` alone (never weights), through huggingface_hub and its cache."""
    try:
        return shipped_architecture(repo_id)
    except ArchitectureError:
        pass
    try:
        from huggingface_hub import hf_hub_download  # imported here: costly, and needs no GPU
    except ImportError as exc:  # pragma: no cover - a dependency of the distribution
        raise ArchitectureError(f"huggingface_hub is needed to read {repo_id}'s config") from exc
    try:
        file = hf_hub_download(repo_id, "config.json", revision=revision)
    except Exception as exc:
        raise ArchitectureError(
            f"could not read config.json of {repo_id}@{revision} from the hub "
            f"({type(exc).__name__}: {exc}); set model.architecture to a shipped name or a config.json path"
        ) from exc
    arch = ModelArchitecture.from_file(Path(file))
    return arch.model_copy(update={"name": repo_id.split("/")[-1]})
