"""Load a user's dataset (Hub id, ``save_to_disk`` folder, data folder or json/jsonl/parquet/csv file) and map its
columns to the formats the trainers read. Every problem raises :class:`DatasetLoadingError` naming the file, split,
column or row, before any model is loaded.

Where the data comes from (:func:`load_dataset_splits`):

- an existing **file** ``*.json``, ``*.jsonl``, ``*.parquet`` or ``*.csv``: one split, ``train``;
- an existing **folder** written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (it holds
  ``dataset_dict.json`` or ``state.json``): its splits (a single ``Dataset`` is the ``train`` split);
- any other existing folder: ``datasets.load_dataset(folder)``, which names splits after the files
  (``train.jsonl``, ``test.jsonl``, …);
- anything else is a **Hub id**, read with ``datasets.load_dataset(name, dataset_config)``. A name that looks like a
  local path (``/``, ``./``, ``~``, or a data-file extension) and does not exist is reported as a missing file, not
  looked up on the Hub.

The test split is ``test_split`` if the data has it; else, with ``test_size``, that many rows (an int) or that
fraction (a float in (0, 1)) are held out of the training split (seeded, disjoint); else there is none.

Column mapping:

- **prompt** (:func:`prepare_rl_dataset`, :func:`prepare_unified_dataset`): the ``prompt_column`` if given, else
  ``prompt``, else ``question``. A column named ``prompt`` is kept as it is (TRL's standard ``str`` or
  conversational format). Any other column (e.g. GSM8K's ``question``) holds a plain question: it becomes
  ``question + "\\n\\n" + instruction`` (the instruction is :data:`~trl_ext.data.ANSWER_FORMAT_INSTRUCTION` by
  default, ``""`` appends nothing), as a user message (``conversational=True``: the chat template is applied by
  the trainer) or as text ending with a newline (``conversational=False``: no chat template);
- **answer** (RL): the ``answer_column`` (default ``answer``) becomes ``answer``, a ``str`` (a reference the graders
  read; a GSM8K rationale ending in ``#### N`` is kept whole). A different column already named ``answer`` is kept
  as ``answer_original``;
- **completion / chosen / rejected** (unified): mapped columns become ``completion``, ``chosen``, ``rejected``;
  with a conversational prompt, ``str`` completions become ``[{"role": "assistant", "content": …}]``.

Example:
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"question": ["What is 2 + 3?"], "answer": ["2 + 3 = <<2+3=5>>5\\n#### 5"]})
    >>> row = prepare_rl_dataset(ds, conversational=False, instruction="")[0]
    >>> row["prompt"], row["answer"][-6:]
    ('What is 2 + 3?\\n', '#### 5')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .tasks import ANSWER_FORMAT_INSTRUCTION, question_prompt

__all__ = [
    "DATA_FILE_BUILDERS",
    "DatasetLoadingError",
    "load_dataset_splits",
    "prepare_rl_dataset",
    "prepare_unified_dataset",
]

#: File extension -> ``datasets`` builder.
DATA_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


class DatasetLoadingError(ValueError):
    """A dataset could not be loaded or does not have the columns/rows a command needs (the message says which)."""


# ------------------------------------------------------------------------------------------------------- loading


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith(("/", "./", "../", "~", "." + os.sep))
        or Path(name).suffix.lower() in DATA_FILE_BUILDERS
        or name.count("/") > 1  # a Hub id has at most one "/"
    )


def _read_file(path: Path) -> dict[str, Any]:
    import datasets

    builder = DATA_FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise DatasetLoadingError(
            f"cannot read {str(path)!r}: unsupported file type {path.suffix!r} (supported: "
            f"{', '.join(sorted(DATA_FILE_BUILDERS))}, a folder written by save_to_disk, or a Hub dataset id)"
        )
    if path.stat().st_size == 0:
        raise DatasetLoadingError(f"the file {str(path)!r} is empty")
    try:
        ds = datasets.load_dataset(builder, data_files={"train": str(path)}, split="train")
    except Exception as err:  # datasets raises many types (ArrowInvalid, JSONDecodeError, DatasetGenerationError…)
        cause = err.__cause__ or err
        raise DatasetLoadingError(
            f"cannot read {str(path)!r} as {builder}: {type(cause).__name__}: {cause}"
        ) from err
    return {"train": ds}


def _read_folder(path: Path, config: str | None) -> dict[str, Any]:
    import datasets

    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as err:
            raise DatasetLoadingError(f"cannot read the save_to_disk folder {str(path)!r}: {err}") from err
        return {"train": loaded} if isinstance(loaded, datasets.Dataset) else dict(loaded)
    try:
        return dict(datasets.load_dataset(str(path), name=config))
    except Exception as err:
        raise DatasetLoadingError(
            f"cannot read the folder {str(path)!r} as a dataset (expected a save_to_disk folder or data files such "
            f"as train.jsonl / test.jsonl): {type(err).__name__}: {err}"
        ) from err


def _read_hub(name: str, config: str | None) -> dict[str, Any]:
    import datasets

    try:
        return dict(datasets.load_dataset(name, name=config))
    except Exception as err:
        raise DatasetLoadingError(
            f"cannot load the dataset {name!r}{f' (config {config!r})' if config else ''}: it is not a local file or "
            f"folder, and loading it as a Hub dataset failed: {type(err).__name__}: {err}"
        ) from err


def load_dataset_splits(
    dataset_name: str,
    dataset_config: str | None = None,
    *,
    train_split: str = "train",
    test_split: str | None = "test",
    test_size: float | int | None = None,
    seed: int = 0,
    require_test: bool = False,
) -> tuple[Any, Any | None]:
    """``(train, test)`` datasets from a Hub id, a ``save_to_disk`` folder, a data folder or a data file.

    ``test`` is the ``test_split`` split if the data has one, else ``test_size`` rows held out of ``train``
    (``Dataset.train_test_split(test_size, seed=seed)``), else ``None`` — an error when ``require_test`` (evaluation
    was asked for). A missing train split, an empty split or an unreadable source raise :class:`DatasetLoadingError`.

    Example:
        >>> import json, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "data.jsonl")
        >>> with open(path, "w") as f:
        ...     f.writelines(json.dumps({"question": f"{i} + 1?", "answer": str(i + 1)}) + "\\n" for i in range(10))
        >>> train, test = load_dataset_splits(path, test_size=2)
        >>> len(train), len(test)
        (8, 2)
    """
    if not dataset_name or not isinstance(dataset_name, str):
        raise DatasetLoadingError(f"dataset_name must be a non-empty string, got {dataset_name!r}")
    path = Path(dataset_name).expanduser()
    if path.is_file():
        splits = _read_file(path)
    elif path.is_dir():
        splits = _read_folder(path, dataset_config)
    elif _looks_like_path(dataset_name):
        raise DatasetLoadingError(f"no such file or folder: {dataset_name!r}")
    else:
        splits = _read_hub(dataset_name, dataset_config)

    if train_split not in splits:
        raise DatasetLoadingError(
            f"{dataset_name!r} has no split {train_split!r} (--dataset_train_split); its splits: {sorted(splits)}"
        )
    train = splits[train_split]
    if len(train) == 0:
        raise DatasetLoadingError(f"split {train_split!r} of {dataset_name!r} is empty")

    test = None
    if test_split is not None and test_split in splits and test_split != train_split:
        test = splits[test_split]
        if len(test) == 0:
            raise DatasetLoadingError(f"split {test_split!r} (--dataset_test_split) of {dataset_name!r} is empty")
    elif test_size is not None:
        if isinstance(test_size, bool) or not isinstance(test_size, (int, float)) or test_size <= 0 or (
            isinstance(test_size, float) and test_size >= 1
        ):
            raise DatasetLoadingError(
                f"dataset_test_size must be a number of rows (int >= 1) or a fraction in (0, 1), got {test_size!r}"
            )
        held_out = int(test_size) if isinstance(test_size, int) else round(test_size * len(train))
        if held_out < 1 or held_out >= len(train):
            raise DatasetLoadingError(
                f"dataset_test_size={test_size!r} holds out {held_out} of the {len(train)} rows of split "
                f"{train_split!r}: both parts must keep at least one row"
            )
        parts = train.train_test_split(test_size=held_out, seed=seed, shuffle=True)
        train, test = parts["train"], parts["test"]
    elif require_test:
        raise DatasetLoadingError(
            f"evaluation needs a test split but {dataset_name!r} has no split {test_split!r} (--dataset_test_split); "
            f"its splits: {sorted(splits)}. Name one of them with --dataset_test_split, or hold rows out of the "
            "training split with --dataset_test_size (e.g. 0.1 or 64)"
        )
    return train, test


# ------------------------------------------------------------------------------------------------------- columns


def _check_column(ds, column: str, flag: str, name: str) -> None:
    if column not in ds.column_names:
        raise DatasetLoadingError(
            f"column {column!r} ({flag}) is not in the {name} dataset; its columns: {ds.column_names}"
        )


def _prompt_source(ds, prompt_column: str | None, name: str) -> str:
    if prompt_column:
        _check_column(ds, prompt_column, "--prompt_column", name)
        return prompt_column
    for candidate in ("prompt", "question"):
        if candidate in ds.column_names:
            return candidate
    raise DatasetLoadingError(
        f"the {name} dataset has neither a 'prompt' nor a 'question' column (columns: {ds.column_names}); name the "
        "column that holds the prompts with --prompt_column"
    )


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, list) and not value)


def _rename(ds, source: str, target: str):
    """``ds`` with column ``source`` renamed ``target`` (an unrelated ``target`` column is kept as ``<target>_original``)."""
    if source == target:
        return ds
    if target in ds.column_names:
        ds = ds.rename_column(target, f"{target}_original")
    return ds.rename_column(source, target)


def _build_prompts(ds, source: str, conversational: bool, instruction: str, system_prompt: str | None, name: str):
    values = ds[source]
    for i, value in enumerate(values):
        if _is_empty(value):
            raise DatasetLoadingError(f"row {i} of the {name} dataset has an empty prompt (column {source!r})")
        if source != "prompt" and not isinstance(value, (str, list)):
            raise DatasetLoadingError(
                f"row {i} of the {name} dataset: column {source!r} holds a {type(value).__name__}, expected a question "
                "(str) or a list of chat messages"
            )
    if source == "prompt":
        return ds
    prompts = [v if isinstance(v, list) else question_prompt(v, conversational, system_prompt, instruction)
               for v in values]
    if "prompt" in ds.column_names:
        ds = ds.rename_column("prompt", "prompt_original")
    return ds.add_column("prompt", prompts)


def prepare_rl_dataset(
    ds,
    *,
    prompt_column: str | None = None,
    answer_column: str | None = "answer",
    conversational: bool = True,
    instruction: str = ANSWER_FORMAT_INSTRUCTION,
    system_prompt: str | None = None,
    name: str = "train",
):
    """Prompt + reference rows for the RL trainers (GRPO-style ``prompt`` and an ``answer`` column for graders).

    ``answer_column=None`` keeps no reference (reward functions that need none). Empty prompts or references raise
    :class:`DatasetLoadingError` naming the row; references are cast to ``str``.

    Example:
        >>> from datasets import Dataset
        >>> ds = Dataset.from_dict({"problem": ["1 + 1?"], "solution": [2]})
        >>> row = prepare_rl_dataset(ds, prompt_column="problem", answer_column="solution", instruction="")[0]
        >>> row["prompt"], row["answer"]
        ([{'role': 'user', 'content': '1 + 1?'}], '2')
    """
    source = _prompt_source(ds, prompt_column, name)
    if answer_column is not None:
        _check_column(ds, answer_column, "--answer_column", name)
        for i, value in enumerate(ds[answer_column]):
            if _is_empty(value):
                raise DatasetLoadingError(
                    f"row {i} of the {name} dataset has an empty reference (column {answer_column!r}, --answer_column)"
                )
    ds = _build_prompts(ds, source, conversational, instruction, system_prompt, name)
    if answer_column is not None:
        ds = _rename(ds, answer_column, "answer")
        if ds.features["answer"].dtype != "string":
            ds = ds.cast_column("answer", _string_feature())
    return ds


def _string_feature():
    from datasets import Value

    return Value("string")


def prepare_unified_dataset(
    ds,
    *,
    prompt_column: str | None = None,
    completion_column: str | None = None,
    chosen_column: str | None = None,
    rejected_column: str | None = None,
    conversational: bool = True,
    instruction: str = ANSWER_FORMAT_INSTRUCTION,
    system_prompt: str | None = None,
    name: str = "train",
):
    """Rows for :class:`~trl_ext.trainers.unified.UnifiedLikelihoodTrainer`: demonstrations (``prompt``,
    ``completion``), preference pairs (``prompt``, ``chosen``, ``rejected``) or graded rows (``+ reward`` / ``label``).

    Each ``*_column`` given must exist; unnamed ones default to the column of that name when the dataset has it.
    The dataset needs a completion column or both chosen and rejected.

    Example:
        >>> from datasets import Dataset
        >>> ds = Dataset.from_dict({"question": ["2 + 2?"], "good": ["#### 4"], "bad": ["#### 5"]})
        >>> row = prepare_unified_dataset(ds, chosen_column="good", rejected_column="bad", instruction="")[0]
        >>> row["chosen"]
        [{'role': 'assistant', 'content': '#### 4'}]
    """
    columns = {"completion": (completion_column, "--completion_column"), "chosen": (chosen_column, "--chosen_column"),
               "rejected": (rejected_column, "--rejected_column")}
    for target, (column, flag) in columns.items():
        if column:
            _check_column(ds, column, flag, name)
    source = _prompt_source(ds, prompt_column, name)
    ds = _build_prompts(ds, source, conversational, instruction, system_prompt, name)
    for target, (column, _) in columns.items():
        if column:
            ds = _rename(ds, column, target)
    has = set(ds.column_names)
    if "completion" not in has and not {"chosen", "rejected"} <= has:
        raise DatasetLoadingError(
            f"the {name} dataset has no 'completion' column and no 'chosen' + 'rejected' pair (columns: "
            f"{ds.column_names}); map yours with --completion_column, or --chosen_column and --rejected_column"
        )
    conversational_prompts = isinstance(ds[0]["prompt"], list)
    present = [c for c in ("completion", "chosen", "rejected") if c in has]
    for column in present:
        for i, value in enumerate(ds[column]):
            if isinstance(value, str) and not value.strip() and not (column == "completion" and "chosen" in has):
                raise DatasetLoadingError(f"row {i} of the {name} dataset has an empty {column!r}")
    if conversational_prompts:
        def to_messages(row):
            return {c: [{"role": "assistant", "content": row[c]}] if isinstance(row[c], str) else row[c]
                    for c in present}

        if any(isinstance(v, str) for c in present for v in ds[c]):
            ds = ds.map(to_messages)
    return ds
