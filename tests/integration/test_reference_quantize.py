"""Real ModelOpt quantization of a tiny Llama to every reference format, with the real
TensorRT-LLM checkpoint export checked against its source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enginesweep.engines import textdata
from enginesweep.engines.quantize.export_check import ExportMismatch
from enginesweep.engines.quantize.modelopt_cpu import MODELOPT_FILE, quantize_checkpoint
from enginesweep.engines.quantize.recipes import CalibrationSpec, QuantRecipe

pytestmark = pytest.mark.integration

# (quant, kv) -> the quantization block the exported TRT-LLM config.json must carry
CASES = {
    ("bf16", "auto"): {"quant_algo": None, "kv_cache_quant_algo": None},
    ("fp8", "auto"): {"quant_algo": "FP8", "kv_cache_quant_algo": None},
    ("fp8", "int8"): {"quant_algo": "FP8", "kv_cache_quant_algo": "INT8"},
    ("bf16", "fp8"): {"quant_algo": None, "kv_cache_quant_algo": "FP8"},
    ("int4_awq", "auto"): {"quant_algo": "W4A16_AWQ", "kv_cache_quant_algo": None, "group_size": 64},
    ("w4a8_awq", "auto"): {"quant_algo": "W4A8_AWQ", "kv_cache_quant_algo": None, "group_size": 64},
    ("int8_sq", "auto"): {"quant_algo": "W8A8_SQ_PER_CHANNEL", "kv_cache_quant_algo": None},
    ("int8_wo", "int8"): {"quant_algo": "W8A16", "kv_cache_quant_algo": "INT8"},
}


@pytest.fixture(scope="module")
def calibration(corpus: Path) -> tuple[list[str], CalibrationSpec]:
    texts = textdata.calibration_texts(corpus, 4, passage_chars=400)
    return texts, CalibrationSpec(
        dataset="plays", sha256=textdata.text_sha256("".join(texts)), samples=4, seq_len=64
    )


@pytest.mark.parametrize(("quant", "kv"), list(CASES), ids=[f"{q}-kv-{k}" for q, k in CASES])
def test_quantize_and_export(tmp_path, tiny_llama_dir, calibration, quant, kv):
    texts, calib = calibration
    recipe = QuantRecipe(quant=quant, kv_cache=kv, awq_block_size=64, calibration=calib)
    out = tmp_path / "q"
    result = quantize_checkpoint(
        tiny_llama_dir, recipe, out, key="k", calibration_texts=texts, log=lambda line: None
    )
    exported = json.loads((out / "trtllm_checkpoint" / "config.json").read_text())
    for field, value in CASES[(quant, kv)].items():
        assert exported["quantization"].get(field) == value, exported["quantization"]
    assert exported["rotary_base"] == 100000.0
    assert (out / "trtllm_checkpoint" / "rank0.safetensors").stat().st_size > 0
    has_state = (out / "model" / MODELOPT_FILE).exists()
    assert has_state == (quant != "bf16" or kv != "auto")
    assert result.trtllm_config == exported
    assert json.loads((out / "quantize.json").read_text())["key"] == "k"
    assert not out.with_name("q.tmp").exists()


def test_export_per_tp_size_writes_one_shard_per_rank(tmp_path, tiny_llama_dir, calibration):
    texts, calib = calibration
    recipe = QuantRecipe(quant="fp8", kv_cache="auto", tp=3, calibration=calib)
    quantize_checkpoint(
        tiny_llama_dir, recipe, tmp_path / "q", key="k", calibration_texts=texts, log=lambda line: None
    )
    exported = json.loads((tmp_path / "q" / "trtllm_checkpoint" / "config.json").read_text())
    assert exported["mapping"]["tp_size"] == 3 and exported["mapping"]["world_size"] == 3
    assert sorted(p.name for p in (tmp_path / "q" / "trtllm_checkpoint").glob("rank*.safetensors")) == [
        "rank0.safetensors",
        "rank1.safetensors",
        "rank2.safetensors",
    ]


def test_export_that_disagrees_with_its_source_fails_the_trial(
    tmp_path, tiny_llama_dir, calibration, monkeypatch
):
    """The real trap, unmasked: without our RoPE fix, ModelOpt's exporter under transformers 5
    writes no rotary_base (TRT-LLM would run with 10000). The check must refuse the export and
    leave no checkpoint behind."""
    import enginesweep.engines.quantize.modelopt_cpu as modelopt_cpu

    monkeypatch.setattr(modelopt_cpu, "source_rope_theta", lambda config: None)  # disables the fix only
    texts, calib = calibration
    recipe = QuantRecipe(quant="fp8", kv_cache="auto", calibration=calib)
    with pytest.raises(ExportMismatch, match=r"rotary_base: exported None, source 100000.0"):
        quantize_checkpoint(
            tiny_llama_dir, recipe, tmp_path / "q", key="k", calibration_texts=texts, log=lambda line: None
        )
    assert not (tmp_path / "q").exists() and not (tmp_path / "q.tmp").exists()


def test_quantized_model_reloads_with_its_quantizers_in_a_fresh_process(
    tmp_path, tiny_llama_dir, calibration
):
    """The served and evaluated model must be the quantized one: reload it in a new interpreter
    (no state shared with the quantizing process) and find enabled weight and KV quantizers."""
    import subprocess
    import sys

    texts, calib = calibration
    recipe = QuantRecipe(quant="fp8", kv_cache="int8", calibration=calib)
    quantize_checkpoint(
        tiny_llama_dir, recipe, tmp_path / "q", key="k", calibration_texts=texts, log=lambda line: None
    )
    probe = (
        "import sys; from pathlib import Path\n"
        "from enginesweep.engines.quantize.modelopt_cpu import load_quantized_model\n"
        "model, _ = load_quantized_model(Path(sys.argv[1]), fold=False)\n"
        "names = [n for n, m in model.named_modules()\n"
        "         if type(m).__name__ == 'TensorQuantizer' and m.is_enabled]\n"
        "print(sum('weight_quantizer' in n for n in names), sum('k_bmm_quantizer' in n for n in names))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "q" / "model")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    weights, kv = map(int, done.stdout.split()[-2:])
    assert weights == 2 * 7  # q,k,v,o,gate,up,down in each of the 2 layers
    assert kv == 2
