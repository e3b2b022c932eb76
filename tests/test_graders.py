"""Tests of trl_ext.rewards: answer extraction, graders, and graders as reward_funcs of stock GRPOTrainer."""

from __future__ import annotations

import doctest
import json
import math
import re

import pytest

from trl_ext.rewards import (
    Contains,
    ExactMatch,
    FormatGrader,
    FuzzySimilarity,
    Grader,
    MultiGrader,
    NumericMatch,
    ReasoningGymScorer,
    completion_text,
    default_grader,
    extract_answer,
    parse_number,
)
from trl_ext.rewards import extract as extract_module
from trl_ext.rewards import graders as graders_module

from helpers import grpo_args

RG_TASKS = ["basic_arithmetic", "chain_sum", "gsm_symbolic", "countdown"]
GARBAGE = [None, 5, 3.5, {"foo": "bar"}, {"role": "assistant"}, [{"role": "assistant"}], [1, 2], "", object()]


def conv(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def all_graders() -> list:
    return [
        ExactMatch(),
        NumericMatch(),
        Contains(),
        FuzzySimilarity(),
        FuzzySimilarity(method="numeric", name="fuzzy_numeric"),
        ReasoningGymScorer(),
        FormatGrader(partial_credit=0.5),
        MultiGrader([ExactMatch(), FormatGrader()], weights=[0.7, 0.3]),
    ]


# --------------------------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2 + 3 = 5\n#### 5", "5"),
        ("#### 1\nwait, no\n#### 2", "2"),
        ("so we get: #### 7", "7"),
        ("#### 94*4 - 61 - 6", "94*4 - 61 - 6"),
        ("#### -12", "-12"),
        ("#### 1,234", "1234"),
        ("#### $18.", "18"),
        ("**#### 42**", "42"),
        ("#### \\boxed{9}", "9"),
        ("#### 3\nthe answer is 4", "3"),  # #### beats "answer is"
        ("\\boxed{3}\n#### 4", "4"),  # #### beats \boxed
        ("\\boxed{3} and then \\boxed{4}", "4"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{a{b{c}}d}", "a{b{c}}d"),
        ("The answer is 12 so \\boxed{13}", "13"),  # boxed beats "answer is"
        ("The answer is 42.", "42"),
        ("The answer is 42. That was easy, 7 steps.", "42"),
        ("So the final answer is **-3**.", "-3"),
        ("Final answer: $1,000$", "1000"),
        ("FINAL ANSWER: Paris", "Paris"),
        ("the answer is: 2*3 + 1", "2*3 + 1"),
        ("I have 3 apples and 10 pears", "10"),
        ("x = -4", "-4"),
        ("5-3", "3"),  # a binary minus is not a sign
        ("total: 1,234,567 items", "1234567"),
        ("it costs 3.75 dollars.", "3.75"),
        ("about 3/4 of them", "3/4"),
        ("the value \u22127", "-7"),
        ("no numbers here", None),
        ("", None),
        ("   \n  ", None),
        ("####   \nso 8", "8"),  # an empty #### falls through
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("garbage", GARBAGE)
def test_extract_and_completion_text_never_raise(garbage):
    text = completion_text(garbage)
    assert isinstance(text, str)
    assert extract_answer(garbage) is None or isinstance(garbage, str)


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("plain", "plain"),
        ([{"role": "assistant", "content": "#### 5"}], "#### 5"),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a1"},
                {"role": "assistant", "content": "a2"},
            ],
            "a2",
        ),
        ([{"role": "assistant", "content": "a"}, {"role": "user", "content": "later"}], "a"),
        ([{"role": "assistant", "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}]}], "xy"),
        ({"role": "assistant", "content": "dict"}, "dict"),
        ([{"role": "assistant", "content": None}], ""),
        ([], ""),
        (None, ""),
        (42, ""),
        ({"no": "content"}, ""),
    ],
)
def test_completion_text(completion, expected):
    assert completion_text(completion) == expected


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        ("5", 5.0),
        ("-5.0", -5.0),
        (" 1,234 ", 1234.0),
        ("-1,234.5", -1234.5),
        ("3/4", 0.75),
        ("-3/4", -0.75),
        ("\\frac{1}{4}", 0.25),
        ("$12.", 12.0),
        ("50%", 50.0),
        (7, 7.0),
        (2.5, 2.5),
        ("1/0", None),
        ("abc", None),
        ("1,2", None),
        ("nan", None),
        ("inf", None),
        (True, None),
        (None, None),
        ({"a": 1}, None),
    ],
)
def test_parse_number(s, expected):
    assert parse_number(s) == expected


# --------------------------------------------------------------------------------------------- graders


def test_exact_match():
    grader = ExactMatch()
    completions = ["#### 5.0", "#### 1,234", "The answer is  New   YORK.", "#### 6", "#### 5"]
    answers = ["5", "1234", "new york", "5", None]
    assert grader(completions=completions, answer=answers) == [1.0, 1.0, 1.0, 0.0, None]
    assert ExactMatch(numeric=False)(completions=["#### 5.0"], answer=["5"]) == [0.0]
    assert ExactMatch(case_sensitive=True)(completions=["#### paris"], answer=["Paris"]) == [0.0]
    # extract=False grades the whole completion
    assert ExactMatch(extract=False)(completions=["I think #### 5", " 5 "], answer=["5", "5"]) == [0.0, 1.0]


def test_numeric_match():
    grader = NumericMatch()
    completions = ["#### 5.0000000001", "#### 18 apples", "#### x = 3 * 4 = 12", "#### 7", "#### 3/4", "#### 1"]
    answers = ["5", "18", "12", "8", "0.75", "x + 1"]
    assert grader(completions=completions, answer=answers) == [1.0, 1.0, 1.0, 0.0, 1.0, None]
    assert NumericMatch(rel_tol=0.1)(completions=["#### 95"], answer=["100"]) == [1.0]
    assert NumericMatch(rel_tol=0.01)(completions=["#### 95"], answer=["100"]) == [0.0]
    assert NumericMatch(rel_tol=0, abs_tol=0.5)(completions=["#### 0.4"], answer=["0"]) == [1.0]
    assert grader(completions=["no number at all"], answer=["3"]) == [0.0]


def test_contains():
    grader = Contains()
    completions = ["I believe it's PARIS!", "15 apples", "there are 5 apples", "London", "x"]
    answers = ["paris", "5", "5", "paris", ""]
    assert grader(completions=completions, answer=answers) == [1.0, 0.0, 1.0, 0.0, None]
    assert Contains(whole_word=False)(completions=["15 apples"], answer=["5"]) == [1.0]
    # with extract=True only the extracted answer is searched
    assert Contains(extract=True)(completions=["paris is nice\n#### Rome"], answer=["paris"]) == [0.0]


def test_fuzzy_similarity():
    grader = FuzzySimilarity()
    scores = grader(
        completions=["#### abcd", "#### ABCD", "#### zzzz", "#### abc"], answer=["abce", "abcd", "abcd", None]
    )
    assert scores[0] == pytest.approx(0.75)
    assert scores[1] == 1.0
    assert scores[2] == 0.0
    assert scores[3] is None
    numeric = FuzzySimilarity(method="numeric")
    scores = numeric(
        completions=["#### 90", "#### 100", "#### 300", "#### 0.5", "#### a"], answer=["100", "100", "100", "1", "b"]
    )
    assert scores == [pytest.approx(0.9), 1.0, 0.0, pytest.approx(0.5), None]
    assert numeric(completions=["no number"], answer=["1"]) == [0.0]


def test_format_grader():
    grader = FormatGrader(partial_credit=0.5)
    completions = ["step\n#### 4", "#### 4\nmore text", "4", "####", "  #### x  \n\n", ""]
    # no reference needed: the answer column may be absent
    assert grader(completions=completions) == [1.0, 0.5, 0.0, 0.0, 1.0, 0.0]
    assert FormatGrader()(completions=["#### 4\nbye"]) == [0.0]  # partial credit is opt-in
    custom = FormatGrader(pattern=r"Answer: -?\d+")
    assert custom(completions=["Answer: -3", "Answer: x"]) == [1.0, 0.0]


def test_multi_grader():
    grader = MultiGrader([NumericMatch(), FormatGrader()], weights=[3.0, 1.0])
    completions = ["#### 7", "7", "#### 8", "#### 9"]
    answers = ["7", "7", "x + 1", "7"]
    assert grader(completions=completions, answer=answers) == [1.0, 0.75, 1.0, 0.25]
    assert grader.__name__ == "multi_grader"
    # None only when every grader says None
    only_ref = MultiGrader([ExactMatch(), NumericMatch()])
    assert only_ref(completions=["#### 7", "#### 7"], answer=[None, "7"]) == [None, 1.0]
    # NaN from a plain function counts as None; plain functions are accepted
    def half(completions, **kwargs):
        return [math.nan, 0.5]

    mixed = MultiGrader([half, ExactMatch()], weights=[1.0, 1.0])
    assert mixed(completions=["#### 1", "#### 1"], answer=["1", "2"]) == [1.0, 0.25]


def test_multi_grader_rejects_wrong_length():
    grader = MultiGrader([lambda **kw: [1.0]])
    with pytest.raises(ValueError, match="returned 1 rewards for 2"):
        grader(completions=["a", "b"], answer=["a", "b"])


@pytest.mark.parametrize("grader", all_graders(), ids=lambda g: g.__name__)
def test_conversational_equals_standard_and_lengths(grader):
    texts = ["2 + 3 = 5\n#### 5", "#### 6", "The answer is 5.", "nothing", "#### 5\nbye"]
    columns = dict(answer=["5"] * 5, task=["chain_sum"] * 5, metadata=["{}"] * 5)
    standard = grader(prompts=["q"] * 5, completions=texts, **columns)
    conversational = grader(
        prompts=[[{"role": "user", "content": "q"}]] * 5, completions=[conv(t) for t in texts], **columns
    )
    assert len(standard) == len(texts)
    assert standard == conversational
    assert standard[0] == 1.0
    assert all(r is None or 0.0 <= r <= 1.0 for r in standard)


@pytest.mark.parametrize("grader", all_graders(), ids=lambda g: g.__name__)
def test_garbage_output_scores_low_without_raising(grader):
    n = len(GARBAGE)
    columns = dict(answer=["7"] * n, task=["chain_sum"] * n, metadata=["{}"] * n)
    rewards = grader(completions=GARBAGE, completion_ids=[[0]] * n, **columns)
    assert rewards == [0.0] * n


@pytest.mark.parametrize(
    "grader", [g for g in all_graders() if not isinstance(g, (FormatGrader, MultiGrader))], ids=lambda g: g.__name__
)
def test_missing_reference_gives_none(grader):
    n = 4
    rewards = grader(completions=["#### 7"] * n, answer=[None, "", "   ", math.nan], task=["chain_sum"] * n)
    assert rewards == [None] * n
    # a missing column: everything is "not applicable"
    assert grader(completions=["#### 7"], task=["chain_sum"]) == [None]


def test_empty_batch_and_trl_extra_kwargs():
    for grader in all_graders():
        assert grader(prompts=[], completions=[], completion_ids=[], answer=[]) == []
    # TRL also passes trainer_state / log_extra / log_metric, which are not columns
    out = ExactMatch()(completions=["#### 1"], answer=["1"], trainer_state=object(), log_extra=print, log_metric=print)
    assert out == [1.0]


def test_columns_may_be_any_sequence():
    """``datasets`` returns a Column object (not a list) for ``ds["answer"]``; tuples and arrays work too."""
    import numpy as np
    from datasets import Dataset

    ds = Dataset.from_dict({"answer": ["3", "4"], "task": ["chain_sum"] * 2, "metadata": ["{}"] * 2})
    columns = {name: ds[name] for name in ds.column_names}
    completions = ["#### 3", "#### 5"]
    for grader in all_graders():
        if not isinstance(grader, FormatGrader):
            assert grader(completions=completions, **columns)[0] == 1.0, grader.__name__
    assert ExactMatch()(completions=completions, answer=("3", "4")) == [1.0, 0.0]
    assert NumericMatch()(completions=completions, answer=np.array([3, 5])) == [1.0, 1.0]
    assert ExactMatch()(completions=completions, answer="34") == [None, None]  # a str is not a column


def test_name_is_settable_and_used_by_trl():
    from trl.trainer.utils import get_callable_name

    grader = ExactMatch()
    assert grader.__name__ == "exact_match"
    grader.__name__ = "em"
    assert get_callable_name(grader) == "em"
    assert get_callable_name(NumericMatch(name="num")) == "num"
    assert {g.__name__ for g in all_graders()} == {
        "exact_match",
        "numeric_match",
        "contains",
        "fuzzy_similarity",
        "fuzzy_numeric",
        "reasoning_gym",
        "format_partial_credit_0.5",  # FormatGrader(partial_credit=0.5) no longer shares "format" with FormatGrader()
        "multi_grader",
    }


@pytest.mark.parametrize(
    ("factory", "error"),
    [
        (lambda: NumericMatch(rel_tol=-1e-3), ValueError),
        (lambda: NumericMatch(abs_tol=-1), ValueError),
        (lambda: NumericMatch(rel_tol=math.inf), ValueError),
        (lambda: NumericMatch(rel_tol="0.1"), ValueError),
        (lambda: MultiGrader([]), ValueError),
        (lambda: MultiGrader([ExactMatch()], weights=[1.0, 2.0]), ValueError),
        (lambda: MultiGrader([ExactMatch(), "not callable"]), TypeError),
        (lambda: MultiGrader([ExactMatch()], weights=[-1.0]), ValueError),
        (lambda: MultiGrader([ExactMatch()], weights=[math.nan]), ValueError),
        (lambda: FormatGrader(partial_credit=1.5), ValueError),
        (lambda: FormatGrader(pattern="(unclosed"), ValueError),
        (lambda: FuzzySimilarity(method="levenshtein"), ValueError),
        (lambda: ReasoningGymScorer("no_such_task"), ValueError),
        (lambda: ExactMatch(answer_column=""), ValueError),
        (lambda: default_grader("no_such_task"), ValueError),
    ],
)
def test_constructor_validation(factory, error):
    with pytest.raises(error):
        factory()


def test_default_grader():
    grader = default_grader("countdown")
    assert isinstance(grader, ReasoningGymScorer) and grader.task == "countdown"
    assert isinstance(default_grader(), ReasoningGymScorer) and default_grader().task is None


def test_grader_base_is_abstract():
    with pytest.raises(NotImplementedError):
        Grader().score("1", "1", {})


@pytest.mark.parametrize("module", [extract_module, graders_module], ids=["extract", "graders"])
def test_docstring_examples_run(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------------------------- reasoning-gym


def rg_rows(task: str, size: int = 3, seed: int = 7) -> tuple[object, list[dict]]:
    import reasoning_gym

    dataset = reasoning_gym.create_dataset(task, size=size, seed=seed)
    rows = [
        {
            "prompt": entry["question"],
            "answer": entry["answer"],
            "task": task,
            "metadata": json.dumps(entry["metadata"]),
            "entry": entry,
        }
        for entry in dataset
    ]
    return dataset, rows


def wrong_answer(task: str, answer: str) -> str:
    if task == "countdown":
        return "1 + 1"
    return str(int(float(answer)) + 1)


@pytest.mark.parametrize("task", RG_TASKS)
@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
def test_reasoning_gym_scorer_on_real_entries(task, conversational):
    dataset, rows = rg_rows(task)
    right = [f"Let me think.\n#### {row['answer']}" for row in rows]
    wrong = [f"Let me think.\n#### {wrong_answer(task, row['answer'])}" for row in rows]
    completions = right + wrong
    if conversational:
        completions = [conv(c) for c in completions]
    columns = {key: [row[key] for row in rows] * 2 for key in ("prompt", "answer", "task", "metadata")}
    prompts = columns.pop("prompt")
    for grader in (ReasoningGymScorer(), ReasoningGymScorer(task), default_grader(task)):
        rewards = grader(prompts=prompts, completions=completions, **columns)
        assert rewards[: len(rows)] == [1.0] * len(rows)
        assert all(r is not None and r < 1.0 for r in rewards[len(rows) :])
        # the same numbers as reasoning-gym's own scorer on the extracted answer
        expected = [
            dataset.score_answer(extract_answer(completion_text(c)), row["entry"])
            for c, row in zip(completions, rows * 2)
        ]
        assert rewards == pytest.approx(expected)


def test_reasoning_gym_countdown_uses_metadata():
    _, rows = rg_rows("countdown", size=1)
    row = rows[0]
    grader = ReasoningGymScorer()
    # right expression, but metadata without the numbers: reasoning-gym can't check it → no full score
    common = dict(completions=[f"#### {row['answer']}"], answer=[row["answer"]], task=["countdown"])
    assert grader(**common, metadata=["{}"]) == [0.01]
    assert grader(**common, metadata=[row["metadata"]]) == [1.0]


def test_reasoning_gym_gsm_symbolic_chain_of_thought_scores_one():
    _, rows = rg_rows("gsm_symbolic", size=2)
    cots = [json.loads(row["metadata"])["answer_cot"] for row in rows]
    assert all("####" in cot for cot in cots)
    grader = ReasoningGymScorer()
    answers, metadata = [r["answer"] for r in rows], [r["metadata"] for r in rows]
    out = grader(completions=cots, answer=answers, task=["gsm_symbolic"] * 2, metadata=metadata)
    assert out == [1.0, 1.0]


def test_reasoning_gym_scorer_missing_or_unknown_task_is_none():
    grader = ReasoningGymScorer()
    out = grader(completions=["#### 1"] * 3, answer=["1"] * 3, task=[None, "", "no_such_task"], metadata=["{}"] * 3)
    assert out == [None, None, None]
    assert grader(completions=["#### 1"], answer=["1"]) == [None]  # no task column, no task given
    assert ReasoningGymScorer("chain_sum")(completions=["#### 1"], answer=["1"]) == [1.0]


# --------------------------------------------------------------------------------------------- GRPOTrainer


def grpo_dataset(conversational: bool):
    from datasets import Dataset

    rows = []
    for task in ("basic_arithmetic", "chain_sum", "gsm_symbolic"):  # numeric references: every grader applies
        _, task_rows = rg_rows(task, size=2, seed=3)
        rows += task_rows
    prompts = [row["prompt"] + "\nEnd with a line `#### <answer>`." for row in rows]
    if conversational:
        prompts = [[{"role": "user", "content": p}] for p in prompts]
    return Dataset.from_dict(
        {
            "prompt": prompts,
            "answer": [row["answer"] for row in rows],
            "task": [row["task"] for row in rows],
            "metadata": [row["metadata"] for row in rows],
        }
    )


@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
def test_all_graders_as_grpo_reward_funcs(tiny_model_path, tmp_path, conversational):
    from trl import GRPOConfig, GRPOTrainer

    graders = all_graders()
    seen: dict = {}

    def record(prompts, completions, **kwargs):
        """Spy reward function: keeps what TRL handed to the reward functions, so it can be re-graded below."""
        seen.update(prompts=prompts, completions=completions, kwargs=kwargs)
        return [0.0] * len(completions)

    config = GRPOConfig(**grpo_args(tmp_path, num_generations=4, learning_rate=1e-4))
    trainer = GRPOTrainer(
        model=tiny_model_path, reward_funcs=[*graders, record], args=config, train_dataset=grpo_dataset(conversational)
    )
    trainer.train()
    logs = {key: value for entry in trainer.state.log_history for key, value in entry.items()}
    for grader in graders:
        key = f"rewards/{grader.__name__}/mean"
        assert key in logs, f"{key} not logged; got {sorted(logs)}"
        assert math.isfinite(logs[key]), f"{key} = {logs[key]}"
    # TRL handed over the format we expect, and the logged means are our graders' rewards on those inputs
    assert len(seen["completions"]) == 4
    assert all(isinstance(c, list) == conversational for c in seen["completions"])
    assert {"answer", "task", "metadata"} <= set(seen["kwargs"])
    for grader in graders:
        rewards = grader(prompts=seen["prompts"], completions=seen["completions"], **seen["kwargs"])
        assert None not in rewards
        assert logs[f"rewards/{grader.__name__}/mean"] == pytest.approx(sum(rewards) / len(rewards), abs=1e-6)


# --------------------------------------------------------------------------------------------- issue 13: real references


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # each extraction error listed in issue 13
        ("The answer is 5. Wait\u2026 so the answer is 6.", "6"),
        ("The answer is 30, because 5 * 6 = 30 and 2 + 2 = 4.", "30"),
        ("She lost -$50 on it.", "-50"),
        ("She lost \u2212$50 on it.", "-50"),
        ("The balance is $-50.", "-50"),
        ("The area is 14 m^2", "14"),
        ("The area is 14 m^{2}", "14"),
        ("It holds 1 000 litres", "1000"),
        ("It holds 1\u202f000 litres", "1000"),
        ("\\$1{,}000", "1000"),
        ("we get 10\\,000", "10000"),
        ("so 4.2e1", "4.2e1"),
        ("so 1.5\\times10^{3}", "1.5e3"),
        ("so 1.5 \u00d7 10^3 metres", "1.5e3"),
        ("she has seven", "seven"),
        ("The answer is twenty-one.", "twenty-one"),
        ("#### \u22127", "-7"),
        ("The answer is \u221212.", "-12"),
        # neighbours that must keep working
        ("The answer is 5. Hmm, wrong. Actually the answer is 8.", "8"),
        ("I think the answer should be 17.", "17"),
        ("Answer: Paris, France", "Paris, France"),  # a comma ends an answer only before a connective
        ("The answer is 3 apples", "3 apples"),
        ("The probability is \\frac{1}{6}.", "1/6"),
        ("I have 3 apples and 10 pears", "10"),
        ("scores 12, 500 and 7", "7"),  # comma + space is a list, not thousands
        ("the first one", None),  # a lone "one" is a pronoun
        ("25% of them", "25%"),
        ("x^2 + y^2", None),
    ],
)
def test_extraction_errors_of_issue_13(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        ("seven", 7.0),
        ("twenty-one", 21.0),
        ("one hundred and five", 105.0),
        ("negative five", -5.0),
        ("two thousand three hundred", 2300.0),
        ("4.2e1", 42.0),
        ("1.5\\times10^{3}", 1500.0),
        ("1.5 \u00d7 10^3", 1500.0),
        ("1 000", 1000.0),
        ("1{,}000", 1000.0),
        ("-$50", -50.0),
        ("\u2212$50", -50.0),
        ("$-50", -50.0),
        ("\\$18.00", 18.0),
        ("\u20ac45", 45.0),
        ("1 1/2", 1.5),
        ("-\\frac{3}{4}", -0.75),
        ("\\dfrac{3}{4}", 0.75),
        ("50\\%", 50.0),
        ("40 percent", 40.0),
        ("\u22127", -7.0),
        ("twelve apples", None),
        ("1_000", None),
        ("1 00", None),
    ],
)
def test_parse_number_forms(s, expected):
    assert parse_number(s) == expected


GSM8K_RATIONALE = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        (GSM8K_RATIONALE, "72"),
        ("so the total is 1,000.\n#### 1,000", "1000"),
        ("\\boxed{42}", "42"),
        ("Therefore, the final answer is $\\boxed{7}$.", "7"),
        ("The answer is 7.", "7"),
        ("$42$", "42"),
        ("$\\frac{1}{2}$", "\\frac{1}{2}"),
        ("**12**", "12"),
        ("\\(12\\)", "12"),
        ("25%", "25%"),
        ("1,000", "1,000"),  # already a number: kept as written
        ("x + 1", "x + 1"),
        ("Paris", "Paris"),
        ("", None),
        (None, None),
        (72, "72"),
    ],
)
def test_reference_answer(reference, expected):
    from trl_ext.rewards import reference_answer

    assert reference_answer(reference) == expected


def test_numeric_match_reads_rationale_references():
    grader = NumericMatch()
    completions = ["She sold 72 clips.", "#### 72", "#### 24", "The answer is 7, since 3 + 4 = 7.", "\\boxed{42}"]
    answers = [GSM8K_RATIONALE, GSM8K_RATIONALE, GSM8K_RATIONALE, "The answer is 7.", "\\boxed{42}"]
    assert grader(completions=completions, answer=answers) == [1.0, 1.0, 0.0, 1.0, 1.0]
    # references that state no number stay "not applicable"
    assert grader(completions=["#### 1"] * 3, answer=["x + 1", "Paris", "The answer is a cat."]) == [None] * 3


@pytest.mark.parametrize(
    ("output", "reference", "expected"),
    [
        ("#### 3/4", "0.75", 1.0),
        ("#### 0.75", "\\frac{3}{4}", 1.0),
        ("#### 2/4", "1/2", 1.0),
        ("#### 1 1/2", "1.5", 1.0),
        ("#### 25%", "0.25", 1.0),  # p % ↔ p / 100
        ("#### 25%", "25", 1.0),  # p % ↔ p ("what percent…" references)
        ("#### 0.25", "25%", 1.0),
        ("#### 25", "25%", 1.0),
        ("#### 40%", "4", 0.0),
        ("#### 0.4", "4", 0.0),
        ("#### 3/5", "0.75", 0.0),
        ("#### seven", "7", 1.0),
        ("#### 7", "seven", 1.0),
        ("#### 4.2e1", "42", 1.0),
        ("#### 2^{10}", "1024", 1.0),
        ("#### 94*4 - 61 - 6", "309", 1.0),
        ("#### 5 or 6", "5", 0.0),  # a hedge states no answer
        ("The answer is 5, or maybe 6.", "5", 0.0),
        ("The answer is 5 \u00b1 1.", "5", 0.0),
        ("#### -$50", "-50", 1.0),
        ("#### -$50", "50", 0.0),
    ],
)
def test_numeric_equivalence(output, reference, expected):
    assert NumericMatch()(completions=[output], answer=[reference]) == [expected]


def test_exact_match_reads_rationale_references():
    grader = ExactMatch()
    assert grader(completions=["#### 72", "#### 71", "#### Paris"], answer=[GSM8K_RATIONALE] * 2 + ["The answer is Paris."]) == [
        1.0,
        0.0,
        1.0,
    ]
    assert grader(completions=["#### seven"], answer=["7"]) == [1.0]


def test_contains_and_fuzzy_read_rationale_references():
    assert Contains()(completions=["so 72 clips", "so 71 clips"], answer=[GSM8K_RATIONALE] * 2) == [1.0, 0.0]
    assert FuzzySimilarity()(completions=["#### Paris"], answer=["The answer is Paris."]) == [1.0]
    assert FuzzySimilarity(method="numeric")(completions=["#### 36"], answer=[GSM8K_RATIONALE]) == [0.5]


def test_parameters_make_distinct_names():
    assert NumericMatch().__name__ == "numeric_match"
    assert NumericMatch(rel_tol=0.01).__name__ == "numeric_match_rel_tol_0.01"
    assert NumericMatch(abs_tol=0.5, answer_column="solution").__name__ == "numeric_match_answer_column_solution_abs_tol_0.5"
    assert NumericMatch(rel_tol=0.01, name="mine").__name__ == "mine"
    assert ExactMatch(case_sensitive=True).__name__ == "exact_match_case_sensitive_True"
    assert ExactMatch(extract=False).__name__ == "exact_match_extract_False"
    assert Contains().__name__ == "contains" and Contains(extract=True).__name__ == "contains_extract_True"
    assert FuzzySimilarity(method="numeric").__name__ == "fuzzy_similarity_method_numeric"
    assert FormatGrader().__name__ == "format"
    assert FormatGrader(pattern=r"Answer: \d+").__name__.startswith("format_pattern_")
    assert FormatGrader(pattern=r"Answer: \d+").__name__ != FormatGrader(pattern=r"Answer: \w+").__name__
    assert ReasoningGymScorer("chain_sum").__name__ == "reasoning_gym"  # default_grader(task) keeps its metric key
    import re

    for grader in (NumericMatch(rel_tol=1e-3, answer_column=("answer", "solution")), FormatGrader(pattern="(a|b)$")):
        assert re.fullmatch(r"[\w.-]+", grader.__name__), grader.__name__  # metric-key safe (TensorBoard, MLflow)


def test_answer_column_candidates():
    grader = NumericMatch(answer_column=("answer", "solution"))
    assert grader(completions=["#### 3", "#### 4"], solution=["3", "5"]) == [1.0, 0.0]
    assert grader(completions=["#### 3"], answer=["3"], solution=["9"]) == [1.0]  # the first present column wins
    assert grader(completions=["#### 3"], other=["3"]) == [None]
    with pytest.raises(ValueError, match="answer_column"):
        NumericMatch(answer_column=())


def test_module_level_functions():
    from trl_ext.rewards import exact_match, math_verify_match, numeric_match

    assert numeric_match.__name__ == "numeric_match" and exact_match.__name__ == "exact_match"
    assert math_verify_match.__name__ == "math_verify_match"
    assert numeric_match(completions=["#### 72", "#### 7"], answer=[GSM8K_RATIONALE, "8"]) == [1.0, 0.0]
    assert numeric_match(completions=["#### 72"], solution=[GSM8K_RATIONALE]) == [1.0]
    assert exact_match(completions=[conv("#### Paris")], answer=["paris"]) == [1.0]
    assert math_verify_match(completions=["\\boxed{2\\sqrt{2}}", "\\boxed{3}"], solution=["\\sqrt{8}", "\\sqrt{8}"]) == [
        1.0,
        0.0,
    ]
    # TRL passes these keyword arguments to every reward function
    out = numeric_match(prompts=["q"], completions=["#### 1"], completion_ids=[[1]], answer=["1"], trainer_state=None,
                        log_extra=print, log_metric=print)
    assert out == [1.0]
    import pickle

    assert pickle.loads(pickle.dumps(numeric_match)) is numeric_match  # TRL's async rollout pickles reward funcs


def test_module_level_functions_resolve_like_trl_grpo_script():
    """TRL's `trl grpo --reward_funcs a.b.c` does: rsplit(".", 1) → importlib.import_module(a.b) → getattr(c)."""
    import importlib

    for dotted in ("trl_ext.rewards.numeric_match", "trl_ext.rewards.exact_match", "trl_ext.rewards.math_verify_match"):
        module_path, func_name = dotted.rsplit(".", 1)
        func = getattr(importlib.import_module(module_path), func_name)
        assert callable(func) and not isinstance(func, type), dotted
        assert func(completions=["#### 72"], answer=[GSM8K_RATIONALE]) == [1.0], dotted


def test_math_verify_grader():
    from trl_ext.rewards import MathVerify

    grader = MathVerify()
    assert grader.__name__ == "math_verify"
    completions = ["\\boxed{2\\sqrt{2}}", "\\boxed{\\frac{2}{4}}", "#### 72", "\\boxed{\\pi}", "\\boxed{2\\pi}", "", "#### 1"]
    answers = ["\\sqrt{8}", "\\frac{1}{2}", GSM8K_RATIONALE, "\\pi", "\\pi", "\\pi", None]
    assert grader(completions=completions, answer=answers) == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, None]
    assert MathVerify(rel_tol=0.1).__name__ == "math_verify_rel_tol_0.1"
    assert MathVerify(rel_tol=0.1)(completions=["#### 95"], answer=["100"]) == [1.0]
    garbage = grader(completions=GARBAGE, answer=["7"] * len(GARBAGE))
    assert garbage == [0.0] * len(GARBAGE)


def test_math_verify_missing_package_is_a_clear_error(monkeypatch):
    import builtins

    from trl_ext.rewards import MathVerify

    real_import = builtins.__import__

    def no_math_verify(name, *args, **kwargs):
        if name == "math_verify" or name.startswith("math_verify."):
            raise ImportError("No module named 'math_verify'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_math_verify)
    with pytest.raises(ImportError, match=r"pip install 'trl-ext\[math\]'"):
        MathVerify()


# --------------------------------------------------------------------------------------------- the probe's all-None check


def test_check_rewards_not_all_none_names_function_and_column():
    from trl_ext.trainers.checks import check_rewards_not_all_none

    check_rewards_not_all_none("g", [None, 0.0])  # one applicable sample is enough
    check_rewards_not_all_none("g", [])
    grader = NumericMatch(answer_column="solution")
    with pytest.raises(ValueError, match=r"'numeric_match_answer_column_solution'.*None for all 2.*'solution' holds e\.g\. 'x \+ 1'"):
        check_rewards_not_all_none(grader.__name__, [None, None], grader, {"solution": ["x + 1", "y"]})
    with pytest.raises(ValueError, match=r"'solution' is not in the dataset \(columns: \['answer'\]\)"):
        check_rewards_not_all_none(grader.__name__, [None, None], grader, {"answer": ["1", "2"]})
    from trl_ext.rewards import numeric_match

    with pytest.raises(ValueError, match=r"'answer' / 'solution' is not in the dataset"):
        check_rewards_not_all_none("numeric_match", [None], numeric_match, {"label": ["1"]})


def _probe_dataset(answers):
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [f"Question {i}?" for i in range(len(answers))], "answer": answers})


@pytest.mark.parametrize("trainer_name", ["rft", "process_grpo"])
def test_trainers_reject_an_unusable_reference_column_at_the_probe(tiny_model_path, tmp_path, trainer_name):
    from trl_ext.rewards import ArithmeticStepVerifier

    if trainer_name == "rft":
        from trl_ext.trainers import RFTConfig as Config
        from trl_ext.trainers import RFTTrainer as Trainer

        extra = {}
    else:
        from trl_ext.trainers import ProcessGRPOConfig as Config
        from trl_ext.trainers import ProcessGRPOTrainer as Trainer

        extra = {"process_reward_funcs": [ArithmeticStepVerifier()]}
    args = Config(**grpo_args(tmp_path, per_device_train_batch_size=2, num_generations=2, max_completion_length=4))
    with pytest.raises(ValueError, match=r"'numeric_match' returned None for all 2 probe samples.*'answer' holds e\.g\. 'a cat'"):
        Trainer(model=tiny_model_path, reward_funcs=[NumericMatch()], args=args,
                train_dataset=_probe_dataset(["a cat", "a dog", "a cow", "a hen"]), **extra)
    # GSM8K rationales are usable references: no error
    Trainer(model=tiny_model_path, reward_funcs=[NumericMatch()], args=args,
            train_dataset=_probe_dataset([GSM8K_RATIONALE] * 4), **extra)
    # the probe can be switched off (a mixed dataset where the grader applies to some rows only)
    args.validate_reward_funcs = False
    Trainer(model=tiny_model_path, reward_funcs=[NumericMatch()], args=args,
            train_dataset=_probe_dataset(["a cat", "a dog", "a cow", "a hen"]), **extra)


# --------------------------------------------------------------------------------------------- TRL: GSM8K references


def gsm8k_rows(n: int = 4) -> list[dict]:
    """GSM8K-format rows (question → prompt; answer = rationale with <<a*b=c>> annotations ending in #### N)."""
    rows = []
    for i in range(n):
        a, b = 3 + i, 4 + 2 * i
        rows.append({
            "prompt": f"Tom has {a} bags with {b} apples each. How many apples does he have? End with #### <answer>.",
            "answer": f"Tom has {a} * {b} = <<{a}*{b}={a * b}>>{a * b} apples.\n#### {a * b}",
        })
    return rows


def test_same_class_graders_get_distinct_metric_keys_in_grpo(tiny_model_path, tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from trl_ext.rewards import MathVerify, math_verify_match

    graders = [NumericMatch(), NumericMatch(rel_tol=0.5), ExactMatch(), ExactMatch(numeric=False), MathVerify(),
               math_verify_match]
    seen: dict = {}

    def record(prompts, completions, **kwargs):
        seen.update(prompts=prompts, completions=completions, kwargs=kwargs)
        return [0.0] * len(completions)

    config = GRPOConfig(**grpo_args(tmp_path, num_generations=4))
    trainer = GRPOTrainer(model=tiny_model_path, reward_funcs=[*graders, record], args=config,
                          train_dataset=Dataset.from_list(gsm8k_rows()))
    names = [g.__name__ for g in graders]
    assert trainer.reward_func_names[: len(graders)] == names
    assert len(set(names)) == len(names), names
    trainer.train()
    logs = {key: value for entry in trainer.state.log_history for key, value in entry.items()}
    for grader in graders:
        rewards = grader(prompts=seen["prompts"], completions=seen["completions"], **seen["kwargs"])
        assert None not in rewards, grader.__name__  # the GSM8K rationale is a usable reference
        key = f"rewards/{grader.__name__}/mean"
        assert logs[key] == pytest.approx(sum(rewards) / len(rewards), abs=1e-6), key


def test_trl_grpo_script_resolves_our_reward_funcs(tiny_model_path, tmp_path):
    """`trl grpo --reward_funcs trl_ext.rewards.numeric_match …` runs TRL's own script (trl/scripts/grpo.py), whose
    main() resolves each dotted path with importlib; one step on a local GSM8K-format jsonl logs our rewards."""
    import os
    import subprocess
    import sys

    data = tmp_path / "gsm8k"
    data.mkdir()
    with open(data / "train.jsonl", "w") as f:
        for row in gsm8k_rows():
            f.write(json.dumps(row) + "\n")
    cmd = [
        sys.executable, "-m", "trl.scripts.grpo", "--model_name_or_path", str(tiny_model_path),
        "--dataset_name", str(data), "--output_dir", str(tmp_path / "out"),
        "--reward_funcs", "trl_ext.rewards.numeric_match", "trl_ext.rewards.math_verify_match",
        "--max_steps", "1", "--per_device_train_batch_size", "2", "--num_generations", "2",
        "--max_completion_length", "8", "--use_cpu", "--report_to", "none", "--logging_steps", "1",
        "--save_strategy", "no", "--dtype", "float32",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    for name in ("numeric_match", "math_verify_match"):
        match = re.search(rf"'rewards/{name}/mean': '?([-\d.e+na]+)", output)
        assert match, f"rewards/{name}/mean not logged:\n{output[-3000:]}"
        assert math.isfinite(float(match.group(1))), match.group(0)
    assert "All reward functions returned None" not in output


def test_pathological_outputs_score_without_scoring_errors(caplog):
    """Overflowing numbers, long repetitive outputs, unbalanced braces: 0.0, no exception caught inside the grader
    (a caught one logs 'scoring failed'), and bounded time."""
    import logging
    import time

    from trl_ext.rewards import MathVerify

    outputs = ["9" * 5000, "#### " + "9" * 400, "The answer is 1e999", "{" * 3000 + "\\boxed{" * 300,
               "1,000" * 2000, "one two three " * 1000, "The answer is " * 1000, "\\frac{1}{0}", "#### 1/0",
               "1 0/0", "-" * 5000 + "8", "\u2212" * 100]
    for grader in (NumericMatch(), ExactMatch(), MathVerify()):
        with caplog.at_level(logging.WARNING, logger="trl_ext.rewards"):
            start = time.perf_counter()
            rewards = grader(completions=outputs, answer=["7"] * len(outputs))
            elapsed = time.perf_counter() - start
        assert rewards == [0.0] * len(outputs), (grader.__name__, rewards)
        assert "scoring failed" not in caplog.text, caplog.text
        assert elapsed < 5.0, (grader.__name__, elapsed)
