"""Models: the embedded default model (offline SmolLM2-135M-Instruct) and tiny random models for tests."""

from .default import (
    DEFAULT_MODEL_HUB_ID,
    cache_dir,
    default_model_path,
    default_tokenizer_path,
    gguf_path,
    resolve_model_name_or_path,
)
from .tiny import save_tiny_model, tiny_config, tiny_model
from .value_head import ValueHead, attach_value_head, get_value_head, load_policy_and_value_head
from .wrappers import unwrap_model

__all__ = [
    "DEFAULT_MODEL_HUB_ID",
    "cache_dir",
    "default_model_path",
    "default_tokenizer_path",
    "gguf_path",
    "resolve_model_name_or_path",
    "save_tiny_model",
    "tiny_config",
    "tiny_model",
    "ValueHead",
    "attach_value_head",
    "get_value_head",
    "load_policy_and_value_head",
    "unwrap_model",
]
