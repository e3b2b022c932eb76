"""trl_ext.text: the one home of completion text, step splitting and arithmetic claims (data/ and rewards/ use it)."""

from fractions import Fraction

import pytest

from trl_ext.text import arithmetic_claims, completion_text, split_step_spans, split_steps, tokenize


def test_old_import_paths_are_the_same_functions():
    import trl_ext.data
    import trl_ext.data.solutions
    import trl_ext.rewards
    import trl_ext.rewards.extract
    import trl_ext.rewards.process

    assert trl_ext.data.split_steps is trl_ext.data.solutions.split_steps is split_steps
    assert trl_ext.rewards.split_step_spans is trl_ext.rewards.process.split_step_spans is split_step_spans
    assert trl_ext.rewards.completion_text is trl_ext.rewards.extract.completion_text is completion_text


def test_split_steps_is_the_text_of_the_spans():
    text = "  a\n\n\n\n b \n\nc\nd\n\n"
    assert split_step_spans(text) == [(2, 3), (8, 9), (12, 15)]
    assert split_steps(text) == ["a", "b", "c\nd"]
    for fn in (split_steps, split_step_spans):
        with pytest.raises(ValueError, match=f"{fn.__name__}: the step separator must be a non-empty str"):
            fn("a", "")
        with pytest.raises(ValueError, match=f"{fn.__name__}: text must be a str, got NoneType"):
            fn(None)


def test_tokens_of_currency_percent_bullets_and_list_numbers():
    toks = tokenize("1. Cost:\n- $1,200 × 25% = $300")
    assert [(t.kind, t.text) for t in toks] == [
        ("enum", "1"), ("other", "."), ("word", "Cost"), ("other", ":"),
        ("num", "$1,200"), ("op", "×"), ("num", "25%"), ("eq", "="), ("num", "$300"),
    ]
    assert [t.eval_value for t in toks if t.kind == "num"] == [1200, Fraction(1, 4), 300]
    assert [t.unit for t in toks if t.kind == "num"] == ["$", "%", "$"]


def _values(text):
    return [(c.left_value, c.right_value, c.has_operation) for c in arithmetic_claims(text)]


def test_claims_are_evaluated_exactly():
    assert _values("0.1 + 0.2 = 0.3") == [(Fraction(3, 10), Fraction(3, 10), True)]  # no float noise
    assert _values("10/3 = 3.33") == [(Fraction(10, 3), Fraction(333, 100), True)]
    assert _values("2^10 = 1024 = 2**10") == [(1024, 1024, True), (1024, 1024, True)]
    assert _values("6/2(3) = 9") == [(9, 9, True)]  # left to right, as Python reads 6 / 2 * (3)
    assert _values("£195/day * 12 days/month = £2340/month") == [(2340, 2340, True)]
    assert _values("36 girls x 2 boys/girl = 72, 2x3=6") == [(72, 72, True), (6, 6, True)]


def test_claim_sides_without_arithmetic_or_without_a_value():
    assert _values("48 = 48") == [(48, 48, False)]
    assert _values("x = 5") == []  # a variable, not a number
    assert _values("He has 5/0 + 1 = 1 apples") == [(1, 1, True)]  # shortened until it evaluates: "0 + 1"
    assert _values("(-8)^(1/3) = 2") == [(Fraction(1, 3), 2, True)]  # no real power: "(1/3)" is the side
    assert _values("5 - 10 = - 5") == [(-5, -5, True)]  # a spaced minus after "=" is a sign, not a bullet


@pytest.mark.parametrize(
    "completion, expected",
    [("#### 4", "#### 4"), ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "a"),
     ([{"role": "assistant", "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]}], "xy"),
     (None, ""), (5, "")],
)
def test_completion_text(completion, expected):
    assert completion_text(completion) == expected
