"""Quantization recipes -> ModelOpt configs, and the exported-checkpoint check.

The config tests run against the installed ModelOpt's real presets in both of its config shapes:
lists of entries in .venv (0.47) and dicts of patterns in .venv-trtllm (0.37, TensorRT-LLM 1.2's;
the `container` marker), each checked by ModelOpt's own config schema."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import modelopt
import modelopt.torch.quantization as mtq
import pytest
from modelopt.torch.quantization.config import QuantizeConfig
from packaging.version import Version

from enginesweep.engines.quantize.export_check import export_problems
from enginesweep.engines.quantize.recipes import (
    CalibrationSpec,
    QuantRecipe,
    entries_are_listed,
    modelopt_config,
)

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent.parent / "fixtures"
LISTED = entries_are_listed(mtq)
KV = "*[kv]_bmm_quantizer"


def quantizer_cfgs(config, name):
    """What `config` sets for the quantizer pattern `name`, in order, in either shape (a list
    entry's `enable` folded into its cfg dict; a cfg that is a list of dicts, W4A8's, as it is)."""
    if not LISTED:
        return [config["quant_cfg"][name]] if name in config["quant_cfg"] else []
    found = []
    for entry in config["quant_cfg"]:
        if entry.get("quantizer_name") == name:
            cfg = entry.get("cfg", {})
            found.append(
                cfg
                if isinstance(cfg, list)
                else {**cfg, **({"enable": entry["enable"]} if "enable" in entry else {})}
            )
    return found


def accepted_by_modelopt(config) -> None:
    """ModelOpt's own schema takes `config` in its current shape (0.44+ only warns on dicts)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        QuantizeConfig(**config)
    assert not [w for w in caught if "legacy dict format" in str(w.message)]


@pytest.mark.container
def test_the_shape_is_read_from_the_presets_and_matches_the_version_it_changed_in():
    assert (Version(modelopt.__version__) >= Version("0.44")) == LISTED
    assert isinstance(mtq.INT4_AWQ_CFG["quant_cfg"], list if LISTED else dict)


def test_unquantized_recipe_needs_no_modelopt():
    assert modelopt_config(QuantRecipe(quant="bf16", kv_cache="auto")) is None


@pytest.mark.container
def test_fp8_weights_do_not_imply_fp8_kv():
    config = modelopt_config(QuantRecipe(quant="fp8", kv_cache="auto"))
    assert quantizer_cfgs(config, KV) == []
    with_kv = modelopt_config(QuantRecipe(quant="fp8", kv_cache="fp8"))
    accepted_by_modelopt(with_kv)
    (kv,) = quantizer_cfgs(with_kv, KV)
    assert kv["num_bits"] == (4, 3) and kv["axis"] is None and kv.get("enable", True) is True
    # The same KV quantizer as ModelOpt's own FP8 KV preset.
    (preset,) = quantizer_cfgs(mtq.FP8_KV_CFG, KV)
    assert kv == preset


@pytest.mark.container
def test_int8_kv_on_16_bit_weights_enables_only_the_kv_quantizer():
    config = modelopt_config(QuantRecipe(quant="bf16", kv_cache="int8"))
    accepted_by_modelopt(config)
    assert config["algorithm"] == "max"
    if LISTED:
        assert config["quant_cfg"] == [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": KV, "cfg": {"num_bits": 8, "axis": None}},
        ]
    else:
        assert config["quant_cfg"] == {
            "default": {"enable": False},
            KV: {"num_bits": 8, "axis": None, "enable": True},
        }


@pytest.mark.container
@pytest.mark.parametrize("quant", ["int4_awq", "w4a8_awq"])
def test_awq_group_size_is_set(quant):
    config = modelopt_config(QuantRecipe(quant=quant, kv_cache="fp8", awq_block_size=64))
    accepted_by_modelopt(config)
    (weight,) = quantizer_cfgs(config, "*weight_quantizer")
    if quant == "w4a8_awq":  # INT4 blocks then FP8: only the first has block sizes
        assert isinstance(weight, list) and "block_sizes" not in weight[1]
        weight = weight[0]
    assert weight["block_sizes"][-1] == 64 and weight["num_bits"] == 4


@pytest.mark.container
def test_recipe_preset_is_not_mutated():
    import modelopt.torch.quantization as mtq

    before = json.dumps(mtq.INT4_AWQ_CFG, default=str)
    modelopt_config(QuantRecipe(quant="int4_awq", kv_cache="int8", awq_block_size=64))
    assert json.dumps(mtq.INT4_AWQ_CFG, default=str) == before


def test_recipe_key_changes_with_every_input():
    calib = CalibrationSpec(dataset="d", sha256="s", samples=16, seq_len=256)
    base = QuantRecipe(quant="fp8", kv_cache="int8", calibration=calib)
    keys = {
        base.key("ckpt-a"),
        base.key("ckpt-b"),
        base.model_copy(update={"tp": 2}).key("ckpt-a"),
        base.model_copy(update={"calibration": calib.model_copy(update={"samples": 8})}).key("ckpt-a"),
    }
    assert len(keys) == 4
    assert base.key("ckpt-a") == QuantRecipe(quant="fp8", kv_cache="int8", calibration=calib).key("ckpt-a")


SOURCE = json.loads((FIXTURES / "smollm2-transformers5-config.json").read_text())
GOOD_EXPORT = {
    "vocab_size": 49152,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "rotary_base": 100000.0,
    "mapping": {"world_size": 1, "tp_size": 1, "pp_size": 1},
    "quantization": {"quant_algo": "W4A16_AWQ", "kv_cache_quant_algo": None, "group_size": 64},
}
AWQ = QuantRecipe(quant="int4_awq", kv_cache="auto", awq_block_size=64)


def test_matching_export_has_no_problems():
    assert export_problems(GOOD_EXPORT, SOURCE, AWQ) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"rotary_base": None}, "rotary_base: exported None, source 100000.0"),
        ({"rotary_base": 10000.0}, "rotary_base: exported 10000.0"),
        ({"vocab_size": 49153}, "vocab_size: exported 49153, source 49152"),
        ({"num_hidden_layers": 29}, "num_hidden_layers"),
        ({"mapping": {"world_size": 2, "tp_size": 2, "pp_size": 1}}, "mapping.tp_size: exported 2, recipe 1"),
        (
            {"quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": None, "group_size": 64}},
            "quantization.quant_algo: exported 'FP8', recipe 'W4A16_AWQ'",
        ),
        (
            {"quantization": {"quant_algo": "W4A16_AWQ", "kv_cache_quant_algo": None, "group_size": 128}},
            "quantization.group_size: exported 128, recipe 64",
        ),
        (
            {"quantization": {"quant_algo": "W4A16_AWQ", "kv_cache_quant_algo": "INT8", "group_size": 64}},
            "quantization.kv_cache_quant_algo: exported 'INT8', recipe None",
        ),
    ],
)
def test_each_disagreement_is_reported(change, expected):
    problems = export_problems({**GOOD_EXPORT, **change}, SOURCE, AWQ)
    assert any(expected in problem for problem in problems), problems


def test_uneven_tp_shards_are_reported():
    recipe = QuantRecipe(quant="bf16", kv_cache="auto", tp=2)
    exported = {
        **GOOD_EXPORT,
        "mapping": {"world_size": 2, "tp_size": 2, "pp_size": 1},
        "quantization": {"quant_algo": None, "kv_cache_quant_algo": None},
    }
    problems = export_problems(exported, SOURCE, recipe)
    assert problems == [
        "num_attention_heads=9 is not divisible by tp=2: the shards are invalid",
        "num_key_value_heads=3 is not divisible by tp=2: the shards are invalid",
    ]
