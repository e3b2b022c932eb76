"""Graders in TRL's reward-function convention.

Every grader is a callable object::

    grader(prompts=None, completions=None, completion_ids=None, **dataset_columns) -> list[float | None]

with a settable ``__name__`` (TRL logs ``rewards/<__name__>/mean``). Completions may be strings (standard
format) or message lists (conversational format). A sample whose reference (the ``answer`` column by default)
is missing, ``None`` or empty gets ``None`` ("not applicable"; TRL turns it into NaN and ignores it). A reference
may be a whole rationale (GSM8K's ``… #### 72``, ``\\boxed{42}``, "The answer is 7"): graders compare against the
answer it states (:func:`~trl_ext.rewards.reference_answer`). Garbage model output gets ``0.0``; a grader never
raises because of what a model generated.

For TRL's command line (``trl grpo --reward_funcs trl_ext.rewards.numeric_match``) the module-level functions
:func:`exact_match` and :func:`numeric_match` wrap the graders with their defaults.

Example:
    >>> from trl_ext.rewards import ExactMatch, FormatGrader, MultiGrader
    >>> grader = MultiGrader([ExactMatch(), FormatGrader()], weights=[0.8, 0.2])
    >>> grader(completions=["2 + 2 = 4\\n#### 4", "#### 5", "4"], answer=["4", "4", "4"])
    [1.0, 0.2, 0.8]
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal

from .extract import _stated, completion_text, extract_answer, numbers_match, parse_number, reference_answer

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
    "exact_match",
    "numeric_match",
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
    """The number a free-form model answer states (:func:`~trl_ext.rewards.extract.stated_number`)."""
    parsed = _stated(prediction, False)
    return None if parsed is None else parsed[0]


def _reference_number(reference: str | None) -> tuple[float, bool] | None:
    """``(value, is_percent)`` of a reference that states a number (a bare number, or a rationale ending in
    ``#### N`` / ``\\boxed{N}`` / "The answer is N"), else ``None``."""
    return _stated(reference_answer(reference), True)


def _name_value(value: Any) -> str:
    """A parameter value as a metric-key-safe string (letters, digits, ``_ . -``)."""
    if isinstance(value, float):
        value = f"{value:g}"
    elif isinstance(value, (list, tuple)):
        value = "-".join(_name_value(v) for v in value)
    return re.sub(r"[^\w.-]+", "-", str(value)).strip("-") or "x"


def parameter_name(base: str, **params: tuple[Any, Any]) -> str:
    """``base`` followed by ``_<param>_<value>`` for every parameter given as ``(value, default)`` whose value is
    not its default, so that two graders of one class with different settings log under distinct TRL metric keys
    (``rewards/<name>/mean``). Only letters, digits, ``_``, ``.`` and ``-`` are used (safe for TensorBoard, MLflow
    and W&B).

    Example:
        >>> parameter_name("numeric_match", rel_tol=(0.01, 1e-06), abs_tol=(1e-09, 1e-09))
        'numeric_match_rel_tol_0.01'
    """
    parts = [base]
    for key, (value, default) in params.items():
        if value != default:
            parts.append(f"{key}_{_name_value(value)}")
    return "_".join(parts)


def _check_tolerance(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


class Grader:
    """Base class: reads the reference from ``answer_column`` and scores each completion with :meth:`score`.

    Args:
        answer_column: dataset column holding the reference answer, or a sequence of candidate columns (the first
            one present in the batch is used, e.g. ``("answer", "solution")``).
        extract: grade the answer extracted by :func:`~trl_ext.rewards.extract_answer` (``True``) or the whole
            completion text (``False``).
        name: value of ``__name__`` (the name TRL logs under); defaults to the class's ``default_name`` followed by
            the parameters that differ from their defaults (``NumericMatch(rel_tol=0.01)`` →
            ``numeric_match_rel_tol_0.01``), so that two graders of one class get distinct metric keys.

    Subclasses implement ``score(prediction, reference, row) -> float | None`` where ``prediction`` is the
    extracted answer (``None`` if there is none) or the whole text, ``reference`` is a non-empty ``str`` and ``row``
    maps each dataset column (and ``prompt``) to this sample's value; returning ``None`` means "not applicable".
    An exception inside ``score`` is logged and gives 0.0, as does a non-finite score.
    """

    default_name = "grader"
    requires_reference = True
    _default_extract = True

    def __init__(
        self, *, answer_column: str | Sequence[str] = "answer", extract: bool = True, name: str | None = None
    ) -> None:
        columns = (answer_column,) if isinstance(answer_column, str) else tuple(answer_column or ())
        if not columns or not all(isinstance(c, str) and c for c in columns):
            raise ValueError(f"answer_column must be a non-empty str or a sequence of them, got {answer_column!r}")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        self.answer_column = answer_column if isinstance(answer_column, str) else columns
        self._answer_columns = columns
        self.extract = bool(extract)
        self._explicit_name = name
        # subclasses call _rename() once their own parameters are set
        self.__name__ = name or parameter_name(self.default_name, **Grader._name_params(self))
        self._warned = False

    def _name_params(self) -> dict[str, tuple[Any, Any]]:
        """``{parameter: (value, default)}`` that the default ``__name__`` reflects; subclasses extend it."""
        return {
            "answer_column": (self.answer_column, "answer"),
            "extract": (self.extract, self._default_extract),
        }

    def _parameter_name(self) -> str:
        return parameter_name(self.default_name, **self._name_params())

    def _rename(self) -> None:
        """Recompute the default ``__name__`` once a subclass has set its own parameters."""
        if self._explicit_name is None:
            self.__name__ = self._parameter_name()

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
        for column in self._answer_columns:
            values = columns.get(column)
            if values is not None:
                return values
        if self.requires_reference and not self._warned and n:
            logger.warning(
                "%s: column %s missing or of the wrong length; every sample is graded None.",
                self.__name__,
                " / ".join(repr(c) for c in self._answer_columns),
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


_REL_TOL, _ABS_TOL = 1e-6, 1e-9  # the default tolerances of the graders that compare numbers


class _ToleranceGrader(Grader):
    """A grader that compares numbers within ``math.isclose(rel_tol, abs_tol)`` (:class:`NumericMatch`,
    :class:`~trl_ext.rewards.MathVerify`): both tolerances checked (finite, >= 0) and named in the default
    ``__name__`` when they differ from the defaults."""

    def __init__(self, rel_tol: float = _REL_TOL, abs_tol: float = _ABS_TOL, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rel_tol = _check_tolerance("rel_tol", rel_tol)
        self.abs_tol = _check_tolerance("abs_tol", abs_tol)
        self._rename()

    def _name_params(self) -> dict[str, tuple[Any, Any]]:
        return {**super()._name_params(), "rel_tol": (self.rel_tol, _REL_TOL), "abs_tol": (self.abs_tol, _ABS_TOL)}


class ExactMatch(Grader):
    """1.0 if the answer equals the reference after normalisation, else 0.0.

    Normalisation: strip, case-fold (unless ``case_sensitive``), collapse whitespace; with ``numeric=True``
    (default) two answers that both parse as numbers are compared as numbers (``"5.0" == "5"``,
    ``"1,234" == "1234"``, ``"1/2" == "0.5"``, ``"seven" == "7"``). A reference that is a rationale is reduced to
    the answer it states (:func:`~trl_ext.rewards.reference_answer`: ``#### N``, ``\\boxed{N}``, "The answer is N").

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
        self._rename()

    def _name_params(self) -> dict[str, tuple[Any, Any]]:
        return {
            **super()._name_params(),
            "numeric": (self.numeric, True),
            "case_sensitive": (self.case_sensitive, False),
        }

    def score(self, prediction: str | None, reference: str | None, row: dict[str, Any]) -> float:
        if prediction is None or reference is None:
            return 0.0
        if self.extract:
            reference = reference_answer(reference) or reference
        if self.numeric:
            pred_value, ref_value = parse_number(prediction), parse_number(reference)
            if pred_value is not None and ref_value is not None:
                return float(pred_value == ref_value)
        if self.case_sensitive:
            return float(" ".join(prediction.split()) == " ".join(reference.split()))
        return float(_normalize(prediction) == _normalize(reference))


class NumericMatch(_ToleranceGrader):
    """1.0 if the stated number equals the reference within ``math.isclose(rel_tol, abs_tol)``, else 0.0.

    The prediction is the number the extracted answer states (:func:`~trl_ext.rewards.stated_number`:
    ``"18 apples"`` → 18, ``"x = 5"`` → 5, ``"2^{10}"`` → 1024, ``"5 or 6"`` → none). The reference may be a
    number (``"1,000"``, ``"3/4"``, ``"\\frac{1}{2}"``, ``"25%"``, ``"seven"``) or a rationale stating one
    (GSM8K's ``… #### 72``, ``\\boxed{42}``, "The answer is 7"); fractions, decimals and percentages are compared
    as numbers, and ``p %`` matches ``p`` and ``p / 100``. A reference that states no number gives ``None`` (not
    applicable), so the grader can be mixed with others on datasets of expression answers.

    Example:
        >>> grader = NumericMatch(rel_tol=0.01)
        >>> grader(completions=["#### 100.5", "#### 18 apples", "#### 7"], answer=["100", "18", "8"])
        [1.0, 1.0, 0.0]
        >>> grader(completions=["#### 3"], answer=["x + 1"])
        [None]
    """

    default_name = "numeric_match"

    def score(self, prediction: str | None, reference: str | None, row: dict[str, Any]) -> float | None:
        ref = _reference_number(reference)
        if ref is None:
            return None
        pred = _stated(prediction, False) if prediction is not None else None
        if pred is None:
            return 0.0
        return float(numbers_match(pred, ref, self.rel_tol, self.abs_tol))


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
    _default_extract = False

    def __init__(self, *, whole_word: bool = True, extract: bool = False, **kwargs: Any) -> None:
        super().__init__(extract=extract, **kwargs)
        self.whole_word = bool(whole_word)
        self._rename()

    def _name_params(self) -> dict[str, tuple[Any, Any]]:
        return {**super()._name_params(), "whole_word": (self.whole_word, True)}

    def score(self, prediction: str | None, reference: str | None, row: dict[str, Any]) -> float:
        if prediction is None or reference is None:
            return 0.0
        reference = reference_answer(reference) or reference  # a rationale reference: look for the answer it states
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
        self._rename()

    def _name_params(self) -> dict[str, tuple[Any, Any]]:
        return {**super()._name_params(), "method": (self.method, "ratio")}

    def score(self, prediction: str | None, reference: str | None, row: dict[str, Any]) -> float | None:
        if self.method == "numeric":
            return self._numeric(prediction, reference)
        if prediction is None or reference is None:
            return 0.0
        if self.extract:
            reference = reference_answer(reference) or reference
        return difflib.SequenceMatcher(None, _normalize(prediction), _normalize(reference)).ratio()

    @staticmethod
    def _numeric(prediction: str | None, reference: str | None) -> float | None:
        ref = _reference_number(reference)
        if ref is None:
            return None
        ref_value = ref[0]
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
        self._rename()

    def _name_params(self) -> dict[str, tuple[Any, Any]]:
        # the task is left out on purpose: default_grader(task) keeps logging under `rewards/reasoning_gym/mean`
        return {
            **super()._name_params(),
            "task_column": (self.task_column, "task"),
            "metadata_column": (self.metadata_column, "metadata"),
        }

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
        self._rename()

    def _name_params(self) -> dict[str, tuple[Any, Any]]:
        pattern = self.pattern.pattern
        digest = hashlib.sha1(pattern.encode()).hexdigest()[:8]
        return {
            **super()._name_params(),
            "pattern": (digest if pattern != r"####\s*\S.*" else None, None),
            "partial_credit": (self.partial_credit, 0.0),
        }

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


# ------------------------------------------------------------------------------------------ module-level functions
# TRL's `trl grpo --reward_funcs my_pkg.module.func` imports a *function* by its dotted path. These read the reference
# from the `answer` column, or from `solution` (the column name of TRL's `accuracy_reward` and of MATH-style
# datasets) when there is no `answer` column.

_EXACT_MATCH = ExactMatch(answer_column=("answer", "solution"), name="exact_match")
_NUMERIC_MATCH = NumericMatch(answer_column=("answer", "solution"), name="numeric_match")


def exact_match(completions: Sequence[Any], **kwargs: Any) -> list[Reward]:
    """:class:`ExactMatch` with its defaults as a plain reward function (``trl_ext.rewards.exact_match``).

    The reference is read from the ``answer`` column, else from ``solution``.

    Example:
        >>> exact_match(completions=["#### Paris", "#### 5.0"], answer=["paris", "5"])
        [1.0, 1.0]
    """
    return _EXACT_MATCH(completions=completions, **kwargs)


exact_match.answer_column = _EXACT_MATCH.answer_column  # read by the trainers' probe to name the column in errors


def numeric_match(completions: Sequence[Any], **kwargs: Any) -> list[Reward]:
    """:class:`NumericMatch` with its defaults as a plain reward function (``trl_ext.rewards.numeric_match``).

    The reference is read from the ``answer`` column, else from ``solution``; it may be a GSM8K rationale.

    Example:
        >>> numeric_match(completions=["The answer is 72.", "#### 7"], solution=["She sold 24.\\n#### 72", "8"])
        [1.0, 0.0]
    """
    return _NUMERIC_MATCH(completions=completions, **kwargs)


numeric_match.answer_column = _NUMERIC_MATCH.answer_column
