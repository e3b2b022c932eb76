"""Issue 14, items 6, 7 and 9: inputs that used to train nothing silently, or to fail mid-step with torch's or TRL's
bare messages, now give one clear error before step 1 (naming the function / column / row / field and the fix), or a
loud counted warning where refusing would be wrong (a rollout without rewards, a step separator the policy never
writes). Every expected message was read off the bad input by hand; each test fails on the code before the fix."""

import warnings

import pytest
import torch
from datasets import Dataset
from transformers import LlamaForSequenceClassification, LlamaForTokenClassification
from trl import DPOConfig

from trl_ext.models.tiny import tiny_config, tiny_model
from trl_ext.rewards import NumericMatch
from trl_ext.rewards.process import ProcessRewardModel, check_process_rewards
from trl_ext.trainers.prm import PRMConfig, PRMTrainer
from trl_ext.trainers.process_grpo import ProcessGRPOConfig, ProcessGRPOTrainer
from trl_ext.trainers.rft import RFTConfig, RFTTrainer
from trl_ext.trainers.checks import RolloutChecks
from trl_ext.trainers.unified import UnifiedLikelihoodConfig, UnifiedLikelihoodTrainer
from trl_ext.trainers.unified_collator import check_row_format

from helpers import ANSWERS, PROMPTS, grpo_args, prompt_dataset

RL = {"rft": (RFTTrainer, RFTConfig), "process_grpo": (ProcessGRPOTrainer, ProcessGRPOConfig)}
NAMES = {"rft": "RFTTrainer", "process_grpo": "ProcessGRPOTrainer"}
SMALL_VOCAB = dict(vocab_size=1000, pad_token_id=0, bos_token_id=1, eos_token_id=2)  # the policy's has 49152 tokens


def _rl_args(cls, tmp_path, **overrides):
    return cls(**grpo_args(tmp_path / "out", **{"num_generations": 4, "max_completion_length": 4, **overrides}))


def _rl(trainer, tmp_path, model, reward_funcs, dataset=None, **kwargs):
    cls, config = RL[trainer]
    args = _rl_args(config, tmp_path, **kwargs.pop("args", {}))
    dataset = prompt_dataset(1) if dataset is None else dataset
    return cls(model=model, reward_funcs=reward_funcs, args=args, train_dataset=dataset, **kwargs)


def _unified_args(tmp_path, **overrides):
    kwargs = dict(output_dir=str(tmp_path / "out"), report_to="none", bf16=False, per_device_train_batch_size=2,
                  max_steps=1, save_strategy="no", use_cpu=True, dataloader_pin_memory=False)
    kwargs.update(overrides)
    return UnifiedLikelihoodConfig(**kwargs)


def one(completions, **kwargs):
    return [1.0] * len(completions)


# ---- item 6: silent no-ops ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("trainer", list(RL))
def test_missing_reference_column_and_all_none_rewards_refused_before_step_1(trainer, tiny_model_path, tmp_path):
    """NumericMatch reads `answer`; the dataset has `solution`: every reward None, TRL would log a loss of 0."""
    solution = Dataset.from_dict({"prompt": PROMPTS, "solution": ANSWERS})
    with pytest.raises(ValueError, match=r"'numeric_match' returned None for all 2 probe samples.*its reference "
                                         r"column 'answer' is not in the dataset \(columns: \['solution'\]\)"):
        _rl(trainer, tmp_path, tiny_model_path, NumericMatch(), solution)


class LateNone:
    """Usable at the probe, None for every completion afterwards (the references of later rows are unusable)."""

    __name__ = "late_none"

    def __init__(self):
        self.calls = 0

    def __call__(self, completions, **kwargs):
        self.calls += 1
        return [1.0 if self.calls == 1 else None for _ in completions]


def test_rft_rollout_without_any_reward_warns_loudly_and_counts(tiny_model_path, tmp_path):
    trainer = _rl("rft", tmp_path, tiny_model_path, LateNone())
    with pytest.warns(RuntimeWarning, match=r"RFTTrainer \(step 0\): every reward function \(late_none\) returned "
                                            r"None for all 4 completions of this rollout, so it trains nothing.*"
                                            r"\[1 of 1 rollout\(s\) so far"):
        trainer.train()
    assert trainer._rollout_checks.counts == {"no_reward": 1}


def test_process_grpo_no_step_reward_and_separator_never_written_warn_counted(tiny_model_path, tmp_path):
    """A process reward returning None for every step (no outcome reward) trains nothing; a separator the policy
    never writes makes every completion one step. Both: a RuntimeWarning with the count, never an error."""

    def never(steps, **kwargs):
        return [[None] * len(s) for s in steps]

    trainer = ProcessGRPOTrainer(model=tiny_model_path, process_reward_funcs=[never],
                                 args=_rl_args(ProcessGRPOConfig, tmp_path, step_separator="<step>"),
                                 train_dataset=Dataset.from_dict({"prompt": PROMPTS}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert any("no reward at all in the 4 completions of this rollout (the process reward functions (never) "
               "returned None for every step), so it trains nothing" in m for m in messages), messages
    assert any("the step separator '<step>' occurs in none of the 4 completions of this rollout: every completion is "
               "one step" in m and "[1 of 1 rollout(s) so far" in m for m in messages), messages
    assert trainer._rollout_checks.counts == {"no_reward": 1, "one_step": 1}


def test_rollout_checks_warn_at_powers_of_two_and_count_every_rollout():
    checks = RolloutChecks("ProcessGRPOTrainer")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(5):  # 5 rollouts of 3 single-step completions, outcome rewards present: plain GRPO
            checks.process_rollout([1, 1, 1], scored_steps=3, outcome_scored=3, separator="\n\n",
                                   process_names=["arithmetic_steps"], step=step)
        checks.process_rollout([2, 1, 1], scored_steps=4, outcome_scored=3, separator="\n\n",
                               process_names=["arithmetic_steps"], step=5)  # a multi-step rollout: no warning
    assert checks.counts == {"one_step": 5} and checks.rollouts == 6
    assert [str(w.message).split("[")[1].split(" rollout")[0] for w in caught] == ["1 of 1", "2 of 2", "4 of 4"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        RolloutChecks("RFTTrainer", is_main_process=False).rewards(torch.full((2, 1), float("nan")), ["g"], 0)
    assert caught == []  # only the main process warns


@pytest.mark.parametrize("trainer", ["rft", "process_grpo", "unified", "prm"])
def test_empty_train_dataset_refused_before_the_model_loads(trainer, tmp_path):
    expected = {"rft": "RFTTrainer", "process_grpo": "ProcessGRPOTrainer", "unified": "UnifiedLikelihoodTrainer",
                "prm": "PRMTrainer"}[trainer]
    match = rf"{expected}: train_dataset has 0 rows, so training would run 0 steps"
    missing = str(tmp_path / "no-model-here")  # never loaded: the check comes first
    with pytest.raises(ValueError, match=match):
        if trainer in RL:
            _rl(trainer, tmp_path, missing, one, Dataset.from_dict({"prompt": [], "answer": []}))
        elif trainer == "unified":
            UnifiedLikelihoodTrainer(missing, args=_unified_args(tmp_path),
                                     train_dataset=Dataset.from_dict({"prompt": [], "completion": []}))
        else:
            PRMTrainer(model=missing, args=PRMConfig(output_dir=str(tmp_path / "out"), report_to="none",
                                                     use_cpu=True, bf16=False),
                       train_dataset=Dataset.from_dict({"prompt": [], "completions": [], "labels": []}))


# ---- item 7: beta -------------------------------------------------------------------------------------------------


def test_unified_beta_negative_or_zero_refused_naming_beta(tmp_path):
    # TRL's DPOConfig accepts both (so does UnifiedLikelihoodConfig's parent); trl_ext refuses them
    assert DPOConfig(output_dir=str(tmp_path), bf16=False, beta=-0.1).beta == -0.1
    with pytest.raises(ValueError, match=r"UnifiedLikelihoodConfig\.beta must be > 0, got -0\.1: a negative beta "
                                         r"flips every preference.*DPOConfig accepts it; trl_ext refuses it"):
        _unified_args(tmp_path, beta=-0.1)
    with pytest.raises(ValueError, match=r"beta must be > 0, got 0\.0: with beta = 0 the losses \['sigmoid', "
                                         r"'ipo'\] are constant or undefined"):
        _unified_args(tmp_path, beta=0.0, loss_type=["sft", "sigmoid", "ipo", "simpo"])
    assert _unified_args(tmp_path, beta=0.0, loss_type=["sft", "simpo"]).beta == 0.0  # no loss reads beta


# ---- item 9: unhelpful messages -----------------------------------------------------------------------------------


@pytest.mark.parametrize("trainer", list(RL))
def test_reward_model_with_another_vocabulary_refused(trainer, tiny_model_path, tokenizer, tmp_path):
    reward_model = LlamaForSequenceClassification(tiny_config(num_labels=1, **SMALL_VOCAB))
    with pytest.raises(ValueError, match=rf"{NAMES[trainer]}: reward model reward_funcs\[0\] "
                                         r"LlamaForSequenceClassification embeds 1000 token ids, but its processing "
                                         r"class reward_processing_classes\[0\] \(.*\) has 49152 tokens.*'index out "
                                         r"of range in self'"):
        _rl(trainer, tmp_path, tiny_model_path, reward_model, reward_processing_classes=[tokenizer])


def test_prm_with_another_vocabulary_refused(tiny_model_path, tokenizer, tmp_path):
    prm = LlamaForTokenClassification(tiny_config(num_labels=2, id2label={0: "wrong", 1: "correct"},
                                                  label2id={"wrong": 0, "correct": 1}, **SMALL_VOCAB))
    with pytest.raises(ValueError, match=r"ProcessGRPOTrainer: process_reward_funcs\[0\] \(a ProcessRewardModel\) "
                                         r"LlamaForTokenClassification embeds 1000 token ids, but its tokenizer .* "
                                         r"has 49152 tokens"):
        ProcessGRPOTrainer(model=tiny_model_path, process_reward_funcs=[ProcessRewardModel(prm, tokenizer)],
                           args=_rl_args(ProcessGRPOConfig, tmp_path),
                           train_dataset=Dataset.from_dict({"prompt": PROMPTS}))


def test_prm_trainer_tokenizer_larger_than_the_model_refused(tokenizer, tmp_path):
    model = LlamaForTokenClassification(tiny_config(num_labels=2, **SMALL_VOCAB))
    rows = Dataset.from_dict({"prompt": ["1+1?"], "completions": [["1+1=2"]], "labels": [[True]]})
    with pytest.raises(ValueError, match=r"PRMTrainer: the model LlamaForTokenClassification embeds 1000 token ids, "
                                         r"but processing_class .* has 49152 tokens"):
        PRMTrainer(model=model, processing_class=tokenizer, train_dataset=rows,
                   args=PRMConfig(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True, bf16=False))


def test_unified_reference_model_with_another_vocabulary_refused(tiny_model_path, tmp_path):
    reference, _ = tiny_model(**SMALL_VOCAB)
    pairs = Dataset.from_dict({"prompt": ["2+2="] * 2, "chosen": [" 4", " four"], "rejected": [" 5", " five"]})
    with pytest.raises(ValueError, match=r"UnifiedLikelihoodTrainer: ref_model LlamaForCausalLM embeds 1000 token ids "
                                         r"but the policy LlamaForCausalLM\('.*'\) embeds 49152"):
        UnifiedLikelihoodTrainer(tiny_model_path, ref_model=reference, args=_unified_args(tmp_path),
                                 train_dataset=pairs)


@pytest.mark.parametrize("trainer", list(RL))
def test_numeric_string_rewards_refused_naming_function_and_type(trainer, tiny_model_path, tmp_path):
    def as_text(completions, **kwargs):
        return ["1.0"] * len(completions)

    with pytest.raises(ValueError, match=r"Reward function 'as_text' returned a str \('1\.0'\) for completion\(s\) "
                                         r"\[0, 1\]; rewards must be numbers"):
        _rl(trainer, tmp_path, tiny_model_path, as_text)


def test_string_step_rewards_refused_naming_function_step_and_type():
    steps = [["2+2=4", "#### 4"]]
    for value in ("1.0", "good"):  # '1.0' used to pass silently, 'good' gave "could not convert string to float"
        with pytest.raises(ValueError, match=rf"process reward function 'verifier' returned a str \('{value}'\) for "
                                             r"step 1 of completion 0; step rewards must be numbers"):
            check_process_rewards([[0.5, value]], steps, "verifier")
    assert check_process_rewards([[torch.tensor(0.5).item(), 1]], steps, "verifier") == [[0.5, 1.0]]


def test_process_grpo_without_prompt_column_refused(tmp_path):
    with pytest.raises(ValueError, match=r"ProcessGRPOTrainer: train_dataset has no 'prompt' column \(columns: "
                                         r"\['question', 'answer'\]\).*rename_column\('question', 'prompt'\)"):
        _rl("process_grpo", tmp_path, str(tmp_path / "no-model-here"), one,
            Dataset.from_dict({"question": PROMPTS, "answer": ANSWERS}))


@pytest.mark.parametrize("trainer", list(RL))
def test_none_prompts_named_by_row(trainer, tmp_path):
    dataset = Dataset.from_dict({"prompt": [PROMPTS[0], None, PROMPTS[2], None], "answer": ANSWERS})
    with pytest.raises(ValueError, match=rf"{NAMES[trainer]}: train_dataset has a None 'prompt' in 2 row\(s\): "
                                         r"row\(s\) \[1, 3\]"):
        _rl(trainer, tmp_path, str(tmp_path / "no-model-here"), one, dataset)
    view = dataset.select([1, 0])  # rows are named by their position in a select()/shuffle() view
    with pytest.raises(ValueError, match=r"None 'prompt' in 1 row\(s\): row\(s\) \[0\]"):
        _rl(trainer, tmp_path, str(tmp_path / "no-model-here"), one, view)


def test_unified_chat_prompt_with_plain_string_completion_names_row_and_columns(tiny_model_path, tmp_path):
    chat = [{"role": "user", "content": "2+2?"}]
    dataset = Dataset.from_dict({"prompt": [chat, chat], "completion": [" 4", " four"]})
    with pytest.raises(ValueError, match=r"UnifiedLikelihoodTrainer: row 0 of the train dataset: 'prompt' is a list "
                                         r"of chat messages \(conversational\) but 'completion' is a str; columns "
                                         r"\['prompt', 'completion'\] must share one format"):
        UnifiedLikelihoodTrainer(tiny_model_path, args=_unified_args(tmp_path, loss_type=["sft"]),
                                 train_dataset=dataset)
    # the other mismatches, on the row check itself
    answer = [{"role": "assistant", "content": "4"}]
    with pytest.raises(ValueError, match=r"row 3: 'prompt' is a str but 'completion' is a list of chat messages"):
        check_row_format({"prompt": "2+2?", "completion": answer}, "demonstration", "row 3")
    with pytest.raises(ValueError, match=r"row 1: 'prompt' is a list of chat messages \(conversational\) but "
                                         r"'rejected' is a str"):
        check_row_format({"prompt": chat, "chosen": answer, "rejected": "5"}, "preference", "row 1")
    with pytest.raises(ValueError, match=r"row 2: column 'completion' is of type int \('4'\)"):
        check_row_format({"prompt": "2+2?", "completion": 4}, "demonstration", "row 2")
    check_row_format({"chosen": answer, "rejected": answer}, "preference", "row 4")  # implicit prompt
    check_row_format({"prompt": chat, "completion": answer}, "graded", "row 5")


# ---- 4-bit without bitsandbytes: one message, naming the trainer, for all three -----------------------------------


@pytest.mark.parametrize("trainer", ["rft", "process_grpo", "unified"])
def test_load_in_4bit_without_bitsandbytes_names_the_trainer(trainer, tiny_model_path, tmp_path, monkeypatch):
    from transformers import BitsAndBytesConfig

    from trl_ext.trainers import checks

    monkeypatch.setattr(checks, "is_bitsandbytes_available", lambda: False)
    q = BitsAndBytesConfig(load_in_4bit=True)
    name = {**NAMES, "unified": "UnifiedLikelihoodTrainer"}[trainer]
    with pytest.raises(ImportError, match=rf"^{name}: the quantization_config asks for load_in_4bit=True .*not installed"):
        if trainer == "unified":
            demos = Dataset.from_dict({"prompt": PROMPTS, "completion": ANSWERS})
            UnifiedLikelihoodTrainer(model=tiny_model_path, args=_unified_args(tmp_path), train_dataset=demos,
                                     quantization_config=q)
        else:
            _rl(trainer, tmp_path, tiny_model_path, one, quantization_config=q)
