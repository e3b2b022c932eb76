"""Step-by-step solutions: splitting into steps, normalising reasoning-gym chains of thought, and corrupting one
arithmetic step (with the error carried through the rest of the solution).

Arithmetic *claims* such as ``35 × 3 = 105`` or ``15 balls * $5/ball = $75`` are read with :mod:`trl_ext.text`'s
tokenizer and exact evaluator (the one the process rewards use); ``split_steps`` is :func:`trl_ext.text.split_steps`.

Example:
    >>> split_steps("a\\n\\nb\\n\\n")
    ['a', 'b']
    >>> normalise_solution("He has 48=48 eggs\\nSo 160-48=112\\n#### 112", "112")
    'He has 48 eggs\\n\\nSo 160-48=112\\n\\n#### 112'
    >>> bad = corrupt_solution("35 × 3 = 105\\n\\n105 + 35 = 140\\n\\n#### 140", "x", "140", seed=0)
    >>> bad.answer != "140", bad.corrupted_step
    (True, 0)
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from fractions import Fraction

from ..text import Token, evaluate, expressions_before, split_steps, tokenize

__all__ = ["CorruptedSolution", "corrupt_solution", "normalise_solution", "split_steps"]

_REL_TOL = Fraction(1, 10**6)
_NOISY_FLOAT = re.compile(r"\d\.\d{7,}")  # 24.749999999999996: float noise from the generator


# ------------------------------------------------------------------------------------------------- claims
# Tokens, expressions and their exact values come from trl_ext.text (shared with the process rewards); a claim here
# is "<expression with an operation> = <one number>", the result that corruption may change.


@dataclass
class _Claim:
    step: int
    line: int
    eq: int  # token index of "="
    lhs_start: int
    rhs: int  # token index of the result
    ast: tuple
    operands: list[int]
    verified: bool  # the left side evaluates to the stated result


@dataclass
class _Line:
    step: int
    index: int
    text: str
    toks: list[Token]
    claims: list[_Claim]
    has_unresolved_eq: bool  # an "=" that is not a checkable claim ("T = 219 - 136", "David = 322 points")


def _close(a: Fraction, b: Fraction) -> bool:
    return abs(a - b) <= _REL_TOL * max(Fraction(1), abs(b))


def _parse_line(step: int, index: int, text: str) -> _Line:
    toks = tokenize(text)
    claims: list[_Claim] = []
    unresolved = False
    for e, tok in enumerate(toks):
        if tok.kind != "eq":
            continue
        claim = _claim_at(toks, e, step, index)
        if claim is None or not claim.verified:
            unresolved = True
        if claim is not None:
            claims.append(claim)
    return _Line(step, index, text, toks, claims, unresolved)


def _claim_at(toks: list[Token], e: int, step: int, line: int) -> _Claim | None:
    if e + 1 >= len(toks) or toks[e + 1].kind != "num":
        return None
    lhs = next(expressions_before(toks, e), None)
    if lhs is None or lhs.n_ops == 0:
        return None  # "48=48", "98 ladybugs = 49": no arithmetic to check
    after = toks[e + 2] if e + 2 < len(toks) else None
    after2 = toks[e + 3] if e + 3 < len(toks) else None
    # "= 2/3 kilometers", "= 136 + T", "= 2(5)": the result is itself an expression (not "= $5320/month")
    compound = after is not None and (
        after.kind == "lp"
        or (after.kind == "op" and not (after.text in ("/", "÷") and after2 is not None and after2.kind == "word"))
        or (after.kind == "word" and after.text in ("x", "X") and after2 is not None and after2.kind == "num")
    )
    try:
        value = evaluate(lhs.ast, lambda i: toks[i].eval_value)
        verified = not compound and _close(value, toks[e + 1].eval_value)
    except (ZeroDivisionError, ValueError):
        verified = False
    return _Claim(step, line, e, lhs.start, e + 1, lhs.ast, lhs.operands, verified)


# ------------------------------------------------------------------------------------------ normalisation


def _strip_trivial_claims(line: str) -> str:
    """'James receives 48=48 emails' -> 'James receives 48 emails' (a reasoning-gym template artefact)."""
    out, last = [], 0
    for m in re.finditer(r"(?<![\d.,])(\d+(?:\.\d+)?)[ \t]*=[ \t]*(\d+(?:\.\d+)?)(?![\d.,]\d)", line):
        before = line[: m.start()].rstrip()
        if Fraction(m.group(1)) != Fraction(m.group(2)):
            continue
        if before and before[-1] in "0123456789.,)+-*/×÷=\u2212$€£":
            continue
        out.append(line[last : m.start()] + m.group(1))
        last = m.end()
    out.append(line[last:])
    return "".join(out)


def normalise_solution(cot: str, answer: str) -> str | None:
    """Normalise a reasoning-gym ``answer_cot``: steps separated by a blank line, final line ``#### <answer>``.

    Single-newline (GSM8K-style) solutions get one step per line; blank-line separated ones keep their
    paragraphs as steps. Trailing spaces are dropped, trivial claims such as ``48=48`` become ``48`` and the
    final line is rewritten from ``answer`` (``#### 16.0`` -> ``#### 16``). Returns ``None`` for a solution that
    cannot be used as a demonstration: no ``####`` line, a ``####`` value that differs from ``answer``, or
    floating-point noise such as ``24.749999999999996``.

    Example:
        >>> normalise_solution("2*3=6 apples\\n6+1=7\\n#### 7.0", "7")
        '2*3=6 apples\\n\\n6+1=7\\n\\n#### 7'
    """
    lines = [line.rstrip() for line in cot.strip().split("\n")]
    final = [i for i, line in enumerate(lines) if line.lstrip().startswith("####")]
    if not final or _NOISY_FLOAT.search(cot):
        return None
    stated = lines[final[-1]].lstrip()[4:].strip().replace(",", "")
    try:
        if Fraction(stated) != Fraction(answer):
            return None
    except (ValueError, ZeroDivisionError):
        return None
    body = "\n".join(line for i, line in enumerate(lines) if i not in final).strip()
    if "\n\n" in body:
        steps = split_steps(body)
    else:
        steps = [line.strip() for line in body.split("\n") if line.strip()]
    steps = [_strip_trivial_claims(step) for step in steps]
    if not steps:
        return None
    return "\n\n".join(steps + [f"#### {answer}"])


# --------------------------------------------------------------------------------------------- corruption


@dataclass(frozen=True)
class CorruptedSolution:
    """A solution with one wrong arithmetic result carried through the later steps.

    ``text``: the corrupted solution (same step separator, final line ``#### <answer>``); ``steps``: its steps;
    ``corrupted_step``: index (in ``steps``) of the first step that differs from the original; ``answer``: the
    wrong final answer the error implies (never equal to the reference).
    """

    text: str
    steps: tuple[str, ...]
    corrupted_step: int
    answer: str


def _format_number(value: Fraction, decimals: int, commas: bool) -> str | None:
    """``value`` written with ``decimals`` decimals, or None when it needs more precision than that."""
    scaled = value * 10**decimals
    n = round(scaled)
    if abs(scaled - n) > _REL_TOL * max(Fraction(1), abs(scaled)):
        return None
    sign, n = ("-" if n < 0 else ""), abs(n)
    whole, frac = divmod(n, 10**decimals)
    text = f"{whole:,}" if commas else str(whole)
    if decimals:
        text += "." + str(frac).rjust(decimals, "0")
    return sign + text


def _answer_text(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    for decimals in range(1, 7):
        text = _format_number(value, decimals, False)
        if text is not None:
            return text.rstrip("0").rstrip(".")
    return str(float(value))


def _try_corruption(
    lines: list[_Line], target: _Claim, new_value: Fraction, question_values: set[Fraction], answer: Fraction
) -> tuple[dict[tuple[int, int], str], Fraction] | None:
    """Overrides {(line_no, tok_idx): text} and the wrong answer, or None when the error cannot be carried
    through the solution unambiguously."""
    start_line = next(n for n, ln in enumerate(lines) if (ln.step, ln.index) == (target.step, target.line))
    # roles of number tokens: operand / result of some claim; anything else is a "mention"
    role: dict[tuple[int, int], str] = {}
    for n, ln in enumerate(lines):
        for c in ln.claims:
            role[(n, c.rhs)] = "rhs"
            for o in c.operands:
                role[(n, o)] = "operand"

    def may_create(value: Fraction, line_no: int, claim: _Claim) -> bool:
        """A changed quantity must be new at its claim: not in the question, not in an earlier line, not an
        operand or result earlier on its own line (only same-line mentions such as 'spent $900 because ...')."""
        if value in question_values:
            return False
        for n in range(line_no + 1):
            for i, tok in enumerate(lines[n].toks):
                if tok.kind != "num" or tok.value != value:
                    continue
                if n < line_no or i in claim.operands:
                    return False
                if i < claim.lhs_start and role.get((n, i)) is not None:
                    return False
        return True

    target_line = lines[start_line]
    old = target_line.toks[target.rhs].value
    rhs_tok = target_line.toks[target.rhs]
    text = _format_number(new_value, rhs_tok.decimals, rhs_tok.commas)
    if text is None or old is None or not may_create(old, start_line, target):
        return None
    changed: dict[Fraction, Fraction] = {old: new_value}
    units: dict[Fraction, str | None] = {old: rhs_tok.unit}

    def same_quantity(tok: Token) -> bool:
        """A later number equal to a changed value is taken for it unless their units disagree
        ('12 days/month' is not '12 months')."""
        assert tok.value is not None
        created = units[tok.value]
        return created is None or tok.unit is None or created == tok.unit
    overrides: dict[tuple[int, int], str] = {(start_line, target.rhs): text}

    started = False
    for n in range(start_line, len(lines)):
        ln = lines[n]
        for c in ln.claims:
            if c is target:
                started = True
                continue
            if not started:
                continue
            uses = [o for o in c.operands if ln.toks[o].value in changed]
            if not all(same_quantity(ln.toks[o]) for o in uses):
                return None
            result_tok = ln.toks[c.rhs]
            if not c.verified:
                if uses or result_tok.value in changed:
                    return None
                continue
            if not uses:
                if result_tok.value in changed:
                    return None  # the changed quantity is derived again independently: ambiguous
                continue
            subst = {o: changed[ln.toks[o].value] for o in uses}

            def value_of(i: int, _subst=subst, _toks=ln.toks) -> Fraction:
                return (_subst[i] if i in _subst else _toks[i].value) * _toks[i].scale

            try:
                computed = evaluate(c.ast, value_of) / result_tok.scale
            except (ZeroDivisionError, ValueError):
                return None
            shown = _format_number(computed, result_tok.decimals, result_tok.commas)
            if shown is None:
                return None  # e.g. an integer count becoming fractional
            new_result = Fraction(shown.replace(",", ""))
            if result_tok.value >= 0 > new_result:
                return None
            for o in uses:
                t = ln.toks[o]
                o_text = _format_number(changed[t.value], t.decimals, t.commas)
                if o_text is None:
                    return None
                overrides[(n, o)] = o_text
            if new_result != result_tok.value:
                if result_tok.value in changed or not may_create(result_tok.value, n, c):
                    return None
                changed[result_tok.value] = new_result
                units[result_tok.value] = result_tok.unit
                overrides[(n, c.rhs)] = shown
    # mentions of changed quantities after the error ("Therefore, David now has 427 items in total.")
    for n in range(start_line, len(lines)):
        ln = lines[n]
        for i, tok in enumerate(ln.toks):
            if tok.kind != "num" or tok.value not in changed or (n, i) in overrides:
                continue
            if role.get((n, i)) is not None:
                continue  # operand of an earlier claim on the error line, or an unchanged result
            if ln.has_unresolved_eq or not same_quantity(tok):
                return None  # a relation we cannot recompute, or a different quantity with the same value
            mention = _format_number(changed[tok.value], tok.decimals, tok.commas)
            if mention is None:
                return None
            overrides[(n, i)] = mention
    # an unresolved "=" on a later line that still mentions a changed quantity would be left inconsistent
    for n in range(start_line + 1, len(lines)):
        if lines[n].has_unresolved_eq and any(t.kind == "num" and t.value in changed for t in lines[n].toks):
            return None
    if answer not in changed or changed[answer] == answer:
        return None
    return overrides, changed[answer]


def corrupt_solution(
    solution: str, question: str, answer: str, seed: int | str = 0, separator: str = "\n\n"
) -> CorruptedSolution | None:
    """Change the result of one arithmetic claim and carry the error through the rest of the solution.

    One checkable claim (``35 × 3 = 105``, left side evaluating to the stated result) gets a wrong result
    (``35 × 3 = 107``); later claims that use the changed quantity are recomputed (``107 + 35 = 142``) and later
    mentions of it are updated, so the rest of the solution is arithmetically consistent with the error and the
    final ``#### N`` line states the wrong answer it implies. Candidates whose error could not be carried
    through unambiguously (the quantity also appears in the question or earlier, is re-derived independently,
    meets an ``=`` that cannot be recomputed, would turn an integer result fractional or a count negative, or
    does not reach the final answer) are skipped. Returns ``None`` when no claim can be corrupted.
    ``solution`` must end with a ``#### <answer>`` step; ``seed`` picks the claim and the size of the error.

    Example:
        >>> bad = corrupt_solution("35 × 3 = 105 kiwi\\n\\nTotal: 105 + 35 = 140\\n\\n#### 140", "", "140", seed=1)
        >>> bad.steps[-1] != "#### 140" and bad.text.count("\\n\\n") == 2
        True
    """
    steps = split_steps(solution, separator)
    if len(steps) < 2 or not steps[-1].startswith("####"):
        return None
    try:
        reference = Fraction(answer.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None
    body = steps[:-1]
    lines: list[_Line] = []
    for s, step in enumerate(body):
        for li, text in enumerate(step.split("\n")):
            lines.append(_parse_line(s, li, text))
    question_values = {t.value for t in tokenize(question) if t.kind == "num" and t.value is not None}
    candidates = [c for ln in lines for c in ln.claims if c.verified]
    rng = random.Random(f"corrupt|{seed}")
    rng.shuffle(candidates)
    for claim in candidates:
        ln = next(x for x in lines if x.step == claim.step and x.index == claim.line)
        tok = ln.toks[claim.rhs]
        assert tok.value is not None
        unit = Fraction(1) if tok.value.denominator == 1 else Fraction(1, 10**tok.decimals)
        small = [1, -1, 2, -2, 3, -3]
        large = [4, -4, 5, -5, 10, -10, 9, 11]
        rng.shuffle(small)
        rng.shuffle(large)
        for k in small + large:
            new_value = tok.value + k * unit
            if new_value == tok.value or (tok.value >= 0 > new_value):
                continue
            result = _try_corruption(lines, claim, new_value, question_values, reference)
            if result is None:
                continue
            overrides, wrong = result
            new_body = _apply(lines, body, overrides)
            wrong_text = _answer_text(wrong)
            new_steps = tuple(new_body) + (f"#### {wrong_text}",)
            first_diff = next(i for i, (a, b) in enumerate(zip(steps, new_steps)) if a != b)
            return CorruptedSolution(separator.join(new_steps), new_steps, first_diff, wrong_text)
    return None


def _apply(lines: list[_Line], body: list[str], overrides: dict[tuple[int, int], str]) -> list[str]:
    per_step: dict[int, list[str]] = {}
    for n, ln in enumerate(lines):
        text = ln.text
        for i in sorted((i for (m, i) in overrides if m == n), reverse=True):
            tok = ln.toks[i]
            text = text[: tok.start] + overrides[(n, i)] + text[tok.end :]
        per_step.setdefault(ln.step, []).append(text)
    return ["\n".join(per_step[s]) for s in range(len(body))]
