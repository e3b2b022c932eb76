"""The trainers of trl_ext, one file each with its config.

Example:
    >>> from trl_ext.trainers import RFTConfig, RFTTrainer  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RFTConfig": "rft",
    "RFTTrainer": "rft",
    "ProcessGRPOConfig": "process_grpo",
    "ProcessGRPOTrainer": "process_grpo",
    "UnifiedLikelihoodConfig": "unified",
    "UnifiedLikelihoodTrainer": "unified",
    "DataCollatorForUnifiedLikelihood": "unified_collator",
    "infer_row_kind": "unified_collator",
    "mix_datasets": "unified_collator",
    "PRMConfig": "prm",
    "PRMTrainer": "prm",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a trainer module on first use (TRL's trainers are heavy to import)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trl_ext.trainers' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
