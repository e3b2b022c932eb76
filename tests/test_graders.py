"""Tests of trl_ext.rewards: answer extraction, graders, and graders as reward_funcs of stock GRPOTrainer."""

from __future__ import annotations

import doctest
import json
import math

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
        "format",
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

    config = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=1,
        learning_rate=1e-4,
        report_to="none",
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        seed=0,
    )
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
