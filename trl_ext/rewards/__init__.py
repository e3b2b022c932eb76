"""Answer extraction and graders in TRL's reward-function convention.

Graders are callables ``grader(prompts=, completions=, completion_ids=, **columns) -> list[float | None]`` with a
settable ``__name__``; pass them to any TRL trainer's ``reward_funcs``. See ``docs/CONTRACTS.md``.
"""

from .extract import completion_text, extract_answer, parse_number
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
)
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
    "Grader",
    "ExactMatch",
    "NumericMatch",
    "Contains",
    "FuzzySimilarity",
    "ReasoningGymScorer",
    "FormatGrader",
    "MultiGrader",
    "default_grader",
    "ArithmeticStepVerifier",
    "ProcessRewardModel",
    "check_process_rewards",
    "completion_steps",
    "split_step_spans",
]
