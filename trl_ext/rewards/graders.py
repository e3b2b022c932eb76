"""Graders in TRL's reward-function convention.

Every grader is a callable object::

    grader(prompts=None, completions=None, completion_ids=None, **dataset_columns) -> list[float | None]

with a settable ``__name__`` (TRL logs ``rewards/<__name__>/mean``). Completions may be strings (standard
format) or message lists (conversational format). A sample whose reference (the ``answer`` column by default)
is missing, ``None`` or empty gets ``None`` ("not applicable"; TRL turns it into NaN and ignores it). Garbage
model output gets ``0.0``; a grader never raises because of what a model generated.

Example:
    >>> from trl_ext.rewards import ExactMatch, FormatGrader, MultiGrader
    >>> grader = MultiGrader([ExactMatch(), FormatGrader()], weights=[0.8, 0.2])
    >>> grader(completions=["2 + 2 = 4\\n#### 4", "#### 5", "4"], answer=["4", "4", "4"])
    [1.0, 0.2, 0.8]
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal

from .extract import completion_text, extract_answer, parse_number

__all__ = [
    "Grader",
    "ExactMatch",
    "NumericMatch",
    "Contains",
    "FuzzySimilarity",
    "ReasoningGymScorer",
    "FormatGrader",
    "MultiGrader",
    "default_grader",
]

logger = logging.getLogger(__name__)

Reward = float | None


def _is_missing(value: Any) -> bool:
    """``None``, NaN, or an empty / whitespace-only string."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _normalize(text: str) -> str:
    """Strip, case-fold and collapse whitespace."""
    return " ".join(str(text).split()).casefold()


def _numeric_answer(prediction: str) -> float | None:
    """The number a free-form answer states: the whole text if numeric, else the first number after the last
    ``=`` (``"18 apples"`` → 18, ``"3 * 4 = 12"`` → 12)."""
    value = parse_number(prediction)
    if value is not None:
        return value
    tail = prediction.rsplit("=", 1)[-1]
    match = re.search(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?", tail.translate({0x2212: "-"}))
    return parse_number(match.group(0)) if match else None


def _check_tolerance(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


class Grader:
    """Base class: reads the reference from ``answer_column`` and scores each completion with :meth:`score`.

    Args:
        answer_column: dataset column holding the reference answer.
        extract: grade the answer extracted by :func:`~trl_ext.rewards.extract_answer` (``True``) or the whole
            completion text (``False``).
        name: value of ``__name__`` (the name TRL logs under); defaults to the class's ``default_name``.

    Subclasses implement ``score(prediction, reference, row) -> float | None`` where ``prediction`` is the
    extracted answer (``None`` if there is none) or the whole text, ``reference`` is a non-empty ``str`` and ``row``
    maps each dataset column (and ``prompt``) to this sample's value; returning ``None`` means "not applicable".
    An exception inside ``score`` is logged and gives 0.0, as does a non-finite score.
    """

    default_name = "grader"
    requires_reference = True

    def __init__(self, *, answer_column: str = "answer", extract: bool = True, name: str | None = None) -> None:
        if not isinstance(answer_column, str) or not answer_column:
            raise ValueError(f"answer_column must be a non-empty str, got {answer_column!r}")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        self.answer_column = answer_column
        self.extract = bool(extract)
        self.__name__ = name or self.default_name
        self._warned = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.__name__!r})"

    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] | None = None,
        completion_ids: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> list[Reward]:
        completions = list(completions) if completions is not None else []
        n = len(completions)
        columns = _columns(kwargs, n)
        columns.setdefault("prompt", _column(prompts, n) or [None] * n)
        references = self._references(columns, n)
        rewards: list[Reward] = []
        for i, completion in enumerate(completions):
            reference = references[i]
            if self.requires_reference and _is_missing(reference):
                rewards.append(None)
                continue
            row = {key: values[i] for key, values in columns.items()}
            rewards.append(self._safe_score(completion, reference, row))
        return rewards

    def _references(self, columns: Mapping[str, list[Any]], n: int) -> list[Any]:
        values = columns.get(self.answer_column)
        if values is not None:
            return values
        if self.requires_reference and not self._warned and n:
            logger.warning(
                "%s: column %r missing or of the wrong length; every sample is graded None.",
                self.__name__,
                self.answer_column,
            )
            self._warned = True
        return [None] * n

    def _safe_score(self, completion: Any, reference: Any, row: dict[str, Any]) -> Reward:
        text = completion_text(completion)
        prediction = extract_answer(text) if self.extract else text
        reference = None if reference is None else str(reference).strip()
        try:
            score = self.score(prediction, reference, row)
        except Exception as err:  # a grader must never crash training because of model output
            logger.warning("%s: scoring failed (%s: %s); reward 0.0", self.__name__, type(err).__name__, err)
            return 0.0
        if score is None:
            return None  # "not applicable", decided by the subclass
        score = float(score)
        return score if math.isfinite(score) else 0.0

    def score(self, prediction: str | None, reference: str | None, row: dict[str, Any]) -> float | None:
        raise NotImplementedError


def _column(values: Any, n: int) -> list[Any] | None:
    """``values`` as a list if it is a per-sample column of length ``n`` (a list, tuple, ``datasets`` Column, array…).

    Strings, mappings and objects without a length (TRL's ``trainer_state``, ``log_metric``…) are not columns.
    """
    if values is None or isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__len__"):
        return None
    try:
        return list(values) if len(values) == n else None
    except TypeError:
        return None


def _columns(kwargs: Mapping[str, Any], n: int) -> dict[str, list[Any]]:
    """The per-sample columns among ``kwargs`` (TRL also passes non-columns such as ``trainer_state``)."""
    columns = {key: _column(values, n) for key, values in kwargs.items()}
    return {key: values for key, values in columns.items() if values is not None}


class ExactMatch(Grader):
    """1.0 if the answer equals the reference after normalisation, else 0.0.

    Normalisation: strip, case-fold (unless ``case_sensitive``), collapse whitespace; with ``numeric=True``
    (default) two answers that both parse as numbers are compared as numbers (``"5.0" == "5"``,
    ``"1,234" == "1234"``, ``"1/2" == "0.5"``).

    Example:
        >>> grader = ExactMatch()
        >>> grader(completions=["2 + 3 = 5\\n#### 5.0", "The answer is Paris.", "#### 6"], answer=["5", "paris", "5"])
        [1.0, 1.0, 0.0]
        >>> grader(completions=["#### 5"], answer=[None])
        [None]
    """

    default_name = "exact_match"

    def __init__(self, *, numeric: bool = True, case_sensitive: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.numeric = bool(numeric)
        self.case_sensitive = bool(case_sensitive)

    def score(self, prediction: str | None, reference: str | None, row: dict[str, Any]) -> float:
        if prediction is None or reference is None:
            return 0.0
        if self.numeric:
            pred_value, ref_value = parse_number(prediction), parse_number(reference)
            if pred_value is not None and ref_value is not None:
                return float(pred_value == ref_value)
        if self.case_sensitive:
            return float(" ".join(prediction.split()) == " ".join(reference.split()))
        return float(_normalize(prediction) == _normalize(reference))


class NumericMatch(Grader):
    """1.0 if the stated number equals the reference within ``math.isclose(rel_tol, abs_tol)``, else 0.0.

    The prediction is the extracted answer parsed as a number; if it is not a bare number (``"18 apples"``,
    ``"x = 5"``) the first number after its last ``=`` is used. A reference that is not a number gives
    ``None`` (not applicable), so the grader can be mixed with others on datasets of expression answers.

    Example:
        >>> grader = NumericMatch(rel_tol=0.01)
        >>> grader(completions=["#### 100.5", "#### 18 apples", "#### 7"], answer=["100", "18", "8"])
        [1.0, 1.0, 0.0]
        >>> grader(completions=["#### 3"], answer=["x + 1"])
        [None]
    """

    default_name = "numeric_match"

    def __init__(self, rel_tol: float = 1e-6, abs_tol: float = 1e-9, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rel_tol = _check_tolerance("rel_tol", rel_tol)
        self.abs_tol = _check_tolerance("abs_tol", abs_tol)

    def score(self, prediction: str | None, reference: str | None, row: dict[str, Any]) -> float | None:
        ref_value = parse_number(reference)
        if ref_value is None:
            return None
        pred_value = _numeric_answer(prediction) if prediction is not None else None
        if pred_value is None:
            return 0.0
        return float(math.isclose(pred_value, ref_value, rel_tol=self.rel_tol, abs_tol=self.abs_tol))


class Contains(Grader):
    """1.0 if the reference appears in the completion text, else 0.0.

    Unlike the other graders, ``extract`` defaults to ``False``: the whole completion is searched.
    Matching is case-folded and whitespace-collapsed; with ``whole_word=True`` (default) the match may not be
    glued to letters or digits (``"5"`` is not found in ``"15"``).

    Example:
        >>> grader = Contains()
        >>> grader(completions=["It is Paris, of course", "15 apples", "5 apples"], answer=["paris", "5", "5"])
        [1.0, 0.0, 1.0]
    """

    default_name = "contains"

    def __init__(self, *, whole_word: bool = True, extract: bool = False, **kwargs: Any) -> None:
        super().__init__(extract=extract, **kwargs)
        self.whole_word = bool(whole_word)

    def score(self, prediction: str | None, reference: str | None, row: dict[str, Any]) -> float:
        if prediction is None or reference is None:
            return 0.0
        haystack, needle = _normalize(prediction), _normalize(reference)
        if not self.whole_word:
            return float(needle in haystack)
        pattern = rf"(?<![^\W_]){re.escape(needle)}(?![^\W_])"
        return float(re.search(pattern, haystack) is not None)


class FuzzySimilarity(Grader):
    """Partial credit in [0, 1].

    ``method="ratio"`` (default): ``difflib.SequenceMatcher`` ratio of the normalised answer and reference
    (case-folded, whitespace-collapsed). ``method="numeric"``: ``max(0, 1 - |p - r| / max(|r|, 1))`` for the
    stated number ``p`` and the reference ``r`` (1.0 when equal, 0.0 at an error of 100 %, or of 1 when
    ``|r| < 1``); a non-numeric reference gives ``None``, a non-numeric answer 0.0.

    Example:
        >>> FuzzySimilarity()(completions=["#### abcd"], answer=["abce"])
        [0.75]
        >>> FuzzySimilarity(method="numeric")(completions=["#### 90", "#### 300"], answer=["100", "100"])
        [0.9, 0.0]
    """

    default_name = "fuzzy_similarity"

    def __init__(self, method: Literal["ratio", "numeric"] = "ratio", **kwargs: Any) -> None:
        if method not in ("ratio", "numeric"):
            raise ValueError(f"method must be 'ratio' or 'numeric', got {method!r}")
        super().__init__(**kwargs)
        self.method = method

    def score(self, prediction: str | None, reference: str | None, row: dict[str, Any]) -> float | None:
        if self.method == "numeric":
            return self._numeric(prediction, reference)
        if prediction is None or reference is None:
            return 0.0
        return difflib.SequenceMatcher(None, _normalize(prediction), _normalize(reference)).ratio()

    @staticmethod
    def _numeric(prediction: str | None, reference: str | None) -> float | None:
        ref_value = parse_number(reference)
        if ref_value is None:
            return None
        pred_value = _numeric_answer(prediction) if prediction is not None else None
        if pred_value is None:
            return 0.0
        return max(0.0, 1.0 - abs(pred_value - ref_value) / max(abs(ref_value), 1.0))


@lru_cache(maxsize=None)
def _reasoning_gym_scorer(task: str) -> Callable[[str | None, dict[str, Any]], float]:
    import reasoning_gym

    return reasoning_gym.get_score_answer_fn(task)


def _reasoning_gym_tasks() -> frozenset[str]:
    from reasoning_gym.factory import DATASETS

    return frozenset(DATASETS)


def _metadata(value: Any) -> dict[str, Any]:
    """The ``metadata`` column as a dict: a JSON string (``rl_dataset``'s format), a dict, or nothing."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str) and value.strip():
        loaded = json.loads(value)
        return loaded if isinstance(loaded, dict) else {}
    return {}


class ReasoningGymScorer(Grader):
    """Score with reasoning-gym's own scorer of the task (``reasoning_gym.get_score_answer_fn(task)``).

    The entry handed to the scorer is ``{"question": prompt, "answer": reference, "metadata": metadata}``, with
    the metadata read from ``metadata_column`` (a JSON string, as built by ``trl_ext.data.rl_dataset``; countdown's
    scorer needs its ``numbers`` and ``target``). The task is ``task`` if given, else the ``task_column`` value of
    each sample (mixed-task datasets work). A sample with no reference or no task gets ``None``; an unknown task in
    a row gets ``None`` (with a warning). Scores are reasoning-gym's, e.g. countdown gives 0.01 for no answer.

    Example:
        >>> import json
        >>> grader = ReasoningGymScorer()
        >>> grader(
        ...     completions=["#### 94*4 - 61 - 6", "#### 94*4", "#### -4"],
        ...     answer=["94*4 - 61 - 6", "94*4 - 61 - 6", "-4"],
        ...     task=["countdown", "countdown", "chain_sum"],
        ...     metadata=[json.dumps({"numbers": [6, 61, 94, 4], "target": 309})] * 2 + ["{}"],
        ... )
        [1.0, 0.05, 1.0]
    """

    default_name = "reasoning_gym"

    def __init__(
        self,
        task: str | None = None,
        *,
        task_column: str = "task",
        metadata_column: str = "metadata",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if task is not None and task not in _reasoning_gym_tasks():
            raise ValueError(f"unknown reasoning-gym task {task!r}; see reasoning_gym.factory.DATASETS for the names")
        self.task = task
        self.task_column = task_column
        self.metadata_column = metadata_column

    def score(self, prediction: str | None, reference: str | None, row: dict[str, Any]) -> float | None:
        task = self.task or row.get(self.task_column)
        if _is_missing(task):
            return None
        if task not in _reasoning_gym_tasks():
            logger.warning("%s: unknown reasoning-gym task %r; reward None", self.__name__, task)
            return None
        entry = {
            "question": row.get("prompt"),
            "answer": reference,
            "metadata": _metadata(row.get(self.metadata_column)),
        }
        return float(_reasoning_gym_scorer(str(task))(prediction, entry))


class FormatGrader(Grader):
    """Score the output format; needs no reference, so it never returns ``None``.

    1.0 if the last non-empty line of the completion fully matches ``pattern`` (default ``####\\s*\\S.*``, i.e.
    ``#### <something>``); ``partial_credit`` (default 0.0, e.g. 0.5) if only an earlier line matches (an answer
    is present but not on the last line); 0.0 otherwise. Lines are stripped before matching.

    Example:
        >>> grader = FormatGrader(partial_credit=0.5)
        >>> grader(completions=["2 + 2 = 4\\n#### 4", "#### 4\\nbye", "4"])
        [1.0, 0.5, 0.0]
        >>> FormatGrader(pattern=r"Answer: \\d+")(completions=["Answer: 12"])
        [1.0]
    """

    default_name = "format"
    requires_reference = False

    def __init__(self, pattern: str = r"####\s*\S.*", *, partial_credit: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        try:
            self.pattern = re.compile(pattern)
        except (re.error, TypeError) as err:
            raise ValueError(f"pattern is not a valid regular expression: {pattern!r} ({err})") from err
        if isinstance(partial_credit, bool) or not isinstance(partial_credit, (int, float)):
            raise ValueError(f"partial_credit must be a number in [0, 1], got {partial_credit!r}")
        if not 0.0 <= partial_credit <= 1.0:
            raise ValueError(f"partial_credit must be in [0, 1], got {partial_credit!r}")
        self.partial_credit = float(partial_credit)

    def _safe_score(self, completion: Any, reference: Any, row: dict[str, Any]) -> float:
        lines = [line.strip() for line in completion_text(completion).splitlines() if line.strip()]
        if not lines:
            return 0.0
        if self.pattern.fullmatch(lines[-1]):
            return 1.0
        if any(self.pattern.fullmatch(line) for line in lines[:-1]):
            return self.partial_credit
        return 0.0


class MultiGrader:
    """Weighted combination of graders (any reward functions in TRL's convention).

    Per sample: ``sum(w_i * r_i) / sum(w_i)`` over the graders whose reward ``r_i`` is not ``None``/NaN; ``None``
    if every grader returned ``None``. Weights default to 1 and must be positive.

    Example:
        >>> grader = MultiGrader([NumericMatch(), FormatGrader()], weights=[3.0, 1.0])
        >>> grader(completions=["#### 7", "7", "#### 8"], answer=["7", "7", "x + 1"])
        [1.0, 0.75, 1.0]
    """

    def __init__(
        self,
        graders: Sequence[Callable[..., list[Reward]]],
        weights: Sequence[float] | None = None,
        *,
        name: str = "multi_grader",
    ) -> None:
        graders = list(graders) if graders is not None else []
        if not graders:
            raise ValueError("MultiGrader needs at least one grader")
        for i, grader in enumerate(graders):
            if not callable(grader):
                raise TypeError(f"graders[{i}] is not callable: {grader!r}")
        weights = [1.0] * len(graders) if weights is None else list(weights)
        if len(weights) != len(graders):
            raise ValueError(f"got {len(weights)} weights for {len(graders)} graders")
        for i, weight in enumerate(weights):
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise ValueError(f"weights[{i}] must be a finite number, got {weight!r}")
            if weight <= 0:
                raise ValueError(f"weights[{i}] must be > 0, got {weight!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        self.graders = graders
        self.weights = [float(w) for w in weights]
        self.__name__ = name

    def __repr__(self) -> str:
        return f"MultiGrader({self.graders!r}, weights={self.weights!r}, name={self.__name__!r})"

    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] | None = None,
        completion_ids: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> list[Reward]:
        n = len(completions) if completions is not None else 0
        per_grader = []
        for grader in self.graders:
            rewards = list(grader(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs))
            if len(rewards) != n:
                name = getattr(grader, "__name__", type(grader).__name__)
                raise ValueError(f"grader {name!r} returned {len(rewards)} rewards for {n} completions")
            per_grader.append(rewards)
        return [self._combine([rewards[i] for rewards in per_grader]) for i in range(n)]

    def _combine(self, rewards: list[Reward]) -> Reward:
        total = weight_sum = 0.0
        for reward, weight in zip(rewards, self.weights):
            if reward is None or (isinstance(reward, float) and math.isnan(reward)):
                continue
            total += weight * float(reward)
            weight_sum += weight
        return total / weight_sum if weight_sum > 0 else None


def default_grader(task: str | None = None) -> Grader:
    """A sensible grader for ``task``.

    A reasoning-gym task name gives ``ReasoningGymScorer(task)``; ``None`` gives ``ReasoningGymScorer()``, which
    reads each sample's task from the ``task`` column (the format of ``trl_ext.data.rl_dataset``). Any other name
    raises ``ValueError``: pick ``ExactMatch``, ``NumericMatch`` or another grader explicitly.

    Example:
        >>> default_grader("countdown")
        ReasoningGymScorer(name='reasoning_gym')
    """
    if task is None or task in _reasoning_gym_tasks():
        return ReasoningGymScorer(task)
    raise ValueError(
        f"no default grader for task {task!r} (not a reasoning-gym task); use ExactMatch, NumericMatch or "
        "another grader from trl_ext.rewards"
    )
