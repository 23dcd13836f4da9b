"""Model architectures without weights.

The planner needs a model's shape, never its weights: layers, hidden size, attention and KV heads,
head dim, MLP size, vocabulary, context length, tied embeddings. These are read from a checkpoint's
Hugging Face `config.json` (a local file or directory, or the hub's config file alone), or from the
architecture files shipped in `architectures/` (same field names) so that planning works offline.

Only dense decoder-only transformers with a gated MLP (Llama, Mistral, Qwen2 families) are sized
today; a mixture-of-experts config is refused with a clear message rather than sized wrongly.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_MOE_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size")


class ArchitectureError(ValueError):
    """A config.json that cannot be sized (missing fields, unsupported family)."""


class ModelArchitecture(BaseModel):
    """The numbers that size a dense decoder-only transformer."""

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

    def hf_config(self) -> dict[str, Any]:
        """A Hugging Face `config.json` with the sizing fields (for tools that read one)."""
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
    def linear_params_per_layer(self) -> int:
        """Weights of the quantizable GEMMs of one layer (q, k, v, o, gate, up, down)."""
        q_out = self.num_attention_heads * self.head_dim
        kv_out = self.num_kv_heads * self.head_dim
        attention = self.hidden_size * (q_out + 2 * kv_out) + q_out * self.hidden_size
        mlp = 3 * self.hidden_size * self.intermediate_size
        return attention + mlp

    @property
    def linear_params(self) -> int:
        """All quantizable GEMM weights of the decoder layers."""
        return self.num_layers * self.linear_params_per_layer

    @property
    def embedding_params(self) -> int:
        """Input embedding plus LM head (one matrix when tied). Kept in 16 bits by TRT-LLM's
        default quantization recipes, which exclude `lm_head`."""
        matrices = 1 if self.tie_word_embeddings else 2
        return matrices * self.vocab_size * self.hidden_size

    @property
    def other_params(self) -> int:
        """Norms and attention biases: small, kept in 16 bits."""
        norms = (2 * self.num_layers + 1) * self.hidden_size
        bias = 0
        if self.attention_bias:
            bias = self.num_layers * (self.num_attention_heads + 2 * self.num_kv_heads) * self.head_dim
        return norms + bias

    @property
    def total_params(self) -> int:
        return self.linear_params + self.embedding_params + self.other_params

    @property
    def kv_elements_per_token(self) -> int:
        """K and V elements cached per token, summed over layers: 2 * layers * kv_heads * head_dim."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim

    # -- readers ---------------------------------------------------------------------------------
    @classmethod
    def from_hf_config(cls, config: dict[str, Any], name: str) -> ModelArchitecture:
        """Read the sizing numbers from a Hugging Face `config.json` dictionary."""
        moe = [key for key in _MOE_KEYS if config.get(key)]
        if moe:
            raise ArchitectureError(
                f"{name}: mixture-of-experts configs ({', '.join(moe)}) are not sized yet; "
                "only dense decoder-only models are supported"
            )
        required = (
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "vocab_size",
        )
        missing = [key for key in required if key not in config]
        if missing:
            raise ArchitectureError(
                f"{name}: config.json lacks {', '.join(missing)}; is this a decoder-only LLM config?"
            )
        heads = int(config["num_attention_heads"])
        rope = config.get("rope_theta")
        # transformers 5 keeps the RoPE base only under rope_parameters.
        if rope is None and isinstance(config.get("rope_parameters"), dict):
            rope = config["rope_parameters"].get("rope_theta")
        return cls(
            name=name,
            hidden_size=int(config["hidden_size"]),
            intermediate_size=int(config["intermediate_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_attention_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or config["hidden_size"] // heads),
            vocab_size=int(config["vocab_size"]),
            max_position_embeddings=int(config.get("max_position_embeddings") or 4096),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            attention_bias=bool(config.get("attention_bias", config.get("model_type") == "qwen2")),
            rope_theta=float(rope) if rope is not None else None,
            family=(config.get("architectures") or [None])[0],
            model_type=config.get("model_type"),
        )

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
