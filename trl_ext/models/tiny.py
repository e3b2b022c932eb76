"""Tiny random Llama models with the SmolLM2 tokenizer, for fast tests and examples' smoke runs.

Example:
    >>> from trl_ext.models import save_tiny_model
    >>> path = save_tiny_model("/tmp/tiny-llama")  # doctest: +SKIP
    >>> from transformers import AutoModelForCausalLM
    >>> model = AutoModelForCausalLM.from_pretrained(path)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .default import default_tokenizer_path


def tiny_config(**overrides: Any):
    """A ``LlamaConfig`` of a 2-layer, 64-wide Llama with SmolLM2's vocabulary and special tokens."""
    from transformers import AutoTokenizer, LlamaConfig

    tokenizer = AutoTokenizer.from_pretrained(str(default_tokenizer_path()))
    kwargs: dict[str, Any] = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def tiny_model(seed: int = 0, **config_overrides: Any):
    """Return ``(model, tokenizer)``: a randomly initialised tiny ``LlamaForCausalLM`` and the SmolLM2 tokenizer."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(default_tokenizer_path()))
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(**config_overrides))
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model, tokenizer


def save_tiny_model(path: str | os.PathLike, seed: int = 0, **config_overrides: Any) -> Path:
    """Save a tiny model and its tokenizer to ``path`` (a folder that ``from_pretrained`` and TRL trainers accept)."""
    model, tokenizer = tiny_model(seed=seed, **config_overrides)
    path = Path(path)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path
