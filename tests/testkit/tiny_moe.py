"""A randomly initialised mixture-of-experts checkpoint made by the tests (no download): Qwen3-MoE
shaped, 2 layers of 4 experts with 2 per token, SmolLM2's real tokenizer. Its weights are random,
so whatever a test measures on it is a random-weight model's number, and said so."""

from __future__ import annotations

from pathlib import Path

EXPERTS, TOP_K, HIDDEN, EXPERT_WIDTH = 4, 2, 64, 64


def build_tiny_moe(dest: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """Write the checkpoint (bf16 safetensors, config.json naming Qwen3MoeForCausalLM, tokenizer)."""
    import torch
    from transformers import AutoTokenizer, Qwen3MoeConfig, Qwen3MoeForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = Qwen3MoeConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        moe_intermediate_size=EXPERT_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        num_experts=EXPERTS,
        num_experts_per_tok=TOP_K,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config.architectures = ["Qwen3MoeForCausalLM"]
    Qwen3MoeForCausalLM(config).to(torch.bfloat16).save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest
