"""Evaluate SmolLM2-135M and four quantized variants of it, in-process, for the accuracy-gate
test: the unquantized baseline, FP8, INT4-AWQ, an INT8 KV cache (the reference stack's own
ModelOpt configs) and a deliberately broken 2-bit weight quantization. Writes every variant's
paired deltas and the gate's verdicts (strict and lenient) as JSON.

Run as a script (the test runs it under `unshare -rn`, with no network):
    python accuracy_variants.py OUT_JSON WORKDIR [VARIANT,VARIANT,...]
The suite evaluates `CI_VARIANTS` (the quantization that passes and the one that must fail); with
no third argument every variant is evaluated (about eight minutes on two cores).
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from enginesweep.build_configs.quant import KVCacheFormat, QuantFormat
from enginesweep.build_configs.schema import SLA, Accuracy
from enginesweep.engines import textdata
from enginesweep.engines.demo_model import prepare_smollm2
from enginesweep.engines.quantize.recipes import QuantRecipe, modelopt_config
from enginesweep.evaluation.accuracy.variant import compare_variant, evaluate_model, task_include_paths
from enginesweep.evaluation.selection.accuracy_gate import accuracy_gate

# Reduced sizes for CI: 8 windows of 128 tokens, the first 60 items of each built-in task.
CFG = Accuracy(window_tokens=128, max_windows=8, task_limit=60, batch_size=16)
SLA_LIMIT = SLA(max_accuracy_drop=0.05, accuracy_drop_mode="relative")

# 2-bit weights in groups of 64, every linear layer but lm_head: far below what any deployment
# uses. It must be rejected; that it is, is the point of the test.
BROKEN_2BIT = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 2, "block_sizes": {-1: 64}}},
        {"quantizer_name": "*lm_head*", "enable": False},
    ],
    "algorithm": "max",
}


def variants() -> dict[str, dict | None]:
    def cfg(quant: QuantFormat, kv: KVCacheFormat) -> dict | None:
        return modelopt_config(QuantRecipe(quant=quant, kv_cache=kv, awq_block_size=64))

    return {
        "fp8": cfg(QuantFormat.FP8, KVCacheFormat.AUTO),
        "int4_awq": cfg(QuantFormat.INT4_AWQ, KVCacheFormat.AUTO),
        "kv-int8": cfg(QuantFormat.BF16, KVCacheFormat.INT8),
        "int2-broken": BROKEN_2BIT,
    }


# What the suite runs: one real quantization the gate passes, one it must reject. INT4-AWQ and the
# INT8 KV cache add no logic the gate does not already exercise here (tests/unit prove the
# statistics); their quantization and export are tested on the tiny Llama.
CI_VARIANTS = ("fp8", "int2-broken")


def main(out: Path, work: Path, names: tuple[str, ...] | None = None) -> None:
    import modelopt.torch.quantization as mtq

    chosen = {name: config for name, config in variants().items() if names is None or name in names}
    unknown = set(names or ()) - set(chosen)
    if unknown:
        raise SystemExit(f"unknown variant(s) {sorted(unknown)}; choose from {sorted(variants())}")

    source = prepare_smollm2(work / "smollm2")
    corpus = textdata.corpus_path(download=False)
    text = textdata.evaluation_text(corpus)
    include = task_include_paths(CFG, work, corpus)
    tokenizer = AutoTokenizer.from_pretrained(source)
    calibration = [
        tokenizer(t, return_tensors="pt", truncation=True, max_length=128)["input_ids"]
        for t in textdata.calibration_texts(corpus, 4, passage_chars=600)
    ]

    def forward_loop(model) -> None:
        with torch.inference_mode():
            for ids in calibration:
                model(input_ids=ids)

    def evaluate(model):
        return evaluate_model(
            model,
            tokenizer,
            text=text,
            dataset_name="britannica",
            cfg=CFG,
            include_paths=include,
            cache_dir=work / "datasets",
            hardware="cpu",
            log_file=work / "lm_eval.log",
        )

    # Read once; each evaluation gets its own copy (about 5 CPU-seconds less than a reload).
    pristine = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()

    def load():
        return copy.deepcopy(pristine)

    start = time.perf_counter()
    baseline = evaluate(load())
    report: dict = {
        "baseline": baseline.model_dump(mode="json"),
        "variants": {},
        "seconds": {"baseline": time.perf_counter() - start},
    }
    for name, config in chosen.items():
        start = time.perf_counter()
        model = load()
        mtq.quantize(model, config, forward_loop)
        # Weight fake-quantization applied once, as the trials' loader does (load_quantized_model):
        # the same numbers, without re-quantizing every weight in every forward pass.
        mtq.fold_weight(model)
        result = evaluate(model)
        deltas = compare_variant(baseline, result, confidence=CFG.confidence)
        verdicts = {}
        for gate in ("strict", "lenient"):
            checks, worst, reasons = accuracy_gate(
                deltas, SLA_LIMIT.model_copy(update={"accuracy_gate": gate}), baseline_trial=False
            )
            verdicts[gate] = {
                "passed": not reasons,
                "reasons": reasons,
                "worst": worst,
                "checks": [c.model_dump(mode="json") for c in checks],
            }
        report["variants"][name] = {
            "result": result.model_dump(mode="json"),
            "deltas": [d.model_dump(mode="json") for d in deltas],
            "gate": verdicts,
        }
        report["seconds"][name] = time.perf_counter() - start
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
    out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), tuple(sys.argv[3].split(",")) if len(sys.argv) > 3 else None)
