"""trl_ext.data: deterministic reasoning-gym builders, solution normalisation and step corruption."""

import json
import re
from fractions import Fraction

import pytest
import reasoning_gym

from trl_ext.data import (
    ANSWER_FORMAT_INSTRUCTION,
    SUPPORTED_TASKS,
    corrupt_solution,
    demonstration_dataset,
    normalise_solution,
    preference_dataset,
    rl_dataset,
    split_steps,
    step_labelled_dataset,
)

SOLUTION_BUILDERS = [demonstration_dataset, preference_dataset, step_labelled_dataset]


def _question(prompt) -> str:
    text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
    return text.split("\n\n" + ANSWER_FORMAT_INSTRUCTION)[0]


def _final(text: str) -> str:
    last = text.strip().split("\n")[-1]
    assert last.startswith("#### "), last
    return last[len("#### ") :]


# Independent check of simple claims "a op b = c" (not part of a longer expression), for consistency tests.
_SIMPLE_CLAIM = re.compile(
    r"(?<![\d.,+\-*/×÷x(])(\d+(?:\.\d+)?) ?([+\-*/×]) ?(\d+(?:\.\d+)?) ?= ?(\d+(?:\.\d+)?)(?![\d(]| ?[+\-*/×÷])"
)


def _simple_claims(text: str) -> list[bool]:
    out = []
    for a, op, b, c in _SIMPLE_CLAIM.findall(text):
        a, b, c = Fraction(a), Fraction(b), Fraction(c)
        value = {"+": a + b, "-": a - b, "*": a * b, "×": a * b, "/": a / b if b else None}[op]
        out.append(value == c)
    return out


# ------------------------------------------------------------------------------------------ determinism


@pytest.mark.parametrize("task", ["basic_arithmetic", "gsm_symbolic"])
def test_rl_dataset_is_deterministic_and_seeds_differ(task):
    a = rl_dataset(task, 30, seed=3)
    assert a.to_list() == rl_dataset(task, 30, seed=3).to_list()
    b = rl_dataset(task, 30, seed=4)
    # reasoning-gym seeds items with Random(seed + index): neighbouring seeds must not share the pool
    assert len(set(a["prompt"]) & set(b["prompt"])) <= 3


@pytest.mark.parametrize("builder", SOLUTION_BUILDERS)
def test_solution_builders_are_deterministic_and_seeds_differ(builder):
    a = builder(12, seed=1)
    assert a.to_list() == builder(12, seed=1).to_list()
    b = builder(12, seed=2)
    assert len(set(a["prompt"]) & set(b["prompt"])) <= 2


# ------------------------------------------------------------------------------------- columns / formats


def test_rl_columns_standard_format():
    ds = rl_dataset("chain_sum", 10, seed=0)
    assert ds.column_names == ["prompt", "answer", "task", "metadata"]
    assert len(ds) == 10
    for row in ds:
        assert isinstance(row["prompt"], str) and row["prompt"].endswith(ANSWER_FORMAT_INSTRUCTION + "\n")
        assert isinstance(row["answer"], str) and row["task"] == "chain_sum"
        assert isinstance(json.loads(row["metadata"]), dict)
    assert "####" in ANSWER_FORMAT_INSTRUCTION


def test_rl_columns_conversational_with_system_prompt():
    ds = rl_dataset("gsm_symbolic", 5, conversational=True, system_prompt="Be brief.")
    for row in ds:
        system, user = row["prompt"]
        assert system == {"role": "system", "content": "Be brief."}
        assert user["role"] == "user" and user["content"].endswith(ANSWER_FORMAT_INSTRUCTION)
    plain = rl_dataset("gsm_symbolic", 5, conversational=True)
    assert [len(p) for p in plain["prompt"]] == [1] * 5
    # same questions in both formats
    assert [_question(p) for p in plain["prompt"]] == [_question(p) for p in rl_dataset("gsm_symbolic", 5)["prompt"]]


@pytest.mark.parametrize(
    "builder, columns, completion_columns",
    [
        (demonstration_dataset, ["prompt", "completion", "answer"], ["completion"]),
        (preference_dataset, ["prompt", "chosen", "rejected", "answer", "corrupted_step"], ["chosen", "rejected"]),
        (step_labelled_dataset, ["prompt", "completions", "labels", "answer"], []),
    ],
)
def test_solution_builder_columns_both_formats(builder, columns, completion_columns):
    std = builder(6, seed=0)
    conv = builder(6, seed=0, conversational=True)
    assert std.column_names == columns and conv.column_names == columns
    assert len(std) == len(conv) == 6
    for s, c in zip(std, conv):
        assert isinstance(s["prompt"], str)
        assert c["prompt"] == [{"role": "user", "content": s["prompt"].rstrip("\n")}]
        for col in completion_columns:
            assert isinstance(s[col], str)
            assert c[col] == [{"role": "assistant", "content": s[col]}]
        assert isinstance(s["answer"], str)
    if builder is preference_dataset:
        assert all(isinstance(i, int) for i in std["corrupted_step"])
    if builder is step_labelled_dataset:
        for row in conv:  # steps stay plain strings in both formats
            assert all(isinstance(x, str) for x in row["completions"])
            assert all(isinstance(x, bool) for x in row["labels"])


# ------------------------------------------------------------------------------------------------ splits


@pytest.mark.parametrize("task", ["basic_arithmetic", "gsm_symbolic"])
def test_train_and_eval_never_share_a_question(task):
    train = rl_dataset(task, 200, seed=0, split="train")
    evals = rl_dataset(task, 40, seed=0, split="eval")
    other_seed_eval = rl_dataset(task, 40, seed=7, split="eval")
    assert len(train) == 200 and len(evals) == 40
    train_q = {_question(p) for p in train["prompt"]}
    assert len(train_q) == 200  # deduplicated
    assert not train_q & {_question(p) for p in evals["prompt"]}
    assert not train_q & {_question(p) for p in other_seed_eval["prompt"]}


def test_solution_builders_respect_the_same_split():
    train = {_question(p) for b in SOLUTION_BUILDERS for p in b(30, seed=0)["prompt"]}
    evals = {_question(p) for b in SOLUTION_BUILDERS for p in b(10, seed=0, split="eval")["prompt"]}
    assert train and evals and not train & evals
    rl_eval = {_question(p) for p in rl_dataset("gsm_symbolic", 10, seed=0, split="eval")["prompt"]}
    assert not train & rl_eval


# ----------------------------------------------------------------------------------------------- answers


@pytest.mark.parametrize(
    "task, size", [("basic_arithmetic", 40), ("chain_sum", 40), ("gsm_symbolic", 40), ("countdown", 6)]
)
def test_every_rl_answer_scores_one_with_reasoning_gym(task, size):
    score = reasoning_gym.get_score_answer_fn(task)
    for split in ("train", "eval"):
        ds = rl_dataset(task, size if split == "train" else 3, seed=0, split=split)
        for row in ds:
            metadata = json.loads(row["metadata"])
            entry = {"question": _question(row["prompt"]), "answer": row["answer"], "metadata": metadata}
            assert score(row["answer"], entry) == 1.0, (row["answer"], entry)


def test_rl_config_passes_through_and_countdown_keeps_its_instructions():
    ds = rl_dataset("chain_sum", 20, seed=0, min_terms=4, max_terms=4)
    assert all(json.loads(m)["num_terms"] == 4 for m in ds["metadata"])
    cd = rl_dataset("countdown", 2, seed=0)
    assert all("Final answer format instructions" in p and ANSWER_FORMAT_INSTRUCTION in p for p in cd["prompt"])


def test_demonstrations_are_normalised_steps_ending_with_the_answer():
    ds = demonstration_dataset(150, seed=0)
    for row in ds:
        text = row["completion"]
        assert _final(text) == row["answer"]
        steps = split_steps(text)
        assert len(steps) >= 2 and steps[-1] == f"#### {row['answer']}"
        assert all("####" not in s for s in steps[:-1])
        assert "\n\n\n" not in text and text == text.strip()
        # reasoning-gym's "48=48" artefacts are gone
        assert not re.search(r"(?<![\d.+\-*/×x÷ ])\s?(\d+)=\1(?!\d)", text), text
    # GSM8K-style single-newline solutions were split one step per line
    assert any(len(split_steps(t)) >= 4 for t in ds["completion"])


def test_normalise_solution_cases():
    assert normalise_solution("He gets 48=48 spam\nSo 160-48=112\n#### 112", "112") == (
        "He gets 48 spam\n\nSo 160-48=112\n\n#### 112"
    )
    assert normalise_solution("So 72-24=24 left\n#### 24", "24") == "So 72-24=24 left\n\n#### 24"
    structured = "Intro:\n\n1. a\n   • 2 × 3 = 6"
    assert normalise_solution(structured + "\n\n#### 6.0", "6") == structured + "\n\n#### 6"
    assert normalise_solution("x = 24.749999999999996 - 5\n#### 5", "5") is None  # float noise
    assert normalise_solution("2 + 2 = 4\n#### 5", "4") is None  # stated answer disagrees
    assert normalise_solution("2 + 2 = 4", "4") is None  # no final line


# ------------------------------------------------------------------------------------------- corruption


def test_preference_pairs_have_one_corrupted_step_and_a_wrong_answer():
    ds = preference_dataset(120, seed=0)
    exactly_one = carried = 0
    for row in ds:
        chosen, rejected, k = split_steps(row["chosen"]), split_steps(row["rejected"]), row["corrupted_step"]
        assert row["rejected"] != row["chosen"]
        assert _final(row["chosen"]) == row["answer"]
        assert _final(row["rejected"]) != row["answer"]
        assert Fraction(_final(row["rejected"])) != Fraction(row["answer"])
        assert len(chosen) == len(rejected) and 0 <= k < len(chosen) - 1
        assert rejected[:k] == chosen[:k] and rejected[k] != chosen[k]
        good, bad = _simple_claims(row["chosen"]), _simple_claims(row["rejected"])
        assert len(good) == len(bad)
        broken = sum(g and not b for g, b in zip(good, bad))
        assert broken <= 1, (row["chosen"], row["rejected"])  # the error is carried, not repeated
        exactly_one += broken == 1
        carried += rejected[k + 1 : -1] != chosen[k + 1 : -1]
    assert exactly_one >= len(ds) // 2  # the corrupted claim is usually a simple "a op b = c"
    assert carried >= len(ds) // 4  # often the error changes later steps too


def test_corrupt_solution_propagates_the_error():
    solution = "\n\n".join(
        ["John has 35 apples.", "35 × 3 = 105 kiwis", "Total: 105 + 35 = 140", "So 140 fruits in all.", "#### 140"]
    )
    positions = set()
    for seed in range(10):
        bad = corrupt_solution(solution, "35 apples and 3 times as many kiwis?", "140", seed=seed)
        assert bad is not None and bad.corrupted_step in (1, 2)
        kiwis = int(re.search(r"= (\d+) kiwis", bad.text).group(1))
        total = int(re.search(r"Total: (\d+) \+ 35 = (\d+)", bad.text).group(2))
        assert re.search(r"Total: (\d+)", bad.text).group(1) == str(kiwis)
        if bad.corrupted_step == 1:
            assert kiwis != 105 and total == kiwis + 35
        else:
            assert kiwis == 105 and total != 140
        assert f"So {total} fruits in all." in bad.text
        assert bad.answer == str(total) and bad.steps[-1] == f"#### {total}"
        assert bad.steps[0] == "John has 35 apples."
        positions.add(bad.corrupted_step)
    assert positions == {1, 2}  # both claims get corrupted for some seed, the first one carried through


def test_corrupt_solution_only_corrupts_claims_that_reach_the_answer():
    for seed in range(8):
        bad = corrupt_solution("2 + 3 = 5 apples\n\n4 + 4 = 8 pears\n\n#### 8", "", "8", seed=seed)
        assert bad.corrupted_step == 1 and bad.steps[0] == "2 + 3 = 5 apples" and bad.answer != "8"
        assert bad.steps[1] == f"4 + 4 = {bad.answer} pears"


def test_corrupt_solution_refuses_when_nothing_can_be_corrupted():
    assert corrupt_solution("No arithmetic here.\n\n#### 4", "", "4") is None
    # the only claim's result is also a number of the question: a later '4' would be ambiguous
    assert corrupt_solution("2 * 2 = 4\n\n#### 4", "He has 4 cats", "4") is None
    assert corrupt_solution("just text", "", "1") is None


def test_step_labels_are_consistent_and_mixed():
    ds = step_labelled_dataset(80, seed=0)
    corrupted = 0
    demos = {d["prompt"]: d["completion"] for d in demonstration_dataset(80, seed=0)}
    for row in ds:
        steps, labels = row["completions"], row["labels"]
        assert len(steps) == len(labels) >= 2 and all(steps) and steps[-1].startswith("#### ")
        assert row["prompt"] in demos  # same question stream as the demonstrations
        if all(labels):
            assert steps == split_steps(demos[row["prompt"]]) and _final(steps[-1]) == row["answer"]
        else:
            corrupted += 1
            k = labels.index(False)
            assert labels == [True] * k + [False] * (len(labels) - k)
            assert _final(steps[-1]) != row["answer"]
            reference = split_steps(demos[row["prompt"]])  # the first False step is the first corrupted one
            assert steps[:k] == reference[:k] and steps[k] != reference[k]
    assert 0.3 * len(ds) <= corrupted <= 0.7 * len(ds)


# ------------------------------------------------------------------------------------------- split_steps


def test_split_steps_edge_cases():
    assert split_steps("") == []
    assert split_steps("   \n\n  ") == []
    assert split_steps("one line, no separator") == ["one line, no separator"]
    assert split_steps("a\n\nb\n\n\n\n") == ["a", "b"]
    assert split_steps("\n\na\nstill a\n\n  b  ") == ["a\nstill a", "b"]
    assert split_steps("a||b||", separator="||") == ["a", "b"]
    with pytest.raises(ValueError, match="separator"):
        split_steps("a", separator="")


# --------------------------------------------------------------------------------------------- bad input


def test_unknown_task_lists_supported_ones():
    with pytest.raises(ValueError, match="supported tasks") as err:
        rl_dataset("sudoku_deluxe", 5)
    assert all(t in str(err.value) for t in SUPPORTED_TASKS)


def test_rl_instruction_and_empty_system_prompt():
    ds = rl_dataset("chain_sum", 3, conversational=True, system_prompt="", instruction="End with #### <answer>.")
    default = rl_dataset("chain_sum", 3, conversational=True)
    for row, ref in zip(ds, default):
        system, user = row["prompt"]
        assert system == {"role": "system", "content": ""}  # an empty system message, not none
        question = ref["prompt"][0]["content"].removesuffix(ANSWER_FORMAT_INSTRUCTION).rstrip()
        assert user["content"] == question + "\n\nEnd with #### <answer>."
    bare = rl_dataset("chain_sum", 3, instruction="")
    assert [p.rstrip() + "\n" for p in bare["prompt"]] == bare["prompt"] and "####" not in bare["prompt"][0]
    with pytest.raises(ValueError, match="instruction"):
        rl_dataset("chain_sum", 3, instruction=None)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"size": 0}, "size"),
        ({"size": -3}, "size"),
        ({"size": True}, "size"),
        ({"size": 2.0}, "size"),
        ({"size": 5, "split": "test"}, "split"),
        ({"size": 5, "seed": -1}, "seed"),
        ({"size": 5, "eval_fraction": 0.0}, "eval_fraction"),
        ({"size": 5, "eval_fraction": 1.0}, "eval_fraction"),
        ({"size": 5, "system_prompt": "hi"}, "system_prompt"),
    ],
)
@pytest.mark.parametrize("builder", ["rl", *SOLUTION_BUILDERS])
def test_bad_arguments_raise_value_error_naming_them(builder, kwargs, name):
    call = (lambda **kw: rl_dataset("chain_sum", **kw)) if builder == "rl" else builder
    with pytest.raises(ValueError, match=name):
        call(**kwargs)


def test_bad_task_config_and_impossible_requests():
    with pytest.raises(ValueError, match="unknown config key"):
        rl_dataset("chain_sum", 5, difficulty_level=3)
    with pytest.raises(ValueError, match="invalid reasoning-gym config"):
        rl_dataset("chain_sum", 5, min_terms=5, max_terms=2)
    # one-digit a + b has far fewer than 200 distinct questions in the eval share
    with pytest.raises(ValueError, match="could not build 200 'eval' rows"):
        rl_dataset("chain_sum", 200, split="eval", min_terms=2, max_terms=2, min_digits=1, max_digits=1)
