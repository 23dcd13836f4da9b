"""The `trtllm-pytorch` stack: ModelOpt unified HF checkpoints served by TensorRT-LLM's PyTorch
backend (the LLM API), through Triton's `llmapi` Python model or `trtllm-serve`.

Upstream made PyTorch the default backend in TensorRT-LLM 1.0 and removed the TensorRT engine
path from `main` in 2026; this is the stack for current releases. Steps:

1. quantize: ModelOpt's Python API and `export_hf_checkpoint` (`engines.quantize.hf_export`,
   what hf_ptq.py does), or nothing for a 16-bit baseline (the source checkpoint is served);
2. build: no compilation. The bundle is the checkpoint (hard links), the trial's LLM-API options
   (`llm_api_options.yaml`, every key checked against the pinned version: TorchLlmArgs forbids
   unknown keys) and the manifest, which records `hf_quant_config.json`;
3. serve: `execution.pytorch_server` picks Triton (`llmapi` repository, launch_triton_server.py,
   benchmarked on `tensorrt_llm/generate_stream`) or `trtllm-serve` (OpenAI-compatible,
   benchmarked on `/v1/completions`). Either server's whole session is owned and torn down.

For users' GPU machines (NVIDIA's Triton + TensorRT-LLM container); tests drive it with
`version=` and stand-in executables, and only a GPU machine runs the real ones (`gpu` tests).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from enginesweep.build_configs.hf_architecture import expert_count
from enginesweep.build_configs.quant import QuantFormat
from enginesweep.build_configs.schema import Accuracy, Build, Stack
from enginesweep.build_configs.trial import TrialConfig
from enginesweep.engines.compat import host_gpu, host_gpu_sm
from enginesweep.engines.endpoints import OPENAI_COMPLETIONS, Endpoint, triton_endpoint
from enginesweep.engines.files import write_atomic
from enginesweep.engines.llmapi.commands import lm_eval_command, ptq_formats, required_files, serve_command
from enginesweep.engines.llmapi.options import check_options, llm_api_options, model_yaml
from enginesweep.engines.llmapi.repository import PAYLOAD_TEMPLATE, write_llmapi_repository
from enginesweep.engines.manifest import Manifest, write_manifest
from enginesweep.engines.quantize.hf_export import HF_QUANT_CONFIG, export_unified_hf, local_texts
from enginesweep.engines.quantize.modelopt_cpu import QuantizeResult, library_versions
from enginesweep.engines.quantize.recipes import QuantRecipe
from enginesweep.engines.stacks.base import BuildKnobs, BuildResult
from enginesweep.engines.stacks.gpu_server import StepFailed, owned_server, pick_ports, session_alive
from enginesweep.engines.stacks.trtllm_engine import installed_version
from enginesweep.engines.trtllm.commands import Command, TrialPaths, launch_command
from enginesweep.engines.trtllm.contract import UnsupportedVersion, VersionContract, contract_for
from enginesweep.engines.trtllm.layout import Layout, Required, ToolPaths, resolve_layout

OPTIONS_FILE = "llm_api_options.yaml"
TRIAL_FACTS = "trial.json"
SERVE_FACTS = "serve.json"


@dataclass
class PytorchServer:
    """A running server over one bundle (what `server()` yields): the model name and route the
    benchmark must use come with it."""

    url: str
    metrics_url: str | None
    process: subprocess.Popen
    model: str
    endpoint: Endpoint = field(default_factory=lambda: OPENAI_COMPLETIONS)

    def alive(self) -> bool:
        """True while anything of the launcher's session runs."""
        return session_alive(self.process)


class TrtllmPytorchStack:
    """ModelOpt HF checkpoints on TensorRT-LLM's PyTorch backend (LLM API, TensorRT-LLM 1.2.x)."""

    name = "trtllm-pytorch"
    served_model = "tensorrt_llm"
    accuracy_mode = "command"
    """Its accuracy is `accuracy_command`, run out of process by the trial."""

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
        self.contract: VersionContract = contract_for(self.version)
        if self.contract.llm_api is None:
            raise UnsupportedVersion(
                f"TensorRT-LLM {self.version}: no LLM-API contract for the trtllm-pytorch stack"
            )
        execution = spec.execution if spec is not None else None
        self.layout: Layout = resolve_layout(
            trtllm_root or (execution.trtllm_root if execution else None),
            execution.trtllm_paths if execution else None,
        )
        self.build_settings = build or (spec.build if spec is not None else Build())
        self.server_kind = server_kind or (execution.pytorch_server if execution else "triton")
        # Free ports taken when the server is about to start (not fixed ones, nor ones picked
        # an hour of quantization earlier): a busy 8000 on a shared host is common, and two
        # trials on one host each need their own. `server()` proves the answering one is ours.
        self.fixed_ports = ports
        self.http_port, self.grpc_port, self.metrics_port = pick_ports(ports)

    def required(self, configs: Sequence[TrialConfig], *, accuracy: bool = False) -> list[Required]:
        """Every file and program the trials `configs` will use here (the preflight checks them
        before any work; `engines.llmapi.commands.required_files`)."""
        return required_files(
            self.layout.tools,
            configs,
            server=self.server_kind,
            calib_dataset=self.build_settings.calib_dataset,
            lm_eval=lm_eval_executable() if accuracy else None,
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
        """A unified HF checkpoint in `out_dir/checkpoint` (written aside, renamed when whole and
        checked); a 16-bit baseline is the source checkpoint itself."""
        start = time.perf_counter()
        cfg = _config(recipe)
        if recipe.quant.is_quantized:
            ptq_formats(self.contract, cfg)  # a format hf_ptq.py cannot export: refused first
        out_dir.mkdir(parents=True, exist_ok=True)
        if not recipe.needs_calibration:
            checkpoint, quant_config = source_dir, {}
        else:
            if not recipe.quant.is_quantized:
                raise StepFailed(
                    "quantize",
                    f"{recipe.slug}: hf_ptq.py has no format that leaves the weights unquantized",
                    out_dir / "quantize.log",
                )
            samples, tokens = self.build_settings.calibration(Stack.TRTLLM_PYTORCH, recipe.quant)
            if self.build_settings.calib_dataset is not None:
                calibration_texts = local_texts(Path(self.build_settings.calib_dataset), samples)
            tmp = out_dir / "checkpoint.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                quant_config = export_unified_hf(
                    source_dir, recipe, tmp, calibration_texts=calibration_texts, seq_len=tokens, log=log
                )
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written stays behind
                raise
            checkpoint = out_dir / "checkpoint"
            shutil.rmtree(checkpoint, ignore_errors=True)
            tmp.rename(checkpoint)
        result = QuantizeResult(
            recipe=recipe,
            key=key,
            source_dir=str(source_dir),
            model_dir=str(checkpoint),
            trtllm_checkpoint_dir=str(checkpoint),
            trtllm_config=quant_config,
            quantize_seconds=time.perf_counter() - start,
            export_seconds=0.0,
            versions=library_versions(),
        )
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
        """The bundle: the checkpoint (hard-linked), the checked LLM-API options and the manifest."""
        start = time.perf_counter()
        cfg = _config(quantized.recipe, knobs)
        options = llm_api_options(cfg, self.build_settings, moe=_is_moe(Path(quantized.model_dir)))
        check_options(self.contract, options)
        tmp = bundle_dir.with_name(bundle_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _link_tree(Path(quantized.model_dir), tmp / "checkpoint")
            (tmp / OPTIONS_FILE).write_text(yaml.safe_dump(options, sort_keys=False))
            (tmp / TRIAL_FACTS).write_text(
                json.dumps({"config": cfg.model_dump(mode="json")}, indent=2) + "\n"
            )
            manifest = write_manifest(
                tmp,
                slug=slug,
                stack=self.name,
                inputs={
                    "checkpoint": checkpoint,
                    "quant_recipe": quantized.recipe.model_dump(mode="json", exclude={"calibration"}),
                    "build_knobs": knobs.key_fields(),
                    "llm_api_options": options,
                },
                versions={
                    "stack": self.name,
                    "tensorrt_llm": self.version,
                    "llm_api_contract": self.contract.line,
                    **quantized.versions,
                },
                target={**target, "gpu_detected": host_gpu() or "unknown"},
                trtllm_checkpoint={
                    "format": "modelopt unified HF"
                    if quantized.trtllm_config
                    else "Hugging Face (unquantized)",
                    HF_QUANT_CONFIG: quantized.trtllm_config,
                },
            )
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
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
        """Triton: the llmapi repository (model.yaml from the bundle's options). trtllm-serve:
        the folder records the serve command instead (`serve.json`)."""
        bundle = Path(build.bundle_dir)
        options = yaml.safe_load((bundle / OPTIONS_FILE).read_text())
        check_options(self.contract, options)  # a bundle written under another contract
        facts = json.loads((bundle / TRIAL_FACTS).read_text())
        # The ports go into the server's command line, which `server()` runs next.
        self.http_port, self.grpc_port, self.metrics_port = pick_ports(self.fixed_ports)
        if self.server_kind == "triton":
            body = model_yaml(self.contract, options, model=str(bundle / "checkpoint"))
            write_llmapi_repository(self.contract, Path(str(self._tools().llmapi_model)), repo_dir, body)
        else:  # the options beside the facts: the server's command line names this folder
            shutil.rmtree(repo_dir, ignore_errors=True)
            repo_dir.mkdir(parents=True)
            shutil.copy(bundle / OPTIONS_FILE, repo_dir / OPTIONS_FILE)
        command = self._server_command(bundle, repo_dir, TrialConfig.model_validate(facts["config"]))
        write_atomic(
            repo_dir / SERVE_FACTS,
            json.dumps(
                {
                    "argv": command.argv,
                    "kind": self.server_kind,
                    "model": str(bundle / "checkpoint"),
                    "world_size": TrialConfig.model_validate(facts["config"]).world_size,
                },
                indent=2,
            )
            + "\n",
        )
        return repo_dir

    def bundle_settings(self) -> dict[str, Any]:
        """The spec's settings that go into a bundle's LLM-API options (part of its store key)."""
        settings = self.build_settings.key_fields()  # moe_backend only when set: old keys stand
        names = (
            "kv_cache_free_gpu_mem_fraction",
            "enable_block_reuse",
            "cuda_graph_batch_sizes",
            "moe_backend",
        )
        return {name: settings[name] for name in names if name in settings}

    def tokenizer_dir(self, build: BuildResult) -> Path:
        return Path(build.bundle_dir) / "checkpoint"

    def accuracy_command(
        self, model_dir: Path, cfg: TrialConfig, accuracy: Accuracy, *, include_path: Path, output_path: Path
    ) -> Command:
        """lm-eval's `trtllm` model (the LLM API over `model_dir`, the trial's TP and PP) on the
        spec's tasks, every item logged; the same command `plan --emit-scripts` writes.
        `ENGINESWEEP_LM_EVAL` names another lm-eval executable (default: this environment's)."""
        return lm_eval_command(
            cfg,
            accuracy,
            model_dir=str(model_dir),
            tokenizer_dir=str(model_dir),
            tasks=accuracy.tasks,
            include_path=str(include_path),
            output_path=str(output_path),
            executable=lm_eval_executable(),
        )

    def host_mismatches(self, manifest: Manifest) -> list[str]:
        """The options were checked against one release line's keys, and the weight format
        needs a GPU of its SM or newer (the checkpoint itself is not tied to one GPU)."""
        problems = []
        line = manifest.versions.get("llm_api_contract")
        if line is not None and line != self.contract.line:
            problems.append(
                f"its LLM-API options were checked for TensorRT-LLM {line}, this host has {self.version}"
            )
        quant = QuantFormat(manifest.inputs["quant_recipe"]["quant"])
        here = host_gpu_sm()
        if here is None:
            problems.append("no NVIDIA GPU is visible here (nvidia-smi)")
        elif here < quant.spec.min_sm:
            problems.append(
                f"{quant.value} weights need SM{quant.spec.min_sm}+, this host's GPU is "
                f"SM{here} ({host_gpu()})"
            )
        return problems

    @contextlib.contextmanager
    def server(self, repo_dir: Path, workdir: Path) -> Iterator[PytorchServer]:
        """The recorded server command on the trial's own ports, in a session of its own,
        readiness polled, ownership proven, the whole session always killed."""
        facts = json.loads((repo_dir / SERVE_FACTS).read_text())
        url = f"http://127.0.0.1:{self.http_port}"
        triton = facts["kind"] == "triton"
        with owned_server(
            facts["argv"],
            port=self.http_port,
            ready_path="/v2/health/ready" if triton else "/health",
            workdir=workdir,
            marker=str(repo_dir),
            server="Triton" if triton else "trtllm-serve",
        ) as process:
            if triton:
                yield PytorchServer(
                    url,
                    f"http://127.0.0.1:{self.metrics_port}/metrics",
                    process,
                    model=self.served_model,
                    endpoint=triton_endpoint(self.served_model, PAYLOAD_TEMPLATE),
                )
            else:  # trtllm-serve's /metrics: JSON iteration stats (enable_iter_perf_stats is set)
                yield PytorchServer(url, f"{url}/metrics", process, model=facts["model"])

    # -- helpers ---------------------------------------------------------------------------------
    def _server_command(self, bundle: Path, repo_dir: Path, cfg: TrialConfig) -> Command:
        if self.server_kind == "triton":
            paths = TrialPaths(
                tools=self._tools(),
                hf_checkpoint=PurePosixPath(bundle / "checkpoint"),
                checkpoint_dir=PurePosixPath(bundle / "checkpoint"),
                engine_dir=PurePosixPath(bundle),
                repo_dir=PurePosixPath(repo_dir),
                timing_cache=PurePosixPath(bundle / "unused"),
            )
            return launch_command(
                self.contract,
                cfg,
                paths,
                http_port=self.http_port,
                grpc_port=self.grpc_port,
                metrics_port=self.metrics_port,
            )
        return serve_command(
            self.contract,
            model_dir=str(bundle / "checkpoint"),
            options_file=str(repo_dir / OPTIONS_FILE),
            port=self.http_port,
        )

    def _tools(self) -> ToolPaths:
        return self.layout.require_tools(
            "Triton's llmapi model (or serve with execution.pytorch_server: trtllm-serve)"
        )


def lm_eval_executable() -> str:
    """The lm-eval that scores the accuracy tasks: `ENGINESWEEP_LM_EVAL`, else this environment's."""
    return os.environ.get("ENGINESWEEP_LM_EVAL") or str(Path(sys.executable).with_name("lm-eval"))


def _is_moe(checkpoint: Path) -> bool:
    """Whether the checkpoint's config.json names routed experts (its LLM-API options then set
    the MoE layout explicitly)."""
    try:
        config = json.loads((checkpoint / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return expert_count(config) > 0


def _config(recipe: QuantRecipe, knobs: BuildKnobs | None = None) -> TrialConfig:
    knobs = knobs or BuildKnobs(max_batch_size=1, max_num_tokens=1, max_seq_len=2)
    return TrialConfig(
        quant=recipe.quant,
        kv_cache=recipe.kv_cache,
        tp=recipe.tp,
        pp=recipe.pp,
        ep=knobs.ep,
        attention_dp=knobs.attention_dp,
        max_batch_size=knobs.max_batch_size,
        max_num_tokens=knobs.max_num_tokens,
        max_seq_len=knobs.max_seq_len,
    )


def _link_tree(source: Path, dest: Path) -> None:
    """`source` as `dest`, files hard-linked where the filesystem allows (a multi-GB checkpoint
    is not copied), copied otherwise; symlinks (a hub snapshot's) are followed."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(os.path.realpath(src), dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, dest, copy_function=link)
