"""Deterministic reasoning-gym task builders returning ``datasets.Dataset`` in TRL's dataset formats.

Every builder takes ``size`` (exact number of rows), ``seed``, ``split`` (``"train"`` or ``"eval"``) and
``conversational``. Standard format: ``prompt`` is a ``str`` ending with a newline, completions are ``str``.
Conversational format: ``prompt`` is ``[{"role": "user", "content": ...}]`` (a system message first when
``system_prompt`` is given) and completions are ``[{"role": "assistant", "content": ...}]``.

How rows are drawn: reasoning-gym item ``i`` of seed ``s`` is item ``s * 2**20 + i`` of one stream (reasoning-gym
seeds items with ``Random(seed + index)``, so its seeds 0 and 1 would share all but one item; the stride keeps
the seeds of this module apart). Items are deduplicated by question text and each question belongs to
``"eval"`` when the first 8 bytes of ``sha256(question)`` read as a fraction of 2**64 fall below
``eval_fraction``, else to ``"train"``: the splits never share a question, whatever the seeds, sizes or builders.
Items are drawn until ``size`` rows are found (at most ``10 * size / P(split) + 1000`` items, else ValueError).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import reasoning_gym
from datasets import Dataset
from reasoning_gym.factory import DATASETS

from .solutions import corrupt_solution, normalise_solution, split_steps

__all__ = [
    "ANSWER_FORMAT_INSTRUCTION",
    "PARTIAL_SUMS_INSTRUCTION",
    "SUPPORTED_TASKS",
    "demonstration_dataset",
    "preference_dataset",
    "rl_dataset",
    "step_labelled_dataset",
]

ANSWER_FORMAT_INSTRUCTION = (
    "Reason step by step and separate consecutive steps with a blank line. "
    "End with a final line of the form #### <answer>, where <answer> is the final answer alone, "
    "written as the task asks."
)
"""Appended to every question. Graders read the answer after ``####`` on the last such line."""

PARTIAL_SUMS_INSTRUCTION = (
    "Work from left to right. On each line write one partial sum as an equation: the running total, the next number "
    "with its sign, and the new total. Then give the final line #### <answer>."
)
"""An instruction for ``chain_sum`` that makes every step checkable: one ``a + b = c`` claim per line (the arithmetic
step verifier's unit, steps split at newlines), then the ``#### <answer>`` line the graders read. The process-grpo
command's default for chain_sum."""

SUPPORTED_TASKS: tuple[str, ...] = ("basic_arithmetic", "chain_sum", "countdown", "gsm_symbolic")
"""reasoning-gym datasets accepted by :func:`rl_dataset`."""

_SOLUTION_TASK = "gsm_symbolic"  # the task whose items carry a step-by-step solution (metadata["answer_cot"])
_SEED_STRIDE = 2**20
_SPLITS = ("train", "eval")


# ------------------------------------------------------------------------------------------------ helpers


def _check_common(size: Any, seed: Any, split: Any, eval_fraction: Any, conversational: Any, system_prompt: Any):
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    if isinstance(eval_fraction, bool) or not isinstance(eval_fraction, (int, float)) or not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be a number strictly between 0 and 1, got {eval_fraction!r}")
    if not isinstance(conversational, bool):
        raise ValueError(f"conversational must be a bool, got {conversational!r}")
    if system_prompt is not None:
        if not isinstance(system_prompt, str):
            raise ValueError(f"system_prompt must be a str or None, got {type(system_prompt).__name__}")
        if not conversational:
            raise ValueError("system_prompt needs conversational=True (the standard format has no roles)")


def _question_split(question: str, eval_fraction: float) -> str:
    """'eval' or 'train' from a stable hash of the question text (never Python's salted hash())."""
    digest = hashlib.sha256(question.encode("utf-8")).digest()
    return "eval" if int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction else "train"


def _split_entries(
    task: str, size: int, seed: int, split: str, eval_fraction: float, config: dict[str, Any], what: str
) -> Iterator[dict[str, Any]]:
    """Unique reasoning-gym items whose question belongs to ``split``, in a fixed order.

    The caller stops after ``size`` accepted rows; if the generator runs dry first, a ValueError is raised.
    """
    share = eval_fraction if split == "eval" else 1 - eval_fraction
    max_draws = min(_SEED_STRIDE, int(10 * size / share) + 1000)
    try:
        source = reasoning_gym.create_dataset(task, seed=seed * _SEED_STRIDE, size=max_draws, **config)
    except (TypeError, AssertionError, ValueError) as err:
        raise ValueError(f"invalid reasoning-gym config for task {task!r}: {config!r} ({err})") from err
    seen: set[str] = set()
    found = 0
    for index in range(max_draws):
        entry = source[index]
        question = entry["question"]
        if question in seen:
            continue
        seen.add(question)
        if _question_split(question, eval_fraction) != split:
            continue
        found += 1
        yield entry
    raise ValueError(
        f"could not build {size} {split!r} rows of {what} from task {task!r}: only {found} unique questions of "
        f"that split in {max_draws} reasoning-gym draws (seed={seed}, eval_fraction={eval_fraction}, "
        f"config={config!r}); lower size or widen the task config"
    )


def question_prompt(
    question: str, conversational: bool, system_prompt: str | None = None, instruction: str = ANSWER_FORMAT_INSTRUCTION
) -> str | list[dict[str, str]]:
    """The prompt of a plain question: ``question + "\\n\\n" + instruction`` (no blank line when ``instruction`` is
    ``""``), as text or as a user message after an optional system message. ``system_prompt=""`` puts an empty
    system message (chat templates such as SmolLM2's then drop their default one); ``None`` puts none.

    Example:
        >>> question_prompt("1 + 1?", True, system_prompt="", instruction="End with #### <answer>.")
        [{'role': 'system', 'content': ''}, {'role': 'user', 'content': '1 + 1?\\n\\nEnd with #### <answer>.'}]
    """
    text = question.rstrip()
    if instruction:
        text = f"{text}\n\n{instruction}"
    if not conversational:
        return text + "\n"
    messages = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    return messages + [{"role": "user", "content": text}]


def _completion(text: str, conversational: bool) -> str | list[dict[str, str]]:
    return [{"role": "assistant", "content": text}] if conversational else text


def _row_seed(seed: int, question: str) -> str:
    """Per-question seed for choices made about a row, stable whatever the pool order."""
    return f"{seed}|{hashlib.sha256(question.encode('utf-8')).hexdigest()}"


def _check_task_config(task: str, config: dict[str, Any]) -> None:
    config_cls = DATASETS[task][1]
    known = {f.name for f in dataclasses.fields(config_cls)} - {"seed", "size"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} for task {task!r}; known: {sorted(known)}")


def _first_rows(size: int, rows: Iterable[dict[str, Any]]) -> Dataset:
    """The first ``size`` of ``rows`` (one dict per row, the same keys in each) as a Dataset, columns in key order.

    Stops pulling after the ``size``-th row, so a source that would run dry later raises nothing.
    """
    return Dataset.from_list(list(itertools.islice(rows, size)))


# ----------------------------------------------------------------------------------------------- builders


def rl_dataset(
    task: str,
    size: int,
    seed: int = 0,
    split: str = "train",
    conversational: bool = False,
    *,
    eval_fraction: float = 0.1,
    system_prompt: str | None = None,
    instruction: str = ANSWER_FORMAT_INSTRUCTION,
    **task_config: Any,
) -> Dataset:
    """Prompt-only reasoning-gym data for RL (GRPO and friends), graded against the ``answer`` column.

    Columns: ``prompt`` (question + ``instruction``, by default :data:`ANSWER_FORMAT_INSTRUCTION`; see
    :func:`question_prompt`), ``answer`` (str reference; for
    ``countdown`` an expression, one of many valid ones), ``task`` (reasoning-gym name) and ``metadata`` (JSON
    string of the item's reasoning-gym metadata; rebuild the item as ``{"question", "answer",
    "metadata": json.loads(...)}`` for reasoning-gym's own ``score_answer``). ``task_config`` is passed to
    reasoning-gym's config (e.g. ``min_terms=3`` for ``chain_sum``). Countdown items are slow to generate
    (~10 ms each, sympy), which matters for the ``"eval"`` split (≈ 10 draws per row at ``eval_fraction=0.1``).

    Example:
        >>> ds = rl_dataset("chain_sum", size=4, seed=0, max_terms=3)
        >>> ds.column_names
        ['prompt', 'answer', 'task', 'metadata']
        >>> ds[0]["prompt"].rstrip().endswith("the task asks.")
        True
    """
    if task not in SUPPORTED_TASKS:
        raise ValueError(f"unknown task {task!r}; supported tasks: {', '.join(SUPPORTED_TASKS)}")
    _check_common(size, seed, split, eval_fraction, conversational, system_prompt)
    if not isinstance(instruction, str):
        raise ValueError(f"instruction must be a str ('' for none), got {type(instruction).__name__}")
    _check_task_config(task, task_config)
    entries = _split_entries(task, size, seed, split, eval_fraction, task_config, "RL prompts")
    rows = (
        {
            "prompt": question_prompt(entry["question"], conversational, system_prompt, instruction),
            "answer": str(entry["answer"]),
            "task": task,
            "metadata": json.dumps(entry["metadata"], sort_keys=True, default=str),
        }
        for entry in entries
    )
    return _first_rows(size, rows)


def _solution_dataset(
    size: int,
    seed: int,
    split: str,
    conversational: bool,
    eval_fraction: float,
    system_prompt: str | None,
    what: str,
    columns: Callable[[str, str, str], dict[str, Any] | None],
) -> Dataset:
    """``size`` rows built from gsm_symbolic items whose solution normalises: ``prompt`` (the question), then the
    columns ``columns(question, normalised solution, answer)`` returns; an item it returns None for is skipped."""
    _check_common(size, seed, split, eval_fraction, conversational, system_prompt)

    def rows() -> Iterator[dict[str, Any]]:
        for entry in _split_entries(_SOLUTION_TASK, size, seed, split, eval_fraction, {}, what):
            question, answer = entry["question"], str(entry["answer"])
            solution = normalise_solution(entry["metadata"].get("answer_cot", ""), answer)
            row = None if solution is None else columns(question, solution, answer)
            if row is not None:
                yield {"prompt": question_prompt(question, conversational, system_prompt), **row}

    return _first_rows(size, rows())


def demonstration_dataset(
    size: int,
    seed: int = 0,
    split: str = "train",
    conversational: bool = False,
    *,
    eval_fraction: float = 0.1,
    system_prompt: str | None = None,
) -> Dataset:
    """Prompt-completion demonstrations (SFT) from gsm_symbolic's step-by-step solutions.

    Columns: ``prompt``, ``completion`` (steps separated by a blank line, last line ``#### <answer>``) and
    ``answer``. Solutions are normalised (one step per line for GSM8K-style ones, ``48=48`` -> ``48``, final
    line rewritten from the reference); items with floating-point noise in the solution are skipped.

    Example:
        >>> ds = demonstration_dataset(size=3, seed=0)
        >>> ds[0]["completion"].endswith("#### " + ds[0]["answer"])
        True
    """

    def columns(question: str, solution: str, answer: str) -> dict[str, Any]:
        return {"completion": _completion(solution, conversational), "answer": answer}

    return _solution_dataset(size, seed, split, conversational, eval_fraction, system_prompt, "demonstrations", columns)


def preference_dataset(
    size: int,
    seed: int = 0,
    split: str = "train",
    conversational: bool = False,
    *,
    eval_fraction: float = 0.1,
    system_prompt: str | None = None,
) -> Dataset:
    """Preference pairs (DPO): the correct solution vs the same solution with one corrupted arithmetic step.

    Columns: ``prompt``, ``chosen`` (normalised reference solution), ``rejected`` (one claim's result changed,
    e.g. ``35 × 3 = 105`` -> ``35 × 3 = 107``, later claims recomputed with the wrong value so the rest is
    consistent with the error, final ``#### N`` the wrong answer it implies), ``answer`` (the reference) and
    ``corrupted_step`` (index in ``split_steps(rejected)`` of the corrupted step; earlier steps are identical).
    Items with no corruptible claim are skipped (about 10% of gsm_symbolic); see
    :func:`trl_ext.data.solutions.corrupt_solution`.

    Example:
        >>> ds = preference_dataset(size=3, seed=0)
        >>> row = ds[0]
        >>> row["rejected"] != row["chosen"] and not row["rejected"].endswith("#### " + row["answer"])
        True
    """

    def columns(question: str, solution: str, answer: str) -> dict[str, Any] | None:
        bad = corrupt_solution(solution, question, answer, seed=_row_seed(seed, question))
        if bad is None:
            return None
        return {
            "chosen": _completion(solution, conversational),
            "rejected": _completion(bad.text, conversational),
            "answer": answer,
            "corrupted_step": bad.corrupted_step,
        }

    what = "preference pairs"
    return _solution_dataset(size, seed, split, conversational, eval_fraction, system_prompt, what, columns)


def step_labelled_dataset(
    size: int,
    seed: int = 0,
    split: str = "train",
    conversational: bool = False,
    *,
    eval_fraction: float = 0.1,
    system_prompt: str | None = None,
) -> Dataset:
    """Step-labelled solutions (process reward models; Math-Shepherd / TRL's former PRM trainer format).

    Columns: ``prompt``, ``completions`` (list of step strings, the last one ``#### <answer>``; a list of str in
    both formats), ``labels`` (list of bool, one per step) and ``answer`` (the reference). About half the rows
    (a fair coin per question) are correct solutions labelled all True; the others carry one corrupted step
    (see :func:`preference_dataset`), labelled True before it and False from it on. An item that cannot be
    corrupted is used as a correct row.

    Example:
        >>> ds = step_labelled_dataset(size=4, seed=0)
        >>> all(len(r["completions"]) == len(r["labels"]) for r in ds)
        True
    """

    def columns(question: str, solution: str, answer: str) -> dict[str, Any]:
        row_seed = _row_seed(seed, question)
        bad = None
        if random.Random(f"label|{row_seed}").random() < 0.5:
            bad = corrupt_solution(solution, question, answer, seed=row_seed)
        if bad is None:
            steps = split_steps(solution)
            labels = [True] * len(steps)
        else:
            steps = list(bad.steps)
            labels = [i < bad.corrupted_step for i in range(len(steps))]
        return {"completions": steps, "labels": labels, "answer": answer}

    what = "step-labelled solutions"
    return _solution_dataset(size, seed, split, conversational, eval_fraction, system_prompt, what, columns)
