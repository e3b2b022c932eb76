"""Metrics of a process reward model (PRM): step accuracy, the "incorrect step" class, and the first error.

A PRM predicts, for every step ``j`` of a solution, whether the step is correct. With the true labels
``y_j ∈ {True, False}`` (``False`` = incorrect step) and the predictions ``ŷ_j`` (``ŷ_j = p_j ≥ threshold`` from the
PRM's P(correct) ``p_j``), over all labelled steps of all solutions:

- ``step_accuracy = #{ŷ_j = y_j} / #steps``
- ``incorrect_precision = TP / (TP + FP)`` and ``incorrect_recall = TP / (TP + FN)``, where the positive class is
  "incorrect": ``TP = #{¬ŷ ∧ ¬y}``, ``FP = #{¬ŷ ∧ y}``, ``FN = #{ŷ ∧ ¬y}``; NaN when the denominator is 0 (no step
  predicted incorrect / no incorrect step).
- ``incorrect_f1 = 2·P·R / (P + R)`` (NaN when P or R is NaN, 0 when P + R = 0).

Per solution (ProcessBench, Zheng et al. 2024, arXiv 2412.06559): ``first_error(y) = min{j : ¬y_j}``, or ``-1`` when
every step is correct, and the same for the predictions.

- ``first_error_accuracy = #{first_error(ŷ) = first_error(y)} / #solutions``,
- ``first_error_accuracy_erroneous`` / ``first_error_accuracy_correct``: the same over solutions with / without an
  error (NaN when there are none), and ``first_error_f1``: their harmonic mean (ProcessBench's F1).

Example:
    >>> from trl_ext.core.prm_metrics import prm_metrics
    >>> m = prm_metrics(predictions=[[True, False, False], [True, True]], labels=[[True, True, False], [True, True]])
    >>> m["step_accuracy"], m["incorrect_precision"], m["incorrect_recall"], m["first_error_accuracy"]
    (0.8, 0.5, 1.0, 0.5)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "first_error_index",
    "prm_metrics",
    "scores_to_predictions",
    "token_level_to_steps",
]


def first_error_index(step_correct: Sequence[bool]) -> int:
    """Index of the first ``False`` (incorrect) step, or ``-1`` when all steps are correct (or there are none).

    Example:
        >>> first_error_index([True, True, False, False]), first_error_index([True, True])
        (2, -1)
    """
    for j, ok in enumerate(step_correct):
        if not ok:
            return j
    return -1


def scores_to_predictions(
    scores: Sequence[Sequence[float | None]], threshold: float = 0.5, none_is_correct: bool = True
) -> list[list[bool]]:
    """Step predictions ``ŷ_j = score_j ≥ threshold`` from step scores (P(correct), or a verifier's score).

    A ``None`` score (a step a scorer did not judge, e.g. a step without arithmetic) is predicted correct when
    ``none_is_correct`` (the neutral choice), else incorrect.

    Example:
        >>> scores_to_predictions([[0.9, 0.2, None]])
        [[True, False, True]]
    """
    return [
        [none_is_correct if s is None else float(s) >= threshold for s in row]
        for row in scores
    ]


def token_level_to_steps(
    scores: np.ndarray, label_ids: np.ndarray, ignore_index: int = -100
) -> tuple[list[list[float]], list[list[bool]]]:
    """Per-solution step scores and step labels from token-level arrays (what ``Trainer.evaluate`` gathers).

    ``scores[i, t]`` is P(correct) at token ``t`` of row ``i`` and ``label_ids[i, t]`` its label (1 = correct,
    0 = incorrect, ``ignore_index`` = no label). The labelled tokens of a row, left to right, are its steps in order.
    Rows may be padded with ``ignore_index``.

    Example:
        >>> import numpy as np
        >>> token_level_to_steps(np.array([[0.1, 0.8, 0.3, 0.6]]), np.array([[-100, 1, -100, 0]]))
        ([[0.8, 0.6]], [[True, False]])
    """
    scores = np.asarray(scores)
    label_ids = np.asarray(label_ids)
    if scores.shape != label_ids.shape:
        raise ValueError(f"token_level_to_steps: scores {scores.shape} and labels {label_ids.shape} differ in shape.")
    out_scores, out_labels = [], []
    for row_scores, row_labels in zip(scores, label_ids):
        keep = row_labels != ignore_index
        out_scores.append([float(s) for s in row_scores[keep]])
        out_labels.append([bool(v == 1) for v in row_labels[keep]])
    return out_scores, out_labels


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def _harmonic(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def prm_metrics(predictions: Sequence[Sequence[bool]], labels: Sequence[Sequence[bool]]) -> dict[str, float]:
    """Step-level and first-error metrics (formulas in the module docstring) of per-solution step predictions.

    ``predictions[i][j]`` / ``labels[i][j]``: step ``j`` of solution ``i`` predicted / labelled correct. Each
    solution must have as many predictions as labels. Solutions without steps count for nothing. Returns
    ``step_accuracy``, ``incorrect_precision``, ``incorrect_recall``, ``incorrect_f1``, ``first_error_accuracy``,
    ``first_error_accuracy_erroneous``, ``first_error_accuracy_correct``, ``first_error_f1``, ``num_steps`` and
    ``num_solutions``.
    """
    if len(predictions) != len(labels):
        raise ValueError(f"prm_metrics: {len(predictions)} prediction rows but {len(labels)} label rows.")
    correct = tp = fp = fn = n_steps = 0
    first_hits = {True: 0, False: 0}  # has an error → hits
    first_counts = {True: 0, False: 0}
    for i, (pred, lab) in enumerate(zip(predictions, labels)):
        if len(pred) != len(lab):
            raise ValueError(f"prm_metrics: solution {i} has {len(pred)} predictions but {len(lab)} labels.")
        if not lab:
            continue
        for p, y in zip(pred, lab):
            p, y = bool(p), bool(y)
            n_steps += 1
            correct += p == y
            tp += (not p) and (not y)
            fp += (not p) and y
            fn += p and (not y)
        true_first = first_error_index(lab)
        erroneous = true_first >= 0
        first_counts[erroneous] += 1
        first_hits[erroneous] += first_error_index(pred) == true_first
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    acc_err = _ratio(first_hits[True], first_counts[True])
    acc_ok = _ratio(first_hits[False], first_counts[False])
    n_solutions = first_counts[True] + first_counts[False]
    return {
        "step_accuracy": _ratio(correct, n_steps),
        "incorrect_precision": precision,
        "incorrect_recall": recall,
        "incorrect_f1": _harmonic(precision, recall),
        "first_error_accuracy": _ratio(first_hits[True] + first_hits[False], n_solutions),
        "first_error_accuracy_erroneous": acc_err,
        "first_error_accuracy_correct": acc_ok,
        "first_error_f1": _harmonic(acc_err, acc_ok),
        "num_steps": float(n_steps),
        "num_solutions": float(n_solutions),
    }
