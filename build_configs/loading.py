"""Load a sweep spec from YAML, apply `--set` overrides, validate, and resolve its model and GPU.

Every problem found is collected into ONE `SpecError` whose lines each start with the field's YAML
path (`axes.tp[2]: ...`), so a user fixes a spec in one pass. Structural problems (types, unknown
keys) come from pydantic; problems that need the model's architecture or the GPU come from
`rules.py`, applied to every axis value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from enginesweep.build_configs import rules
from enginesweep.build_configs.architectures import (
    ArchitectureError,
    ModelArchitecture,
    architecture_for_repo,
    shipped_architecture,
)
from enginesweep.build_configs.gpus import GPU, get_gpu
from enginesweep.build_configs.schema import Stack, SweepSpec, Workload

CPU_HARDWARE = "cpu"
"""The hardware label of CPU measurements (the reference stack's)."""


@dataclass(frozen=True)
class FieldError:
    """One problem, at one YAML path."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(ValueError):
    """A spec that cannot be used; lists every problem found."""

    def __init__(self, source: str, errors: Sequence[FieldError]):
        self.source = source
        self.errors = list(errors)
        count = len(self.errors)
        lines = [f"{source} is not a valid sweep spec ({count} problem{'s' * (count != 1)}):"]
        lines += [f"  {error}" for error in self.errors]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class ResolvedSpec:
    """A valid spec with the model architecture and the GPUs it plans against."""

    spec: SweepSpec
    architecture: ModelArchitecture
    gpus: tuple[GPU, ...]
    source: str

    @property
    def hardware(self) -> str:
        """What the sweep's numbers are measured on: `cpu` for the reference stack (it runs on the
        CPU whatever the target), else the GPU the sweep runs on (`target.run_on`)."""
        return CPU_HARDWARE if Stack.REFERENCE in self.spec.stack else self.gpu.name

    @property
    def gpu(self) -> GPU:
        """The GPU the sweep runs on (`target.run_on`, or the only listed GPU)."""
        name = self.spec.target.sweep_gpu
        if name is None:
            raise SpecError(
                self.source,
                [
                    FieldError(
                        "target.run_on",
                        f"target.gpu lists {len(self.gpus)} GPUs "
                        f"({', '.join(g.name for g in self.gpus)}); a sweep builds only for the GPU it runs "
                        "on: set target.run_on to it (plan compares them all without it)",
                    )
                ],
            )
        return get_gpu(name)

    def price(self, gpu: GPU) -> float:
        """$/GPU-hour of `gpu`: the spec's override, else the catalog's."""
        override = self.spec.target.price_override(gpu.name)
        return gpu.usd_per_gpu_hour if override is None else override

    @property
    def usd_per_gpu_hour(self) -> float:
        """$/GPU-hour of the GPU the sweep runs on."""
        return self.price(self.gpu)


# -- shipped configs --------------------------------------------------------------------------------


def shipped_configs() -> dict[str, Path]:
    """Shipped sweep specs by name (file name without `.yaml`)."""
    folder = resources.files("enginesweep.build_configs")
    return {
        entry.name.removesuffix(".yaml"): Path(str(entry))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".yaml") and entry.name != "gpus.yaml"
    }


def config_summary(path: Path) -> str:
    """The first comment line of a config: what it is for."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A path as given when it exists, else a shipped config by name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_configs()
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    raise SpecError(
        str(name_or_path),
        [FieldError("", f"no such file, and not a shipped config (shipped: {', '.join(shipped)})")],
    )


# -- overrides -------------------------------------------------------------------------------------


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> list[FieldError]:
    """Apply `key.path=value` overrides in place (value parsed as YAML); return bad ones."""
    errors: list[FieldError] = []
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key.strip():
            errors.append(FieldError(f"--set {override}", "expected KEY.PATH=VALUE"))
            continue
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            errors.append(FieldError(f"--set {key}", f"value is not valid YAML: {exc}"))
            continue
        node: Any = data
        parts = key.strip().split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if child is None and isinstance(node, dict):
                child = node[part] = {}
            if not isinstance(child, dict):
                errors.append(FieldError(f"--set {key}", f"{'.'.join(parts[: depth + 1])} is not a section"))
                break
            node = child
        else:
            node[parts[-1]] = value
    return errors


# -- validation ------------------------------------------------------------------------------------


def _yaml_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the section that holds `loc[-1]`, for 'unknown key' hints."""
    model: Any = SweepSpec
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) else None
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _pydantic_errors(exc: ValidationError) -> list[FieldError]:
    errors = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc)
            message = "unknown key" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
        else:
            message = err["msg"].removeprefix("Value error, ")
        errors.append(FieldError(_yaml_path(loc), message))
    return errors


def _resolve_architecture(spec: SweepSpec) -> ModelArchitecture:
    model = spec.model
    if model.architecture:
        candidate = Path(model.architecture)
        if candidate.exists():
            return ModelArchitecture.from_file(candidate)
        return shipped_architecture(model.architecture)
    if model.path is not None:
        return ModelArchitecture.from_file(model.path)
    return architecture_for_repo(model.repo_id or "", model.revision)


T = TypeVar("T")


def _every(rule: Callable[[T], str | None], values: Sequence[T]) -> str | None:
    """A rule of a listed GPU or stack is a spec error only when it rejects every listed one."""
    reasons = [rule(value) for value in values]
    return "; ".join(dict.fromkeys(r for r in reasons if r)) if all(reasons) else None


def _target_rule(
    rule: Callable[[GPU, Stack], str | None], gpus: Sequence[GPU], stacks: Sequence[Stack]
) -> str | None:
    """A rule of GPU and stack is a spec error only when it rejects the value on every listed GPU
    with every listed stack (elsewhere the planner rejects the single trials, with the reason)."""
    reasons = [rule(gpu, stack) for gpu in gpus for stack in stacks]
    return "; ".join(dict.fromkeys(r for r in reasons if r)) if all(reasons) else None


def longest_sequence(workload: Workload) -> tuple[int, str]:
    """The sequence a max_seq_len must hold, and its name for the message."""
    if workload.request_log is not None:
        return workload.longest_sequence_tokens, "the request log's longest ISL+OSL"
    return workload.sequence_tokens, "the workload's ISL+OSL"


def _axis_errors(resolved: ResolvedSpec) -> list[FieldError]:
    """Axis values that no combination of the other axes (and no listed GPU) can make feasible."""
    spec, arch, gpus = resolved.spec, resolved.architecture, resolved.gpus
    axes, available, stacks = spec.axes, spec.target.gpus_available, spec.stack
    errors: list[FieldError] = []

    def add(path: str, reason: str | None) -> None:
        if reason:
            errors.append(FieldError(path, reason))

    for i, stack in enumerate(stacks):
        add(
            "stack" if len(stacks) == 1 else f"stack[{i}]",
            _every(lambda g: rules.stack_target(stack, g), gpus),  # noqa: B023 - called at once
        )
    for i, quant in enumerate(axes.quant):
        add(f"axes.quant[{i}]", _target_rule(lambda g, s: rules.quant_supported(quant, g, s), gpus, stacks))  # noqa: B023 - called at once
        awq = [rules.awq_divisible(arch, quant, tp, spec.build.awq_block_size) for tp in axes.tp]
        if all(awq):
            add(f"axes.quant[{i}]", f"no tp in axes.tp works: {'; '.join(r for r in awq if r)}")
    for i, kv in enumerate(axes.kv_cache):
        add(f"axes.kv_cache[{i}]", _target_rule(lambda g, s: rules.kv_supported(kv, g, s), gpus, stacks))  # noqa: B023 - called at once
    for i, tp in enumerate(axes.tp):
        heads = [rules.tp_divides_heads(arch, tp, adp) for adp in axes.attention_dp]
        if all(heads):
            add(f"axes.tp[{i}]", heads[0])
        if all(rules.world_size_fits(tp, pp, available) for pp in axes.pp):
            add(f"axes.tp[{i}]", rules.world_size_fits(tp, min(axes.pp), available))
    for i, pp in enumerate(axes.pp):
        add(f"axes.pp[{i}]", rules.pp_fits_layers(arch, pp))
        if all(rules.world_size_fits(tp, pp, available) for tp in axes.tp):
            add(f"axes.pp[{i}]", rules.world_size_fits(min(axes.tp), pp, available))
    for i, ep in enumerate(axes.ep):
        if ep > 1:
            add(f"axes.ep[{i}]", _every(lambda s: rules.stack_parallelism(s, ep, False), stacks))  # noqa: B023 - called at once
        found = [rules.expert_parallel(arch, tp, ep) for tp in axes.tp]
        if all(found):
            add(f"axes.ep[{i}]", "; ".join(dict.fromkeys(r for r in found if r)))
        checkpoints = [
            rules.engine_expert_checkpoint(stack, quant, kv, ep)
            for stack in stacks
            for quant in axes.quant
            for kv in axes.kv_cache
        ]
        if all(checkpoints):
            add(f"axes.ep[{i}]", checkpoints[0])
    for i, adp in enumerate(axes.attention_dp):
        if adp:
            adp_stacks = _every(lambda s: rules.stack_parallelism(s, 1, True), stacks)
            add(f"axes.attention_dp[{i}]", adp_stacks)
            found = [rules.attention_dp_fits(arch, tp, adp) for tp in axes.tp]
            if all(found):
                add(f"axes.attention_dp[{i}]", "; ".join(dict.fromkeys(r for r in found if r)))
    add("stack", _every(lambda s: rules.stack_runs_model(s, arch), stacks))
    add("target.gpu", _every(lambda g: rules.shipped_format_runs(arch, g), gpus))
    for i, seq in enumerate(axes.max_seq_len):
        add(f"axes.max_seq_len[{i}]", rules.seq_len_fits(arch, seq, *longest_sequence(spec.workload)))
    return errors


def validate_data(data: Any, source: str) -> ResolvedSpec:
    """Validate an already-parsed spec dictionary; raise one `SpecError` listing every problem."""
    if not isinstance(data, dict):
        raise SpecError(source, [FieldError("", "the top level must be a mapping of sections")])
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, _pydantic_errors(exc)) from None
    try:
        arch = _resolve_architecture(spec)
    except ArchitectureError as exc:
        field = (
            "model.architecture"
            if spec.model.architecture
            else ("model.path" if spec.model.path else "model.repo_id")
        )
        raise SpecError(source, [FieldError(field, str(exc))]) from None
    resolved = ResolvedSpec(
        spec=spec, architecture=arch, gpus=tuple(get_gpu(name) for name in spec.target.gpu), source=source
    )
    errors = _axis_errors(resolved)
    if errors:
        raise SpecError(source, errors)
    return resolved


def load_spec(name_or_path: str | Path, overrides: Sequence[str] = ()) -> ResolvedSpec:
    """Read, override, validate and resolve a spec given by path or shipped name."""
    path = resolve_config_path(name_or_path)
    source = str(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(source, [FieldError("", f"malformed YAML at {where}{problem}")]) from None
    if data is None:
        raise SpecError(source, [FieldError("", "the file is empty")])
    if isinstance(data, dict):
        errors = apply_overrides(data, overrides)
        if errors:
            raise SpecError(source, errors)
    return validate_data(data, source)
