"""Answer extraction from chains of thought and references, and number parsing helpers.

None of these functions raise on bad input: garbage in gives ``""`` or ``None`` out, so a reward function
built on them can never crash a training step because of what a model generated.

Example:
    >>> extract_answer("3 + 4 = 7\\n#### 7")
    '7'
    >>> extract_answer("so we get \\\\boxed{\\\\frac{1}{2}}")
    '\\\\frac{1}{2}'
    >>> extract_answer("The answer is **-1,234**.")
    '-1234'
    >>> extract_answer("The answer is 5. Wait... so the answer is 6.")
    '6'
    >>> extract_answer("I had 3 apples and ate 1,200 grapes")
    '1200'
    >>> extract_answer("The area is 14 m^2.")
    '14'
    >>> reference_answer("She sold 48/2 = <<48/2=24>>24 clips.\\n#### 72")
    '72'
    >>> completion_text([{"role": "assistant", "content": "#### 5"}])
    '#### 5'
    >>> parse_number("3/4")
    0.75
    >>> stated_number("-$50 (a loss)")
    -50.0
"""

from __future__ import annotations

import ast
import math
import re
from functools import lru_cache
from typing import Any

from ..text import completion_text  # re-exported: its home is trl_ext.text

__all__ = [
    "completion_text",
    "extract_answer",
    "parse_number",
    "reference_answer",
    "stated_number",
]

# ---------------------------------------------------------------------------------------------------- patterns

# Unicode minus / dashes → "-", exotic spaces → " " (narrow no-break U+202F and thin U+2009 separate thousands).
_UNICODE = str.maketrans(
    {"\u2212": "-", "\u2013": "-", "\u2012": "-", "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u2026": "..."}
)
# LaTeX spacing and grouping inside numbers: 1{,}000 → 1,000, 10\,000 → 10 000, \! → "".
_LATEX_SPACING = [("{,}", ","), ("\\,", " "), ("\\;", " "), ("\\:", " "), ("\\ ", " "), ("\\!", "")]

# "#### X" up to the end of its line (GSM8K / ANSWER_FORMAT_INSTRUCTION style).
_HASH_LINE = re.compile(r"####[ \t]*([^\n]*?)[ \t]*$", re.MULTILINE)
# The start of "the answer is X", "the final answer is: X", "Final answer: X", "Answer: X", "answer should be X".
_ANSWER_PHRASE = re.compile(
    r"\banswer\s*(?:(?:is|should\s+be|would\s+be|must\s+be|will\s+be)\s*:?|:|=)[ \t]*",
    re.IGNORECASE,
)
# Where a stated answer ends: a sentence end, a clause (", because", "; …", " since"), or the line end.
# A comma ends it only before a connective, so "Paris, France" stays whole.
_ANSWER_END = re.compile(
    r"\.(?:\s|$)|;|\n|,?\s+(?:because|since|as|which|so|and\s+then|but|that|i\.e\.|meaning|given|for)\b",
    re.IGNORECASE,
)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mbox|mathbf)\s*\{([^{}]*)\}")

_CURRENCY = r"(?:\\\$|[$\u20ac\u00a3\u00a5])"
_DIGITS = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d{1,3}(?: \d{3})+(?![\d,])|\d+)(?:\.\d+)?|\.\d+"
_TIMES_TEN = r"\s*(?:\\times|\\cdot|\u00d7|\*|x)\s*10\s*\^\s*\{?\s*[+-]?\d+\s*\}?"
# A number in running text: optional sign attached to it or to its currency symbol, currency, digits (with
# thousands separated by commas or single spaces), decimals, exponent (e3 or × 10^3), "/denominator", percent.
# It never starts right after a letter, a "." or a "^" (so the 2 of "m^2" and the 10 of "x10" are no numbers).
_NUMBER = re.compile(
    rf"(?:(?<![\w)\]}}.^-])(?P<sign>-))?(?P<cur>{_CURRENCY}(?P<sign2>-)?)?"
    rf"(?<![\w.^{{])(?<!\^\{{)(?P<num>{_DIGITS})"
    rf"(?P<exp>[eE][+-]?\d+)?(?P<times>{_TIMES_TEN})?(?P<den>/\d+)?(?!\d)"
    r"(?P<pct>\s?(?:%|\\%|percent\b))?"
)
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_SPACE_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?: \d{3})+(?:\.\d+)?$")
_FRAC_LATEX = re.compile(r"^([+-]?)\\[dt]?frac\s*\{([^{}]+)\}\s*\{([^{}]+)\}$")
_MIXED = re.compile(r"^([+-]?)(\d+)\s+(\d+)\s*/\s*(\d+)$")
_SCI = re.compile(r"^([+-]?(?:\d+(?:\.\d+)?|\.\d+))" + _TIMES_TEN.replace(r"[+-]?\d+", r"([+-]?\d+)") + "$")
_PERCENT = re.compile(r"\s*(?:\\?%|percent)$", re.IGNORECASE)
# "5 or 6", "5, or maybe 6", "5 to 6", "5 ± 1": hedged answers state no number.
_HEDGE = re.compile(
    r"\d\s*,?\s*(?:or|and/or|to)\s+(?:maybe\s+|perhaps\s+|possibly\s+)?[-$]?\d|\d\s*(?:\u00b1|\+/-)", re.IGNORECASE
)

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
_WORD = "|".join(sorted([*_UNITS, *_TENS, *_SCALES], key=len, reverse=True))
# A run of number words ("one hundred and five", "twenty-one"), optionally after "negative"/"minus".
_NUMBER_WORDS = re.compile(
    rf"\b(?:(?:negative|minus)\s+)?(?:{_WORD})(?:(?:[\s-]+|\s+and\s+)(?:{_WORD}))*\b", re.IGNORECASE
)


# ---------------------------------------------------------------------------------------------------- extraction


def _normalize_text(text: str) -> str:
    text = text.translate(_UNICODE)
    for old, new in _LATEX_SPACING:
        text = text.replace(old, new)
    return text


def extract_answer(text: Any) -> str | None:
    """Final answer of a chain of thought, or ``None`` if there is none.

    Routes, in priority order (the first that finds something wins):

    1. the last ``#### X`` → ``X`` (the rest of its line);
    2. the last ``\\boxed{X}`` / ``\\fbox{X}`` (nested braces are balanced) → ``X``;
    3. the last "the (final) answer is X" / "answer should be X" / "Final answer: X" / "Answer: X"
       (case-insensitive) → ``X`` up to the end of its sentence or clause (", because …", "; …", " since …"),
       so a self-correction ("The answer is 5. Wait… so the answer is 6.") gives the later answer;
    4. the last number in the text: ints, decimals, thousands separated by commas or single spaces
       (``1 000``), a sign attached to a currency symbol (``-$50`` → ``-50``), scientific notation
       (``4.2e1``, ``1.5\\times10^{3}`` → ``1.5e3``), fractions ``3/4``, a percent sign; a number right after
       ``^`` is an exponent, not an answer (``14 m^2`` → ``14``); an inline ``\\frac{1}{6}`` → ``1/6``. If the
       text has no digits, the last run of number words ("seven", "twenty-one"; a lone "one" is not counted).

    Before that, Unicode minus signs and dashes become ``-``, and LaTeX number spacing is removed
    (``1{,}000``, ``10\\,000``). Routes 1–3 return the full answer text (so an expression such as
    ``94*4 - 61 - 6`` survives), cleaned of markdown bold/italics, ``$`` math delimiters, ``\\(...\\)``,
    ``\\text{}`` and a trailing period; an answer that is just a number with thousands separators loses them
    (``1,234`` → ``1234``). Only route 4 always returns a bare number.

    Example:
        >>> extract_answer("#### 94*4 - 61 - 6")
        '94*4 - 61 - 6'
        >>> extract_answer("Final answer: $12$.")
        '12'
        >>> extract_answer("The answer is 30, because 5 * 6 = 30.")
        '30'
        >>> extract_answer("She lost -$50.")
        '-50'
        >>> extract_answer("no digits here") is None
        True
    """
    if not isinstance(text, str) or not text.strip():
        return None
    text = _normalize_text(text)
    for route in (_from_hash_line, _from_boxed, _from_answer_phrase, _last_number):
        answer = route(text)
        if answer:
            return answer
    return None


def reference_answer(reference: Any) -> str | None:
    """The answer a reference states: the reference itself if it is already an answer, else the answer its
    rationale ends with.

    A reference that parses as a number stays as it is (``"1,000"``, ``"25%"``). Otherwise an explicit anchor
    is looked for, as in :func:`extract_answer` routes 1–3: a GSM8K rationale ending in ``#### 72`` (with its
    ``<<48/2=24>>`` calculator annotations), ``\\boxed{42}``, "The answer is 7". Without an anchor the
    reference is only cleaned of math delimiters and markdown (``$\\frac{1}{2}$`` → ``\\frac{1}{2}``): the
    last number of a free-form reference is never guessed, so ``"x + 1"`` stays ``"x + 1"``.

    Example:
        >>> reference_answer("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\\n#### 72")
        '72'
        >>> reference_answer("Therefore, the final answer is $\\\\boxed{7}$.")
        '7'
        >>> reference_answer("$\\\\frac{1}{2}$")
        '\\\\frac{1}{2}'
        >>> reference_answer("Paris")
        'Paris'
    """
    if reference is None:
        return None
    if isinstance(reference, bool):
        return str(reference)
    if isinstance(reference, (int, float)):
        return None if isinstance(reference, float) and not math.isfinite(reference) else _format_number(reference)
    if not isinstance(reference, str):
        return None
    return _reference_answer(reference)


@lru_cache(maxsize=65536)
def _reference_answer(reference: str) -> str | None:
    stripped = reference.strip()
    if not stripped:
        return None
    if parse_number(stripped) is not None:
        return stripped
    text = _normalize_text(stripped)
    for route in (_from_hash_line, _from_boxed, _from_answer_phrase):
        answer = route(text)
        if answer:
            return answer
    return _clean(text) or None


def _format_number(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)


def _from_hash_line(text: str) -> str | None:
    matches = [_clean(m.group(1)) for m in _HASH_LINE.finditer(text)]
    matches = [m for m in matches if m]
    return matches[-1] if matches else None


def _from_boxed(text: str) -> str | None:
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts[-32:]):  # bounded: each unbalanced start scans to the end of the text
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
        rest = text[match.end() :]
        # markdown / math wrappers may enclose a sentence end ("**42.**"): cut after the first clause
        end = _ANSWER_END.search(rest, 1) if rest[:1] in "*_$" else _ANSWER_END.search(rest)
        answer = _clean(rest[: end.start()] if end else rest)
        if answer:
            return answer
    return None


_FRAC_INLINE = re.compile(
    r"(?<![\w)\]}.^-])(?P<sign>-)?\\[dt]?frac\s*\{\s*(?P<num>-?\d+(?:\.\d+)?)\s*\}\s*\{\s*(?P<den>\d+(?:\.\d+)?)\s*\}"
)


def _last_number(text: str) -> str | None:
    matches = list(_NUMBER.finditer(text))
    fracs = list(_FRAC_INLINE.finditer(text))
    if fracs and (not matches or fracs[-1].end() > matches[-1].end()):
        frac = fracs[-1]
        sign = "-" if frac.group("sign") else ""
        return f"{sign}{frac.group('num')}/{frac.group('den')}"
    if matches:
        return _number_token(matches[-1])
    words = [m for m in _NUMBER_WORDS.finditer(text) if m.group(0).casefold() != "one" or m.group(0) == text.strip()]
    return words[-1].group(0) if words else None


def _number_token(match: re.Match) -> str:
    """A matched number as a plain token: no currency or separators, ``× 10^k`` as ``ek``, percent kept."""
    sign = "-" if (match.group("sign") or match.group("sign2")) else ""
    num = match.group("num").replace(",", "").replace(" ", "")
    exp = match.group("exp") or ""
    times = match.group("times")
    if times:
        exp = "e" + re.search(r"([+-]?\d+)\s*\}?\s*$", times).group(1)
    den = match.group("den") or ""
    pct = "%" if match.group("pct") else ""
    return f"{sign}{num}{exp}{den}{pct}"


def _clean(answer: str) -> str:
    """Strip markdown emphasis, math delimiters, ``\\text{}``, a wrapping ``\\boxed{}`` and a trailing period."""
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
        answer = _TEXT_WRAPPER.sub(r"\1", answer)
        if answer.endswith("."):
            answer = answer[:-1]
    answer = " ".join(answer.split()) if "\n" not in answer else answer
    return answer.replace(",", "") if _THOUSANDS.match(answer) else answer


# ---------------------------------------------------------------------------------------------------- numbers


def parse_number(s: Any) -> float | None:
    """``s`` as a finite float, or ``None``.

    Accepts ints/floats and strings such as ``"5"``, ``"-5.0"``, ``"1,234"`` / ``"1 234"`` / ``"1{,}234"``
    (thousands separators), ``"3/4"``, ``"1 1/2"`` (a mixed number), ``"\\frac{3}{4}"``, ``"$12"``, ``"-$50"``,
    ``"50%"`` (→ 50.0: the percent sign is dropped, see :func:`stated_number` for percent equivalence),
    ``"4.2e1"``, ``"1.5\\times10^{3}"``, number words (``"seven"``, ``"twenty-one"``, ``"one hundred and five"``,
    ``"negative five"``), Unicode minus signs and a trailing period. ``bool``, NaN and infinities give ``None``.

    Example:
        >>> parse_number("-1,234.5")
        -1234.5
        >>> parse_number("\\\\frac{1}{4}")
        0.25
        >>> parse_number("twenty-one")
        21.0
        >>> parse_number("1.5\\\\times10^{3}")
        1500.0
        >>> parse_number("twelve apples") is None
        True
    """
    if isinstance(s, bool):
        return None
    if isinstance(s, (int, float)):
        value = float(s)
        return value if math.isfinite(value) else None
    if not isinstance(s, str):
        return None
    return _parse_number(s)


@lru_cache(maxsize=65536)
def _parse_number(s: str) -> float | None:
    text = _normalize_text(s).strip()
    if not text:
        return None
    text = _PERCENT.sub("", text.rstrip(".").strip()).strip()
    text = re.sub(r"^([+-]?)\s*" + _CURRENCY + r"\s*([+-]?)", lambda m: "-" if "-" in m.group(0) else "", text)
    text = text.rstrip(".").strip()
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    elif _SPACE_THOUSANDS.match(text):
        text = text.replace(" ", "")
    latex = _FRAC_LATEX.match(text)
    if latex:
        text = f"{latex.group(1)}{latex.group(2)}/{latex.group(3)}"
    mixed = _MIXED.match(text)
    if mixed:
        sign, whole, num, den = mixed.groups()
        if int(den) == 0:
            return None
        value = int(whole) + int(num) / int(den)
        return -value if sign == "-" else value
    sci = _SCI.match(text)
    if sci:
        return _finite(lambda: float(sci.group(1)) * 10.0 ** int(sci.group(2)))
    if text[:1].isalpha() or text[:1] == "-" and text[1:2].isalpha():
        return _parse_words(text)
    return _to_float(re.sub(r"^([+-])\s+", r"\1", text))  # "- 5" is -5; "5 6" and "1 00" are no numbers


def _finite(compute) -> float | None:
    try:
        value = float(compute())
    except (ValueError, ZeroDivisionError, OverflowError, TypeError):
        return None
    return value if math.isfinite(value) else None


def _to_float(text: str) -> float | None:
    if not re.fullmatch(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:/[+-]?\d+(?:\.\d+)?)?", text):
        return None  # float() would also take "nan", "inf", "1_000"
    if "/" in text:
        num, den = text.split("/")
        return _finite(lambda: float(num) / float(den))
    return _finite(lambda: float(text))


def _parse_words(text: str) -> float | None:
    """``"one hundred and five"`` → 105.0; ``None`` unless every word is a number word."""
    words = re.split(r"[\s-]+", text.casefold().strip())
    sign = 1.0
    if words and words[0] in ("negative", "minus", "-"):
        sign, words = -1.0, words[1:]
    words = [w for w in words if w != "and"]
    if not words:
        return None
    total = current = 0
    for word in words:
        if word in _UNITS:
            current += _UNITS[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word == "hundred":
            current = max(current, 1) * 100
        elif word in _SCALES:
            total += max(current, 1) * _SCALES[word]
            current = 0
        else:
            return None
    return sign * float(total + current)


# A whole arithmetic expression of numbers (no letters): "94*4 - 61 - 6", "2^{10}", "10^3", "(3 + 4) \times 2".
_ARITHMETIC = re.compile(r"^[\d\s.+\-*/^()×÷]+$")
_AST_OPS = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow,
            ast.USub, ast.UAdd)


def _arithmetic_value(text: str) -> float | None:
    expr = text.replace("\\times", "*").replace("\\cdot", "*").replace("\\div", "/").replace("{", "(").replace("}", ")")
    expr = expr.replace("×", "*").replace("÷", "/").replace("\\left", "").replace("\\right", "")
    if not _ARITHMETIC.match(expr) or not re.search(r"\d", expr) or len(expr) > 200:
        return None
    if not re.search(r"[+\-*/^]", expr.strip().lstrip("+-")):
        return None
    try:
        tree = ast.parse(expr.replace("^", "**"), mode="eval")
    except (SyntaxError, ValueError):
        return None
    if not all(isinstance(node, _AST_OPS) for node in ast.walk(tree)):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            exponent = _finite(lambda n=node: eval(compile(ast.Expression(n.right), "<expr>", "eval"), {}, {}))
            if exponent is None or abs(exponent) > 64:
                return None
    return _finite(lambda: eval(compile(tree, "<expr>", "eval"), {"__builtins__": {}}, {}))


def stated_number(answer: Any, *, strict: bool = False) -> float | None:
    """The number a free-form answer states, or ``None``.

    In order: the whole answer as a number (:func:`parse_number`); the value of a whole arithmetic expression
    (``"94*4 - 61 - 6"`` → 309, ``"2^{10}"`` → 1024); the number after the last ``=`` (``"x = 3 * 4 = 12"`` →
    12); a leading number followed by units or words (``"18 apples"``, ``"14 m^2"``, ``"9 (after 2 tries)"``).
    A hedged answer (``"5 or 6"``, ``"5 ± 1"``) states no number. With ``strict=False`` (model outputs) the first
    number anywhere in the answer is the last resort; ``strict=True`` (references) never guesses, so
    ``"x + 1"`` gives ``None``. A percent sign is dropped (``"25%"`` → 25.0); see :func:`numbers_match`.

    Example:
        >>> stated_number("x = 3 * 4 = 12")
        12.0
        >>> stated_number("14 m^2")
        14.0
        >>> stated_number("5 or 6") is None
        True
        >>> stated_number("x + 1", strict=True) is None
        True
    """
    parsed = _stated(answer, strict)
    return None if parsed is None else parsed[0]


def _stated(answer: Any, strict: bool) -> tuple[float, bool] | None:
    """``(value, is_percent)`` of :func:`stated_number`."""
    if isinstance(answer, bool) or answer is None:
        return None
    if isinstance(answer, (int, float)):
        value = parse_number(answer)
        return None if value is None else (value, False)
    if not isinstance(answer, str):
        return None
    return _stated_str(answer, strict)


@lru_cache(maxsize=65536)
def _stated_str(answer: str, strict: bool) -> tuple[float, bool] | None:
    text = _normalize_text(answer).strip()
    if not text:
        return None
    is_percent = bool(_PERCENT.search(text.rstrip(".")))
    value = parse_number(text)
    if value is not None:
        return value, is_percent
    value = _arithmetic_value(text)
    if value is not None:
        return value, False
    if "=" in text:
        tail = text.rsplit("=", 1)[1]
        return _stated_str(tail, strict) if tail.strip() else None
    if _HEDGE.search(text):
        return None
    match = _NUMBER.match(text)
    if match and (not strict or _only_units(text[match.end() :])):
        return _token_value(match)
    if strict:
        return None
    match = _NUMBER.search(text)
    if match:
        return _token_value(match)
    words = _NUMBER_WORDS.search(text)
    if words:
        value = parse_number(words.group(0))
        return None if value is None else (value, False)
    return None


def _token_value(match: re.Match) -> tuple[float, bool] | None:
    token = _number_token(match)
    value = parse_number(token)
    return None if value is None else (value, token.endswith("%"))  # None: e.g. 5000 digits overflow to inf


_UNIT_TAIL = re.compile(r"^[\sA-Za-z\u00b2\u00b3\u00b5\u00b0^/.{}\\()\d-]*$")


def _only_units(tail: str) -> bool:
    """Whether what follows a reference's number is units or words (``" m^2"``, ``" apples"``), no other number."""
    cleaned = re.sub(r"\^\s*\{?\s*-?\d+\s*\}?", "", tail)  # exponents of units
    return bool(_UNIT_TAIL.match(cleaned)) and not re.search(r"\d", cleaned)


def numbers_match(
    prediction: tuple[float, bool] | float, reference: tuple[float, bool] | float, rel_tol: float, abs_tol: float
) -> bool:
    """Whether a stated number equals the reference within ``math.isclose(rel_tol, abs_tol)``.

    Each side is a value, or ``(value, is_percent)``. When exactly one side is a percentage, ``p %`` also
    matches ``p / 100`` (``"25%"`` ↔ ``0.25``), as well as ``p`` itself (``"25%"`` ↔ ``25``, the usual way a
    "what percent…" reference is written).

    Example:
        >>> numbers_match((25.0, True), (0.25, False), 1e-6, 1e-9)
        True
        >>> numbers_match((40.0, True), (4.0, False), 1e-6, 1e-9)
        False
    """
    p, p_pct = prediction if isinstance(prediction, tuple) else (prediction, False)
    r, r_pct = reference if isinstance(reference, tuple) else (reference, False)
    if math.isclose(p, r, rel_tol=rel_tol, abs_tol=abs_tol):
        return True
    if p_pct and not r_pct:
        return math.isclose(p / 100.0, r, rel_tol=rel_tol, abs_tol=abs_tol)
    if r_pct and not p_pct:
        return math.isclose(p, r / 100.0, rel_tol=rel_tol, abs_tol=abs_tol)
    return False
