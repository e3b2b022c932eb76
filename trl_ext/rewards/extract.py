"""Answer extraction from chains of thought, and completion / number parsing helpers.

None of these functions raise on bad input: garbage in gives ``""`` or ``None`` out, so a reward function
built on them can never crash a training step because of what a model generated.

Example:
    >>> extract_answer("3 + 4 = 7\\n#### 7")
    '7'
    >>> extract_answer("so we get \\\\boxed{\\\\frac{1}{2}}")
    '\\\\frac{1}{2}'
    >>> extract_answer("The answer is **-1,234**.")
    '-1234'
    >>> extract_answer("I had 3 apples and ate 1,200 grapes")
    '1200'
    >>> completion_text([{"role": "assistant", "content": "#### 5"}])
    '#### 5'
    >>> parse_number("3/4")
    0.75
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["completion_text", "extract_answer", "parse_number"]

# "#### X" up to the end of its line (GSM8K / ANSWER_FORMAT_INSTRUCTION style).
_HASH_LINE = re.compile(r"####[ \t]*([^\n]*?)[ \t]*$", re.MULTILINE)
# "The answer is X", "the final answer is: X", "Final answer: X", "Answer: X" (case-insensitive, rest of the line).
_ANSWER_PHRASE = re.compile(
    r"\b(?:final\s+answer|answer)\s*(?:is\s*:?|:)[ \t]*(.+)",
    re.IGNORECASE,
)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
# A number: optional minus (only where it cannot be a binary operator), thousands groups or plain digits,
# optional decimals, optional "/denominator".
_NUMBER = re.compile(
    r"(?:(?<![\w)\]}.])-)?(?<![\w.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?(?!\d)(?!,\d{3})"
)
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_FRAC_LATEX = re.compile(r"^([+-]?)\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}$")
_UNICODE_MINUS = str.maketrans({"\u2212": "-", "\u2013": "-", "\u00a0": " "})


def completion_text(completion: Any) -> str:
    """Text of one TRL completion: a ``str`` (standard format) or a list of messages (conversational format).

    For a message list, the content of the last ``assistant`` message is used (the last message of any role
    if none is marked ``assistant``); content given as a list of ``{"type": "text", "text": ...}`` parts is
    joined. Anything else (``None``, numbers, malformed dicts) gives ``""``.

    Example:
        >>> completion_text("#### 4")
        '#### 4'
        >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "hi"}]}])
        'hi'
        >>> completion_text({"role": "assistant"})
        ''
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        messages = [m for m in completion if isinstance(m, dict)]
        assistant = [m for m in messages if m.get("role") == "assistant"]
        chosen = assistant or messages
        return _content_text(chosen[-1].get("content")) if chosen else ""
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return "".join(p for p in parts if isinstance(p, str))
    return ""


def extract_answer(text: Any) -> str | None:
    """Final answer of a chain of thought, or ``None`` if there is none.

    Routes, in priority order (the first that finds something wins):

    1. the last ``#### X`` → ``X`` (the rest of its line);
    2. the last ``\\boxed{X}`` (nested braces are balanced) → ``X``;
    3. the last "the (final) answer is X" / "Final answer: X" / "Answer: X" (case-insensitive) → ``X`` up to
       the end of its line or sentence;
    4. the last number in the text (ints, decimals, negatives, fractions ``3/4``; thousands separators are
       removed: ``1,234`` → ``"1234"``).

    Routes 1–3 return the full answer text (so an expression such as ``94*4 - 61 - 6`` survives), cleaned of
    markdown bold/italics, ``$`` signs, ``\\(...\\)`` and a trailing period; an answer that is just a number
    with thousands separators loses them (``1,234`` → ``1234``). Only route 4 always returns a bare number.

    Example:
        >>> extract_answer("#### 94*4 - 61 - 6")
        '94*4 - 61 - 6'
        >>> extract_answer("Final answer: $12$.")
        '12'
        >>> extract_answer("no digits here") is None
        True
    """
    if not isinstance(text, str) or not text.strip():
        return None
    text = text.translate(_UNICODE_MINUS)
    for route in (_from_hash_line, _from_boxed, _from_answer_phrase, _last_number):
        answer = route(text)
        if answer:
            return answer
    return None


def _from_hash_line(text: str) -> str | None:
    matches = [_clean(m.group(1)) for m in _HASH_LINE.finditer(text)]
    matches = [m for m in matches if m]
    return matches[-1] if matches else None


def _from_boxed(text: str) -> str | None:
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        inner = _balanced(text, start)
        if inner is not None and _clean(inner):
            return _clean(inner)
    return None


def _balanced(text: str, start: int) -> str | None:
    """Content from ``start`` (just after an opening brace) up to its matching closing brace."""
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return None


def _from_answer_phrase(text: str) -> str | None:
    for match in reversed(list(_ANSWER_PHRASE.finditer(text))):
        answer = re.split(r"\.\s", match.group(1), maxsplit=1)[0]  # cut at the end of the sentence
        answer = _clean(answer)
        if answer:
            return answer
    return None


def _last_number(text: str) -> str | None:
    matches = _NUMBER.findall(text)
    return matches[-1].replace(",", "") if matches else None


def _clean(answer: str) -> str:
    """Strip markdown emphasis, math delimiters, a wrapping ``\\boxed{}`` and a trailing period."""
    answer = answer.strip()
    boxed = _from_boxed(answer) if _BOXED.search(answer) else None
    if boxed:
        answer = boxed
    previous = None
    while previous != answer:
        previous = answer
        answer = answer.strip().strip("*_`").strip()
        answer = answer.replace("$", "").replace("\\(", "").replace("\\)", "")
        answer = answer.replace("\\[", "").replace("\\]", "").strip()
        if answer.endswith("."):
            answer = answer[:-1]
    return answer.replace(",", "") if _THOUSANDS.match(answer) else answer


def parse_number(s: Any) -> float | None:
    """``s`` as a finite float, or ``None``.

    Accepts ints/floats and strings such as ``"5"``, ``"-5.0"``, ``"1,234"`` (thousands separators),
    ``"3/4"``, ``"\\frac{3}{4}"``, ``"$12"``, ``"50%"`` (→ 50.0) and a trailing period. ``bool``, NaN and
    infinities give ``None``.

    Example:
        >>> parse_number("-1,234.5")
        -1234.5
        >>> parse_number("\\\\frac{1}{4}")
        0.25
        >>> parse_number("twelve") is None
        True
    """
    if isinstance(s, bool):
        return None
    if isinstance(s, (int, float)):
        value = float(s)
        return value if math.isfinite(value) else None
    if not isinstance(s, str):
        return None
    text = s.translate(_UNICODE_MINUS).strip().replace("$", "").replace(" ", "")
    text = text.rstrip(".").rstrip("%")
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    latex = _FRAC_LATEX.match(text)
    if latex:
        text = f"{latex.group(1)}{latex.group(2)}/{latex.group(3)}"
    return _to_float(text)


def _to_float(text: str) -> float | None:
    try:
        if "/" in text:
            num, den = text.split("/")
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return value if math.isfinite(value) else None
