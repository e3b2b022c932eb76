"""Test data and argument sets shared by the test files (``from helpers import ...``: pytest puts ``tests/`` on
``sys.path``, as for ``hub_fixtures``)."""

from __future__ import annotations

from typing import Any

from datasets import Dataset

PROMPTS = ["What is 2+2?", "Compute 3*5.", "Add 7 and 8.", "What is 10-4?"]
ANSWERS = ["4", "15", "15", "6"]


def prompt_dataset(n_repeat: int = 2) -> Dataset:
    """``PROMPTS`` with their ``answer`` column, ``n_repeat`` times."""
    return Dataset.from_dict({"prompt": PROMPTS * n_repeat, "answer": ANSWERS * n_repeat})


def char_variety(completions: list, **kwargs: Any) -> list[float]:
    """An outcome reward that varies between random completions: distinct characters / 10."""
    return [len(set(c)) / 10.0 for c in completions]


def run_args(output_dir: Any, **overrides: Any) -> dict[str, Any]:
    """``TrainingArguments`` keywords of a one-step CPU run without saving or reporting (any trainer's config)."""
    args = dict(output_dir=str(output_dir), per_device_train_batch_size=4, max_steps=1, logging_steps=1,
                learning_rate=1e-3, report_to="none", save_strategy="no", use_cpu=True, bf16=False, seed=0,
                disable_tqdm=True)
    args.update(overrides)
    return args


def grpo_args(output_dir: Any, **overrides: Any) -> dict[str, Any]:
    """:func:`run_args` plus 8-token completions: a one-step run of a GRPO-based config."""
    return run_args(output_dir, **{"max_completion_length": 8, **overrides})
