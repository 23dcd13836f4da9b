"""Write the `reference` stack's Triton model repository.

One decoupled Python-backend model named like TensorRT-LLM's BLS model (`tensorrt_llm_bls`),
taking TensorRT-LLM's request fields and streaming `text_output`, so the benchmark client is the
one a real TensorRT-LLM deployment gets. The `config.pbtxt` is generated from a `ModelConfig`
protobuf message (Triton's own schema, shipped in `tritonclient`), never from a string template,
so every field name is checked by the schema when it is written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

SERVED_MODEL = "tensorrt_llm_bls"
_MODEL_SOURCE = Path(__file__).with_name("reference_model.py")


def _tensor(cls, name: str, dtype: int, optional: bool = False):
    spec = cls(name=name, data_type=dtype, dims=[1])
    if optional:
        spec.optional = True
    return spec


def reference_model_config(
    model_dir: Path,
    *,
    name: str = SERVED_MODEL,
    max_batch_size: int = 8,
    max_seq_len: int = 2048,
    torch_threads: int = 0,
    instances: int = 1,
) -> mc.ModelConfig:
    """The Triton `ModelConfig` of the reference model serving `model_dir`."""
    config = mc.ModelConfig(name=name, backend="python", max_batch_size=0)
    config.model_transaction_policy.decoupled = True
    config.input.extend(
        [
            _tensor(mc.ModelInput, "text_input", mc.TYPE_STRING),
            _tensor(mc.ModelInput, "max_tokens", mc.TYPE_INT32),
            _tensor(mc.ModelInput, "min_tokens", mc.TYPE_INT32, optional=True),
            _tensor(mc.ModelInput, "stream", mc.TYPE_BOOL, optional=True),
        ]
    )
    config.output.append(_tensor(mc.ModelOutput, "text_output", mc.TYPE_STRING))
    config.instance_group.append(mc.ModelInstanceGroup(count=instances, kind=mc.ModelInstanceGroup.KIND_CPU))
    config.parameters["model_dir"].string_value = str(model_dir)
    config.parameters["torch_threads"].string_value = str(torch_threads)
    # The engine's build limits, enforced by the model as TRT-LLM enforces them: at most
    # max_batch_size sequences in flight (others wait), input + output within max_seq_len.
    config.parameters["max_batch_size"].string_value = str(max_batch_size)
    config.parameters["max_seq_len"].string_value = str(max_seq_len)
    return config


def write_reference_repository(
    repo_dir: Path,
    model_dir: Path,
    *,
    name: str = SERVED_MODEL,
    max_batch_size: int = 8,
    max_seq_len: int = 2048,
    torch_threads: int = 0,
) -> Path:
    """Write `<repo_dir>/<name>/{config.pbtxt,1/model.py}`; returns `repo_dir`."""
    model_folder = repo_dir / name
    (model_folder / "1").mkdir(parents=True, exist_ok=True)
    config = reference_model_config(
        model_dir,
        name=name,
        max_batch_size=max_batch_size,
        max_seq_len=max_seq_len,
        torch_threads=torch_threads,
    )
    (model_folder / "config.pbtxt").write_text(text_format.MessageToString(config))
    shutil.copyfile(_MODEL_SOURCE, model_folder / "1" / "model.py")
    return repo_dir
