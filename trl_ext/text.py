"""Text of completions, their steps, and the arithmetic claims in them: the one home shared by ``trl_ext.data``
(solutions and their corruption) and ``trl_ext.rewards`` (graders and process rewards).

- :func:`completion_text` / :func:`prompt_text`: the text of a TRL completion or prompt (standard or conversational).
- :func:`split_step_spans` / :func:`split_steps`: steps cut at a separator, as character spans or strings.
- :func:`tokenize`, :func:`expressions_before`, :func:`expressions_after`, :func:`evaluate`: arithmetic as written in
  chains of thought (``35 × 3 = 105``, ``£195/day * 12 days/month = £2340/month``): numbers with currency signs,
  thousands separators, decimals and ``%``; ``+ - − * × · / ÷ ^ **``, parentheses, implicit products ``2(11)``,
  ``x`` between quantities, unit words after a quantity (``/day`` included). Values are exact fractions; nothing is
  ever passed to ``eval``. :func:`arithmetic_claims` lists the ``left = right`` claims of a text.

Example:
    >>> split_steps("35 × 3 = 105\\n\\n#### 105")
    ['35 × 3 = 105', '#### 105']
    >>> [(float(c.left_value), float(c.right_value)) for c in arithmetic_claims("He pays $5/day * 3 days = $15")]
    [(15.0, 15.0)]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Iterator

__all__ = [
    "Claim",
    "Expression",
    "Token",
    "arithmetic_claims",
    "completion_text",
    "evaluate",
    "expressions_after",
    "expressions_before",
    "prompt_text",
    "split_step_spans",
    "split_steps",
    "tokenize",
]


# ---------------------------------------------------------------------------------------------- completions


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


def prompt_text(prompt: Any) -> str:
    """Text of one TRL prompt: a ``str``, or the content of the last ``user`` message of a conversation (all
    messages joined by newlines when none is marked ``user``).

    Example:
        >>> prompt_text([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}])
        '1+1?'
    """
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        if users:
            return str(users[-1])
        return "\n".join(str(m.get("content", "")) for m in prompt if isinstance(m, dict))
    return str(prompt)


# ---------------------------------------------------------------------------------------------------- steps


def split_step_spans(text: str, separator: str = "\n\n") -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of the steps of ``text``, cut at every occurrence of ``separator``.

    Surrounding whitespace is trimmed from each step and whitespace-only pieces are dropped, so leading or repeated
    separators never make empty steps. Text after the last separator is the last step; text without a separator is
    one step; an empty (or whitespace-only) text has no steps.

    Example:
        >>> split_step_spans("a\\n\\n\\n\\nb  \\n\\n", "\\n\\n")
        [(0, 1), (5, 6)]
    """
    _check_step_arguments(text, separator, "split_step_spans")
    spans = []
    start = 0
    while True:
        cut = text.find(separator, start)
        piece = text[start : len(text) if cut < 0 else cut]
        stripped = piece.strip()
        if stripped:
            left = start + (len(piece) - len(piece.lstrip()))
            spans.append((left, left + len(stripped)))
        if cut < 0:
            return spans
        start = cut + len(separator)


def split_steps(text: str, separator: str = "\n\n") -> list[str]:
    """The steps of ``text`` as strings: ``[text[a:b] for a, b in split_step_spans(text, separator)]``.

    Example:
        >>> split_steps("3 + 4 = 7\\n\\n7 × 2 = 14\\n\\n#### 14")
        ['3 + 4 = 7', '7 × 2 = 14', '#### 14']
        >>> split_steps("one step"), split_steps("")
        (['one step'], [])
    """
    _check_step_arguments(text, separator, "split_steps")
    return [text[a:b] for a, b in split_step_spans(text, separator)]


def _check_step_arguments(text: Any, separator: Any, fn: str) -> None:
    if not isinstance(text, str):
        raise ValueError(f"{fn}: text must be a str, got {type(text).__name__}.")
    if not isinstance(separator, str) or separator == "":
        raise ValueError(f"{fn}: the step separator must be a non-empty str (e.g. '\\n\\n'), got {separator!r}.")


# --------------------------------------------------------------------------------------------------- tokens

_DIGITS = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_TOKEN_RE = re.compile(
    # a number may follow a lone "x" ("2x3") but not another letter, a digit, "." or ","
    rf"(?P<num>(?:(?P<cur>[$€£])\s?)?(?P<digits>(?:(?<![\w.,])|(?<=(?<![A-Za-z])[xX]))(?:{_DIGITS}))(?P<pct>\s?%)?)"
    r"|(?P<op>\*\*|[-+\u2212*/×÷·⋅^])"
    r"|(?P<lp>\()|(?P<rp>\))|(?P<eq>(?<![<>!=])=(?!=))"
    r"|(?P<word>[A-Za-z_]+(?:'[A-Za-z]+)?)"
    r"|(?P<space>\s+)"
    r"|(?P<other>.)"
)
_ENUM_RE = re.compile(r"(?m)^[ \t]*\d+\.(?=\s)")  # "1. Initial amounts:" — a list number, not a quantity
_BULLETS = "-*•"
_MINUS = ("-", "\u2212")
_MUL = ("*", "×", "·", "⋅")
_DIV = ("/", "÷")
_POW = ("^", "**")
_MAX_EXPONENT = 64
_UNIT_STOPWORDS = {"more", "less", "fewer", "extra", "additional", "new", "total", "of", "the", "a", "an", "in"}


@dataclass
class Token:
    """One token of a line: ``kind`` is ``num``, ``enum`` (a list number ``1.``), ``op``, ``lp``, ``rp``, ``eq``,
    ``word`` or ``other``; ``[start, end)`` is the replaceable part in the text (the digits of a number)."""

    kind: str
    text: str
    start: int
    end: int
    value: Fraction | None = None  # number as written (25 for "25%", 290000 for "$290,000")
    scale: Fraction = Fraction(1)  # 1/100 for a percentage
    decimals: int = 0
    commas: bool = False
    unit: str | None = None  # "$", "%" or the first unit word after the number ("day" for "12 days/month")

    @property
    def eval_value(self) -> Fraction:
        assert self.value is not None
        return self.value * self.scale


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text`` (whitespace and list bullets ``-``/``*``/``•`` at a line start left out).

    Example:
        >>> [(t.kind, t.text) for t in tokenize("- 2 × $5 = 10%")]
        [('num', '2'), ('op', '×'), ('num', '$5'), ('eq', '='), ('num', '10%')]
    """
    enum_ends = [m.end() for m in _ENUM_RE.finditer(text)]
    toks: list[Token] = []
    for m in _TOKEN_RE.finditer(text):
        kind = str(m.lastgroup)
        if kind == "num" and m.group("num") is not None:
            if any(m.start() < end and text.rfind("\n", 0, end) < m.start() for end in enum_ends):
                toks.append(Token("enum", m.group(0), m.start(), m.end()))
                continue
            digits = m.group("digits")
            plain = digits.replace(",", "")
            toks.append(Token(
                "num", m.group(0), m.start("digits"), m.end("digits"), value=Fraction(plain),
                scale=Fraction(1, 100) if m.group("pct") else Fraction(1),
                decimals=len(plain.split(".")[1]) if "." in plain else 0, commas="," in digits,
            ))
        elif kind in ("op", "other") and m.group(0) in _BULLETS and _is_bullet(text, m.start()):
            continue
        elif kind != "space":
            toks.append(Token(kind, m.group(0), m.start(), m.end()))
    for i, tok in enumerate(toks):
        if tok.kind == "num":
            tok.unit = _unit_of(toks, i)
    return toks


def _is_bullet(text: str, i: int) -> bool:
    """A ``-``, ``*`` or ``•`` alone at the start of a line and followed by white space: a list bullet."""
    return text[text.rfind("\n", 0, i) + 1 : i].strip() == "" and text[i + 1 : i + 2].isspace()


def _unit_of(toks: list[Token], i: int) -> str | None:
    tok = toks[i]
    if tok.text[0] in "$€£":
        return tok.text[0]
    if tok.text.endswith("%"):
        return "%"
    for nxt in toks[i + 1 : i + 3]:
        if nxt.kind != "word" or nxt.text in ("x", "X"):
            return None
        word = nxt.text.lower()
        if word not in _UNIT_STOPWORDS:
            return word[:-1] if word.endswith("s") and len(word) > 3 else word
    return None


# --------------------------------------------------------------------------------------------------- parser
# AST: ("num", token_index) | ("neg", node) | ("bin", op, left, right) with op in + - * / ^


@dataclass
class Expression:
    """A parsed arithmetic expression spanning tokens ``[start, stop)``: its tree, number of operations (binary and
    implicit products; a sign is none) and the token indices of its numbers."""

    start: int
    stop: int
    ast: tuple
    n_ops: int
    operands: list[int] = field(default_factory=list)


class _ParseError(Exception):
    pass


class _Parser:
    """Parses toks[start:stop] entirely as an arithmetic expression (unit words allowed after a quantity).

    Grammar, with Python's precedence: ``expr = term (± term)*``, ``term = unary ((× | / | implicit) unary)*``,
    ``unary = ± unary | power``, ``power = primary (^ unary)?``, ``primary = (number | "(" expr ")") units``.
    """

    def __init__(self, toks: list[Token], start: int, stop: int):
        self.toks, self.i, self.stop = toks, start, stop
        self.n_ops = 0
        self.operands: list[int] = []

    def peek(self, k: int = 0) -> Token | None:
        j = self.i + k
        return self.toks[j] if j < self.stop else None

    def is_op(self, tok: Token | None, ops: tuple[str, ...]) -> bool:
        return tok is not None and tok.kind == "op" and tok.text in ops

    def is_mul(self, tok: Token | None) -> bool:
        if self.is_op(tok, _MUL):
            return True
        if tok is not None and tok.kind == "word" and tok.text in ("x", "X"):  # "36 girls x 2 boys/girl"
            nxt = self.peek(1)
            return nxt is not None and nxt.kind in ("num", "lp")
        return False

    def parse(self) -> tuple:
        node = self.expr()
        if self.i != self.stop:
            raise _ParseError
        return node

    def expr(self) -> tuple:
        node = self.term()
        while self.is_op(t := self.peek(), ("+",) + _MINUS):
            self.i += 1
            self.n_ops += 1
            node = ("bin", "-" if t.text != "+" else "+", node, self.term())
        return node

    def term(self) -> tuple:
        node = self.unary()
        while True:
            t = self.peek()
            if self.is_mul(t):
                op, self.i = "*", self.i + 1
            elif self.is_op(t, _DIV):
                nxt = self.peek(1)
                if nxt is None or nxt.kind not in ("num", "lp", "op"):
                    raise _ParseError
                op, self.i = "/", self.i + 1
            elif t is not None and t.kind == "lp" and self.toks[self.i - 1].kind in ("num", "rp", "word"):
                op = "*"  # implicit product: 2(11), (1+2)(3), 3 boxes (of 4)
            else:
                return node
            self.n_ops += 1
            node = ("bin", op, node, self.unary())

    def unary(self) -> tuple:
        t = self.peek()
        if self.is_op(t, ("+",) + _MINUS):
            self.i += 1
            inner = self.unary()
            return inner if t.text == "+" else ("neg", inner)
        return self.power()

    def power(self) -> tuple:
        node = self.primary()
        if self.is_op(self.peek(), _POW):
            self.i += 1
            self.n_ops += 1
            node = ("bin", "^", node, self.unary())
        return node

    def primary(self) -> tuple:
        t = self.peek()
        if t is None:
            raise _ParseError
        if t.kind == "num":
            node = ("num", self.i)
            self.operands.append(self.i)
            self.i += 1
        elif t.kind == "lp":
            self.i += 1
            node = self.expr()
            if (close := self.peek()) is None or close.kind != "rp":
                raise _ParseError
            self.i += 1
        else:
            raise _ParseError
        self.unit()
        return node

    def unit(self) -> None:
        """Skip unit words after a quantity: 'mushroom/minute', 'skeins per pair of mittens'."""
        while (t := self.peek()) is not None:
            if t.kind == "word" and not self.is_mul(t):
                self.i += 1
            elif self.is_op(t, _DIV) and (n := self.peek(1)) is not None and n.kind == "word":
                self.i += 1  # "/minute": part of the unit, not a division
            else:
                break


def parse_expression(toks: list[Token], start: int, stop: int) -> Expression | None:
    """``toks[start:stop]`` parsed as one arithmetic expression, or None when it is not one."""
    parser = _Parser(toks, start, stop)
    try:
        ast = parser.parse()
    except _ParseError:
        return None
    return Expression(start, stop, ast, parser.n_ops, parser.operands)


_EXPRESSION_KINDS = ("num", "op", "lp", "rp", "word")


def expressions_before(toks: list[Token], e: int) -> Iterator[Expression]:
    """The expressions that end right before token ``e`` (an ``=``), longest first."""
    left = e
    while left > 0 and toks[left - 1].kind in _EXPRESSION_KINDS:
        left -= 1
    for s in range(left, e):
        if toks[s].kind in ("num", "lp") or (toks[s].kind == "op" and toks[s].text in ("+",) + _MINUS):
            if (found := parse_expression(toks, s, e)) is not None:
                yield found


def expressions_after(toks: list[Token], e: int) -> Iterator[Expression]:
    """The expressions that start right after token ``e`` (an ``=``), longest first."""
    right = e + 1
    while right < len(toks) and toks[right].kind in _EXPRESSION_KINDS:
        right += 1
    for stop in range(right, e + 1, -1):
        if toks[stop - 1].kind in ("num", "rp", "word") and (found := parse_expression(toks, e + 1, stop)) is not None:
            yield found


def evaluate(node: tuple, value_of: Callable[[int], Fraction]) -> Fraction:
    """Exact value of an expression tree; ``value_of(i)`` is the value of number token ``i``. Raises
    ``ZeroDivisionError`` on a division by zero and ``ValueError`` on a power that has no finite rational value."""
    if node[0] == "num":
        return value_of(node[1])
    if node[0] == "neg":
        return -evaluate(node[1], value_of)
    _, op, left, right = node
    a, b = evaluate(left, value_of), evaluate(right, value_of)
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "^":
        return _power(a, b)
    if b == 0:
        raise ZeroDivisionError
    return a / b


def _power(a: Fraction, b: Fraction) -> Fraction:
    if abs(b) > _MAX_EXPONENT:
        raise ValueError("exponent too large")
    if b.denominator == 1:
        return a ** int(b)  # exact (ZeroDivisionError for 0 to a negative power)
    try:
        value = float(a) ** float(b)
    except (OverflowError, ZeroDivisionError) as err:
        raise ValueError("no finite power") from err
    if isinstance(value, complex) or value != value or value in (float("inf"), float("-inf")):
        raise ValueError("no real power")
    return Fraction(value)


# --------------------------------------------------------------------------------------------------- claims


@dataclass
class Claim:
    """``left = right`` at token ``eq`` of ``tokens``: the longest expressions next to the ``=`` that evaluate."""

    tokens: list[Token]
    eq: int
    left: Expression
    right: Expression
    left_value: Fraction
    right_value: Fraction

    @property
    def has_operation(self) -> bool:
        """Whether either side computes something (``48 = 48`` and ``x = 5`` do not)."""
        return self.left.n_ops > 0 or self.right.n_ops > 0


def arithmetic_claims(text: str) -> list[Claim]:
    """Every ``left = right`` of ``text`` whose sides are arithmetic expressions, one per ``=`` (``a = b = c`` gives
    two), with exact values. Sides that do not evaluate (a division by zero) are shortened until one does.

    Example:
        >>> [(c.left_value, c.right_value, c.has_operation) for c in arithmetic_claims("3 × 4 = 12 = 2 × 6")]
        [(Fraction(12, 1), Fraction(12, 1), True), (Fraction(12, 1), Fraction(12, 1), True)]
    """
    toks = tokenize(text)
    claims = []
    for e, tok in enumerate(toks):
        if tok.kind != "eq":
            continue
        left = _first_evaluable(toks, expressions_before(toks, e))
        right = _first_evaluable(toks, expressions_after(toks, e))
        if left is not None and right is not None:
            claims.append(Claim(toks, e, left[0], right[0], left[1], right[1]))
    return claims


def _first_evaluable(toks: list[Token], candidates: Iterator[Expression]) -> tuple[Expression, Fraction] | None:
    for expression in candidates:
        try:
            return expression, evaluate(expression.ast, lambda i: toks[i].eval_value)
        except (ZeroDivisionError, ValueError, OverflowError):
            continue
    return None
