"""Process rewards: step splitting → token spans, the arithmetic step verifier, the PRM scorer, output validation."""

import math

import pytest
import torch

from trl_ext.rewards.process import (
    ArithmeticStepVerifier,
    ProcessRewardModel,
    check_process_rewards,
    completion_steps,
    split_step_spans,
)

# ----------------------------------------------------------------------------------------------------------------------
# split_step_spans
# ----------------------------------------------------------------------------------------------------------------------


def _steps(text, sep="\n\n"):
    return [text[a:b] for a, b in split_step_spans(text, sep)]


def test_split_default_blank_line_and_trailing_text():
    assert _steps("a = 1\n\nb = 2\n\n#### 3") == ["a = 1", "b = 2", "#### 3"]


def test_split_no_separator_is_one_step_and_empty_has_none():
    assert _steps("just one step") == ["just one step"]
    assert _steps("") == []
    assert _steps("   \n\n  \n\n") == []


def test_split_leading_repeated_and_trailing_separators_make_no_empty_steps():
    assert _steps("\n\na\n\n\n\n\nb\n\n") == ["a", "b"]


def test_split_single_newline_separator():
    assert _steps("one\ntwo\n\nthree", "\n") == ["one", "two", "three"]


def test_split_spans_index_the_text():
    text = "  x + 1\n\n y  "
    spans = split_step_spans(text)
    assert spans == [(2, 7), (10, 11)]


def test_empty_separator_is_an_error():
    with pytest.raises(ValueError, match="separator"):
        split_step_spans("a\n\nb", "")


# ----------------------------------------------------------------------------------------------------------------------
# completion_steps: token spans
# ----------------------------------------------------------------------------------------------------------------------


class ByteTokenizer:
    """A byte-level toy tokenizer whose pieces merge separators with text and split multi-byte characters."""

    def __init__(self, pieces, special_ids=()):
        self.pieces = pieces
        self.all_special_ids = list(special_ids)
        self.all_special_tokens = [pieces[i].decode() for i in special_ids]
        self.added_tokens_decoder = {}

    def decode(self, ids, skip_special_tokens=False, **kwargs):
        ids = [i for i in ids if not (skip_special_tokens and i in self.all_special_ids)]
        return b"".join(self.pieces[i] for i in ids).decode("utf-8", errors="replace")

    def convert_tokens_to_ids(self, token):
        return [p.decode("utf-8", errors="replace") for p in self.pieces].index(token)


def test_token_spans_with_separator_merged_into_neighbouring_text_and_split_characters():
    pieces = [b"Step one", b".\n\nStep", b" two \xc3", b"\xa9t\xc3", b"\xa9", b"\n\n", b"end", b"<eos>"]
    tok = ByteTokenizer(pieces, special_ids=[7])
    result = completion_steps([0, 1, 2, 3, 4, 5, 6, 7], tok)
    assert result.steps == ["Step one.", "Step two été", "end"]
    # "." lives in the merged token 1; the last "é" is completed by token 4; the last step ends on the EOS token
    assert result.ends == [1, 4, 7]


def test_token_spans_real_tokenizer(tokenizer):
    pieces = ["Step 1: 35 × 3 = 105.", "\n\n", "Step 2: 160-48=112", "\n\n", "#### 217"]
    ids = []
    boundaries = []
    for piece in pieces:
        ids += tokenizer(piece, add_special_tokens=False)["input_ids"]
        boundaries.append(len(ids) - 1)
    ids.append(tokenizer.eos_token_id)
    result = completion_steps(ids, tokenizer)
    assert result.steps == ["Step 1: 35 × 3 = 105.", "Step 2: 160-48=112", "#### 217"]
    assert result.ends == [boundaries[0], boundaries[2], len(ids) - 1]
    # each end is the first token whose decoded prefix contains the whole step
    for step, end in zip(result.steps[:-1], result.ends[:-1]):
        assert tokenizer.decode(ids[: end + 1]).rstrip().endswith(step)
        assert not tokenizer.decode(ids[:end]).rstrip().endswith(step)


def test_token_spans_merged_whitespace_tokens_of_the_real_tokenizer(tokenizer):
    # SmolLM2 has tokens such as "\n\n   " and " \n\n": the separator is fused with spaces around it
    text = "a = 1 \n\n   b = 2"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    result = completion_steps(ids, tokenizer)
    assert result.steps == ["a = 1", "b = 2"]
    assert tokenizer.decode(ids[: result.ends[0] + 1]).startswith("a = 1")
    assert "b" not in tokenizer.decode(ids[: result.ends[0] + 1])
    assert result.ends[1] == len(ids) - 1


def test_token_spans_no_separator_and_empty_completion(tokenizer):
    ids = tokenizer("no separator at all", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    result = completion_steps(ids, tokenizer)
    assert result.steps == ["no separator at all"] and result.ends == [len(ids) - 1]
    empty = completion_steps([tokenizer.eos_token_id], tokenizer)
    assert empty.steps == [] and empty.ends == []


def test_token_spans_special_step_token(tiny_model_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    tok.add_special_tokens({"additional_special_tokens": ["<step>"]})
    step_id = tok.convert_tokens_to_ids("<step>")
    first = tok("1 + 1 = 2", add_special_tokens=False)["input_ids"]
    second = tok("2 + 2 = 4", add_special_tokens=False)["input_ids"]
    ids = first + [step_id] + second + [tok.eos_token_id]
    result = completion_steps(ids, tok, separator="<step>")
    assert result.steps == ["1 + 1 = 2", "2 + 2 = 4"]
    assert result.ends == [len(first) - 1, len(ids) - 1]


# ----------------------------------------------------------------------------------------------------------------------
# ArithmeticStepVerifier
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step",
    [
        "35 × 3 = 105",
        "160-48=112",
        "He has 72*0.5=36 pebbles.",
        "If he earns £195 every day he then earns £195/day * 12 days/month = £2340/month",
        "9 skeins per shawl + 4 skeins per hat + 8 skeins per tunic = 21 skeins of wool.",
        "(5 + 3) × 2 = 16",
        "1,200 + 800 = 2,000",
        "2 x 3 = 6",
        "10 ÷ 4 = 2.5",
        "10/3 = 3.33",
        "20% * 50 = 10",
        "-5 + 2 = -3",
        "John sells 27 tulips x £5 = £135",
        "There are 100 questions x 20/100 = 20 chemistry questions.",
        "The room's perimeter is 2(66+36) = 204",
        "3. Calculate total cost:\n   - 73 plants × €3 per plant = €219",
    ],
)
def test_verifier_true_claims(step):
    assert ArithmeticStepVerifier().score_step(step) == 1.0


@pytest.mark.parametrize("step", ["35 × 3 = 106", "160-48=111", "2 + 2 = 5 apples", "10/3 = 3.4"])
def test_verifier_false_claims(step):
    assert ArithmeticStepVerifier().score_step(step) == 0.0


def test_verifier_fraction_of_true_claims_and_chains():
    verifier = ArithmeticStepVerifier()
    assert verifier.score_step("First 2 + 3 = 5, then 5 * 4 = 21.") == 0.5
    assert verifier.claims("3 × 4 = 12 = 2 × 6") == [(12.0, 12.0, True), (12.0, 12.0, True)]


def test_verifier_step_without_claim_is_neutral_or_configurable():
    assert ArithmeticStepVerifier().score_step("So the answer is 42.") is None
    assert ArithmeticStepVerifier().score_step("x = 5") is None  # an assignment, not an arithmetic claim
    assert ArithmeticStepVerifier(no_claim_reward=0.5).score_step("So the answer is 42.") == 0.5


def test_verifier_follows_the_process_convention_and_splits_completions_itself():
    verifier = ArithmeticStepVerifier(step_separator="\n")
    steps = [["1 + 1 = 2", "2 + 2 = 5"], ["no claim"]]
    assert verifier(prompts=["p", "q"], completions=["?", "?"], steps=steps) == [[1.0, 0.0], [None]]
    conversational = [[{"role": "assistant", "content": "1 + 1 = 2\n3 - 1 = 1"}]]
    assert verifier(completions=conversational) == [[1.0, 0.0]]


def test_verifier_accepts_gsm_symbolic_solutions_and_catches_corrupted_steps():
    import re

    import reasoning_gym

    verifier = ArithmeticStepVerifier(step_separator="\n")
    dataset = reasoning_gym.create_dataset("gsm_symbolic", size=40, seed=3)
    n_claims = n_true = n_corrupted = n_caught = 0
    for entry in dataset:
        for step in entry["metadata"]["answer_cot"].split("\n"):
            for _, _, ok in verifier.claims(step):
                n_claims += 1
                n_true += ok
            # corrupt the result of the last claim of the step: add 1 to the number right after the last "="
            match = list(re.finditer(r"=\s*[$£€]?(\d+)", step))
            if match and verifier.claims(step):
                m = match[-1]
                corrupted = step[: m.start(1)] + str(int(m.group(1)) + 1) + step[m.end(1) :]
                n_corrupted += 1
                n_caught += verifier.score_step(corrupted) < 1.0
    assert n_claims >= 40
    assert n_true / n_claims >= 0.95, (n_true, n_claims)
    assert n_caught / n_corrupted >= 0.95, (n_caught, n_corrupted)


def test_verifier_finds_the_corrupted_step_of_preference_pairs():
    """trl_ext.data's rejected solutions carry one corrupted arithmetic step: the verifier must single it out."""
    from trl_ext.data import preference_dataset, split_steps

    verifier = ArithmeticStepVerifier()
    pairs = preference_dataset(100, seed=0)
    caught = clean = 0
    for row in pairs:
        rejected = [verifier.score_step(s) for s in split_steps(row["rejected"])]
        corrupted = rejected[row["corrupted_step"]]
        caught += corrupted is not None and corrupted < 1.0
        clean += all(v in (None, 1.0) for v in rejected[: row["corrupted_step"]])  # steps before it are fine
    assert caught / len(pairs) >= 0.97, caught
    assert clean / len(pairs) >= 0.9, clean


# ----------------------------------------------------------------------------------------------------------------------
# check_process_rewards
# ----------------------------------------------------------------------------------------------------------------------


def test_check_process_rewards_converts_none_to_nan():
    out = check_process_rewards([[1.0, None], None], [["a", "b"], ["c"]], "fn")
    assert out[0][0] == 1.0 and math.isnan(out[0][1]) and math.isnan(out[1][0])


def test_check_process_rewards_errors_name_the_function():
    with pytest.raises(ValueError, match="'my_prm' returned 1 entries, but 2"):
        check_process_rewards([[1.0]], [["a"], ["b"]], "my_prm")
    with pytest.raises(ValueError, match="'my_prm' returned 1 step rewards for completion 0, which has 2 steps"):
        check_process_rewards([[1.0]], [["a", "b"]], "my_prm")
    with pytest.raises(ValueError, match="'my_prm' returned nan for step 1 of completion 0"):
        check_process_rewards([[1.0, float("nan")]], [["a", "b"]], "my_prm")


# ----------------------------------------------------------------------------------------------------------------------
# ProcessRewardModel
# ----------------------------------------------------------------------------------------------------------------------


def _tiny_prm(tokenizer, id2label=None, num_labels=2, seed=0):
    from transformers import LlamaConfig, LlamaForTokenClassification

    torch.manual_seed(seed)
    id2label = id2label or {0: "incorrect", 1: "correct"}
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=256, num_labels=num_labels, id2label=id2label,
        label2id={v: k for k, v in id2label.items()}, pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForTokenClassification(config).eval()


def test_prm_scores_last_token_of_each_step(tokenizer):
    model = _tiny_prm(tokenizer)
    prm = ProcessRewardModel(model, tokenizer, step_separator="\n", batch_size=2)
    prompts = ["What is 2 + 3?", "Add 1 and 1.", "Compute 4 * 5."]
    steps = [["2 + 3 = 5", "#### 5"], ["1 + 1 = 3"], ["4 * 5 = 20", "so 20", "#### 20"]]
    scores = prm(prompts=prompts, completions=["?"] * 3, steps=steps)
    assert [len(s) for s in scores] == [2, 1, 3]
    # reference: the documented input format, one sequence at a time, P(label "correct") at each step's last token
    for prompt, completion_steps_, got in zip(prompts, steps, scores):
        ids = [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
        positions = []
        for step in completion_steps_:
            ids += tokenizer(step, add_special_tokens=False)["input_ids"]
            ids += tokenizer("\n", add_special_tokens=False)["input_ids"]
            positions.append(len(ids) - 1)
        with torch.no_grad():
            probs = model(input_ids=torch.tensor([ids])).logits.softmax(-1)[0, :, 1]
        assert got == pytest.approx([probs[p].item() for p in positions], abs=1e-5)
        assert all(0.0 < g < 1.0 for g in got)
    # batching (right padding) does not change the scores
    single = ProcessRewardModel(model, tokenizer, step_separator="\n", batch_size=1)(prompts=prompts, steps=steps)
    for a, b in zip(single, scores):
        assert a == pytest.approx(b, abs=1e-5)


def test_prm_completion_without_steps_and_truncation(tokenizer):
    model = _tiny_prm(tokenizer)
    prm = ProcessRewardModel(model, tokenizer, max_length=12)
    scores = prm(prompts=["p", "q"], steps=[[], ["one two three four five", "six seven eight nine ten eleven"]])
    assert scores[0] == []
    assert scores[1][0] is not None and scores[1][1] is None  # cut off by max_length


def test_prm_needs_a_correct_label(tokenizer):
    with pytest.raises(ValueError, match="include no 'correct' class"):
        ProcessRewardModel(_tiny_prm(tokenizer, id2label={0: "LABEL_0", 1: "LABEL_1"}), tokenizer)
    # a model trained by TRL's former PRMTrainer: index 1 is "correct"
    prm = ProcessRewardModel(_tiny_prm(tokenizer, id2label={0: "LABEL_0", 1: "LABEL_1"}), tokenizer, correct_label=1)
    assert prm.correct_index == 1
    with pytest.raises(ValueError, match="out of range"):
        ProcessRewardModel(_tiny_prm(tokenizer), tokenizer, correct_label=5)
    with pytest.raises(ValueError, match="num_labels=1"):
        ProcessRewardModel(_tiny_prm(tokenizer, id2label={0: "score"}, num_labels=1), tokenizer)
