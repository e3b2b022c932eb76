"""RFTTrainer: training changes the right parameters and logs every listed metric; rollout values/GAE and the loss agree
with trl_ext.core (and TRL's policy loss) on a captured batch; vf_clipfrac > 0 when values move; QLoRA on one 4-bit
base; resume reproduces the uninterrupted run; value-head files everywhere; bad input fails before step 1; statistics of
a batch split over processes (moments, value-loss normaliser); (slow) a 2-process gloo run equals the 1-process run
exactly, the example under accelerate with 2 CPU processes and the full default example."""

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
from trl import GRPOConfig, GRPOTrainer

from trl_ext.core import clipped_value_loss, gae, ppo_policy_loss, rlhf_token_rewards, whiten
from trl_ext.data import rl_dataset
from trl_ext.models.value_head import (
    VALUE_HEAD_CONFIG_NAME,
    VALUE_HEAD_WEIGHTS_NAME,
    load_policy_and_value_head,
)
from trl_ext.rewards import FuzzySimilarity, NumericMatch
from trl_ext.trainers import checks
from trl_ext.core.masked import masked_moments
from trl_ext.trainers.rft import RFTConfig, RFTTrainer, explained_variance, explained_variance_from_moments

from helpers import ANSWERS, PROMPTS, REPO, char_variety, nf4_config, prompt_dataset, run_args, run_script

LISTED_METRICS = (
    "pg_loss", "vf_loss", "vf_clipfrac", "clip_ratio/region_mean", "approx_kl", "kl", "beta", "rlhf_reward",
    "entropy", "value_mean", "explained_variance", "returns_mean", "completions/mean_length",
)


def _dataset(n_repeat=4):
    return prompt_dataset(n_repeat)


def _args(tmp_path, **overrides):
    return RFTConfig(**run_args(tmp_path, **{"max_completion_length": 10, "max_steps": 2, **overrides}))


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


def test_default_loss_type_is_the_globally_normalised_token_mean(tmp_path):
    assert _args(tmp_path).loss_type == "dapo"


# ----------------------------------------------------------------------------------------------------------------------
# Statistics over a batch split across processes (pure functions; the 2-process run is the slow test below)
# ----------------------------------------------------------------------------------------------------------------------


def test_explained_variance_from_summed_moments_equals_whole_batch():
    g = torch.Generator().manual_seed(0)
    returns, values = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    mask = torch.tensor([[1] * 6, [1] * 5 + [0], [1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    whole = explained_variance(values, returns, mask)
    parts = [slice(0, 2), slice(2, 4)]
    summed = [sum(masked_moments(t[p], mask[p]) for p in parts) for t in (returns, returns - values)]
    assert explained_variance_from_moments(*summed).item() == pytest.approx(whole.item(), abs=1e-6)
    per_part = [explained_variance(values[p], returns[p], mask[p]).item() for p in parts]
    assert abs(sum(per_part) / 2 - whole.item()) > 0.05  # the old mean of per-rank EVs is not the batch's EV
    hand = 1 - (returns - values)[mask.bool()].double().var() / returns[mask.bool()].double().var()
    assert whole.item() == pytest.approx(hand.item(), abs=1e-6)
    assert math.isnan(explained_variance(values, torch.ones(4, 6), mask).item())  # Var(R) = 0


@pytest.mark.parametrize("loss_type", ["dapo", "bnpo", "grpo", "luspo"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_value_loss_normalizer_is_the_global_token_mean_for_every_loss_type(loss_type, mode):
    """The local token-mean value loss divided by the normalizer is Σ_local / (N_global / P · GA / spg) whatever the
    policy's loss_type: a token mean over the global batch once DDP averages over P processes."""
    from types import SimpleNamespace

    P, GA, spg, n_local, n_global = 2, 4, 2, 5, 18
    fake = SimpleNamespace(
        loss_type=loss_type, current_gradient_accumulation_steps=GA, args=SimpleNamespace(steps_per_generation=spg),
        accelerator=SimpleNamespace(num_processes=P),
    )
    inputs = {"value_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]), "value_items_in_batch": torch.tensor(n_global)}
    local_sum = 7.0
    scaled = (local_sum / n_local) / RFTTrainer._value_loss_normalizer(fake, inputs, mode)
    expected = local_sum / (n_global / P * (GA / spg if mode == "train" else 1))
    assert float(scaled) == pytest.approx(expected, rel=1e-6)


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


@pytest.mark.parametrize("move_old_values", [False, True], ids=["value-clip-inactive", "value-clip-active"])
def test_rollout_values_gae_and_loss_agree_with_core(tiny_model_path, tmp_path, move_old_values):
    """V_old, returns, advantages and the loss inside the trainer equal trl_ext.core applied to independently
    computed inputs; at the first update of a rollout (V == V_old, the clip inactive) and with V_old moved so that
    the value clip is active."""
    beta, gamma, lam, penalty, vf_coef, clip = 0.1, 0.9, 0.8, 0.5, 0.3, 0.05
    args = _args(tmp_path, beta=beta, gamma=gamma, lam=lam, missing_eos_penalty=penalty, vf_coef=vf_coef,
                 cliprange_value=clip)
    trainer = RFTTrainer(model=tiny_model_path, reward_funcs=char_variety, args=args, train_dataset=_dataset())
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop otherwise
    out = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))

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

    torch.testing.assert_close(out["old_values"], values, atol=1e-5, rtol=1e-4)  # from the rollout forward
    torch.testing.assert_close(out["returns"], returns, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["advantages"], advantages, atol=1e-4, rtol=1e-4)
    assert out["advantages"].shape == mask.shape
    if move_old_values:  # so that value clipping is active in the loss below
        out["old_values"] = out["old_values"] + 0.3 * torch.randn_like(out["old_values"])
    loss = trainer._compute_loss(trainer.model, out)

    assert trainer.beta == 0.0 and trainer.kl_coef == beta  # TRL's KL *loss* coefficient is off; RFT's β is its own
    trl_policy_loss = GRPOTrainer._compute_loss(trainer, trainer.model, out)
    vf_loss, vf_clipfrac = clipped_value_loss(values, out["old_values"], out["returns"], mask, clip)
    torch.testing.assert_close(loss, trl_policy_loss + vf_coef * vf_loss, atol=1e-5, rtol=1e-4)
    metrics = trainer._metrics["train"]
    assert metrics["vf_loss"][-1] == pytest.approx(vf_loss.item(), rel=1e-4)
    assert metrics["vf_clipfrac"][-1] == pytest.approx(vf_clipfrac.item())
    assert (vf_clipfrac > 0) == move_old_values  # V == V_old at the first update of a rollout
    # with loss_type="dapo" (or "bnpo"), one process, no accumulation: TRL's surrogate is trl_ext.core.ppo_policy_loss
    core_pg, _ = ppo_policy_loss(logps, logps, out["advantages"], mask, 0.2, 0.2)
    assert metrics["pg_loss"][-1] == pytest.approx(trl_policy_loss.item(), abs=1e-5)
    assert metrics["pg_loss"][-1] == pytest.approx(core_pg.item(), abs=1e-5)


def test_single_process_default_dapo_loss_equals_bnpo_bit_for_bit(tiny_model_path, tmp_path):
    """One process, no accumulation: the new default loss_type="dapo" (policy and value loss normalised by the global
    token count) gives exactly the loss of the former default "bnpo" (local token count)."""
    args = _args(tmp_path, vf_coef=0.3)
    trainer = RFTTrainer(model=tiny_model_path, reward_funcs=char_variety, args=args, train_dataset=_dataset())
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    out = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    out["old_values"] = out["old_values"] + 0.3  # value clipping active
    assert out["value_items_in_batch"].item() == out["value_mask"].sum().item()
    losses = {}
    for loss_type in ("dapo", "bnpo"):
        trainer.loss_type = loss_type
        losses[loss_type] = trainer._compute_loss(trainer.model, dict(out)).detach()
    assert losses["dapo"].item() != 0.0 and torch.equal(losses["dapo"], losses["bnpo"])


def test_value_head_gradient_comes_from_the_value_loss_only(tiny_model_path, tmp_path):
    """The policy loss sends no gradient into the value head: its gradient is exactly vf_coef * d(vf_loss)."""
    vf_coef = 0.3
    args = _args(tmp_path, vf_coef=vf_coef)
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


@pytest.mark.parametrize("cliprange_value, expected", [(1e6, "zero"), (1e-7, "one")], ids=["inactive", "tight"])
def test_vf_clipfrac_is_exactly_zero_when_the_clip_is_inactive(tiny_model_path, tmp_path, cliprange_value, expected):
    """A second epoch on each rollout (V != V_old): an inactive clip counts no token at all, a tight one almost all."""
    args = _args(tmp_path, num_iterations=2, max_steps=4, cliprange_value=cliprange_value, value_head_learning_rate=0.05)
    trainer = RFTTrainer(model=tiny_model_path, reward_funcs=char_variety, args=args, train_dataset=_dataset())
    trainer.train()
    clipfrac = _logged(trainer, "vf_clipfrac")
    assert len(clipfrac) == 4 and clipfrac[0] == clipfrac[2] == 0.0  # first epoch: V == V_old exactly
    if expected == "zero":
        assert clipfrac == [0.0] * 4
    else:
        # tokens whose value moved towards the return are counted (clipped error larger), those that moved away not
        assert max(clipfrac[1], clipfrac[3]) > 0.9 and min(clipfrac[1], clipfrac[3]) > 0.5, clipfrac


def test_sync_ref_model_mixes_policy_weights_into_the_reference_never_the_value_head(tiny_model_path, tmp_path):
    """TRL's sync_ref_model with a value head attached: 4 steps, a sync every 2 with α = 1 (reference ← policy)."""
    args = _args(tmp_path, max_steps=4, sync_ref_model=True, ref_model_sync_steps=2, ref_model_mixup_alpha=1.0)
    trainer = RFTTrainer(model=tiny_model_path, reward_funcs=char_variety, args=args, train_dataset=_dataset())
    reference_before = _params(trainer.ref_model)
    trainer.train()
    assert trainer.state.global_step == 4
    assert not hasattr(trainer.ref_model, "value_head") and not any("value_head" in n for n, _ in
                                                                   trainer.ref_model.named_parameters())
    policy = {n: p for n, p in trainer.model.named_parameters() if "value_head" not in n}
    reference = dict(trainer.ref_model.named_parameters())
    assert policy.keys() == reference.keys()
    for name, p in reference.items():
        assert torch.equal(p, policy[name]), name  # synced after step 4
    assert _changed(reference_before, trainer.ref_model)  # and the reference did move
    # The rollout of step 3 is sampled right after the sync of step 2: its policy *is* the reference (KL 0)
    kl = _logged(trainer, "kl")
    assert abs(kl[1]) > 1e-6 and abs(kl[2]) < 1e-6 and abs(kl[3]) > 1e-6, kl  # k1 is signed


def test_sync_ref_model_partial_mixup(tiny_model_path, tmp_path):
    """α = 0.6 at step 2: reference = 0.4 · initial + 0.6 · policy (TRL's formula), value head excluded."""
    args = _args(tmp_path, max_steps=2, sync_ref_model=True, ref_model_sync_steps=2, ref_model_mixup_alpha=0.6)
    trainer = RFTTrainer(model=tiny_model_path, reward_funcs=char_variety, args=args, train_dataset=_dataset())
    initial = _params(trainer.ref_model)
    trainer.train()
    policy = dict(trainer.model.named_parameters())
    for name, p in trainer.ref_model.named_parameters():
        torch.testing.assert_close(p, 0.4 * initial[name] + 0.6 * policy[name].detach(), atol=1e-6, rtol=1e-5)


def test_none_rewards_are_skipped_as_in_trl(tiny_model_path, tmp_path):
    def half_none(completions, **kwargs):
        return [None if i % 2 else 1.0 for i in range(len(completions))]

    trainer = RFTTrainer(model=tiny_model_path, reward_funcs=half_none, train_dataset=_dataset(),
                         args=_args(tmp_path))
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

    quantization = nf4_config()
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


def test_error_no_reward_source_starts_with_trls_wording(tiny_model_path, tmp_path):
    with pytest.raises(ValueError, match=r"^No reward source provided\. Pass `reward_funcs`.*RFTTrainer: reward_funcs"):
        RFTTrainer(model=tiny_model_path, reward_funcs=None, args=_args(tmp_path), train_dataset=_dataset())


def test_error_reward_processing_classes_length_starts_with_trls_wording(tiny_model_path, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    trl_wording = r"^The number of reward processing classes \(2\) must match the number of reward functions \(1\)"
    with pytest.raises(ValueError, match=trl_wording + r"\. RFTTrainer: give one per reward function"):
        RFTTrainer(model=tiny_model_path, reward_funcs=char_variety, args=_args(tmp_path), train_dataset=_dataset(),
                   reward_processing_classes=[tok, tok])
    with pytest.raises(ValueError, match=trl_wording):  # stock GRPOTrainer says the same
        GRPOTrainer(model=tiny_model_path, reward_funcs=char_variety, train_dataset=_dataset(),
                    args=GRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", num_generations=2,
                                    per_device_train_batch_size=2), reward_processing_classes=[tok, tok])


def test_a_batch_key_missing_from_trls_rollout_is_an_error_naming_it_and_the_trl_version(
    tiny_model_path, tmp_path, monkeypatch
):
    """A TRL that renames a rollout key: a clear error, never a silent default. (The reference log-probs of the KL
    reward are RFT's own forward, never read from TRL's batch, so TRL cannot leave them out.)"""
    import trl

    trainer = RFTTrainer(model=tiny_model_path, reward_funcs=char_variety, args=_args(tmp_path, beta=0.2),
                         train_dataset=_dataset())
    trainer.model.train()
    original = GRPOTrainer._generate_and_score_completions

    def renamed(self, inputs):
        out = original(self, inputs)
        out["completion_attention_mask"] = out.pop("completion_mask")
        return out

    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", renamed)
    with pytest.raises(KeyError, match=rf"'completion_mask'.*trl {trl.__version__}|trl {trl.__version__}.*'completion_mask'"):
        trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", original)

    out = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    assert out["ref_per_token_logps"].shape == out["completion_ids"].shape  # RFT's own reference forward (β > 0)
    assert out["rft_scores"].shape == out["completion_ids"].shape[:1]


def test_error_dataset_without_prompt_column(tiny_model_path, tmp_path):
    bad = Dataset.from_dict({"question": PROMPTS, "answer": ANSWERS})
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

    monkeypatch.setattr(checks, "is_bitsandbytes_available", lambda: False)
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
# Slow: 2 processes (gloo) x 4 completions == 1 process x 8, exactly
# ----------------------------------------------------------------------------------------------------------------------

def _rft_run(model_path, out_dir, per_device, nproc, num_iterations):
    """tests/scripts/rft_dp_worker.py in ``nproc`` processes; each rank's dump."""
    out_dir.mkdir()
    run_script("rft_dp_worker", model_path, out_dir, per_device, num_iterations, nproc=nproc)
    ranks = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(nproc)]
    assert all(data["world"] == nproc for data in ranks)
    return ranks


def _valid_rows(ranks, step, key):
    """Per completion, keyed by its prompt (TRL shuffles the rows of each rank's batch after the rollout), the values
    of `key` on its valid tokens."""
    rows = {}
    for data in ranks:
        batch = data["steps"][step]
        for prompt, row, mask in zip(batch["prompt_ids"], batch[key], batch["value_mask"]):
            rows[tuple(prompt)] = [v for v, m in zip(row, mask) if m]
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("num_iterations", [1, 2], ids=["one-epoch", "two-epochs"])
def test_two_process_gloo_run_equals_one_process_run(tiny_model_path, tmp_path, num_iterations):
    """2 processes x 4 completions (gloo, DDP) give exactly the run of 1 process x 8: targets (global whitening),
    logged losses and metrics (global token means), the adaptive β, and the updated parameters (the value loss
    normalised by the global token count, as TRL's default loss_type="dapo" policy loss) — with completions of
    different lengths, rank 0 holding ~4x the tokens of rank 1, and a different value head built on each rank.
    Two rollouts (the second with KL ≠ 0); with num_iterations=2 the second epoch of each rollout clips values."""
    one = _rft_run(tiny_model_path, tmp_path / "one", per_device=8, nproc=1, num_iterations=num_iterations)
    two = _rft_run(tiny_model_path, tmp_path / "two", per_device=4, nproc=2, num_iterations=num_iterations)
    n_steps = 2 * num_iterations

    for step in range(n_steps):
        tokens = [sum(map(sum, data["steps"][step]["value_mask"])) for data in two]
        assert tokens[0] > 3 * tokens[1], tokens  # uneven split of the completion tokens over the ranks
        for key in ("old_values", "returns", "advantages"):
            rows_one, rows_two = _valid_rows(one, step, key), _valid_rows(two, step, key)
            assert len(rows_one) == 8 and rows_one.keys() == rows_two.keys()
            for prompt, row in rows_one.items():
                assert len(row) == len(rows_two[prompt]), (step, key)
                assert row == pytest.approx(rows_two[prompt], abs=1e-5), (step, key)
        # rank 0's part of the globally whitened advantages is not whitened by itself: per-rank whitening would have
        # given other advantages
        adv = _valid_rows(one, step, "advantages")
        part = torch.tensor([v for prompt in _valid_rows(two[:1], step, "advantages") for v in adv[prompt]])
        assert abs(part.mean().item()) > 0.1 or abs(part.std().item() - 1.0) > 0.1

    keys = ("loss", "pg_loss", "vf_loss", "vf_clipfrac", "clip_ratio/region_mean", "approx_kl", "value_pred_mean",
            "entropy", "kl", "rlhf_reward", "value_mean", "returns_mean", "explained_variance", "advantages_std",
            "beta")
    assert len(one[0]["logs"]) == len(two[0]["logs"]) == n_steps
    for i, (log_one, log_two) in enumerate(zip(one[0]["logs"], two[0]["logs"])):
        assert log_one.keys() == log_two.keys()
        rollout_step = i % num_iterations == 0  # rollout metrics (kl, value_mean, ...) are logged at rollout steps
        for key in keys if rollout_step else keys[:8]:
            assert log_two[key] == pytest.approx(log_one[key], abs=1e-5), (i, key)
    assert one[0]["logs"][num_iterations]["kl"] != 0  # the second rollout has a KL penalty in its rewards
    if num_iterations == 2:
        assert one[0]["logs"][1]["vf_clipfrac"] > 0  # second epoch on a rollout: values moved, clipping is active
    assert two[0]["beta"] == two[1]["beta"] == pytest.approx(one[0]["beta"], abs=1e-9)
    assert one[0]["beta"] != 0.1  # the adaptive KL controller moved β

    # The updated parameters. DDP broadcast rank 0's value head before step 1: the heads built differently on the two
    # ranks trained as one (rank 1's own "before" differs, so its head is compared after training, not by delta)
    assert two[0]["head_before"] != two[1]["head_before"] and two[0]["head_before"] == one[0]["head_before"]
    for name, values in one[0]["delta"].items():
        assert max(abs(v) for v in values) > 1e-4, name  # the update is not trivially 0
    for data in two:
        assert data["delta_norms"].keys() == one[0]["delta_norms"].keys()
        for name, norm in one[0]["delta_norms"].items():
            if "value_head" not in name:
                assert data["delta_norms"][name] == pytest.approx(norm, abs=1e-6, rel=1e-4), name
        for name, values in one[0]["after"].items():
            assert data["after"][name] == pytest.approx(values, abs=1e-6), name


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
    # the shipped config (DESIGN.md §2: `--cpu --num_processes 2` silently runs one process; MULTI_GPU + use_cpu runs
    # two, gloo)
    config = os.path.join("examples", "accelerate_configs", "cpu_2proc.yaml")
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
    """The full default run (embedded SmolLM2-135M, CPU, ~22 min on 2 cores): accuracy before/after and the plot."""
    out = tmp_path / "out"
    _run([sys.executable, "examples/rft.py", "--output_dir", str(out)], timeout=2400)
    summary = json.loads((out / "rft_summary.json").read_text())
    assert summary["accuracy_after"] >= summary["accuracy_before"]
    assert (out / "rft_curves.png").is_file() and (out / VALUE_HEAD_WEIGHTS_NAME).is_file()
