"""trl_ext: trainers that plug into Hugging Face TRL.

Sub-packages:

- ``trl_ext.core``: pure tensor functions (advantages, losses, KL) with the formula in each docstring.
- ``trl_ext.rewards``: answer extraction and graders in TRL's reward-function convention.
- ``trl_ext.models``: the embedded default model (SmolLM2-135M-Instruct, offline) and tiny test models.
- ``trl_ext.data``: reasoning-gym tasks in TRL's standard and conversational dataset formats.
"""

__version__ = "0.1.0"
