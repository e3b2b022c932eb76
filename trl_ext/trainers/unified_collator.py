"""Rows of three kinds for :class:`~trl_ext.trainers.unified.UnifiedLikelihoodTrainer`: kind inference, dataset
mixing, and the collator that lays every sequence of a batch out for **one** forward pass.

Kinds (inferred per row from the columns that hold a value, ``None`` counting as absent):

========================  ==========================================  ==================================
kind                      columns                                     sequences in the forward
========================  ==========================================  ==================================
``demonstration``         ``prompt``, ``completion``                  1
``preference``            ``prompt``, ``chosen``, ``rejected``        2 (chosen, rejected)
``graded``                ``prompt``, ``completion``, ``reward`` and/or boolean ``label``    1
========================  ==========================================  ==================================

Example:
    >>> from trl_ext.trainers.unified_collator import DataCollatorForUnifiedLikelihood, PREFERENCE, DEMONSTRATION
    >>> collator = DataCollatorForUnifiedLikelihood(pad_token_id=0)
    >>> batch = collator([
    ...     {"prompt_ids": [1, 2], "completion_ids": [3], "rejected_ids": [4, 5], "row_kind": PREFERENCE,
    ...      "row_reward": float("nan"), "row_label": -1},
    ...     {"prompt_ids": [6], "completion_ids": [7, 8], "rejected_ids": [], "row_kind": DEMONSTRATION,
    ...      "row_reward": float("nan"), "row_label": -1},
    ... ])
    >>> batch["input_ids"]  # [chosen of the pairs, rejected of the pairs, demonstrations, graded]
    tensor([[1, 2, 3, 0],
            [1, 2, 4, 5],
            [6, 7, 8, 0]])
    >>> batch["completion_mask"]
    tensor([[0, 0, 1, 0],
            [0, 0, 1, 1],
            [0, 1, 1, 0]])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.data.data_collator import DataCollatorMixin

from ..core.likelihood import LOSSES, RowKind
from .trl_compat import pad_sequences

DEMONSTRATION, PREFERENCE, GRADED = RowKind.DEMONSTRATION, RowKind.PREFERENCE, RowKind.GRADED
#: Names of the kinds, indexed by their code in the ``row_kind`` column.
KIND_NAMES = tuple(kind.label for kind in RowKind)

#: Columns added by the trainer's dataset preparation (the tokenized form read by the collator).
PREPARED_COLUMNS = ("prompt_ids", "completion_ids", "rejected_ids", "row_kind", "row_reward", "row_label")
REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")

_KIND_HELP = (
    "demonstration (prompt, completion), preference (prompt, chosen, rejected) or graded "
    "(prompt, completion, and reward and/or a boolean label)"
)


def _has(row: dict[str, Any], key: str) -> bool:
    return row.get(key) is not None


def infer_row_kind(row: dict[str, Any]) -> str | None:
    """The kind of one dataset row from the columns that hold a value: ``"demonstration"``, ``"preference"``,
    ``"graded"``, or ``None`` when it matches none (or is ambiguous: a completion *and* a pair).

    A preference row may leave ``prompt`` implicit (TRL's implicit-prompt format: the shared start of ``chosen`` and
    ``rejected``); the other kinds need a ``prompt``.

    Example:
        >>> infer_row_kind({"prompt": "1+1=", "completion": "2"})
        'demonstration'
        >>> infer_row_kind({"prompt": "1+1=", "completion": "3", "reward": 0.0, "chosen": None})
        'graded'
        >>> infer_row_kind({"prompt": "1+1=", "chosen": "2", "rejected": "3"})
        'preference'
        >>> infer_row_kind({"prompt": "1+1="}) is None
        True
    """
    pair = _has(row, "chosen") and _has(row, "rejected")
    completion = _has(row, "completion")
    if pair and not completion:
        return "preference"
    if completion and not (_has(row, "chosen") or _has(row, "rejected")) and _has(row, "prompt"):
        return "graded" if (_has(row, "reward") or _has(row, "label")) else "demonstration"
    return None


def check_beta(beta: float, loss_type: Sequence[str], where: str = "UnifiedLikelihoodConfig") -> None:
    """Raise ``ValueError`` naming ``beta`` if it is negative (or NaN), or 0 while a loss of ``loss_type`` reads it.

    TRL's ``DPOConfig`` accepts both. A negative β flips every preference: the policy learns to prefer the rejected
    completions while ``rewards/accuracies`` (the sign of β·Δ) reads 1.0. With β = 0 the β-losses (every loss with a
    reference) are constant (``sigmoid``: log 2) or undefined (``ipo``, ``sppo_hard``: 1/β), so pairs teach nothing.

    Example:
        >>> check_beta(0.0, ["sft", "simpo"])  # no loss reads beta
        >>> check_beta(-0.1, ["sft", "sigmoid"])
        Traceback (most recent call last):
        ...
        ValueError: UnifiedLikelihoodConfig.beta must be > 0, got -0.1: ...
    """
    readers = [t for t in loss_type if LOSSES[t].needs_reference]
    if beta >= 0 and not (beta == 0 and readers):
        return
    why = (
        "a negative beta flips every preference: the policy learns to prefer the rejected completions while "
        "rewards/accuracies (the sign of beta * margin) reads 1.0"
        if not beta == 0
        else f"with beta = 0 the losses {readers} are constant or undefined (1/beta), so the pairs teach nothing"
    )
    raise ValueError(
        f"{where}.beta must be > 0, got {beta}: {why}. TRL's DPOConfig accepts it; trl_ext refuses it. Typical "
        "values are 0.01-0.5 (DPOConfig's default is 0.1); for the SimPO loss set simpo_beta instead."
    )


def _format(value: Any) -> str | None:
    if isinstance(value, str):
        return "standard"
    if isinstance(value, (list, tuple)) and all(isinstance(m, dict) and "role" in m for m in value):
        return "conversational"
    return None


def check_row_format(row: dict[str, Any], kind: str, where: str) -> None:
    """Raise ``ValueError`` naming the row (``where``) and its columns unless its ``prompt`` and completion columns are
    all strings (standard format) or all lists of chat messages (conversational format), as TRL expects.

    Example:
        >>> check_row_format({"prompt": "1+1=", "completion": "2"}, "demonstration", "row 0")
        >>> check_row_format({"prompt": [{"role": "user", "content": "1+1="}], "completion": "2"}, "demonstration",
        ...                  "row 0")
        Traceback (most recent call last):
        ...
        ValueError: row 0: 'prompt' is a list of chat messages (conversational) but 'completion' is a str; ...
    """
    columns = ["chosen", "rejected"] if kind == "preference" else ["completion"]
    if row.get("prompt") is not None:
        columns = ["prompt", *columns]
    formats = {c: _format(row[c]) for c in columns}
    bad = [c for c, f in formats.items() if f is None]
    if bad:
        raise ValueError(
            f"{where}: column {bad[0]!r} is of type {type(row[bad[0]]).__name__} ({str(row[bad[0]])[:60]!r}); it "
            "must be a string (standard format) or a list of chat messages {'role': ..., 'content': ...} "
            "(conversational)."
        )
    if len(set(formats.values())) > 1:
        first, other = columns[0], next(c for c in columns if formats[c] != formats[columns[0]])
        describe = {"standard": "a str", "conversational": "a list of chat messages (conversational)"}
        raise ValueError(
            f"{where}: {first!r} is {describe[formats[first]]} but {other!r} is {describe[formats[other]]}; "
            f"columns {columns} must share one format: all strings, or all lists of chat messages (e.g. "
            "[{'role': 'assistant', 'content': '4'}] for a chat prompt's completion)."
        )


def mix_datasets(datasets: Sequence[Any]):
    """Concatenate datasets of different kinds into one: columns missing from a dataset are added as ``None``.

    All datasets must share the format (all standard, or all conversational) and the type of every common column.

    Example:
        >>> from datasets import Dataset
        >>> demos = Dataset.from_dict({"prompt": ["1+1="], "completion": ["2"]})
        >>> pairs = Dataset.from_dict({"prompt": ["2+2="], "chosen": ["4"], "rejected": ["5"]})
        >>> mixed = mix_datasets([demos, pairs])
        >>> [infer_row_kind(row) for row in mixed]
        ['demonstration', 'preference']
    """
    from datasets import Dataset, concatenate_datasets

    datasets = list(datasets)
    if not datasets:
        raise ValueError("mix_datasets: got an empty list of datasets")
    for i, ds in enumerate(datasets):
        if not isinstance(ds, Dataset):
            raise TypeError(f"mix_datasets: element {i} is a {type(ds).__name__}, expected a datasets.Dataset")
    features: dict[str, Any] = {}
    for i, ds in enumerate(datasets):
        for name, feature in ds.features.items():
            if name in features and features[name] != feature:
                raise ValueError(
                    f"mix_datasets: column {name!r} has type {feature} in dataset {i} but {features[name]} in an "
                    "earlier one (mixing standard and conversational datasets is not supported; convert one of them)"
                )
            features.setdefault(name, feature)
    aligned = []
    for ds in datasets:
        for name, feature in features.items():
            if name not in ds.column_names:
                ds = ds.add_column(name, [None] * len(ds), feature=feature)
        aligned.append(ds.select_columns(list(features)))
    return concatenate_datasets(aligned)


@dataclass
class DataCollatorForUnifiedLikelihood(DataCollatorMixin):
    """Pads every sequence of a batch of mixed rows into one ``(N, T)`` tensor for a single forward pass.

    Sequence order: chosen of every pair, rejected of every pair, demonstrations, graded samples (each group in
    row order). ``completion_mask`` marks the completion tokens (the loss positions). Returned keys:
    ``input_ids``, ``attention_mask``, ``completion_mask`` (``N × T``); ``row_kind`` (``B``); ``pair_rows``,
    ``demo_rows``, ``graded_rows`` (row indices of each group); ``rewards`` (NaN where absent) and
    ``graded_labels`` (−1 where absent) for the graded rows; and, when the rows carry precomputed reference
    log-probs, ``ref_chosen_logps`` / ``ref_rejected_logps`` for the pairs.

    Args:
        pad_token_id: token used for padding.
        max_length: sequences longer than this are truncated, each on its own, as TRL's DPO collator:
            ``truncation_mode="keep_start"`` keeps the first ``max_length`` tokens, ``"keep_end"`` the last.
        truncation_mode: ``"keep_start"`` (default) or ``"keep_end"``.
        pad_to_multiple_of: pad the length to a multiple of this value.
    """

    pad_token_id: int
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"
    truncation_mode: str = "keep_start"

    def __post_init__(self):
        if self.truncation_mode not in ("keep_start", "keep_end"):
            raise ValueError(
                f"DataCollatorForUnifiedLikelihood: truncation_mode must be 'keep_start' or 'keep_end', got "
                f"{self.truncation_mode!r}"
            )

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        kinds = [int(ex["row_kind"]) for ex in examples]
        rows = {k: [i for i, kind in enumerate(kinds) if kind == k] for k in (DEMONSTRATION, PREFERENCE, GRADED)}
        seqs: list[list[int]] = []
        masks: list[list[int]] = []

        def add(prompt: list[int], completion: list[int]) -> None:
            ids, mask = list(prompt) + list(completion), [0] * len(prompt) + [1] * len(completion)
            if self.max_length is not None:
                keep_start = self.truncation_mode == "keep_start"
                cut = slice(None, self.max_length) if keep_start else slice(-self.max_length, None)
                ids, mask = ids[cut], mask[cut]
            seqs.append(ids)
            masks.append(mask)

        for i in rows[PREFERENCE]:
            add(examples[i]["prompt_ids"], examples[i]["completion_ids"])
        for i in rows[PREFERENCE]:
            add(examples[i]["prompt_ids"], examples[i]["rejected_ids"])
        for kind in (DEMONSTRATION, GRADED):
            for i in rows[kind]:
                add(examples[i]["prompt_ids"], examples[i]["completion_ids"])

        def nan_if_none(x: Any) -> float:
            return float("nan") if x is None else float(x)

        out: dict[str, Any] = {
            "input_ids": pad_sequences([torch.tensor(s, dtype=torch.long) for s in seqs], self.pad_token_id,
                                       self.pad_to_multiple_of),
            "attention_mask": pad_sequences([torch.ones(len(s), dtype=torch.long) for s in seqs], 0,
                                            self.pad_to_multiple_of),
            "completion_mask": pad_sequences([torch.tensor(m, dtype=torch.long) for m in masks], 0,
                                             self.pad_to_multiple_of),
            "row_kind": torch.tensor(kinds, dtype=torch.long),
            "pair_rows": torch.tensor(rows[PREFERENCE], dtype=torch.long),
            "demo_rows": torch.tensor(rows[DEMONSTRATION], dtype=torch.long),
            "graded_rows": torch.tensor(rows[GRADED], dtype=torch.long),
            "rewards": torch.tensor([nan_if_none(examples[i].get("row_reward")) for i in rows[GRADED]],
                                    dtype=torch.float32),
            "graded_labels": torch.tensor([int(examples[i].get("row_label", -1)) for i in rows[GRADED]],
                                          dtype=torch.long),
        }
        if REF_COLUMNS[0] in examples[0]:
            for key in REF_COLUMNS:
                values = [float(examples[i][key]) for i in rows[PREFERENCE]]
                if any(math.isnan(v) for v in values):
                    raise ValueError(f"DataCollatorForUnifiedLikelihood: column {key!r} holds NaN for a pair row")
                out[key] = torch.tensor(values, dtype=torch.float32)
        return out


def pack_sequences(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor):
    """Padding-free layout of a right-padded batch: every real token of the ``N`` rows in one row of length
    ``L = Σ attention_mask``, with ``position_ids`` restarting at 0 for each sequence (transformers then attends
    within each sequence only) and the label of each sequence's first token set to ``-100`` (nothing precedes it).

    Returns ``(input_ids (1, L), position_ids (1, L), labels (1, L))``.

    Example:
        >>> ids, att = torch.tensor([[5, 6, 7], [8, 9, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]])
        >>> pack_sequences(ids, att, ids.masked_fill(att == 0, -100))
        (tensor([[5, 6, 7, 8, 9]]), tensor([[0, 1, 2, 0, 1]]), tensor([[-100,    6,    7, -100,    9]]))
    """
    m = attention_mask.bool()
    labels = labels.clone()
    labels[:, 0] = -100
    position_ids = attention_mask.long().cumsum(dim=1) - 1
    return input_ids[m][None], position_ids[m][None], labels[m][None]


def unpack_shifted(packed: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Scatter a per-token output of the packed forward (``(1, L − 1)``, entry ``k − 1`` scoring packed token
    ``k``) back to the right-padded layout of ``(N, T − 1)`` next-token outputs (entry ``[i, t − 1]`` scoring token
    ``t`` of row ``i``; 0 at padding), as the padded forward returns them. Differentiable.

    Example:
        >>> att = torch.tensor([[1, 1, 1], [1, 1, 0]])
        >>> unpack_shifted(torch.tensor([[-1.0, -2.0, 0.0, -4.0]]), att)  # packed token 3 (row 1's first) unscored
        tensor([[-1., -2.],
                [-4.,  0.]])
    """
    m = attention_mask.bool()
    index = m.flatten().long().cumsum(0).view_as(m) - 1  # position of each real token in the packed row
    select = m[:, 1:]
    values = packed[0, index[:, 1:][select] - 1]
    return packed.new_zeros(select.shape).masked_scatter(select, values)
