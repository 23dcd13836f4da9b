"""The `trtllm-engine` stack: TensorRT-LLM's quantize/convert, `trtllm-build` and Triton's
`inflight_batcher_llm` (or `trtllm-serve --backend tensorrt`), for users' GPU machines (NVIDIA's
TensorRT-LLM images).

It runs the commands of `engines.trtllm.commands`, the very ones `plan --emit-scripts` writes,
after checking the installed `tensorrt_llm.__version__` against the supported versions. Its
outputs are checked before use: the engine's `config.json` is parsed into the manifest, a failed
build becomes a reason (out of memory, unsupported quantization) with its log kept, every filled
`config.pbtxt` is parsed with Triton's schema, and the server (`engines.stacks.gpu_server`) runs on
ports of its own, is proven to be the one answering there, and is always torn down whole.

Where the tools live is probed (`engines.trtllm.layout`: the tritonserver image, the release
image, a source checkout; `execution.trtllm_root`/`trtllm_paths` override), and `required` lists
every file and program a trial will use, for the preflight. Tests drive it with stand-in
executables; only a GPU machine runs the real ones (tests marked `gpu`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from enginesweep.build_configs.schema import Build
from enginesweep.build_configs.trial import TrialConfig
from enginesweep.engines.compat import host_gpu, host_gpu_sm, sm_of, version_mismatches
from enginesweep.engines.endpoints import OPENAI_COMPLETIONS, Endpoint, triton_endpoint
from enginesweep.engines.files import write_atomic
from enginesweep.engines.llmapi.commands import engine_serve_command
from enginesweep.engines.manifest import Manifest, write_manifest
from enginesweep.engines.quantize.modelopt_cpu import QuantizeResult
from enginesweep.engines.quantize.recipes import QuantRecipe
from enginesweep.engines.stacks.base import BuildKnobs, BuildResult
from enginesweep.engines.stacks.gpu_server import (
    StepFailed,
    owned_server,
    pick_ports,
    session_alive,
    tail_reason,
)
from enginesweep.engines.trtllm.commands import (
    Command,
    TrialPaths,
    build_command,
    checkpoint_command,
    launch_command,
    repository_commands,
    repository_values,
    required_files,
)
from enginesweep.engines.trtllm.contract import VersionContract, contract_for
from enginesweep.engines.trtllm.layout import Layout, Required, resolve_layout
from enginesweep.engines.trtllm.outputs import build_failure_reason, engine_summary
from enginesweep.engines.trtllm.templates import TemplateError, fill, parse_config, required_placeholders

__all__ = ["StepFailed", "TrtllmEngineStack", "installed_version", "offline_env"]


def installed_version() -> str:
    """`tensorrt_llm.__version__` of this machine (imported only here, only when asked)."""
    import tensorrt_llm

    return str(tensorrt_llm.__version__)


def offline_env() -> dict[str, str]:
    """This environment with the hub and datasets switched off: a quantization calibrates on a
    local dataset the trial writes and reads a local checkpoint, so nothing may download (an
    offline GPU node must not fail, a connected one must not fetch cnn_dailymail)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def run_logged(
    command: Command, log: Path, *, env: dict[str, str] | None = None, timeout_s: float | None = None
) -> int:
    """Run `command` with stdout and stderr into `log` (appended: a trial's log is one story)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as sink:
        sink.write(f"$ {command.shell()}\n")
        sink.flush()
        return subprocess.run(
            command.argv, stdout=sink, stderr=subprocess.STDOUT, env=env, timeout=timeout_s, check=False
        ).returncode


def verify_repository(repo_dir: Path) -> list[str]:
    """Parse every model's `config.pbtxt` with Triton's schema and refuse any structural
    placeholder left unfilled; returns the models."""
    models = []
    for config in sorted(repo_dir.glob("*/config.pbtxt")):
        model, text = config.parent.name, config.read_text()
        left = required_placeholders(text)
        if left:
            raise TemplateError(f"{model}/config.pbtxt still has {', '.join(left)} unfilled")
        parse_config(text, model=model)
        models.append(model)
    if not models:
        raise TemplateError(f"{repo_dir} holds no model")
    return models


@dataclass
class EngineServer:
    """A running server over one engine (what `server()` yields): Triton's ensemble, or
    trtllm-serve's OpenAI routes."""

    url: str
    metrics_url: str | None
    process: subprocess.Popen
    model: str
    endpoint: Endpoint

    def alive(self) -> bool:
        """True while anything of the launcher's session runs (the launcher itself exits)."""
        return session_alive(self.process)


class TrtllmEngineStack:
    """TensorRT engines (TensorRT-LLM 1.2.x) served by Triton's `inflight_batcher_llm` or by
    `trtllm-serve --backend tensorrt` (`execution.engine_server`)."""

    name = "trtllm-engine"
    served_model = "ensemble"
    accuracy_mode = "served"

    def __init__(
        self,
        *,
        spec: Any = None,
        version: str | None = None,
        trtllm_root: str | None = None,
        build: Build | None = None,
        server_kind: str | None = None,
        ports: tuple[int, int, int] | None = None,
    ):
        self.version = version or installed_version()
        self.contract: VersionContract = contract_for(self.version)  # refuses unsupported ones
        execution = spec.execution if spec is not None else None
        self.layout: Layout = resolve_layout(
            trtllm_root or (execution.trtllm_root if execution else None),
            execution.trtllm_paths if execution else None,
        )
        self.build_settings = build or (spec.build if spec is not None else Build())
        self.server_kind = server_kind or (execution.engine_server if execution else "triton")
        # Free ports taken when the server is about to start (not fixed ones, nor ones picked
        # an hour of quantization earlier): a busy 8000 on a shared host is common, and two
        # trials on one host each need their own. `server()` proves the answering one is ours.
        self.fixed_ports = ports
        self.http_port, self.grpc_port, self.metrics_port = pick_ports(ports)

    def required(self, configs: Sequence[TrialConfig], *, accuracy: bool = False) -> list[Required]:
        """Every file and program the trials `configs` will use here (the preflight checks them
        before any work; `engines.trtllm.commands.required_files`)."""
        if self.layout.tools is None:
            return [
                Required("TensorRT-LLM's examples/ (quantize.py, convert_checkpoint.py)", "<no layout found>")
            ]
        return required_files(
            self.layout.tools,
            configs,
            server=self.server_kind,
            calib_dataset=self.build_settings.calib_dataset,
            accuracy=accuracy,
        )

    # -- paths -----------------------------------------------------------------------------------
    def paths(
        self,
        *,
        hf_checkpoint: Path,
        checkpoint_dir: Path,
        engine_dir: Path | None = None,
        repo_dir: Path | None = None,
        calib_dataset: str | None = None,
    ) -> TrialPaths:
        work = checkpoint_dir.parent
        return TrialPaths(
            tools=self.layout.require_tools("TensorRT-LLM's examples and Triton's templates"),
            hf_checkpoint=PurePosixPath(hf_checkpoint),
            checkpoint_dir=PurePosixPath(checkpoint_dir),
            engine_dir=PurePosixPath(engine_dir or work / "engine"),
            repo_dir=PurePosixPath(repo_dir or work / "triton_repo"),
            timing_cache=PurePosixPath(work / "timing.cache"),
            calib_dataset=calib_dataset,
        )

    # -- Stack protocol --------------------------------------------------------------------------
    def quantize(
        self,
        source_dir: Path,
        recipe: QuantRecipe,
        out_dir: Path,
        *,
        key: str,
        calibration_texts: list[str],
        log: Callable[[str], None] = print,
    ) -> QuantizeResult:
        """quantize.py / convert_checkpoint.py into `out_dir/checkpoint`; the calibration texts
        become a local dataset (split `train`, column `text`) unless the spec names one."""
        start = time.perf_counter()
        out_dir.mkdir(parents=True, exist_ok=True)
        calib = self.build_settings.calib_dataset
        if calib is None and recipe.needs_calibration:
            dataset = out_dir / "calibration"
            dataset.mkdir(exist_ok=True)
            (dataset / "train.jsonl").write_text(
                "".join(json.dumps({"text": t}) + "\n" for t in calibration_texts)
            )
            calib = str(dataset)
        tmp = out_dir / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        cfg = _config(recipe)
        command = checkpoint_command(
            self.contract,
            cfg,
            self.build_settings,
            self.paths(hf_checkpoint=source_dir, checkpoint_dir=tmp, calib_dataset=calib),
        )
        log(f"[quantize] {command.shell()}")
        log_path = out_dir / "quantize.log"
        if run_logged(command, log_path, env=offline_env()) != 0:
            shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written stays behind
            raise StepFailed("quantize", tail_reason(log_path, "the checkpoint step failed"), log_path)
        final = out_dir / "checkpoint"
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        result = QuantizeResult(
            recipe=recipe,
            key=key,
            source_dir=str(source_dir),
            model_dir=str(source_dir),
            trtllm_checkpoint_dir=str(final),
            trtllm_config=json.loads((final / "config.json").read_text()),
            quantize_seconds=time.perf_counter() - start,
            export_seconds=0.0,
            versions={"tensorrt_llm": self.version},
        )
        # Last and atomic: its presence is what marks the checkpoint as whole for later runs.
        write_atomic(out_dir / "quantize.json", result.model_dump_json(indent=2) + "\n")
        return result

    def build(
        self,
        quantized: QuantizeResult,
        knobs: BuildKnobs,
        bundle_dir: Path,
        *,
        slug: str,
        checkpoint: dict[str, Any],
        target: dict[str, Any],
    ) -> BuildResult:
        """trtllm-build into `bundle_dir/engine` (written aside, renamed when whole)."""
        start = time.perf_counter()
        tmp = bundle_dir.with_name(bundle_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        cfg = _config(quantized.recipe, knobs)
        paths = self.paths(
            hf_checkpoint=Path(quantized.model_dir),
            checkpoint_dir=Path(quantized.trtllm_checkpoint_dir),
            engine_dir=tmp / "engine",
        )
        command = build_command(self.contract, cfg, paths)
        log_path = bundle_dir.with_name(bundle_dir.name + "-build.log")
        log_path.unlink(missing_ok=True)
        if run_logged(command, log_path) != 0:
            shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written stays behind
            raise StepFailed("build", build_failure_reason(log_path.read_text(errors="replace")), log_path)
        summary = engine_summary(json.loads((tmp / "engine" / "config.json").read_text()))
        (tmp / "build_config.json").write_text(json.dumps(knobs.key_fields(), indent=2) + "\n")
        (tmp / TRIAL_FACTS).write_text(
            json.dumps(
                {"config": cfg.model_dump(mode="json"), "tokenizer_dir": quantized.model_dir}, indent=2
            )
            + "\n"
        )
        manifest = write_manifest(
            tmp,
            slug=slug,
            stack=self.name,
            inputs={
                "checkpoint": checkpoint,
                "quant_recipe": quantized.recipe.model_dump(mode="json", exclude={"calibration"}),
                "build_knobs": knobs.key_fields(),
                "command": command.argv,
            },
            versions={"stack": self.name, "tensorrt_llm": self.version, "engine": summary.runtime_version},
            target={**target, "gpu_detected": _gpu_name()},
            trtllm_checkpoint=summary.model_dump(),
        )
        shutil.rmtree(bundle_dir, ignore_errors=True)
        tmp.rename(bundle_dir)
        return BuildResult(
            slug=slug,
            stack=self.name,
            bundle_dir=str(bundle_dir),
            knobs=knobs,
            manifest=manifest,
            build_seconds=time.perf_counter() - start,
        )

    def write_model_repository(self, build: BuildResult, repo_dir: Path) -> Path:
        """Triton: copy the installed templates, fill them with fill_template.py, parse every
        file. trtllm-serve: the folder only records the trial's facts (the server reads the
        engine folder itself)."""
        bundle = Path(build.bundle_dir)
        facts = {**json.loads((bundle / TRIAL_FACTS).read_text()), "engine_dir": str(bundle / "engine")}
        if self.server_kind == "trtllm-serve":
            shutil.rmtree(repo_dir, ignore_errors=True)
            repo_dir.mkdir(parents=True)
            _facts_path(repo_dir).write_text(json.dumps(facts, indent=2) + "\n")
            return repo_dir
        cfg = TrialConfig.model_validate(facts["config"])
        paths = self.paths(
            hf_checkpoint=Path(facts["tokenizer_dir"]),
            checkpoint_dir=bundle / "checkpoint",
            engine_dir=bundle / "engine",
            repo_dir=repo_dir,
        )
        log_path = repo_dir.with_name(repo_dir.name + ".log")
        log_path.unlink(missing_ok=True)
        values = repository_values(cfg, self.build_settings, paths)
        for model, model_values in values.items():
            # The installed release's own template: every key must be one of its placeholders
            # and every structural placeholder must get a value (fill() raises otherwise).
            template = Path(str(paths.templates)) / model / "config.pbtxt"
            if not template.is_file():
                raise TemplateError(
                    f"{template} is missing ({self.layout.describe()}): "
                    "`enginesweep doctor --stack trtllm-engine` says what is where"
                )
            fill(template.read_text(), model_values, model=model)
        for command in repository_commands(self.contract, values, paths):
            if run_logged(command, log_path) != 0:
                raise StepFailed(
                    "repository", tail_reason(log_path, "filling the templates failed"), log_path
                )
        verify_repository(repo_dir)
        _facts_path(repo_dir).write_text(json.dumps(facts, indent=2) + "\n")  # for server()
        return repo_dir

    def tokenizer_dir(self, build: BuildResult) -> Path:
        return Path(json.loads((Path(build.bundle_dir) / TRIAL_FACTS).read_text())["tokenizer_dir"])

    def host_mismatches(self, manifest: Manifest) -> list[str]:
        """A TensorRT engine runs only under the TensorRT-LLM version that built it and on GPUs
        of the SM it was built for."""
        problems = version_mismatches(
            {k: v for k, v in manifest.versions.items() if k == "tensorrt_llm"},
            {"tensorrt_llm": self.version},
        )
        # trtllm-build compiles for the GPU it runs on: the one detected at build time decides,
        # the spec's target only where none was recorded.
        detected = manifest.target.get("gpu_detected")
        built_for = sm_of(detected) or manifest.target.get("sm")
        here = host_gpu_sm()
        if here is None:
            problems.append("no NVIDIA GPU is visible here (nvidia-smi)")
        elif built_for is not None and int(built_for) != here:
            on = detected if sm_of(detected) else manifest.target.get("gpu")
            problems.append(f"built for SM{built_for} ({on}), this host's GPU is SM{here}")
        return problems

    def bundle_settings(self) -> dict[str, Any]:
        """Its bundles hold no spec setting beyond the build knobs (already in the key)."""
        return {}

    def accuracy_command(self, model_dir: Path, cfg: TrialConfig, accuracy: Any, **_: Path) -> Any:
        """Not this stack's way (its `accuracy_mode` is 'served')."""
        raise NotImplementedError(
            f"the {self.name} stack measures accuracy served, not by an lm-eval command"
        )

    @contextlib.contextmanager
    def server(self, repo_dir: Path, workdir: Path) -> Iterator[EngineServer]:
        """The trial's server on its own ports, in a session of its own (launch_triton_server.py
        returns at once; mpirun and the tritonservers stay in that session; trtllm-serve runs
        there itself), readiness polled, ownership proven, the whole session always killed."""
        facts = json.loads(_facts_path(repo_dir).read_text())
        cfg = TrialConfig.model_validate(facts["config"])
        self.http_port, self.grpc_port, self.metrics_port = pick_ports(self.fixed_ports)
        url = f"http://127.0.0.1:{self.http_port}"
        if self.server_kind == "trtllm-serve":
            engine_dir = Path(facts["engine_dir"])
            command = self.serve_command(
                cfg, engine_dir=engine_dir, tokenizer_dir=Path(facts["tokenizer_dir"])
            )
            with owned_server(
                command.argv,
                port=self.http_port,
                ready_path="/health",
                workdir=workdir,
                marker=str(engine_dir),
                server="trtllm-serve",
            ) as process:
                # trtllm-serve names the model by the folder it serves; /metrics is JSON, not Prometheus.
                yield EngineServer(url, None, process, model=str(engine_dir), endpoint=OPENAI_COMPLETIONS)
            return
        command = launch_command(
            self.contract,
            cfg,
            self.paths(hf_checkpoint=repo_dir, checkpoint_dir=repo_dir / "unused", repo_dir=repo_dir),
            http_port=self.http_port,
            grpc_port=self.grpc_port,
            metrics_port=self.metrics_port,
        )
        with owned_server(
            command.argv,
            port=self.http_port,
            ready_path="/v2/health/ready",
            workdir=workdir,
            marker=str(repo_dir),
            server="Triton",
        ) as process:
            yield EngineServer(
                url,
                f"http://127.0.0.1:{self.metrics_port}/metrics",
                process,
                model=self.served_model,
                endpoint=triton_endpoint(self.served_model),
            )

    def serve_command(self, cfg: TrialConfig, *, engine_dir: Path, tokenizer_dir: Path) -> Command:
        """`trtllm-serve ENGINE --backend tensorrt` with the engine's TP/PP and the KV-cache share
        (the limits are the engine's own, fixed at build time)."""
        return engine_serve_command(
            self.contract,
            cfg,
            engine_dir=str(engine_dir),
            port=self.http_port,
            tokenizer=str(tokenizer_dir),
            kv_fraction=self.build_settings.kv_cache_free_gpu_mem_fraction,
        )


TRIAL_FACTS = "trial.json"
"""Written into the bundle by `build`: the trial config and tokenizer folder the repository needs."""


def _config(recipe: QuantRecipe, knobs: BuildKnobs | None = None) -> TrialConfig:
    """The trial config of a recipe; without knobs (the checkpoint step reads only quant, KV,
    TP and PP) the build limits are placeholders that no command uses."""
    knobs = knobs or BuildKnobs(max_batch_size=1, max_num_tokens=1, max_seq_len=2)
    return TrialConfig(
        quant=recipe.quant,
        kv_cache=recipe.kv_cache,
        tp=recipe.tp,
        pp=recipe.pp,
        ep=recipe.ep,
        max_batch_size=knobs.max_batch_size,
        max_num_tokens=knobs.max_num_tokens,
        max_seq_len=knobs.max_seq_len,
    )


def _facts_path(repo_dir: Path) -> Path:
    return repo_dir.with_name(repo_dir.name + "." + TRIAL_FACTS)


def _gpu_name() -> str:
    """The first GPU's name and SM from nvidia-smi, or 'unknown' (recorded beside the target)."""
    return host_gpu() or "unknown"
