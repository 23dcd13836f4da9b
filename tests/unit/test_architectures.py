"""Reading model shapes from config.json files and the shipped architecture files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enginesweep.build_configs.architectures import (
    ArchitectureError,
    ModelArchitecture,
    shipped_architecture,
    shipped_architectures,
)

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent.parent / "fixtures"

# Published parameter counts (billions) of the shipped models.
PUBLISHED_PARAMS_B = {
    "llama-3.1-8b": 8.03,
    "llama-3.1-70b": 70.55,
    "llama-3.3-70b": 70.55,
    "llama-3.1-405b": 405.85,
    "mistral-7b": 7.25,
    "qwen2.5-7b": 7.62,
    "qwen2.5-72b": 72.71,
    "smollm2-135m": 0.1345,
}


def test_every_promised_architecture_ships():
    # The mixture-of-experts files carry their published counts themselves (test_moe_architectures).
    moe = {"gpt-oss-120b", "gpt-oss-20b", "qwen3-30b-a3b", "qwen3-235b-a22b", "deepseek-v3", "mixtral-8x7b"}
    assert set(PUBLISHED_PARAMS_B) | moe == set(shipped_architectures())


@pytest.mark.parametrize(("name", "billions"), sorted(PUBLISHED_PARAMS_B.items()))
def test_shipped_architecture_matches_published_parameter_count(name, billions):
    assert shipped_architecture(name).total_params / 1e9 == pytest.approx(billions, rel=0.005)


def test_shipped_architecture_found_by_repo_id():
    arch = shipped_architecture("meta-llama/Llama-3.1-8B-Instruct")
    assert arch.name == "Llama-3.1-8B"
    assert (arch.num_kv_heads, arch.head_dim, arch.tie_word_embeddings) == (8, 128, False)


def test_transformers5_config_keeps_rope_base_and_derives_head_dim():
    arch = ModelArchitecture.from_file(FIXTURES / "smollm2-transformers5-config.json")
    assert arch.rope_theta == 100000.0
    assert arch.head_dim == 576 // 9 == 64
    assert arch.tie_word_embeddings is True


def test_checkpoint_directory_is_read_through_its_config(tmp_path):
    config = json.loads((FIXTURES / "llama-2-7b-config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config))
    arch = ModelArchitecture.from_file(tmp_path)
    assert arch.name == tmp_path.name
    assert arch.num_kv_heads == 32 and arch.intermediate_size == 11008


def test_missing_kv_heads_means_multi_head_attention(tmp_path):
    config = json.loads((FIXTURES / "llama-2-7b-config.json").read_text())
    del config["num_key_value_heads"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert ModelArchitecture.from_file(tmp_path).num_kv_heads == 32


def test_qwen2_has_attention_bias():
    assert shipped_architecture("qwen2.5-7b").attention_bias is True
    assert shipped_architecture("llama-3.1-8b").attention_bias is False


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"model_type": "bert"}', "lacks hidden_size, num_hidden_layers, num_attention_heads, vocab_size"),
        ("[1, 2]", "is not a JSON object"),
        ("{not json", "is not valid JSON"),
    ],
)
def test_unusable_config_is_refused_with_the_reason(tmp_path, content, message):
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(ArchitectureError, match=message):
        ModelArchitecture.from_file(tmp_path)


def test_a_moe_key_that_is_not_modelled_is_refused_by_name_not_sized_wrongly():
    with pytest.raises(ArchitectureError, match="'shared_expert_intermediate_size'"):
        ModelArchitecture.from_file(FIXTURES / "unmodelled-shared-expert-config.json")
