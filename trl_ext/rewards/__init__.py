"""Answer extraction and graders in TRL's reward-function convention.

Graders are callables ``grader(prompts=, completions=, completion_ids=, **columns) -> list[float | None]`` with a
settable ``__name__``; pass them to any TRL trainer's ``reward_funcs``. See ``docs/CONTRACTS.md``.

The module-level functions ``exact_match``, ``numeric_match`` and ``math_verify_match`` are the same graders with
their defaults as plain functions (reference from the ``answer`` column, else ``solution``), for TRL's command
line: ``trl grpo --reward_funcs trl_ext.rewards.numeric_match``.
"""

from .extract import completion_text, extract_answer, numbers_match, parse_number, reference_answer, stated_number
from .graders import (
    Contains,
    ExactMatch,
    FormatGrader,
    FuzzySimilarity,
    Grader,
    MultiGrader,
    NumericMatch,
    ReasoningGymScorer,
    default_grader,
    exact_match,
    numeric_match,
    parameter_name,
)
from .math_verify import MathVerify, is_math_verify_available, math_verify_match
from .process import (
    ArithmeticStepVerifier,
    ProcessRewardModel,
    check_process_rewards,
    completion_steps,
    split_step_spans,
)

from . import extract as _extract
from . import graders as _graders
from . import math_verify as _math_verify

# each submodule's __all__ is the home of its public names; a few more of theirs are re-exported here
__all__ = [
    *_extract.__all__,
    "numbers_match",
    *_graders.__all__,
    "parameter_name",
    *_math_verify.__all__,
    "ArithmeticStepVerifier",
    "ProcessRewardModel",
    "check_process_rewards",
    "completion_steps",
    "split_step_spans",
]
