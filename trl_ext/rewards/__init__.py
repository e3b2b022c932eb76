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

__all__ = [
    "completion_text",
    "extract_answer",
    "parse_number",
    "reference_answer",
    "stated_number",
    "numbers_match",
    "Grader",
    "ExactMatch",
    "NumericMatch",
    "Contains",
    "FuzzySimilarity",
    "ReasoningGymScorer",
    "FormatGrader",
    "MultiGrader",
    "default_grader",
    "parameter_name",
    "exact_match",
    "numeric_match",
    "MathVerify",
    "is_math_verify_available",
    "math_verify_match",
    "ArithmeticStepVerifier",
    "ProcessRewardModel",
    "check_process_rewards",
    "completion_steps",
    "split_step_spans",
]
