"""reasoning-gym tasks in TRL's standard and conversational dataset formats.

Builders (all deterministic: same arguments, same rows; ``split="train"`` and ``"eval"`` never share a question):

- :func:`rl_dataset` — ``prompt``, ``answer``, ``task``, ``metadata`` (GRPO / RL with graders);
- :func:`demonstration_dataset` — ``prompt``, ``completion``, ``answer`` (SFT);
- :func:`preference_dataset` — ``prompt``, ``chosen``, ``rejected``, ``answer``, ``corrupted_step`` (DPO);
- :func:`step_labelled_dataset` — ``prompt``, ``completions``, ``labels``, ``answer`` (process reward models).

Example:
    >>> from trl_ext.data import ANSWER_FORMAT_INSTRUCTION, rl_dataset, split_steps
    >>> ds = rl_dataset("basic_arithmetic", size=8, seed=0)
    >>> ANSWER_FORMAT_INSTRUCTION in ds[0]["prompt"]
    True
    >>> split_steps("2 + 2 = 4\\n\\n#### 4")
    ['2 + 2 = 4', '#### 4']
"""

from .solutions import CorruptedSolution, corrupt_solution, normalise_solution, split_steps
from .tasks import (
    ANSWER_FORMAT_INSTRUCTION,
    PARTIAL_SUMS_INSTRUCTION,
    SUPPORTED_TASKS,
    demonstration_dataset,
    preference_dataset,
    rl_dataset,
    step_labelled_dataset,
)

__all__ = [
    "ANSWER_FORMAT_INSTRUCTION",
    "PARTIAL_SUMS_INSTRUCTION",
    "SUPPORTED_TASKS",
    "CorruptedSolution",
    "corrupt_solution",
    "demonstration_dataset",
    "normalise_solution",
    "preference_dataset",
    "rl_dataset",
    "split_steps",
    "step_labelled_dataset",
]
