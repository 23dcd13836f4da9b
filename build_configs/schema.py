"""The sweep spec: one strict pydantic model per YAML section.

YAML keys equal field names; unknown keys are errors (`extra="forbid"`). Checks that need only the
spec live here as validators; checks that need the model's architecture or the GPU (TP divides the
KV heads, FP8 needs SM89+, AWQ divisibility) live in `rules.py` and run in `loading.load_spec`,
which aggregates every problem into one `SpecError`.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    field_validator,
    model_validator,
)

from enginesweep.build_configs.gpus import gpu_catalog
from enginesweep.build_configs.quant import KVCacheFormat, QuantFormat
from enginesweep.build_configs.request_log import LengthStats, RequestLog, RequestLogError, read_request_log


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class Stack(str, Enum):
    """The runtime a sweep builds for (see DESIGN.md, "Build stacks")."""

    REFERENCE = "reference"
    TRTLLM_ENGINE = "trtllm-engine"
    TRTLLM_PYTORCH = "trtllm-pytorch"


class Objective(str, Enum):
    """What "best" means when several trials meet the SLA."""

    MIN_COST_PER_1M_TOKENS = "min_cost_per_1m_tokens"
    MAX_GOODPUT_PER_GPU = "max_goodput_per_gpu"
    MAX_THROUGHPUT = "max_throughput"
    MIN_TTFT = "min_ttft"


class ModelSource(_Strict):
    """Where the checkpoint comes from: a hub repo at a revision, or a local directory."""

    repo_id: str | None = None
    revision: str = "main"
    path: Path | None = None
    architecture: str | None = Field(
        default=None,
        description="A shipped architecture name (`enginesweep ls models`) or a path to a "
        "config.json; overrides the checkpoint's own config for planning.",
    )
    name: str | None = Field(default=None, description="Short name used in trial slugs.")

    @field_validator("repo_id")
    @classmethod
    def _repo_id_shape(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w.-]+/[\w.-]+", value):
            raise ValueError(f"'{value}' is not a hub repo id of the form 'org/name'")
        return value

    @field_validator("path")
    @classmethod
    def _path_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.exists():
            raise ValueError(f"{value} does not exist (give a local checkpoint directory)")
        return value

    @field_validator("name")
    @classmethod
    def _name_is_slug_safe(cls, value: str | None) -> str | None:
        return None if value is None else _slug_safe(value)

    @model_validator(mode="after")
    def _one_source(self) -> ModelSource:
        if (self.repo_id is None) == (self.path is None):
            raise ValueError("give exactly one of model.repo_id or model.path")
        return self

    @property
    def slug(self) -> str:
        """Lower-case short name of the model for slugs and folder names."""
        if self.name:
            return self.name
        base = self.repo_id.split("/")[-1] if self.repo_id else Path(self.path or "").resolve().name
        return re.sub(r"[^a-z0-9.]+", "-", base.lower()).strip("-") or "model"


class Target(_Strict):
    """The hardware trials are planned for, and the one the sweep runs on.

    `gpu` names one catalog GPU or a list of them: `plan` compares every listed GPU side by side,
    while a sweep builds and measures only on `run_on` (the GPU of the machine it runs on; it
    defaults to the only listed GPU)."""

    gpu: list[str] = Field(min_length=1, description="GPU catalog names (`enginesweep ls gpus`), or `cpu`.")
    run_on: str | None = Field(default=None, description="The listed GPU the sweep runs on.")
    gpus_available: PositiveInt = 1
    usd_per_gpu_hour: float | dict[str, float] | None = Field(
        default=None, description="One price, or a price per listed GPU (others use the catalog's)."
    )

    @field_validator("gpu", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("gpu")
    @classmethod
    def _known_gpus(cls, value: list[str]) -> list[str]:
        catalog = gpu_catalog()
        unknown = [name for name in value if name not in catalog]
        if unknown:
            verb = "is" if len(unknown) == 1 else "are"
            raise ValueError(
                f"{', '.join(repr(n) for n in unknown)} {verb} not in the GPU catalog "
                f"(known: {', '.join(catalog)})"
            )
        return _unique(value)

    @model_validator(mode="after")
    def _run_on_and_prices(self) -> Target:
        if self.run_on is not None and self.run_on not in self.gpu:
            raise ValueError(f"run_on: '{self.run_on}' is not one of target.gpu ({', '.join(self.gpu)})")
        price = self.usd_per_gpu_hour
        if isinstance(price, dict):
            stray = [name for name in price if name not in self.gpu]
            negative = [name for name, usd in price.items() if usd < 0]
            if stray:
                raise ValueError(f"usd_per_gpu_hour: {', '.join(stray)} not in target.gpu")
            if negative:
                raise ValueError(f"usd_per_gpu_hour: negative price for {', '.join(negative)}")
        elif price is not None:
            if price < 0:
                raise ValueError("usd_per_gpu_hour must not be negative")
            if len(self.gpu) > 1:
                raise ValueError(
                    "usd_per_gpu_hour: one price for several GPUs is ambiguous; give a "
                    "mapping GPU name -> $/GPU-hour"
                )
        return self

    @property
    def sweep_gpu(self) -> str | None:
        """The GPU a sweep runs on: `run_on`, else the only listed GPU, else None (ambiguous)."""
        if self.run_on is not None:
            return self.run_on
        return self.gpu[0] if len(self.gpu) == 1 else None

    def price_override(self, gpu: str) -> float | None:
        """The spec's $/GPU-hour for `gpu`, or None to use the catalog's."""
        price = self.usd_per_gpu_hour
        return price.get(gpu) if isinstance(price, dict) else price


def _slug_safe(value: str) -> str:
    """Names used in folder names and run names: lowercase letters, digits, '.', '_', '-'."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", value):
        raise ValueError(
            f"'{value}' must be lowercase letters, digits, '.', '_' or '-' (it names folders and MLflow runs)"
        )
    return value


def _unique(values: list) -> list:
    seen = [v for i, v in enumerate(values) if v in values[:i]]
    if seen:
        raise ValueError(f"duplicate values {seen}")
    return values


_Axis = Annotated[list[PositiveInt], Field(min_length=1)]
AXIS_NAMES = (
    "quant",
    "kv_cache",
    "tp",
    "pp",
    "ep",
    "attention_dp",
    "max_batch_size",
    "max_num_tokens",
    "max_seq_len",
)


class Axes(_Strict):
    """The sweep space: every combination of these lists is one trial, minus the combinations
    that match an `exclude` entry (a partial point: `{quant: fp8, kv_cache: int8}`)."""

    quant: list[QuantFormat] = Field(min_length=1)
    kv_cache: list[KVCacheFormat] = Field(default=[KVCacheFormat.AUTO], min_length=1)
    tp: _Axis = [1]
    pp: _Axis = [1]
    ep: _Axis = Field(
        default=[1],
        description="Expert-parallel sizes (mixture-of-experts models): the routed experts are "
        "split over `ep` ranks of the TP group, each expert over tp/ep of them (TensorRT-LLM's "
        "moe_expert_parallel_size; expert TP x EP = TP).",
    )
    attention_dp: list[bool] = Field(
        default=[False],
        min_length=1,
        description="Attention data-parallelism (mixture-of-experts models, tp > 1): each TP rank "
        "holds the whole attention and its own sequences; experts stay split (TensorRT-LLM's "
        "enable_attention_dp).",
    )
    max_batch_size: _Axis = [64]
    max_num_tokens: _Axis = [8192]
    max_seq_len: _Axis = [4096]
    exclude: list[dict[str, str | bool | int]] = []

    @field_validator(*AXIS_NAMES)
    @classmethod
    def _no_duplicates(cls, value: list) -> list:
        return _unique(value)

    @model_validator(mode="after")
    def _exclude_names_axis_values(self) -> Axes:
        problems = []
        for i, entry in enumerate(self.exclude):
            if not entry:
                problems.append(f"exclude[{i}] is empty (it would exclude every trial)")
            for key, value in entry.items():
                if key not in AXIS_NAMES:
                    problems.append(f"exclude[{i}].{key}: not an axis (axes: {', '.join(AXIS_NAMES)})")
                elif value not in [getattr(v, "value", v) for v in getattr(self, key)]:
                    problems.append(f"exclude[{i}].{key}: {value!r} is not in axes.{key}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def excluded_by(self, point: dict[str, str | bool | int]) -> int | None:
        """Index of the first `exclude` entry matching `point` (axis name -> value), or None."""
        for i, entry in enumerate(self.exclude):
            if all(point.get(key) == value for key, value in entry.items()):
                return i
        return None


MoeBackend = Literal["CUTLASS", "CUTEDSL", "WIDEEP", "TRTLLM", "DEEPGEMM", "VANILLA", "TRITON"]
"""TensorRT-LLM 1.2's MoeConfig.backend values (engines/trtllm/flags checks them again)."""
_LATER_BUILD_FIELDS: dict[str, Any] = {"moe_backend": None}


class Build(_Strict):
    """Build settings fixed for the whole sweep (names follow TensorRT-LLM's quantize.py)."""

    awq_block_size: Literal[64, 128] = 128
    kv_cache_free_gpu_mem_fraction: float = Field(default=0.9, gt=0, le=1)
    calib_size: PositiveInt | None = Field(
        default=None,
        description="Calibration samples. Unset: per stack and format "
        "(`calibration_samples`: 16 on the CPU reference stack; on GPUs "
        "512, TensorRT-LLM's and ModelOpt's default, and 32 for AWQ "
        "formats, which quantize.py caps at 32).",
    )
    calib_max_seq_length: PositiveInt | None = Field(
        default=None,
        description="Tokens per calibration sample. Unset: 256 on the CPU "
        "reference stack, 512 on GPUs (quantize.py's and hf_ptq.py's "
        "default).",
    )
    calib_dataset: str | None = Field(
        default=None,
        description="GPU stacks: a local folder of JSON lines files with a `text` "
        "column (split `train` first), on the machine that runs the "
        "trials, that every quantization calibrates on. Default: the "
        "project's own text, written beside each quantization (and "
        "beside emitted scripts). Hub dataset names are refused: "
        "nothing but the checkpoint is ever downloaded.",
    )
    enable_block_reuse: bool = Field(
        default=True, description="trtllm-pytorch: kv_cache_config.enable_block_reuse (prefix reuse)."
    )
    cuda_graph_batch_sizes: list[PositiveInt] | None = Field(
        default=None,
        description="trtllm-pytorch: cuda_graph_config.batch_sizes; None captures "
        "padded sizes up to each trial's max_batch_size.",
    )

    moe_backend: MoeBackend | None = Field(
        default=None,
        description="trtllm-pytorch, mixture-of-experts models: moe_config.backend (TensorRT-LLM "
        "1.2: CUTLASS, CUTEDSL, WIDEEP, TRTLLM, DEEPGEMM, VANILLA, TRITON); None leaves "
        "TensorRT-LLM's default (CUTLASS in 1.2). gpt-oss's MXFP4 experts on Hopper want TRITON.",
    )

    def key_fields(self) -> dict[str, Any]:
        """The settings as they enter cache keys: fields added after keys were first written
        are left out at their defaults, so a workspace made before them keeps its keys."""
        return {
            name: value
            for name, value in self.model_dump(mode="json").items()
            if not (name in _LATER_BUILD_FIELDS and value == _LATER_BUILD_FIELDS[name])
        }

    @field_validator("cuda_graph_batch_sizes")
    @classmethod
    def _sorted_sizes(cls, value: list[int] | None) -> list[int] | None:
        return None if value is None else sorted(_unique(value))

    def calibration(self, stack: Stack, quant: QuantFormat) -> tuple[int, int]:
        """(samples, tokens per sample) that calibrate a `quant` checkpoint on `stack`: the
        spec's values where set, else the stack's defaults (CPU_CALIBRATION, GPU_CALIBRATION;
        AWQ formats AWQ_CALIBRATION_SAMPLES on GPUs)."""
        if stack is Stack.REFERENCE:
            samples, tokens = CPU_CALIBRATION
        else:
            samples, tokens = GPU_CALIBRATION
            if quant.spec.group_scaled:
                samples = AWQ_CALIBRATION_SAMPLES
        return self.calib_size or samples, self.calib_max_seq_length or tokens


CPU_CALIBRATION = (16, 256)
"""The reference stack's calibration on a 2-core CPU: enough for stable FP8/INT8 scales on the
demo model (docs/decisions.md), a few seconds per format."""
GPU_CALIBRATION = (512, 512)
"""TensorRT-LLM 1.2's quantize.py defaults (`--calib_size 512 --calib_max_seq_length 512`), which
are also ModelOpt 0.37 hf_ptq.py's `--calib_size` default (docs/research/gpu-hosts-quantization.md)."""
AWQ_CALIBRATION_SAMPLES = 32
"""AWQ's search is costly per sample and TensorRT-LLM's quantize_by_modelopt caps AWQ formats at
32 samples whatever `--calib_size` says; asking for 32 makes the record say what ran."""


class Accuracy(_Strict):
    """Evaluation of every variant against the unquantized baseline: perplexity on held-out text
    and lm-evaluation-harness tasks, all paired item by item (evaluation/accuracy)."""

    window_tokens: PositiveInt = 256
    max_windows: PositiveInt = 24
    tasks: list[str] = Field(
        default=["enginesweep_cloze", "enginesweep_recall"],
        description="lm-eval task names: the two built-in offline tasks, tasks whose YAMLs lie in "
        "task_paths, or lm-eval's own (their data must be in the local cache). [] = "
        "perplexity only.",
    )
    task_paths: list[Path] = Field(
        default=[],
        description="Folders (or files) of lm-eval task YAMLs with local data, e.g. "
        "an MMLU or GSM8K export; relative paths are from the working directory.",
    )
    task_limit: int | None = Field(
        default=200, ge=2, description="First N items of each task; None = every item."
    )
    batch_size: PositiveInt = Field(default=16, description="Items per forward pass (lm-eval).")
    confidence: float = Field(
        default=0.95,
        gt=0,
        lt=1,
        description="Of the bootstrap intervals; 1 - confidence is the significance level of McNemar's test.",
    )

    @field_validator("tasks")
    @classmethod
    def _unique_tasks(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name or name != name.strip() or "," in name:
                raise ValueError(f"task name {name!r} is not an lm-eval task name")
        return _unique(value)


class LengthDistribution(_Strict):
    """Token lengths of synthetic requests."""

    mean: PositiveInt
    stddev: int = Field(default=0, ge=0)


class RequestLogSource(_Strict):
    """The user's own traffic: a JSONL request log (format in `build_configs/request_log.py`)."""

    path: Path = Field(description="The log; a relative path is from the working directory.")
    replay: Literal["recorded", "resample"] = Field(
        default="resample",
        description="recorded: every request once, at its logged arrival time (needs timestamps; "
        "one load level); resample: `request_count` requests drawn from the log (seeded) at each "
        "concurrency level.",
    )
    block_tokens: PositiveInt = Field(
        default=512, description="Tokens per `hash_ids` block (Mooncake traces use 512)."
    )
    _log: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _read_log(self) -> RequestLogSource:
        # Read once here, so that a bad log is a spec error naming its lines before anything runs.
        try:
            log = read_request_log(self.path, self.block_tokens)
        except RequestLogError as exc:
            raise ValueError(str(exc)) from None
        if self.replay == "recorded" and not log.timed:
            raise ValueError(
                f"replay: recorded needs a timestamp on every request of {self.path}; "
                "use replay: resample to draw requests at fixed concurrency instead"
            )
        self._log = log
        return self

    @property
    def log(self) -> RequestLog:
        """The validated log."""
        return self._log


class MixtureComponent(_Strict):
    """One kind of request in an ISL/OSL mixture, with its share of the traffic."""

    isl: LengthDistribution
    osl: LengthDistribution
    weight: PositiveFloat = Field(description="Relative share; the weights need not sum to 1.")


class SharedPrefix(_Strict):
    """Prompts that start with one of a few shared prefixes (system prompts, few-shot headers):
    the traffic a prefix cache (`enable_block_reuse`) can serve."""

    pool_size: PositiveInt = Field(description="How many distinct prefixes requests draw from.")
    tokens: PositiveInt = Field(description="Tokens per prefix; part of each request's ISL.")


class KneeSearch(_Strict):
    """Measure the highest concurrency (or request rate) meeting the latency SLA by a bracketing
    search, instead of reading it off the listed levels; the listed ones seed it where the plan
    predicts nothing."""

    max_level: PositiveFloat = Field(default=64, description="The highest concurrency or rate to try.")
    tolerance: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="Stop once the bracket is within this fraction of its lower end (for "
        "concurrency, at least one).",
    )
    max_levels: int = Field(default=6, ge=2, le=12, description="At most this many levels measured.")


class Workload(_Strict):
    """The load each engine is benchmarked under: synthetic lengths (`isl`/`osl`), a weighted
    `mixture` of them, or a `request_log` of the user's own traffic; optionally with shared
    prefixes. `isl`/`osl` are always set after validation: for a mixture or a log they are
    derived (mean and standard deviation), and the planner sizes with them."""

    isl: LengthDistribution | None = None
    osl: LengthDistribution | None = None
    mixture: list[MixtureComponent] | None = Field(default=None, min_length=1)
    request_log: RequestLogSource | None = None
    shared_prefix: SharedPrefix | None = None
    concurrency: _Axis = [1]
    request_rate: list[PositiveFloat] | None = Field(
        default=None,
        min_length=1,
        description="Open-loop load levels in requests/s, instead of concurrency: arrivals "
        "drawn by `arrival`, `request_count` requests per level.",
    )
    arrival: Literal["poisson", "gamma", "constant"] = Field(
        default="poisson", description="How request-rate arrivals are spaced."
    )
    arrival_smoothness: PositiveFloat | None = Field(
        default=None, description="Gamma arrivals' shape: < 1 burstier than Poisson, > 1 smoother."
    )
    max_concurrency: PositiveInt | None = Field(
        default=None, description="At most this many requests in flight at a request rate."
    )
    knee: KneeSearch | None = Field(
        default=None, description="Find the highest level meeting the SLA by measuring (see KneeSearch)."
    )
    request_count: PositiveInt = 100
    warmup_request_count: int = Field(default=0, ge=0)
    seed: int = 0

    @field_validator("concurrency")
    @classmethod
    def _unique_concurrency(cls, value: list[int]) -> list[int]:
        return sorted(_unique(value))

    @field_validator("request_rate")
    @classmethod
    def _unique_rates(cls, value: list[float] | None) -> list[float] | None:
        return None if value is None else sorted(_unique(value))

    @model_validator(mode="after")
    def _one_pacing(self) -> Workload:
        if self.request_rate is None:
            for name in ("max_concurrency", "arrival_smoothness"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: applies to request_rate levels; set request_rate or remove it")
            if self.arrival != "poisson":
                raise ValueError("arrival: applies to request_rate levels; set request_rate or remove it")
            return self
        if "concurrency" in self.model_fields_set and self.concurrency != [1]:
            raise ValueError(
                "concurrency: a request-rate workload is paced by request_rate; remove concurrency "
                "(cap requests in flight with max_concurrency)"
            )
        if self.replay == "recorded":
            raise ValueError(
                "request_rate: a recorded replay keeps the log's own arrival times; use "
                "request_log.replay: resample to send its requests at a rate"
            )
        if self.arrival_smoothness is not None and self.arrival != "gamma":
            raise ValueError("arrival_smoothness: shapes gamma arrivals; set arrival: gamma or remove it")
        return self

    @property
    def pacing(self) -> Literal["concurrency", "request_rate", "schedule"]:
        """How the load levels are paced: closed loop, open loop at a rate, or a recorded replay."""
        if self.replay == "recorded":
            return "schedule"
        return "request_rate" if self.request_rate is not None else "concurrency"

    @property
    def peak_concurrency(self) -> int:
        """The most requests the workload may hold in flight, where it says (else the highest
        concurrency level; 1 for an uncapped rate or a replay, whose peak only the run shows)."""
        if self.pacing == "concurrency":
            return max(self.concurrency)
        return self.max_concurrency or 1

    @model_validator(mode="after")
    def _one_source(self) -> Workload:
        derived = self._derived_lengths()
        if derived is None:
            if self.isl is None or self.osl is None:
                raise ValueError("give isl and osl (synthetic lengths), a mixture, or a request_log")
        else:
            source = "mixture" if self.mixture is not None else "request_log"
            for name, value in zip(("isl", "osl"), derived, strict=True):
                given = getattr(self, name)
                # A dumped spec carries the derived lengths: they may come back, if unchanged.
                if given is not None and given != value:
                    raise ValueError(
                        f"{name}: the lengths come from workload.{source}; remove workload.{name}"
                    )
                object.__setattr__(self, name, value)
        if self.shared_prefix is not None:
            if self.request_log is not None:
                raise ValueError(
                    "shared_prefix: a request log carries its own prefixes (hash_ids); remove shared_prefix"
                )
            shortest = min(c.isl.mean for c in self.mixture) if self.mixture else self.isl.mean  # type: ignore[union-attr]
            if self.shared_prefix.tokens >= shortest:
                raise ValueError(
                    f"shared_prefix.tokens: {self.shared_prefix.tokens} leaves no room for the "
                    f"request's own text in a mean ISL of {shortest}; make it smaller"
                )
        if self.knee is not None and self.replay == "recorded":
            raise ValueError("knee: a recorded replay has one level, the log's own; use replay: resample")
        if self.replay == "recorded" and len(self.concurrency) > 1:
            raise ValueError(
                "concurrency: a recorded replay runs the log once at its own arrival times; "
                "leave concurrency out, or use request_log.replay: resample to sweep it"
            )
        return self

    def _derived_lengths(self) -> tuple[LengthDistribution, LengthDistribution] | None:
        if self.mixture is not None and self.request_log is not None:
            raise ValueError("give a mixture or a request_log, not both")
        if self.mixture is not None:
            total = sum(c.weight for c in self.mixture)
            shares = [(c.weight / total, c) for c in self.mixture]
            return (
                _pooled([(w, c.isl.mean, c.isl.stddev) for w, c in shares]),
                _pooled([(w, c.osl.mean, c.osl.stddev) for w, c in shares]),
            )
        if self.request_log is not None:
            log = self.request_log.log
            isl, osl = LengthStats.of(log.input_lengths()), LengthStats.of(log.output_lengths())
            return (
                LengthDistribution(mean=max(1, round(isl.mean)), stddev=round(isl.stddev)),
                LengthDistribution(mean=max(1, round(osl.mean)), stddev=round(osl.stddev)),
            )
        return None

    @property
    def source(self) -> Literal["synthetic", "mixture", "request_log"]:
        """Where the requests' lengths come from."""
        if self.request_log is not None:
            return "request_log"
        return "mixture" if self.mixture is not None else "synthetic"

    @property
    def replay(self) -> Literal["recorded", "resample"] | None:
        """How a request log is replayed; None for synthetic traffic."""
        return None if self.request_log is None else self.request_log.replay

    @property
    def sequence_tokens(self) -> int:
        """Mean tokens one request occupies in the KV cache at its end (ISL + OSL)."""
        return self.isl.mean + self.osl.mean  # type: ignore[union-attr]

    @property
    def longest_sequence_tokens(self) -> int:
        """The longest request's ISL + OSL where it is known (a log), else the mean."""
        if self.request_log is not None:
            return max(r.input_length + r.output_length for r in self.request_log.log.requests)
        return self.sequence_tokens

    def key_fields(self) -> dict[str, Any]:
        """What identifies the traffic, for trial keys: the fields, with a log's path replaced
        by the hash of its content (a new log re-benchmarks; the same one moved does not)."""
        fields = self.model_dump(mode="json")
        defaults = {
            "mixture": None,
            "request_log": None,
            "shared_prefix": None,
            "request_rate": None,
            "arrival": "poisson",
            "arrival_smoothness": None,
            "max_concurrency": None,
            "knee": None,
        }
        for name, default in defaults.items():
            if fields[name] == default:  # absent, as before they existed: older keys stay valid
                del fields[name]
        if self.request_log is not None:
            fields["request_log"]["path"] = f"sha256:{self.request_log.log.sha256}"
        return fields


def _pooled(parts: list[tuple[float, int, int]]) -> LengthDistribution:
    """The mean and standard deviation of a mixture of (share, mean, stddev) parts."""
    mean = sum(w * m for w, m, _ in parts)
    variance = sum(w * (s * s + (m - mean) ** 2) for w, m, s in parts)
    return LengthDistribution(mean=max(1, round(mean)), stddev=round(variance**0.5))


class SLA(_Strict):
    """The latency and accuracy a deployment must meet, and what to optimise among those that do."""

    ttft_p99_ms: PositiveFloat | None = None
    itl_p99_ms: PositiveFloat | None = None
    max_accuracy_drop: float | None = Field(default=None, ge=0)
    accuracy_drop_mode: Literal["absolute", "relative"] = "relative"
    accuracy_gate: Literal["strict", "lenient"] = Field(
        default="strict",
        description="lenient: reject when a drop is larger than allowed and significant; strict: "
        "also when its interval cannot rule out a drop larger than allowed.",
    )
    objective: Objective = Objective.MIN_COST_PER_1M_TOKENS


class Predictor(str, Enum):
    """Which model predicts latency and throughput at plan time."""

    AUTO = "auto"  # aiconfigurator where it covers the trial and is installed, else roofline
    ROOFLINE = "roofline"
    AICONFIGURATOR = "aiconfigurator"  # required: a trial it cannot cover is an error


class Planner(_Strict):
    """How the plan predicts and prunes before anything is built."""

    predictor: Predictor = Predictor.AUTO
    top_k: PositiveInt | None = Field(
        default=None,
        description="Keep the K best feasible trials by the predicted objective "
        "(plus the best unquantized baseline); None keeps all.",
    )
    calibrated: bool = Field(
        default=True,
        description="Apply correction factors fitted from this project's measured "
        "trials (`enginesweep calibrate`), where they exist.",
    )
    target_request_rate: PositiveFloat | None = Field(
        default=None, description="Requests/s to size replicas, GPUs and $/hour for (capacity plan)."
    )
    verify_capacity: bool = Field(
        default=True,
        description="After selection, replay the capacity plan: Poisson arrivals at the "
        "per-replica rate against one replica of the champion, and say whether the SLA held.",
    )


class Tracking(_Strict):
    """MLflow tracking; `mlflow_uri` defaults to `sqlite:///<workspace>/mlflow.db`."""

    mlflow_uri: str | None = None
    experiment: str = Field(default="enginesweep", min_length=1)


class Registry(_Strict):
    """Model Registry target of the promoted engine."""

    model_name: str | None = None
    alias: str = "champion"

    @field_validator("alias")
    @classmethod
    def _alias_shape(cls, value: str) -> str:
        # MLflow aliases: letters, digits, '_' and '-', not starting with a digit or 'v<digits>'.
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", value) or re.fullmatch(r"v\d+", value):
            raise ValueError(
                f"'{value}' is not a valid MLflow alias (letters, digits, '_', '-'; "
                "not starting with a digit, not v<number>)"
            )
        return value


class TrtllmPaths(_Strict):
    """Where each of TensorRT-LLM's files is, when the probed layout is not right (absolute
    paths on the machine that runs the trials; each one set wins over the layout)."""

    examples: str | None = Field(
        default=None,
        description="TensorRT-LLM's examples/ (quantization/quantize.py, "
        "models/core/llama/convert_checkpoint.py).",
    )
    triton_models: str | None = Field(
        default=None,
        description="Triton's model templates (inflight_batcher_llm/, llmapi/): "
        "triton_backend/all_models of a checkout, /app/all_models.",
    )
    fill_template: str | None = Field(default=None, description="tools/fill_template.py.")
    launch_triton_server: str | None = Field(default=None, description="scripts/launch_triton_server.py.")
    tritonserver: str | None = Field(
        default=None,
        description="The tritonserver binary; default: on PATH, else /opt/tritonserver/bin/tritonserver.",
    )


class Execution(_Strict):
    """How and where trials run. GPU trials run concurrently, each on its own GPUs (TP*PP of
    them, lent by a GPU-slot allocator as CUDA_VISIBLE_DEVICES); `reference` trials run one at a
    time on the CPU."""

    runner: Literal["local", "dask"] = Field(
        default="local",
        description="`local`: trials on this machine, as many at once as its GPUs allow. `dask`: "
        "trials on a Dask cluster's workers (prefect-dask), each asking for TP*PP of "
        "the workers' `GPU` resource; on each worker the allocator picks the GPUs.",
    )
    gpus: list[NonNegativeInt] | None = Field(
        default=None,
        min_length=1,
        description="The GPU indices trials may use on each machine; default: detected "
        "(CUDA_VISIBLE_DEVICES if set, else NVML, else `nvidia-smi -L`).",
    )
    dask_address: str | None = Field(
        default=None,
        description="runner dask: the scheduler's address (tcp://host:8786); unset starts a "
        "local Dask cluster of one worker holding this machine's GPUs.",
    )
    pytorch_server: Literal["triton", "trtllm-serve"] = Field(
        default="triton",
        description="trtllm-pytorch stack: serve through Triton's `llmapi` Python model "
        "(launch_triton_server.py) or TensorRT-LLM's OpenAI-compatible `trtllm-serve`.",
    )
    engine_server: Literal["triton", "trtllm-serve"] = Field(
        default="triton",
        description="trtllm-engine stack: serve the engine with Triton's `inflight_batcher_llm` "
        "(the tritonserver image) or `trtllm-serve --backend tensorrt` (any image "
        "with TensorRT-LLM, the release image included, which has no Triton).",
    )
    trtllm_root: str | None = Field(
        default=None,
        description="GPU stacks: where TensorRT-LLM's files are in the container (a source "
        "checkout, or the root of an image's layout). Unset: $TRTLLM_ROOT, then the "
        "known layouts are probed (engines/trtllm/layout.py: /app of the tritonserver "
        "image, /app/tensorrt_llm of the release image, the installed package's "
        "checkout).",
    )
    trtllm_paths: TrtllmPaths = Field(
        default_factory=lambda: TrtllmPaths(),
        description="GPU stacks: explicit paths that win over the probed layout, file by file.",
    )

    @model_validator(mode="after")
    def _address_needs_dask(self) -> Execution:
        if self.dask_address is not None and self.runner != "dask":
            raise ValueError(
                "dask_address is set but runner is 'local': set execution.runner: dask, "
                "or remove dask_address"
            )
        if self.gpus is not None and len(set(self.gpus)) != len(self.gpus):
            raise ValueError(f"gpus lists a GPU twice: {self.gpus}")
        return self


class Watch(_Strict):
    """The champion watch of scheduled sweeps (`enginesweep schedule`): after each scheduled run
    the champion is compared with what was measured, with thresholds set by the measurement
    noise (flows.scheduled, evaluation/selection/watch.py)."""

    policy: Literal["manual", "auto"] = Field(
        default="manual",
        description="manual: flag a regressed or dominated champion (MLflow tags) and change "
        "nothing; auto: also promote a new trial that dominates it, recording why.",
    )
    repeats: PositiveInt = Field(
        default=3,
        le=20,
        description="Benchmarks of the champion in a drift check (nothing changed since the last "
        "scheduled run); their spread is the noise the thresholds are set from. 1 "
        "gives no noise estimate: only the floors apply then.",
    )
    noise_k: PositiveFloat = Field(
        default=3.0,
        description="A change counts when it exceeds noise_k standard errors of the difference "
        "of the means (pooled spread of the repeats) and the floor.",
    )
    min_relative_change: float = Field(
        default=0.05,
        ge=0,
        lt=1,
        description="Floor for latency, throughput, goodput and cost: a change smaller than this "
        "share of the champion's value never counts, however quiet the machine.",
    )
    accuracy_min_change: float = Field(
        default=0.01,
        ge=0,
        lt=1,
        description="Floor for accuracy metrics (perplexity, top-1, task scores), as a share "
        "of the champion's value; they are measured once per engine, so no spread is "
        "known for them and the floor alone applies.",
    )


class SweepSpec(_Strict):
    """One sweep: a model, a stack, a target, the space to search and what "good" means."""

    name: str
    description: str | None = None
    model: ModelSource
    stack: list[Stack] = Field(
        min_length=1,
        description="One stack, or a list to compare stacks on the same GPU (every "
        "trial is planned once per stack; slugs then name the stack).",
    )
    target: Target
    axes: Axes
    build: Build = Build()
    workload: Workload
    sla: SLA = SLA()
    planner: Planner = Planner()
    accuracy: Accuracy = Accuracy()
    tracking: Tracking = Tracking()
    registry: Registry = Registry()
    execution: Execution = Execution()
    watch: Watch = Watch()
    workspace: Path = Path("enginesweep-workspace")

    @field_validator("name")
    @classmethod
    def _name_is_slug_safe(cls, value: str) -> str:
        return _slug_safe(value)

    @field_validator("stack", mode="before")
    @classmethod
    def _one_or_many_stacks(cls, value: object) -> object:
        if isinstance(value, str):
            known = [s.value for s in Stack]
            if value not in known:  # named at `stack`, not at `stack[0]` of a list never written
                choices = ", ".join(f"'{k}'" for k in known[:-1]) + f" or '{known[-1]}'"
                raise ValueError(f"Input should be {choices}")
            return [value]
        return value

    @field_validator("stack")
    @classmethod
    def _stacks_run_together(cls, value: list[Stack]) -> list[Stack]:
        _unique(value)
        if Stack.REFERENCE in value and len(value) > 1:
            raise ValueError(
                "the reference stack runs on the CPU and the TensorRT-LLM stacks on a "
                "GPU: one sweep cannot compare them (list GPU stacks only)"
            )
        return value

    @model_validator(mode="after")
    def _knee_needs_a_latency_bound(self) -> SweepSpec:
        if self.workload.knee is not None and self.sla.ttft_p99_ms is None and self.sla.itl_p99_ms is None:
            raise ValueError(
                "workload.knee: the knee is the highest load meeting the latency SLA; "
                "set sla.ttft_p99_ms or sla.itl_p99_ms"
            )
        return self
