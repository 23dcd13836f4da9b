"""Parsers for what the TensorRT engine path writes: an engine's `config.json`, `trtllm-build`
failure logs, a Triton metrics scrape (`:8002/metrics`) and `trtllm-bench --report_json`.

The formats follow the TensorRT-LLM 1.2 sources (field names of `PretrainedConfig`,
`QuantConfig`, `Mapping`, `BuildConfig`/`PluginConfig`, the backend's custom metrics reporter,
trtllm-bench's reporting). Every value a parser returns is a measurement or a build fact of a GPU
machine; nothing here predicts.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class OutputFormatError(ValueError):
    """A file that is not the format its parser expects (names the missing field)."""


def _get(data: dict[str, Any], dotted: str, what: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise OutputFormatError(f"{what} has no {dotted}")
        node = node[part]
    return node


# -- engine config.json ------------------------------------------------------------------------


class EngineSummary(BaseModel):
    """The facts of a built engine that go into the bundle's manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    runtime_version: str
    architecture: str
    dtype: str
    quant_algo: str | None
    kv_cache_quant_algo: str | None
    tp_size: int
    pp_size: int
    world_size: int
    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    max_num_tokens: int
    kv_cache_type: str = Field(description="Lower-case: paged | continuous | disabled.")
    plugins: dict[str, Any] = Field(description="gemm_plugin, use_paged_context_fmha, ...")


_PLUGIN_KEYS = (
    "gemm_plugin",
    "gpt_attention_plugin",
    "context_fmha",
    "use_paged_context_fmha",
    "use_fp8_context_fmha",
    "remove_input_padding",
    "paged_kv_cache",
)


def engine_summary(config: dict[str, Any]) -> EngineSummary:
    """Summarise an engine directory's `config.json` (written by `trtllm-build`)."""
    what = "the engine config.json"
    pretrained = _get(config, "pretrained_config", what)
    build = _get(config, "build_config", what)
    mapping = _get(pretrained, "mapping", what + " pretrained_config")
    quant = pretrained.get("quantization") or {}
    plugins = build.get("plugin_config") or {}
    return EngineSummary(
        runtime_version=str(_get(config, "version", what)),
        architecture=str(_get(pretrained, "architecture", what + " pretrained_config")),
        dtype=str(_get(pretrained, "dtype", what + " pretrained_config")),
        quant_algo=quant.get("quant_algo"),
        kv_cache_quant_algo=quant.get("kv_cache_quant_algo"),
        tp_size=int(mapping.get("tp_size", 1)),
        pp_size=int(mapping.get("pp_size", 1)),
        world_size=int(_get(mapping, "world_size", what + " mapping")),
        max_batch_size=int(_get(build, "max_batch_size", what + " build_config")),
        max_input_len=int(_get(build, "max_input_len", what + " build_config")),
        max_seq_len=int(_get(build, "max_seq_len", what + " build_config")),
        max_num_tokens=int(_get(build, "max_num_tokens", what + " build_config")),
        # 1.1 wrote "PAGED", 1.2 writes "paged"; the C++ loader upper-cases either.
        kv_cache_type=str(_get(build, "kv_cache_type", what + " build_config")).lower(),
        plugins={key: plugins[key] for key in _PLUGIN_KEYS if key in plugins},
    )


# -- trtllm-build failures ---------------------------------------------------------------------

# Most specific first: the line that carries the byte count wins (real logs hold several).
_OOM = (
    re.compile(r"Error Code 2: OutOfMemory \(Requested size was \d+ bytes\.\)"),
    re.compile(r"Requested amount of GPU memory \(\d+ bytes\) could not be allocated"),
    re.compile(r"requires \d+ bytes of scratch space, but only \d+ is available"),
    re.compile(r"Error Code 2: OutOfMemory[^\n]*"),
    re.compile(r"CUDA out of memory[^\n]*"),
)
_UNSUPPORTED = (
    re.compile(r"FP8 FMHA cannot be enabled except on [^\n(]*"),
    re.compile(r"Networks with FP8 precision require hardware with FP8 support\."),
    re.compile(r"[^\n]*(?:is|are) not supported on (?:this GPU|SM\s?(?:>=\s?)?\d+)[^\n]*"),
)


def build_failure_reason(log: str) -> str:
    """One line saying why `trtllm-build` failed, from its log: out of memory, a quantization the
    GPU cannot run, or else the last error line."""
    # Unsupported first: TensorRT's "Requested amount of GPU memory" is a warning that also
    # appears in builds that fail for another reason (or succeed).
    for pattern in _UNSUPPORTED:
        found = pattern.search(log)
        if found:
            return f"the quantization is not supported on this GPU: {found.group(0).strip()}"
    for pattern in _OOM:
        found = pattern.search(log)
        if found:
            return f"out of GPU memory while building the engine: {found.group(0).strip()}"
    errors = [
        line.strip() for line in log.splitlines() if re.search(r"\[E\]|ERROR|Error|Exception|Assertion", line)
    ]
    return (
        f"trtllm-build failed: {errors[-1]}" if errors else "trtllm-build failed (no error line in its log)"
    )


# -- Triton metrics scrape ---------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of a Prometheus text-format scrape: (name, labels, value)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            raise OutputFormatError(f"not a Prometheus sample line: {line[:120]!r}")
        name, labels, value = match.groups()
        samples.append((name, dict(_LABEL.findall(labels or "")), float(value)))
    return samples


def kv_cache_blocks(text: str, model: str = "tensorrt_llm") -> dict[str, float]:
    """`nv_trt_llm_kv_cache_block_metrics` of `model` by block type (max, free, used,
    tokens_per, fraction, reused...); OutputFormatError when the scrape has none."""
    found = {
        labels["kv_cache_block_type"]: value
        for name, labels, value in parse_metrics(text)
        if name == "nv_trt_llm_kv_cache_block_metrics"
        and labels.get("model") == model
        and "kv_cache_block_type" in labels
    }
    if not found:
        raise OutputFormatError(f"the metrics scrape has no nv_trt_llm_kv_cache_block_metrics for {model}")
    return found


# trtllm-serve's `/metrics`: a JSON list of iteration statistics (the executor's `IterationStats`
# serialized by cpp/tensorrt_llm/executor/jsonSerialization.cpp), drained by each read, filled only
# with `enable_iter_perf_stats: true` in the LLM-API options. `kvCacheStats` holds current block
# counts (maxNumBlocks, freeNumBlocks, usedNumBlocks, tokensPerBlock) and counters since the
# server started (allocTotalBlocks, allocNewBlocks, reusedBlocks, missedBlocks; cacheHitRate =
# reused / (reused + missed) over that whole time).
_KV_ITERATION_KEYS = {
    "maxNumBlocks": "max",
    "freeNumBlocks": "free",
    "usedNumBlocks": "used",
    "tokensPerBlock": "tokens_per",
    "reusedBlocks": "reused",
    "missedBlocks": "missed",
}


def iteration_kv_stats(text: str) -> dict[str, float] | None:
    """The KV-cache block counts of the latest iteration in one trtllm-serve `/metrics` read, in
    the Triton backend's names (max, free, used, tokens_per, fraction, reused, missed); None when
    the read holds no iteration (none ran since the last read). OutputFormatError when it is not
    that JSON."""
    import json

    try:
        iterations = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OutputFormatError(f"trtllm-serve /metrics is not JSON: {exc.msg}") from None
    if not isinstance(iterations, list):
        raise OutputFormatError("trtllm-serve /metrics is not a list of iteration statistics")
    if not iterations:
        return None
    stats = iterations[-1].get("kvCacheStats") if isinstance(iterations[-1], dict) else None
    if not isinstance(stats, dict):
        raise OutputFormatError("trtllm-serve /metrics: the latest iteration has no kvCacheStats")
    found = {ours: float(stats[theirs]) for theirs, ours in _KV_ITERATION_KEYS.items() if theirs in stats}
    if found.get("max"):
        found["fraction"] = found.get("used", 0.0) / found["max"]
    return found


def request_counts(text: str, model: str = "tensorrt_llm") -> dict[str, float]:
    """`nv_trt_llm_request_metrics` of `model` by request type (active, max, scheduled, ...)."""
    return {
        labels["request_type"]: value
        for name, labels, value in parse_metrics(text)
        if name == "nv_trt_llm_request_metrics" and labels.get("model") == model and "request_type" in labels
    }


# -- trtllm-bench --report_json ----------------------------------------------------------------


class BenchReport(BaseModel):
    """The headline numbers of one `trtllm-bench throughput --report_json` (measured on a GPU)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu: str
    backend: str
    runtime_version: str
    tp_size: int
    pp_size: int
    num_requests: int
    avg_input_length: float
    avg_output_length: float
    output_tok_s: float
    output_tok_s_per_gpu: float
    request_throughput_req_s: float
    request_latency_p99_ms: float | None
    avg_ttft_ms: float | None = None
    avg_tpot_ms: float | None = None


def bench_report(report: dict[str, Any]) -> BenchReport:
    """Read a `trtllm-bench --report_json` file's dictionary."""
    what = "the trtllm-bench report"
    perf = _get(report, "performance", what)
    streaming = report.get("streaming_metrics") or {}
    return BenchReport(
        gpu=str((report.get("machine") or {}).get("name", "unknown GPU")),
        backend=str(_get(report, "engine.backend", what)),
        runtime_version=str(_get(report, "engine.version", what)),
        tp_size=int(_get(report, "world_info.tp_size", what)),
        pp_size=int(_get(report, "world_info.pp_size", what)),
        num_requests=int(_get(report, "request_info.num_requests", what)),
        avg_input_length=float(_get(report, "request_info.avg_input_length", what)),
        avg_output_length=float(_get(report, "request_info.avg_output_length", what)),
        output_tok_s=float(_get(perf, "system_output_throughput_tok_s", what + " performance")),
        output_tok_s_per_gpu=float(_get(perf, "output_throughput_per_gpu_tok_s", what + " performance")),
        request_throughput_req_s=float(_get(perf, "request_throughput_req_s", what + " performance")),
        request_latency_p99_ms=(perf.get("request_latency_percentiles_ms") or {}).get("p99"),
        avg_ttft_ms=streaming.get("avg_ttft_ms"),
        avg_tpot_ms=streaming.get("avg_tpot_ms"),
    )
