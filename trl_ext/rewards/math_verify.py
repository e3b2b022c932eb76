"""``MathVerify``: our answer extraction and numeric equivalence, with Hugging Face's ``math-verify`` for the rest.

``math-verify`` (PyPI ``math-verify``, the package behind TRL's ``accuracy_reward``) parses LaTeX and plain
answers into sympy and checks equivalence (``2\\sqrt{2}`` = ``\\sqrt{8}``, ``\\frac{2}{4}`` = ``\\frac{1}{2}``). It
is an optional dependency: ``pip install 'trl-ext[math]'`` (or ``pip install math-verify``).

Example:
    >>> grader = MathVerify()
    >>> grader(completions=["so \\\\boxed{2\\\\sqrt{2}}", "The answer is 72.", "#### 5"],
    ...        answer=["\\\\sqrt{8}", "She sold 24 + 48 = <<24+48=72>>72.\\n#### 72", "6"])
    [1.0, 1.0, 0.0]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from .extract import _stated, numbers_match, reference_answer
from .graders import _ABS_TOL, _REL_TOL, Reward, _ToleranceGrader

__all__ = ["MathVerify", "is_math_verify_available", "math_verify_match"]

logger = logging.getLogger(__name__)


def is_math_verify_available() -> bool:
    """Whether the ``math-verify`` package can be imported."""
    try:
        import math_verify  # noqa: F401
    except ImportError:
        return False
    return True


def _require_math_verify() -> None:
    if not is_math_verify_available():
        raise ImportError(
            "MathVerify needs the `math-verify` package: `pip install 'trl-ext[math]'` (or `pip install math-verify`)."
        )


def _timeouts() -> int | None:
    """math-verify's timeouts use ``signal.alarm``, which only works in the main thread: none elsewhere."""
    return 5 if threading.current_thread() is threading.main_thread() else None


@lru_cache(maxsize=4096)
def _mv_parse(text: str, timeout: int | None) -> tuple:
    """math-verify's parse of ``text`` (LaTeX and plain expressions); ``()`` if nothing parses."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    config = [LatexExtractionConfig(), ExprExtractionConfig()]
    latex_first = any(ch in text for ch in "\\^{") and "$" not in text
    for candidate in ((f"${text}$", text) if latex_first else (text, f"${text}$")):
        try:
            parsed = parse(candidate, extraction_config=config, parsing_timeout=timeout)
        except Exception:  # noqa: BLE001 - math-verify may raise on odd input; treat as "does not parse"
            parsed = []
        if parsed:
            return tuple(parsed)
    return ()


def _mv_verify(gold: tuple, target: tuple, timeout: int | None) -> bool:
    from math_verify import verify

    try:
        return bool(verify(list(gold), list(target), timeout_seconds=timeout))
    except Exception:  # noqa: BLE001
        return False


class MathVerify(_ToleranceGrader):
    """1.0 if the answer equals the reference numerically or symbolically, else 0.0.

    Per sample:

    1. the answer is extracted from the completion as for every grader (:func:`~trl_ext.rewards.extract_answer`:
       ``#### N``, ``\\\\boxed{}``, "the answer is", last number) and the reference is reduced to the answer it
       states (:func:`~trl_ext.rewards.reference_answer`: GSM8K rationales, ``\\\\boxed{}``, "The answer is N");
    2. if both state a number, they are compared as :class:`~trl_ext.rewards.NumericMatch` does (fractions,
       decimals, percentages, ``rel_tol`` / ``abs_tol``);
    3. otherwise math-verify parses both (LaTeX or plain expressions) and decides with sympy; if our extraction
       found nothing, math-verify's own extraction on the whole completion is used.

    A reference that neither we nor math-verify can parse gives ``None`` (not applicable). math-verify's time
    limits (5 s) apply in the main thread; in other threads it runs without them, as TRL's ``accuracy_reward``.

    Args:
        rel_tol, abs_tol: numeric tolerance of step 2 (``math.isclose``).
        answer_column, extract, name: as for :class:`~trl_ext.rewards.Grader`.
    """

    default_name = "math_verify"

    def __init__(self, rel_tol: float = _REL_TOL, abs_tol: float = _ABS_TOL, **kwargs: Any) -> None:
        _require_math_verify()
        super().__init__(rel_tol, abs_tol, **kwargs)

    def _safe_score(self, completion: Any, reference: Any, row: dict[str, Any]) -> Reward:
        row = {**row, "_completion": completion}
        return super()._safe_score(completion, reference, row)

    def score(self, prediction: str | None, reference: str | None, row: dict[str, Any]) -> float | None:
        ref_text = reference_answer(reference) if self.extract else reference
        if not ref_text:
            return None
        ref_number = _stated(ref_text, True)
        pred_number = _stated(prediction, False) if prediction else None
        if ref_number is not None and pred_number is not None:
            return float(numbers_match(pred_number, ref_number, self.rel_tol, self.abs_tol))
        timeout = _timeouts()
        gold = _mv_parse(ref_text, timeout)
        if not gold:
            return None if ref_number is None else 0.0
        target = _mv_parse(prediction, timeout) if prediction else ()
        if not target:
            from .extract import completion_text

            text = completion_text(row.get("_completion"))
            target = _mv_parse(text, timeout) if text.strip() else ()
        if not target:
            return 0.0
        return float(_mv_verify(gold, target, timeout))


_MATH_VERIFY: MathVerify | None = None


def math_verify_match(completions: Sequence[Any], **kwargs: Any) -> list[Reward]:
    """:class:`MathVerify` with its defaults as a plain reward function (``trl_ext.rewards.math_verify_match``).

    The reference is read from the ``answer`` column, else from ``solution`` (the column of TRL's
    ``accuracy_reward`` and of MATH-style datasets). Needs ``math-verify``.

    Example:
        >>> math_verify_match(completions=["\\\\boxed{\\\\frac{2}{4}}"], solution=["\\\\frac{1}{2}"])
        [1.0]
    """
    global _MATH_VERIFY
    if _MATH_VERIFY is None:
        _MATH_VERIFY = MathVerify(answer_column=("answer", "solution"), name="math_verify_match")
    return _MATH_VERIFY(completions=completions, **kwargs)


math_verify_match.answer_column = ("answer", "solution")  # read by the trainers' probe to name the column in errors
