"""ProcessGRPOTrainer: equivalence with stock GRPOTrainer, hand-computed step advantages inside the trainer, bad input,
logging, LoRA / QLoRA / PRM runs, and (slow) a 2-process gloo run equal to a 1-process run over the same batch."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from trl import GRPOConfig, GRPOTrainer

from trl_ext.rewards.process import ArithmeticStepVerifier, ProcessRewardModel
from trl_ext.trainers.process_grpo import ProcessGRPOConfig, ProcessGRPOTrainer

from helpers import char_variety, grpo_args, nf4_config, prompt_dataset, run_script, train_quantized


def _dataset(n_repeat=4):
    return prompt_dataset(n_repeat)


def _kwargs(tmp_path, **overrides):
    return grpo_args(tmp_path, **{"num_generations": 4, "max_completion_length": 12, **overrides})


def _spy(trainer):
    """Record every generation batch that _generate_and_score_completions returns."""
    captured = []
    original = trainer._generate_and_score_completions

    def spy(inputs):
        output = original(inputs)
        captured.append({k: (v.detach().clone() if isinstance(v, torch.Tensor) else v) for k, v in output.items()})
        return output

    trainer._generate_and_score_completions = spy
    return captured


def _first_loss(trainer):
    return next(entry["loss"] for entry in trainer.state.log_history if "loss" in entry)


# ----------------------------------------------------------------------------------------------------------------------
# Equivalence with stock GRPOTrainer
# ----------------------------------------------------------------------------------------------------------------------


def _stock_run(tiny_model_path, tmp_path, **overrides):
    trainer = GRPOTrainer(
        model=tiny_model_path, reward_funcs=[char_variety], args=GRPOConfig(**_kwargs(tmp_path / "stock", **overrides)),
        train_dataset=_dataset(),
    )
    captured = _spy(trainer)
    trainer.train()
    return trainer, captured[0]


def _assert_equivalent(stock, stock_batch, proc, proc_batch):
    assert torch.equal(stock_batch["completion_ids"], proc_batch["completion_ids"])  # same seed, same generations
    mask = proc_batch["completion_mask"].bool()
    assert proc_batch["advantages"].shape == mask.shape
    expected = torch.where(mask, stock_batch["advantages"].unsqueeze(1).expand_as(mask), torch.zeros_like(mask).float())
    assert stock_batch["advantages"].abs().max() > 0.1  # a real signal, not all zeros
    torch.testing.assert_close(proc_batch["advantages"], expected, atol=1e-5, rtol=1e-5)
    assert _first_loss(proc) == pytest.approx(_first_loss(stock), abs=1e-6)
    stock_params = dict(stock.model.named_parameters())
    for name, param in proc.model.named_parameters():  # the same update
        torch.testing.assert_close(param, stock_params[name], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "overrides",
    [{"scale_rewards": "group"}, {"scale_rewards": "batch"}, {"scale_rewards": "none", "loss_type": "grpo"}],
    ids=["group", "batch", "none-grpo-loss"],
)
def test_outcome_only_equals_stock_grpo(tiny_model_path, tmp_path, overrides):
    stock, stock_batch = _stock_run(tiny_model_path, tmp_path, **overrides)
    proc = ProcessGRPOTrainer(
        model=tiny_model_path, reward_funcs=[char_variety], process_reward_funcs=[],
        args=ProcessGRPOConfig(**_kwargs(tmp_path / "proc", **overrides)), train_dataset=_dataset(),
    )
    captured = _spy(proc)
    proc.train()
    _assert_equivalent(stock, stock_batch, proc, captured[0])


def test_single_step_process_reward_equals_stock_grpo(tiny_model_path, tmp_path):
    """Single-step completions scored by a process reward equal to the outcome reward → stock GRPO's advantages."""
    n_steps = []

    def single_step_reward(completions, steps, **kwargs):
        n_steps.extend(len(s) for s in steps)
        return [[value] if s else [] for value, s in zip(char_variety(completions), steps)]

    stock, stock_batch = _stock_run(tiny_model_path, tmp_path)
    proc = ProcessGRPOTrainer(
        model=tiny_model_path, reward_funcs=None, process_reward_funcs=[single_step_reward],
        args=ProcessGRPOConfig(**_kwargs(tmp_path / "proc", step_separator="<never-a-separator>")),
        train_dataset=_dataset(),
    )
    captured = _spy(proc)
    proc.train()
    assert n_steps == [1] * len(n_steps)
    _assert_equivalent(stock, stock_batch, proc, captured[0])


# ----------------------------------------------------------------------------------------------------------------------
# Hand-computed advantages through the whole trainer (fixed completions via TRL's rollout_func)
# ----------------------------------------------------------------------------------------------------------------------

FIXED = ["1+1=2\n\n2+2=5\n\n#### 4", "3+3=6\n\n#### 6"]


def _fixed_rollout(texts):
    def rollout(prompts, trainer):
        tok = trainer.processing_class
        offset = trainer.accelerator.process_index * len(prompts)
        completion_ids = []
        for i in range(len(prompts)):
            pieces = texts[(offset + i) % len(texts)].split("\n\n")
            ids = []
            for j, piece in enumerate(pieces):
                if j:
                    ids += tok("\n\n", add_special_tokens=False)["input_ids"]
                ids += tok(piece, add_special_tokens=False)["input_ids"]
            completion_ids.append(ids + [tok.eos_token_id])
        prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}

    return rollout


def answer_is_six(completions, **kwargs):
    return [1.0 if c.strip().endswith("#### 6") else 0.0 for c in completions]


def test_hand_computed_step_advantages_in_trainer(tiny_model_path, tokenizer, tmp_path):
    """A: steps 1+1=2 (1.0), 2+2=5 (0.0), '#### 4' (no claim: None), outcome 0; B: 3+3=6 (1.0), '#### 6' (None),
    outcome 1. Pool {1, 0, 0, 1, 1}: mean 0.6, unbiased std sqrt(0.3)."""
    trainer = ProcessGRPOTrainer(
        model=tiny_model_path, reward_funcs=[answer_is_six], process_reward_funcs=[ArithmeticStepVerifier()],
        args=ProcessGRPOConfig(**_kwargs(tmp_path, num_generations=2, per_device_train_batch_size=2)),
        train_dataset=_dataset(), rollout_func=_fixed_rollout(FIXED),
    )
    captured = _spy(trainer)
    trainer.train()
    adv = captured[0]["advantages"]

    def n_tokens(text):
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    sep = n_tokens("\n\n")
    a_end1 = n_tokens("1+1=2") - 1
    a_end2 = a_end1 + sep + n_tokens("2+2=5")
    a_last = a_end2 + sep + n_tokens("#### 4") + 1  # + EOS
    b_last = n_tokens("3+3=6") + sep + n_tokens("#### 6")
    pos, neg = 0.4 / (math.sqrt(0.3) + 1e-4), -0.6 / (math.sqrt(0.3) + 1e-4)
    expected = torch.zeros(2, adv.shape[1])
    expected[0, : a_end1 + 1] = pos + neg + neg  # reward-to-go: steps 1, 2 and the outcome
    expected[0, a_end1 + 1 : a_end2 + 1] = neg + neg  # step 2 and the outcome, not step 1 (future, not past)
    expected[0, a_end2 + 1 : a_last + 1] = neg  # the unscored step 3: only the outcome
    expected[1, : n_tokens("3+3=6")] = pos + pos
    expected[1, n_tokens("3+3=6") : b_last + 1] = pos
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=1e-5)
    history = trainer.state.log_history[0]
    assert history["process/steps_per_completion"] == pytest.approx(2.5)
    assert history["process/step_reward_mean"] == pytest.approx(2 / 3)
    assert history["process/frac_correct_steps"] == pytest.approx(2 / 3)
    assert history["process/frac_scored_steps"] == pytest.approx(3 / 5)
    assert history["process/arithmetic_steps/mean"] == pytest.approx(2 / 3)


def test_zero_scorable_steps_fall_back_to_the_outcome_and_outcome_weight(tiny_model_path, tokenizer, tmp_path):
    texts = ["no claim here\n\n#### 4", "#### 6"]  # no arithmetic claim anywhere: outcome rewards only
    trainer = ProcessGRPOTrainer(
        model=tiny_model_path, reward_funcs=[answer_is_six], process_reward_funcs=[ArithmeticStepVerifier()],
        args=ProcessGRPOConfig(**_kwargs(tmp_path, num_generations=2, per_device_train_batch_size=2,
                                         outcome_reward_weight=3.0, scale_rewards="none")),
        train_dataset=_dataset(), rollout_func=_fixed_rollout(texts),
    )
    captured = _spy(trainer)
    trainer.train()
    adv, mask = captured[0]["advantages"], captured[0]["completion_mask"].bool()
    # outcomes 0 and 1, weighted 3 → centred ±1.5 on every completion token, 0 on padding
    torch.testing.assert_close(adv[0][mask[0]], torch.full((int(mask[0].sum()),), -1.5))
    torch.testing.assert_close(adv[1][mask[1]], torch.full((int(mask[1].sum()),), 1.5))
    assert (adv[~mask] == 0).all()
    assert trainer.state.log_history[0]["process/frac_outcome_only"] == 1.0


# ----------------------------------------------------------------------------------------------------------------------
# Bad input: clear errors before any training step
# ----------------------------------------------------------------------------------------------------------------------


def test_config_and_init_errors(tiny_model_path, tmp_path):
    with pytest.raises(ValueError, match="step_separator must be a non-empty string"):
        ProcessGRPOConfig(**_kwargs(tmp_path, step_separator=""))
    args = ProcessGRPOConfig(**_kwargs(tmp_path))
    with pytest.raises(ValueError, match="at least one reward"):
        ProcessGRPOTrainer(model=tiny_model_path, args=args, train_dataset=_dataset())
    with pytest.raises(ValueError, match=r"process_reward_funcs\[0\].*is not callable"):
        ProcessGRPOTrainer(model=tiny_model_path, process_reward_funcs=["nope"], args=args, train_dataset=_dataset())
    with pytest.raises(ValueError, match="wrap a token-classification PRM"):
        ProcessGRPOTrainer(model=tiny_model_path, process_reward_funcs=[torch.nn.Linear(2, 2)], args=args,
                           train_dataset=_dataset())
    weighted = ProcessGRPOConfig(**_kwargs(tmp_path, process_reward_weights=[1.0, 2.0]))
    with pytest.raises(ValueError, match="process_reward_weights has 2 entries but 1"):
        ProcessGRPOTrainer(model=tiny_model_path, process_reward_funcs=[ArithmeticStepVerifier()], args=weighted,
                           train_dataset=_dataset())
    gdpo = ProcessGRPOConfig(**_kwargs(tmp_path, multi_objective_aggregation="normalize_then_sum"))
    with pytest.raises(ValueError, match="normalize_then_sum"):
        ProcessGRPOTrainer(model=tiny_model_path, reward_funcs=[char_variety], args=gdpo, train_dataset=_dataset())


def test_separator_escape_from_the_command_line(tmp_path):
    assert ProcessGRPOConfig(**_kwargs(tmp_path, step_separator="\\n")).step_separator == "\n"
    assert ProcessGRPOConfig(**_kwargs(tmp_path)).step_separator == "\n\n"


def _wrong_length(steps, **kwargs):
    return [s + [1.0] for s in steps]


def _nan_reward(steps, **kwargs):
    return [[float("nan")] * len(s) for s in steps]


@pytest.mark.parametrize(
    "fn, message",
    [
        (_wrong_length, r"'_wrong_length' returned \d+ step rewards for completion 0"),
        (_nan_reward, "'_nan_reward' returned nan"),
    ],
)
def test_bad_process_reward_output_fails_before_the_first_update(tiny_model_path, tmp_path, fn, message):
    trainer = ProcessGRPOTrainer(
        model=tiny_model_path, process_reward_funcs=[fn], args=ProcessGRPOConfig(**_kwargs(tmp_path)),
        train_dataset=_dataset(),
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    with pytest.raises(ValueError, match=message):
        trainer.train()
    assert trainer.state.global_step == 0
    for name, param in trainer.model.named_parameters():
        assert torch.equal(param, before[name])


# ----------------------------------------------------------------------------------------------------------------------
# Drop-in, logging, LoRA / QLoRA / PRM
# ----------------------------------------------------------------------------------------------------------------------


def test_drop_in_with_plain_grpo_config_logs_and_completions_table(tiny_model_path, tmp_path):
    import pandas as pd

    trainer = ProcessGRPOTrainer(
        model=tiny_model_path, reward_funcs=[answer_is_six], process_reward_funcs=[ArithmeticStepVerifier()],
        args=GRPOConfig(**_kwargs(tmp_path, num_generations=2, per_device_train_batch_size=2, log_completions=True)),
        train_dataset=_dataset(), rollout_func=_fixed_rollout(FIXED),
    )
    assert trainer.step_separator == "\n\n"
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())
    logs = trainer.state.log_history[0]
    for key in ("process/steps_per_completion", "process/step_reward_mean", "process/frac_correct_steps",
                "process/advantage_mean", "process/advantage_std", "process/scoring_time"):
        assert key in logs
    table = pd.read_parquet(tmp_path / "completions" / "completions_00001.parquet")
    step_rewards = [[None if v is None or math.isnan(v) else float(v) for v in row] for row in table["step_rewards"]]
    assert step_rewards == [[1.0, 0.0, None], [1.0, None]]
    assert table["advantage"].tolist()[0] < 0 < table["advantage"].tolist()[1]
    trainer.create_model_card()
    card = (tmp_path / "README.md").read_text()
    assert "ProcessGRPOTrainer" in card and "shao2024deepseekmath" in card and "outcome_reward_weight" in card
    assert "huggingface.co/None" not in card
    assert "| `step_separator` | `'\\n\\n'` |" in card  # the default separator, escaped on one table row


def test_evaluation_uses_process_advantages_too(tiny_model_path, tmp_path):
    trainer = ProcessGRPOTrainer(
        model=tiny_model_path, reward_funcs=[char_variety], process_reward_funcs=[ArithmeticStepVerifier()],
        args=ProcessGRPOConfig(**_kwargs(tmp_path, step_separator=" ", eval_strategy="steps", eval_steps=1,
                                         per_device_eval_batch_size=4)),
        train_dataset=_dataset(), eval_dataset=_dataset(1),
    )
    trainer.train()
    evals = [e for e in trainer.state.log_history if "eval_loss" in e]
    assert evals and "eval_process/steps_per_completion" in evals[0] and "eval_process/advantage_std" in evals[0]


def _lora_config():
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")


def _assert_adapter_trained(trainer, before):
    changed_lora = frozen_base = 0
    for name, param in trainer.model.named_parameters():
        if "lora_" in name:
            changed_lora += not torch.equal(param.detach().float(), before[name].float())
        elif name in before:
            assert torch.equal(param.detach(), before[name]), name  # the base stays frozen
            frozen_base += 1
    assert changed_lora > 0 and frozen_base > 0


def test_lora_trains_adapter_only(tiny_model_path, tmp_path):
    trainer = ProcessGRPOTrainer(
        model=tiny_model_path, reward_funcs=[char_variety], process_reward_funcs=[ArithmeticStepVerifier()],
        args=ProcessGRPOConfig(**_kwargs(tmp_path, max_steps=2, step_separator=" ")), train_dataset=_dataset(),
        peft_config=_lora_config(),
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    _assert_adapter_trained(trainer, before)


def test_qlora_4bit_cpu_trains(tiny_model_path, tmp_path):
    trainer = ProcessGRPOTrainer(
        model=tiny_model_path, reward_funcs=[char_variety], process_reward_funcs=[ArithmeticStepVerifier()],
        args=ProcessGRPOConfig(**_kwargs(tmp_path, max_steps=2, step_separator=" ")), train_dataset=_dataset(),
        peft_config=_lora_config(), quantization_config=nf4_config(),
    )
    train_quantized(trainer, _assert_adapter_trained)


def test_prm_scorer_in_trainer(tiny_model_path, tokenizer, tmp_path):
    from transformers import LlamaConfig, LlamaForTokenClassification

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=2,
                         id2label={0: "wrong", 1: "correct"}, label2id={"wrong": 0, "correct": 1},
                         pad_token_id=tokenizer.pad_token_id)
    prm = ProcessRewardModel(LlamaForTokenClassification(config), tokenizer, step_separator=" ", name="tiny_prm")
    trainer = ProcessGRPOTrainer(
        model=tiny_model_path, process_reward_funcs=[prm],
        args=ProcessGRPOConfig(**_kwargs(tmp_path, step_separator=" ")), train_dataset=_dataset(),
    )
    captured = _spy(trainer)
    trainer.train()
    logs = trainer.state.log_history[0]
    assert 0.0 < logs["process/tiny_prm/mean"] < 1.0
    assert logs["process/frac_scored_steps"] == 1.0
    adv, mask = captured[0]["advantages"], captured[0]["completion_mask"].bool()
    assert adv[mask].abs().max() > 0 and (adv[~mask] == 0).all()
    # tokens of one completion get different advantages: they are step-level, not sequence-level
    assert any(len(torch.unique(adv[i][mask[i]])) > 1 for i in range(adv.shape[0]))


# ----------------------------------------------------------------------------------------------------------------------
# 2 processes (gloo) == 1 process over the same global batch (tests/scripts/process_grpo_dp_worker.py)
# ----------------------------------------------------------------------------------------------------------------------


def _rows(out_dir, world):
    rows, masks, logs = [], [], []
    for rank in range(world):
        with open(os.path.join(out_dir, f"rank{rank}.json")) as f:
            data = json.load(f)
        assert data["world"] == world
        for adv, mask in zip(data["advantages"], data["mask"]):
            rows.append([a for a, m in zip(adv, mask) if m])
        logs.append(data["logs"])
    return rows, logs


@pytest.mark.slow
def test_two_process_gloo_run_equals_one_process_run(tiny_model_path, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    run_script("process_grpo_dp_worker", tiny_model_path, one, 8)
    run_script("process_grpo_dp_worker", tiny_model_path, two, 4, nproc=2)
    rows_one, logs_one = _rows(one, 1)
    rows_two, logs_two = _rows(two, 2)
    assert len(rows_one) == len(rows_two) == 8
    for a, b in zip(rows_one, rows_two):
        assert a == pytest.approx(b, abs=1e-6)
    # the group of 8 generations was split 4 + 4 over the two ranks, yet pooled as one group: per-rank pooling would
    # have given other values (rank 0's and rank 1's step rewards have different means)
    assert any(abs(v) > 0.1 for row in rows_one for v in row)
    for key in ("process/step_reward_mean", "process/advantage_mean", "process/steps_per_completion"):
        assert logs_two[0][key] == pytest.approx(logs_one[0][key], abs=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# The example and the benchmark run end to end (tiny model)
# ----------------------------------------------------------------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_example_runs_and_writes_plot_and_results(tiny_model_path, tmp_path):
    out = tmp_path / "example"
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "process_grpo.py"), "--model_name_or_path", tiny_model_path,
         "--output_dir", str(out), "--max_steps", "2", "--train_size", "16", "--eval_size", "4",
         "--eval_max_new_tokens", "8", "--max_completion_length", "8", "--use_peft", "--lora_target_modules",
         "q_proj", "v_proj", "--disable_tqdm", "true"],
        check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=900,
    )
    results = json.loads((out / "results.json").read_text())
    assert results["trainer"] == "ProcessGRPOTrainer"
    assert 0.0 <= results["before"]["accuracy"] <= 1.0 and 0.0 <= results["after"]["accuracy"] <= 1.0
    assert (out / "training_curves.png").stat().st_size > 1000
    assert any("process/steps_per_completion" in entry for entry in results["log_history"])
    assert (out / "adapter_config.json").exists()
