"""trl_ext: trainers that plug into Hugging Face TRL.

Sub-packages:

- ``trl_ext.core``: pure tensor functions (advantages, losses, KL) with the formula in each docstring.
- ``trl_ext.rewards``: answer extraction and graders in TRL's reward-function convention.
- ``trl_ext.models``: the embedded default model (SmolLM2-135M-Instruct, offline) and tiny test models.
- ``trl_ext.data``: reasoning-gym tasks in TRL's standard and conversational dataset formats.
- ``trl_ext.trainers``: ``RFTTrainer``, ``ProcessGRPOTrainer``, ``UnifiedLikelihoodTrainer`` and their configs
  (also importable from ``trl_ext`` directly).

Example:
    >>> from trl_ext import RFTConfig, RFTTrainer  # doctest: +SKIP
"""

import importlib
from typing import Any

__version__ = "0.1.0"

_TRAINER_EXPORTS = (
    "RFTConfig",
    "RFTTrainer",
    "ProcessGRPOConfig",
    "ProcessGRPOTrainer",
    "UnifiedLikelihoodConfig",
    "UnifiedLikelihoodTrainer",
    "PRMConfig",
    "PRMTrainer",
)


def __getattr__(name: str) -> Any:
    """``from trl_ext import RFTTrainer`` etc., imported on first use."""
    if name in _TRAINER_EXPORTS:
        return getattr(importlib.import_module("trl_ext.trainers"), name)
    raise AttributeError(f"module 'trl_ext' has no attribute {name!r}")
