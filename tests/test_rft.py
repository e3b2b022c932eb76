"""RFTTrainer: training changes the right parameters and logs every listed metric; rollout values/GAE and the loss agree
with trl_ext.core (and TRL's policy loss) on a captured batch; vf_clipfrac > 0 when values move; QLoRA on one 4-bit
base; resume reproduces the uninterrupted run; value-head files everywhere; bad input fails before step 1; (slow) the
example under accelerate with 2 CPU processes and the full default example."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from trl import GRPOTrainer

from trl_ext.core import clipped_value_loss, gae, ppo_policy_loss, rlhf_token_rewards, whiten
from trl_ext.data import rl_dataset
from trl_ext.models.value_head import (
    VALUE_HEAD_CONFIG_NAME,
    VALUE_HEAD_WEIGHTS_NAME,
    load_policy_and_value_head,
)
from trl_ext.rewards import FuzzySimilarity, NumericMatch
from trl_ext.trainers import rft_checks
from trl_ext.trainers.rft import RFTConfig, RFTTrainer
from trl_ext.trainers.trl_compat import grpo_kl_loss_term_disabled

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["What is 2+2?", "Compute 3*5.", "Add 7 and 8.", "What is 10-4?"]
LISTED_METRICS = (
    "pg_loss", "vf_loss", "vf_clipfrac", "pg_clipfrac", "approx_kl", "kl", "entropy", "value_mean",
    "explained_variance", "returns_mean", "completions/mean_length",
)


def _dataset(n_repeat=4):
    return Dataset.from_dict({"prompt": PROMPTS * n_repeat, "answer": ["4", "15", "15", "6"] * n_repeat})


def char_variety(completions, **kwargs):
    """A reward that varies between random completions."""
    return [len(set(c)) / 10.0 for c in completions]


def _args(tmp_path, **overrides):
    kwargs = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_completion_length=10,
        max_steps=2,
        logging_steps=1,
        learning_rate=1e-3,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        seed=0,
        disable_tqdm=True,
    )
    kwargs.update(overrides)
    return RFTConfig(**kwargs)


def _params(module, contains=""):
    return {n: p.detach().clone() for n, p in module.named_parameters() if contains in n}


def _changed(before, module):
    now = dict(module.named_parameters())
    return {n for n, p in before.items() if not torch.equal(p, now[n].detach())}


def _logged(trainer, key):
    return [entry[key] for entry in trainer.state.log_history if key in entry]


# ----------------------------------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------------------------------


def test_config_allows_one_generation_and_odd_batches(tmp_path):
    args = _args(tmp_path, num_generations=1, per_device_train_batch_size=3)
    assert args.num_generations == 1 and type(args.num_generations) is int
    assert args.generation_batch_size == 3 and args.steps_per_generation == 1
    assert _args(tmp_path, num_generations=4).num_generations == 4
    with pytest.raises(ValueError, match="divisible by num_generations"):
        _args(tmp_path, num_generations=2, per_device_train_batch_size=3)


@pytest.mark.parametrize("value", [0.0, -0.1])
def test_config_rejects_non_positive_cliprange_value(tmp_path, value):
    with pytest.raises(ValueError, match="cliprange_value must be > 0"):
        _args(tmp_path, cliprange_value=value)
    assert _args(tmp_path, cliprange_value=None).cliprange_value is None


def test_config_rejects_other_bad_values(tmp_path):
    with pytest.raises(ValueError, match="kl_target needs beta > 0"):
        _args(tmp_path, kl_target=6.0, beta=0.0)
    with pytest.raises(ValueError, match="value_head_init"):
        _args(tmp_path, value_head_init="ones")
    with pytest.raises(ValueError, match="gamma and RFTConfig.lam"):
        _args(tmp_path, lam=1.5)


# ----------------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------------


def test_full_training_changes_policy_and_value_head_and_logs_all_metrics(tiny_model_path, tmp_path):
    dataset = rl_dataset("chain_sum", 8, seed=0)
    grader = FuzzySimilarity()  # partial credit in [0, 1]
    trainer = RFTTrainer(
        model=tiny_model_path, reward_funcs=[grader, NumericMatch()], train_dataset=dataset,
        args=_args(tmp_path, num_iterations=2, max_steps=2),
    )
    policy_before = _params(trainer.model.model)
    head_before = _params(trainer.value_head)
    trainer.train()
    assert _changed(policy_before, trainer.model.model), "policy weights did not change"
    assert _changed(head_before, trainer.value_head) == set(head_before), "value head did not change"
    merged = {}
    for entry in trainer.state.log_history:
        merged.update(entry)
    for key in (*LISTED_METRICS, f"rewards/{grader.__name__}/mean", "rewards/numeric_match/mean"):
        values = _logged(trainer, key)
        assert values, f"{key} not logged; logged keys: {sorted(merged)}"
        assert all(isinstance(v, float) and math.isfinite(v) for v in values), (key, values)
    assert trainer.ref_model is not None  # full fine-tuning with beta > 0: TRL's reference copy feeds the KL reward


def test_lora_trains_only_adapters_and_value_head_with_groups(tiny_model_path, tmp_path):
    from peft import LoraConfig

    trainer = RFTTrainer(
        model=tiny_model_path, reward_funcs=char_variety, train_dataset=_dataset(),
        args=_args(tmp_path, num_generations=2, max_steps=2, beta=0.1),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    assert trainer.ref_model is None  # the reference is the base with adapters disabled
    before = _params(trainer.model)
    trainer.train()
    changed = _changed(before, trainer.model)
    assert changed, "nothing changed"
    assert all("lora_" in n or "value_head" in n for n in changed), sorted(changed)
    assert any("lora_" in n for n in changed) and any("value_head" in n for n in changed)
    assert all(math.isfinite(v) for v in _logged(trainer, "kl"))


def _plain_forward(trainer, out):
    """Hidden states, policy and reference log-probs of a batch's completions by plain forwards (no fused LM head,
    no hook): the independent inputs of the core formulas."""
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    attention = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    T = out["completion_ids"].size(1)
    labels = out["completion_ids"][..., None]
    with torch.no_grad():
        hidden = trainer.model.model(input_ids=ids, attention_mask=attention).last_hidden_state[:, -T - 1 : -1]
        logps = torch.log_softmax(trainer.model.lm_head(hidden), -1).gather(-1, labels)[..., 0]
        ref_hidden = trainer.ref_model.model(input_ids=ids, attention_mask=attention).last_hidden_state[:, -T - 1 : -1]
        ref_logps = torch.log_softmax(trainer.ref_model.lm_head(ref_hidden), -1).gather(-1, labels)[..., 0]
    return hidden, logps, ref_logps


@pytest.mark.parametrize("from_training_forward", [True, False], ids=["values-from-training-forward", "rollout-forward"])
def test_rollout_values_gae_and_loss_agree_with_core(tiny_model_path, tmp_path, from_training_forward):
    """V_old, returns, advantages and the loss inside the trainer equal trl_ext.core applied to independently
    computed inputs, whether V_old comes from the training forward (default) or from a separate rollout forward."""
    beta, gamma, lam, penalty, vf_coef, clip = 0.1, 0.9, 0.8, 0.5, 0.3, 0.05
    args = _args(tmp_path, beta=beta, gamma=gamma, lam=lam, missing_eos_penalty=penalty, vf_coef=vf_coef,
                 cliprange_value=clip, values_from_training_forward=from_training_forward)
    trainer = RFTTrainer(model=tiny_model_path, reward_funcs=char_variety, args=args, train_dataset=_dataset())
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop otherwise
    out = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    assert ("old_values" in out) != from_training_forward

    hidden, logps, ref_logps = _plain_forward(trainer, out)
    mask = out["completion_mask"]
    with torch.no_grad():
        values = trainer.value_head(hidden)
    texts = trainer.processing_class.batch_decode(
        [row[m.bool()] for row, m in zip(out["completion_ids"], mask)], skip_special_tokens=True
    )
    has_eos = ((out["completion_ids"] == trainer.processing_class.eos_token_id) & mask.bool()).any(dim=1)
    scores = torch.tensor(char_variety(texts)) - penalty * (~has_eos).float()
    rewards, _ = rlhf_token_rewards(scores, logps, ref_logps, mask, beta)
    advantages, returns = gae(rewards, values, mask, gamma=gamma, lam=lam)
    advantages = whiten(advantages, mask)

    if not from_training_forward:
        torch.testing.assert_close(out["old_values"], values, atol=1e-5, rtol=1e-4)  # from the rollout forward
        # move V_old so that value clipping is active in the loss below
        out["old_values"] = out["old_values"] + 0.3 * torch.randn_like(out["old_values"])
    loss = trainer._compute_loss(trainer.model, out)  # in the default mode this fills old_values/returns/advantages
    if from_training_forward:
        torch.testing.assert_close(out["old_values"], values, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["returns"], returns, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["advantages"], advantages, atol=1e-4, rtol=1e-4)
    assert out["advantages"].shape == mask.shape

    with grpo_kl_loss_term_disabled(trainer):
        trl_policy_loss = GRPOTrainer._compute_loss(trainer, trainer.model, out)
    vf_loss, vf_clipfrac = clipped_value_loss(values, out["old_values"], out["returns"], mask, clip)
    torch.testing.assert_close(loss, trl_policy_loss + vf_coef * vf_loss, atol=1e-5, rtol=1e-4)
    metrics = trainer._metrics["train"]
    assert metrics["vf_loss"][-1] == pytest.approx(vf_loss.item(), rel=1e-4)
    assert metrics["vf_clipfrac"][-1] == pytest.approx(vf_clipfrac.item())
    assert (vf_clipfrac > 0) == (not from_training_forward)  # V == V_old at the first update of a rollout
    # with loss_type="bnpo", TRL's surrogate is trl_ext.core.ppo_policy_loss
    core_pg, _ = ppo_policy_loss(logps, logps, out["advantages"], mask, 0.2, 0.2)
    assert metrics["pg_loss"][-1] == pytest.approx(trl_policy_loss.item(), abs=1e-5)
    assert metrics["pg_loss"][-1] == pytest.approx(core_pg.item(), abs=1e-5)


@pytest.mark.parametrize("from_training_forward", [True, False], ids=["values-from-training-forward", "rollout-forward"])
def test_value_head_gradient_comes_from_the_value_loss_only(tiny_model_path, tmp_path, from_training_forward):
    """The policy loss sends no gradient into the value head: its gradient is exactly vf_coef * d(vf_loss)."""
    vf_coef = 0.3
    args = _args(tmp_path, vf_coef=vf_coef, values_from_training_forward=from_training_forward)
    trainer = RFTTrainer(model=tiny_model_path, reward_funcs=char_variety, args=args, train_dataset=_dataset())
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    out = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    trainer.model.zero_grad()
    trainer._compute_loss(trainer.model, out).backward()
    grads = {n: p.grad.clone() for n, p in trainer.value_head.named_parameters()}

    hidden, _, _ = _plain_forward(trainer, out)
    trainer.model.zero_grad()
    vf_loss, _ = clipped_value_loss(trainer.value_head(hidden), out["old_values"], out["returns"],
                                    out["completion_mask"], args.cliprange_value)
    (vf_coef * vf_loss).backward()
    for name, p in trainer.value_head.named_parameters():
        assert p.grad.abs().sum() > 0
        torch.testing.assert_close(grads[name], p.grad, atol=1e-6, rtol=1e-4, msg=name)


def test_vf_clipfrac_positive_when_values_move_more_than_cliprange(tiny_model_path, tmp_path):
    args = _args(tmp_path, num_iterations=3, max_steps=3, cliprange_value=1e-3, value_head_learning_rate=0.05)
    trainer = RFTTrainer(model=tiny_model_path, reward_funcs=char_variety, args=args, train_dataset=_dataset())
    trainer.train()
    clipfrac = _logged(trainer, "vf_clipfrac")
    assert clipfrac[0] == 0.0  # first update of a rollout: V == V_old
    assert max(clipfrac[1:]) > 0.0, clipfrac
    head_group = trainer.optimizer.param_groups[-1]  # value_head_learning_rate: the head's own group
    assert head_group["initial_lr"] == 0.05 and head_group["weight_decay"] == 0.0
    assert {id(p) for p in head_group["params"]} == {id(p) for p in trainer.value_head.parameters()}


def test_none_rewards_are_skipped_as_in_trl(tiny_model_path, tmp_path):
    def half_none(completions, **kwargs):
        return [None if i % 2 else 1.0 for i in range(len(completions))]

    trainer = RFTTrainer(model=tiny_model_path, reward_funcs=half_none, train_dataset=_dataset(),
                         args=_args(tmp_path, values_from_training_forward=False))
    trainer.model.train()
    out = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    assert torch.all(out["value_mask"][1::2] == 0) and torch.all(out["advantages"][1::2] == 0)
    assert torch.all(out["value_mask"][0::2] == out["completion_mask"][0::2])
    trainer.train()
    assert all(math.isfinite(v) for v in _logged(trainer, "vf_loss"))


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints: value head files, resume, push
# ----------------------------------------------------------------------------------------------------------------------


def _resume_run(tiny_model_path, out_dir, resume=None):
    args = _args(out_dir, max_steps=4, save_strategy="steps", save_steps=2, kl_target=0.5, beta=0.2,
                 kl_horizon=10.0, learning_rate=5e-3, value_head_learning_rate=1e-2)
    trainer = RFTTrainer(model=tiny_model_path, reward_funcs=char_variety, args=args, train_dataset=_dataset())
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_resume_from_checkpoint_reproduces_uninterrupted_run(tiny_model_path, tmp_path):
    full = _resume_run(tiny_model_path, tmp_path / "full")
    checkpoint = tmp_path / "full" / "checkpoint-2"
    for name in (VALUE_HEAD_WEIGHTS_NAME, VALUE_HEAD_CONFIG_NAME, "rft_state.json", "model.safetensors"):
        assert (checkpoint / name).is_file(), name
    assert not any("value_head" in k for k in load_file(str(checkpoint / "model.safetensors")))
    beta_at_2 = json.loads((checkpoint / "rft_state.json").read_text())["beta"]
    assert beta_at_2 != 0.2 and full.kl_coef != beta_at_2  # the adaptive controller moves beta every rollout

    # resume a fresh trainer from the half-way checkpoint (copied, so that the full run's files stay untouched)
    import shutil

    shutil.copytree(checkpoint, tmp_path / "part" / "checkpoint-2")
    resumed = _resume_run(tiny_model_path, tmp_path / "part", resume=str(tmp_path / "part" / "checkpoint-2"))
    assert resumed.state.global_step == 4
    assert resumed.kl_coef == pytest.approx(full.kl_coef)
    beta_at_3 = next(e["beta"] for e in resumed.state.log_history if e.get("step") == 3 and "beta" in e)
    assert beta_at_3 == pytest.approx(beta_at_2)  # restored from rft_state.json

    for name, p in full.value_head.named_parameters():
        torch.testing.assert_close(p, dict(resumed.value_head.named_parameters())[name], rtol=1e-5, atol=1e-6)
    resumed_params = dict(resumed.model.named_parameters())
    for name, p in full.model.named_parameters():
        torch.testing.assert_close(p, resumed_params[name], rtol=1e-5, atol=1e-6, msg=name)
    full_losses = [e["loss"] for e in full.state.log_history if "loss" in e and e["step"] > 2]
    resumed_losses = [e["loss"] for e in resumed.state.log_history if "loss" in e and e["step"] > 2]
    assert len(resumed_losses) == 2 and resumed_losses == pytest.approx(full_losses, rel=1e-5)

    # the final folder: model + value head, loadable back
    resumed.save_model(str(tmp_path / "final"))
    model, head = load_policy_and_value_head(tmp_path / "final")
    torch.testing.assert_close(head.summary.weight, full.value_head.summary.weight.cpu())


def test_push_to_hub_uploads_value_head_with_model(tiny_model_path, tmp_path, monkeypatch):
    """Trainer.push_to_hub uploads output_dir: it must hold the value head next to the model (Hub API faked)."""
    import transformers.trainer as hf_trainer

    uploads = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            return type("RepoUrl", (), {"repo_id": repo_id})()

        def upload_folder(self, folder_path, **kwargs):
            uploads.append(sorted(os.listdir(folder_path)))
            return "https://hub/commit"

    monkeypatch.setattr(hf_trainer, "hf_api", lambda: FakeApi())
    trainer = RFTTrainer(model=tiny_model_path, reward_funcs=char_variety, train_dataset=_dataset(),
                         args=_args(tmp_path, max_steps=1))
    trainer.train()
    trainer.push_to_hub()
    assert uploads, "nothing was uploaded"
    assert {VALUE_HEAD_WEIGHTS_NAME, VALUE_HEAD_CONFIG_NAME, "model.safetensors", "README.md"} <= set(uploads[-1])


# ----------------------------------------------------------------------------------------------------------------------
# QLoRA
# ----------------------------------------------------------------------------------------------------------------------


def test_qlora_one_4bit_base_serves_policy_critic_and_reference(tiny_model_path, tmp_path):
    import bitsandbytes as bnb
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_compute_dtype=torch.float32)
    trainer = RFTTrainer(
        model=tiny_model_path, reward_funcs=char_variety, train_dataset=_dataset(),
        args=_args(tmp_path, max_steps=2, beta=0.1), quantization_config=quantization,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"]),
    )
    four_bit = [m for m in trainer.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert four_bit, "no 4-bit Linear modules"
    assert trainer.ref_model is None  # reference = adapters disabled on the same base
    # one base copy: exactly one 4-bit Linear per projection of the base (7 per Llama layer), shared by all roles
    assert len(four_bit) == 7 * trainer.model.config.num_hidden_layers
    assert len({id(m.weight) for m in four_bit}) == len(four_bit)
    assert trainer.value_head.summary.weight.dtype == torch.float32
    before = _params(trainer.model)
    trainer.train()
    changed = _changed(before, trainer.model)
    assert any("lora_" in n for n in changed) and any("value_head" in n for n in changed)
    assert all("lora_" in n or "value_head" in n for n in changed), sorted(changed)


# ----------------------------------------------------------------------------------------------------------------------
# Reward models and value-head initialisation
# ----------------------------------------------------------------------------------------------------------------------


def _save_reward_model(path, tiny_model_path, with_tokenizer=True, **config_overrides):
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    from trl_ext.models import tiny_config

    torch.manual_seed(1)
    config = tiny_config(num_labels=1, **config_overrides)
    model = LlamaForSequenceClassification(config)
    torch.nn.init.normal_(model.score.weight)
    model.save_pretrained(path)
    if with_tokenizer:
        AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(path)
    return str(path)


def test_reward_model_source_and_value_head_init_from_its_score_head(tiny_model_path, tmp_path):
    rm_path = _save_reward_model(tmp_path / "rm", tiny_model_path)
    trainer = RFTTrainer(model=tiny_model_path, reward_funcs=rm_path, train_dataset=_dataset(),
                         args=_args(tmp_path / "out", max_steps=1, value_head_init="reward_model"))
    rm = trainer.reward_funcs[0]
    torch.testing.assert_close(trainer.value_head.summary.weight, rm.score.weight.float())
    trainer.train()
    assert _logged(trainer, f"rewards/{Path(rm_path).name}/mean")


def test_reward_model_without_tokenizer_but_same_vocab_uses_policy_tokenizer(tiny_model_path, tmp_path):
    rm_path = _save_reward_model(tmp_path / "rm", tiny_model_path, with_tokenizer=False)
    trainer = RFTTrainer(model=tiny_model_path, reward_funcs=rm_path, train_dataset=_dataset(),
                         args=_args(tmp_path / "out"))
    assert len(trainer.reward_processing_classes[0]) == len(trainer.processing_class)


# ----------------------------------------------------------------------------------------------------------------------
# Bad input: one clear error, before step 1
# ----------------------------------------------------------------------------------------------------------------------


def test_error_no_reward_source(tiny_model_path, tmp_path):
    with pytest.raises(ValueError, match="no reward source"):
        RFTTrainer(model=tiny_model_path, reward_funcs=None, args=_args(tmp_path), train_dataset=_dataset())


def test_error_dataset_without_prompt_column(tiny_model_path, tmp_path):
    bad = Dataset.from_dict({"question": PROMPTS, "answer": ["4", "15", "15", "6"]})
    with pytest.raises(ValueError, match=r"train_dataset has no 'prompt' column \(columns: \['question', 'answer'\]\)"):
        RFTTrainer(model=tiny_model_path, reward_funcs=char_variety, args=_args(tmp_path), train_dataset=bad)


def test_error_grader_wrong_length_before_training(tiny_model_path, tmp_path):
    def one_short(completions, **kwargs):
        return [1.0] * (len(completions) - 1)

    with pytest.raises(ValueError, match="'one_short' returned 1 rewards for 2 completions"):
        RFTTrainer(model=tiny_model_path, reward_funcs=one_short, args=_args(tmp_path), train_dataset=_dataset())


def test_error_grader_nan_before_training(tiny_model_path, tmp_path):
    def nan_on_empty(completions, **kwargs):
        return [float("nan") if c == "" else 1.0 for c in completions]

    with pytest.raises(ValueError, match="'nan_on_empty' returned a non-finite.*completion\\(s\\) \\[0\\]"):
        RFTTrainer(model=tiny_model_path, reward_funcs=nan_on_empty, args=_args(tmp_path), train_dataset=_dataset())


def test_error_reward_model_with_other_tokenizer_and_no_processing_class(tiny_model_path, tmp_path):
    rm_path = _save_reward_model(tmp_path / "rm", tiny_model_path, with_tokenizer=False, vocab_size=100,
                                 bos_token_id=0, eos_token_id=0, pad_token_id=0)
    with pytest.raises(ValueError, match=r"reward_funcs\[0\].*vocabulary \(100 tokens\).*reward_processing_classes"):
        RFTTrainer(model=tiny_model_path, reward_funcs=rm_path, args=_args(tmp_path / "out"), train_dataset=_dataset())


def test_error_load_in_4bit_without_bitsandbytes(tiny_model_path, tmp_path, monkeypatch):
    from transformers import BitsAndBytesConfig

    monkeypatch.setattr(rft_checks, "is_bitsandbytes_available", lambda: False)
    with pytest.raises(ImportError, match="load_in_4bit=True.*bitsandbytes"):
        RFTTrainer(model=tiny_model_path, reward_funcs=char_variety, args=_args(tmp_path), train_dataset=_dataset(),
                   quantization_config=BitsAndBytesConfig(load_in_4bit=True))


def test_reward_func_nan_during_training_is_an_error(tiny_model_path, tmp_path):
    calls = {"n": 0}

    def nan_later(completions, **kwargs):
        calls["n"] += 1
        return [float("nan") if calls["n"] > 1 else 0.0] * len(completions)

    trainer = RFTTrainer(model=tiny_model_path, reward_funcs=nan_later, args=_args(tmp_path),
                         train_dataset=_dataset())
    with pytest.raises(ValueError, match="'nan_later' returned a non-finite"):
        trainer.train()


# ----------------------------------------------------------------------------------------------------------------------
# Slow: the example script
# ----------------------------------------------------------------------------------------------------------------------


def _run(cmd, timeout, env_extra=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env_extra or {})}
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


@pytest.mark.slow
def test_example_accelerate_two_cpu_processes(tiny_model_path, tmp_path):
    config = tmp_path / "accelerate.yaml"
    # DESIGN.md §2: `--cpu --num_processes 2` silently runs one process; MULTI_GPU + use_cpu runs two (gloo)
    config.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_processes: 2\nnum_machines: 1\n"
        "machine_rank: 0\nmixed_precision: 'no'\ndynamo_backend: 'NO'\nuse_cpu: true\ngpu_ids: all\n"
        "main_training_function: main\nrdzv_backend: static\nsame_network: true\n"
    )
    out = tmp_path / "out"
    result = _run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
         "examples/rft.py", "--model_name_or_path", tiny_model_path, "--output_dir", str(out), "--max_steps", "3",
         "--per_device_train_batch_size", "2", "--max_completion_length", "8", "--eval_size", "4",
         "--train_size", "16", "--eval_max_new_tokens", "8", "--logging_steps", "1", "--save_strategy", "steps",
         "--save_steps", "3"],
        timeout=900,
    )
    assert "world_size=2" in result.stdout + result.stderr
    assert (out / VALUE_HEAD_WEIGHTS_NAME).is_file() and (out / "checkpoint-3" / VALUE_HEAD_WEIGHTS_NAME).is_file()
    summary = json.loads((out / "rft_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3
    assert (out / "rft_curves.png").is_file()


@pytest.mark.slow
def test_example_default_run(tmp_path):
    """The full default run (embedded SmolLM2-135M, CPU, ~10-15 min): accuracy before/after and the plot."""
    out = tmp_path / "out"
    _run([sys.executable, "examples/rft.py", "--output_dir", str(out)], timeout=2400)
    summary = json.loads((out / "rft_summary.json").read_text())
    assert summary["accuracy_after"] >= summary["accuracy_before"]
    assert (out / "rft_curves.png").is_file() and (out / VALUE_HEAD_WEIGHTS_NAME).is_file()
