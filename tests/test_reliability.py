"""Reliability (issue 14): a policy and a value head of two saves are refused; a resume without the value head (or
beta) raises unless a fresh critic is asked for; a finished run resumed does nothing and says so (RFT, ProcessGRPO,
Unified); resume_from_checkpoint=True skips an interrupted checkpoint; a broken bitsandbytes does not break imports."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file

from trl_ext.models.value_head import (
    VALUE_HEAD_CONFIG_NAME,
    VALUE_HEAD_WEIGHTS_NAME,
    ValueHead,
    check_policy_pairing,
    load_policy_and_value_head,
)
from trl_ext.trainers.checkpointing import last_complete_checkpoint
from trl_ext.trainers.rft import RFTConfig, RFTTrainer

from helpers import PROMPTS, REPO, grpo_args, prompt_dataset

class CountingReward:
    """A reward that varies between completions and counts its calls."""

    __name__ = "counting_reward"

    def __init__(self):
        self.calls = 0

    def __call__(self, completions, **kwargs):
        self.calls += 1
        return [len(set(str(c))) / 10.0 for c in completions]


def _grpo_kwargs(out, **overrides):
    return grpo_args(out, **{"num_generations": 4, "max_completion_length": 6, "max_steps": 2,
                             "save_strategy": "steps", "save_steps": 2, **overrides})


def _rft(tiny_model_path, out, reward=None, **overrides):
    reward = reward or CountingReward()
    args = RFTConfig(**_grpo_kwargs(out, validate_reward_funcs=False, **overrides))
    return RFTTrainer(model=tiny_model_path, reward_funcs=reward, args=args, train_dataset=prompt_dataset()), reward


def _params(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


@pytest.fixture(scope="module")
def finished_rft(tiny_model_path, tmp_path_factory):
    """A finished 2-step RFT run (adaptive beta) with checkpoint-2 and a final save."""
    out = tmp_path_factory.mktemp("rft-finished")
    trainer, _ = _rft(tiny_model_path, out, beta=0.1, kl_target=0.5)
    trainer.train()
    trainer.save_model(str(out / "final"))
    return out, trainer


# ---- item 4: policy + value head of two saves -------------------------------------------------------------------


def test_value_head_config_records_policy_hash(finished_rft):
    out, _ = finished_rft
    import hashlib

    config = json.loads((out / "final" / VALUE_HEAD_CONFIG_NAME).read_text())
    expected = hashlib.sha256((out / "final" / "model.safetensors").read_bytes()).hexdigest()  # independent hash
    assert config["policy"]["files"] == {"model.safetensors": expected}
    assert config["policy"]["global_step"] == 2
    state = json.loads((out / "checkpoint-2" / "rft_state.json").read_text())
    assert state["policy"]["files"]["model.safetensors"] == hashlib.sha256(
        (out / "checkpoint-2" / "model.safetensors").read_bytes()).hexdigest()


def test_mixed_policy_and_value_head_refused(finished_rft, tiny_model_path, tmp_path):
    out, _ = finished_rft
    mixed = tmp_path / "mixed"
    shutil.copytree(out / "final", mixed)
    load_policy_and_value_head(mixed)  # the pair as saved loads
    # the save of a new run was killed after the policy was written: model new, value head of the earlier run
    shutil.copy(Path(tiny_model_path) / "model.safetensors", mixed / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors differ.*mixes two saves"):
        load_policy_and_value_head(mixed)
    # a head saved on its own (no record) is not checked
    ValueHead(64).save_pretrained(mixed)
    check_policy_pairing(mixed)


def test_resume_from_mixed_checkpoint_refused_and_skipped(finished_rft, tiny_model_path, tmp_path):
    out, _ = finished_rft
    run = tmp_path / "run"
    shutil.copytree(out / "checkpoint-2", run / "checkpoint-2")
    shutil.copy(Path(tiny_model_path) / "model.safetensors", run / "checkpoint-2" / "model.safetensors")
    trainer, _ = _rft(tiny_model_path, run, beta=0.1, kl_target=0.5, max_steps=4)
    with pytest.raises(ValueError, match="mixes two saves"):
        trainer._load_rft_files(str(run / "checkpoint-2"))
    with pytest.warns(UserWarning, match="skips the incomplete checkpoint .*checkpoint-2"):
        assert last_complete_checkpoint(run) is None


# ---- item 5: no value head on resume -----------------------------------------------------------------------------


def test_resume_without_value_head_raises_naming_file(finished_rft, tiny_model_path, tmp_path):
    out, full = finished_rft
    run = tmp_path / "run"
    shutil.copytree(out / "checkpoint-2", run / "checkpoint-2")
    (run / "checkpoint-2" / VALUE_HEAD_WEIGHTS_NAME).unlink()
    reward = CountingReward()
    trainer, _ = _rft(tiny_model_path, run, reward=reward, beta=0.1, kl_target=0.5, max_steps=3)
    with pytest.raises(FileNotFoundError, match=r"checkpoint-2 has no value_head\.safetensors.*"
                                                r"resume_with_fresh_value_head=True"):
        trainer.train(resume_from_checkpoint=str(run / "checkpoint-2"))
    assert reward.calls == 0


def test_resume_without_rft_state_raises_beta_not_reset(finished_rft, tiny_model_path, tmp_path):
    out, _ = finished_rft
    run = tmp_path / "run"
    shutil.copytree(out / "checkpoint-2", run / "checkpoint-2")
    (run / "checkpoint-2" / "rft_state.json").unlink()
    trainer, _ = _rft(tiny_model_path, run, beta=0.1, kl_target=0.5, max_steps=3)
    with pytest.raises(FileNotFoundError, match=r"no rft_state\.json.*reset beta to 0\.1"):
        trainer._load_rft_files(str(run / "checkpoint-2"))


def test_fresh_value_head_explicit_opt_in(finished_rft, tiny_model_path, tmp_path):
    out, full = finished_rft
    run = tmp_path / "run"
    shutil.copytree(out / "checkpoint-2", run / "checkpoint-2")
    for name in (VALUE_HEAD_WEIGHTS_NAME, VALUE_HEAD_CONFIG_NAME, "rft_state.json"):
        (run / "checkpoint-2" / name).unlink()
    trainer, _ = _rft(tiny_model_path, run, beta=0.1, kl_target=0.5, max_steps=3, resume_with_fresh_value_head=True)
    fresh = trainer.value_head.summary.weight.detach().clone()
    with pytest.warns(UserWarning, match="fresh value head"):
        trainer._load_rft_files(str(run / "checkpoint-2"))
    torch.testing.assert_close(trainer.value_head.summary.weight, fresh)  # kept, as asked
    assert trainer.kl_coef == pytest.approx(0.1)


def test_grpo_optimizer_state_gives_clear_error(tiny_model_path, tmp_path):
    trainer, _ = _rft(tiny_model_path, tmp_path / "o", value_head_learning_rate=1e-2)
    trainer.create_optimizer_and_scheduler(num_training_steps=2)
    # an optimizer state saved with one parameter group fewer (GRPOTrainer: no value-head group)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))])
    ckpt = tmp_path / "grpo-ckpt"
    ckpt.mkdir()
    torch.save(opt.state_dict(), ckpt / "optimizer.pt")
    torch.save(trainer.lr_scheduler.state_dict(), ckpt / "scheduler.pt")
    with pytest.raises(ValueError, match=r"optimizer state in .*grpo-ckpt.*Remove optimizer\.pt"):
        trainer._load_optimizer_and_scheduler(str(ckpt))


# ---- item 3: a finished run resumed does nothing -----------------------------------------------------------------


def test_finished_rft_run_resumed_does_nothing(finished_rft, tiny_model_path, tmp_path):
    out, full = finished_rft
    run = tmp_path / "run"
    shutil.copytree(out / "checkpoint-2", run / "checkpoint-2")
    trainer, reward = _rft(tiny_model_path, run, beta=0.1, kl_target=0.5)
    with pytest.warns(UserWarning, match=r"global step 2 of max_steps 2: the run is finished"):
        result = trainer.train(resume_from_checkpoint=True)
    assert result.global_step == 2 and trainer.state.global_step == 2
    assert reward.calls == 0
    saved = load_file(str(run / "checkpoint-2" / "model.safetensors"))
    now = dict(trainer.model.named_parameters())
    for name, tensor in saved.items():  # the checkpoint's weights, untouched
        assert torch.equal(now[name].detach(), tensor), name
    torch.testing.assert_close(trainer.value_head.summary.weight, full.value_head.summary.weight)
    assert not (run / "checkpoint-3").exists()


def test_finished_process_grpo_run_resumed_does_nothing(tiny_model_path, tmp_path):
    from trl_ext.trainers.process_grpo import ProcessGRPOConfig, ProcessGRPOTrainer

    def make(reward):
        args = ProcessGRPOConfig(**_grpo_kwargs(tmp_path / "p", max_steps=1, save_steps=1))
        return ProcessGRPOTrainer(model=tiny_model_path, reward_funcs=reward, args=args, train_dataset=prompt_dataset())

    make(CountingReward()).train()
    reward = CountingReward()
    trainer = make(reward)
    calls_before = reward.calls  # construction-time probe
    before = _params(trainer.model)
    with pytest.warns(UserWarning, match="the run is finished"):
        trainer.train(resume_from_checkpoint=True)
    assert reward.calls == calls_before and trainer.state.global_step == 1
    saved = load_file(str(tmp_path / "p" / "checkpoint-1" / "model.safetensors"))
    assert any(not torch.equal(before[n], t) for n, t in saved.items())  # trained weights were loaded …
    for name, tensor in saved.items():
        assert torch.equal(dict(trainer.model.named_parameters())[name].detach(), tensor)  # … and not moved
    assert not (tmp_path / "p" / "checkpoint-2").exists()


def test_finished_unified_run_resumed_does_nothing(tiny_model_path, tmp_path):
    from trl_ext.trainers.unified import UnifiedLikelihoodConfig, UnifiedLikelihoodTrainer

    pairs = Dataset.from_dict({"prompt": PROMPTS, "chosen": [" 4", " 15", " 15", " 6"],
                               "rejected": [" 5", " 7", " 8", " 5"]})

    def make():
        args = UnifiedLikelihoodConfig(output_dir=str(tmp_path / "u"), report_to="none", bf16=False,
                                       per_device_train_batch_size=4, max_steps=2, save_strategy="steps",
                                       save_steps=2, logging_steps=1, seed=0, use_cpu=True, disable_tqdm=True,
                                       dataloader_pin_memory=False, learning_rate=1e-3)
        return UnifiedLikelihoodTrainer(tiny_model_path, args=args, train_dataset=pairs)

    make().train()
    trainer = make()
    steps = []
    original = trainer.training_step
    trainer.training_step = lambda *a, **k: steps.append(1) or original(*a, **k)
    with pytest.warns(UserWarning, match="global step 2 of max_steps 2: the run is finished"):
        trainer.train(resume_from_checkpoint=True)
    assert steps == [] and trainer.state.global_step == 2


# ---- item 2 (part): an interrupted checkpoint is skipped by resume_from_checkpoint=True --------------------------


def test_resume_true_skips_interrupted_checkpoint(finished_rft, tiny_model_path, tmp_path):
    out, _ = finished_rft
    run = tmp_path / "run"
    shutil.copytree(out / "checkpoint-2", run / "checkpoint-2")
    (run / "checkpoint-4").mkdir()  # killed mid-save: only part of the model written
    (run / "checkpoint-4" / "model.safetensors").write_bytes(b"\x00" * 16)
    trainer, reward = _rft(tiny_model_path, run, beta=0.1, kl_target=0.5, max_steps=3)
    with pytest.warns(UserWarning, match=r"skips the incomplete checkpoint .*checkpoint-4: no trainer_state\.json"):
        trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == 3 and reward.calls == 1


# ---- item 11: broken bitsandbytes ---------------------------------------------------------------------------------


def test_broken_bitsandbytes_does_not_break_imports(tmp_path):
    fake = tmp_path / "site" / "bitsandbytes"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise RuntimeError('CUDA Setup failed despite GPU being available')\n")
    code = (
        "import trl_ext\n"
        "from trl_ext.trainers.rft import RFTTrainer\n"
        "from trl_ext.trainers import checks\n"
        "try:\n"
        "    checks.check_quantization({'load_in_4bit': True}, None, 'RFTTrainer')\n"
        "except ImportError as err:\n"
        "    print('REFUSED', err)\n"
        "print('IMPORTED')\n"
    )
    env = dict(os.environ, PYTHONPATH=f"{tmp_path / 'site'}{os.pathsep}{REPO}")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert "IMPORTED" in result.stdout, result.stderr[-3000:]
    assert "REFUSED" in result.stdout and "CUDA Setup failed" in result.stdout


# ---- item 8: a PRM path without a token-classification head ------------------------------------------------------


def test_process_reward_model_on_causal_lm_refused(tiny_model_path, tmp_path):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from trl_ext.rewards.process import ProcessRewardModel

    with pytest.raises(ValueError, match=r"has no token-classification head \(score\.bias, score\.weight missing.*LlamaForCausalLM"):
        ProcessRewardModel(tiny_model_path, correct_label=1)
    # a checkpoint that has the head loads
    prm = AutoModelForTokenClassification.from_pretrained(tiny_model_path, num_labels=2)
    prm.save_pretrained(tmp_path / "prm")
    scorer = ProcessRewardModel(str(tmp_path / "prm"), tokenizer=AutoTokenizer.from_pretrained(tiny_model_path),
                                correct_label=1)
    torch.testing.assert_close(scorer.model.score.weight, prm.score.weight)


# ---- item 10: stale temporary folders of killed conversions ------------------------------------------------------


def test_killed_conversion_folder_removed_next_call_but_not_a_live_one(tmp_path, monkeypatch, gguf_tokenizer_once):
    from filelock import FileLock

    from trl_ext.models import default as default_mod

    monkeypatch.setenv("TRL_EXT_CACHE", str(tmp_path))
    gguf_tokenizer_once(monkeypatch)
    name = "SmolLM2-135M-Instruct-tokenizer"
    path = default_mod.default_tokenizer_path()  # complete
    # a SIGKILLed conversion leaves its temporary folder (the finally never ran)
    stale = tmp_path / f".{name}.tmp-killed1"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * 1024)
    assert default_mod.default_tokenizer_path() == path
    assert not stale.exists()
    # while another live process converts (it holds the lock), its folder is left alone
    live = tmp_path / f".{name}.tmp-live"
    live.mkdir()
    code = (f"import time; from filelock import FileLock\nwith FileLock({str(tmp_path / f'.{name}.lock')!r}):\n"
            "    print('LOCKED', flush=True); time.sleep(30)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "LOCKED"
        assert default_mod.default_tokenizer_path() == path
        assert live.is_dir()
    finally:
        holder.kill()
        holder.wait()
    assert default_mod.default_tokenizer_path() == path and not live.exists()  # once that process is gone
    assert FileLock(str(tmp_path / f".{name}.lock")).acquire(timeout=1)


# ---- item 2: atomic checkpoints (a save interrupted inside a checkpoint, SIGKILL at random moments): see
# tests/test_reliability_kill.py


def test_stale_ref_cache_temporaries_removed_never_a_live_one(tiny_model_path, tmp_path):
    from datasets import load_from_disk

    from trl_ext.trainers.checkpointing import remove_stale_cache_temporaries
    from trl_ext.trainers.unified import UnifiedLikelihoodConfig, UnifiedLikelihoodTrainer

    pairs = Dataset.from_dict({"prompt": PROMPTS, "chosen": [" 4", " 15", " 15", " 6"],
                               "rejected": [" 5", " 7", " 8", " 5"]})
    pairs.save_to_disk(str(tmp_path / "pairs"))
    pairs = load_from_disk(str(tmp_path / "pairs"))
    folder = Path(pairs.cache_files[0]["filename"]).parent
    old = 3 * 3600
    stale, recent, held = (folder / name for name in ("tmpkilled01", "tmprecent01", "tmpheldopen1"))
    for f in (stale, recent, held):
        f.write_bytes(b"\0" * 64)
    for f in (stale, held):
        os.utime(f, (os.path.getmtime(f) - old, os.path.getmtime(f) - old))
    holder = subprocess.Popen([sys.executable, "-c", f"f = open({str(held)!r}, 'rb'); print('OPEN', flush=True); "
                               "import time; time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "OPEN"
        assert remove_stale_cache_temporaries(pairs) == [str(stale)]
        assert recent.exists() and held.exists()
    finally:
        holder.kill()
        holder.wait()
    # the trainer's reference precompute cleans up before it writes its cache
    stale.write_bytes(b"\0" * 64)
    os.utime(stale, (os.path.getmtime(stale) - old, os.path.getmtime(stale) - old))
    args = UnifiedLikelihoodConfig(output_dir=str(tmp_path / "u"), report_to="none", bf16=False, use_cpu=True,
                                   per_device_train_batch_size=4, max_steps=1, precompute_ref_log_probs=True)
    UnifiedLikelihoodTrainer(tiny_model_path, args=args, train_dataset=pairs)
    assert not stale.exists() and not held.exists()  # the holder is gone: held is stale now


# ---- item 1: exact resume across epochs and inside a buffered rollout ---------------------------------------------


@pytest.mark.parametrize("steps_per_generation, checkpoint", [
    (2, 5), pytest.param(1, 5, marks=pytest.mark.slow), pytest.param(2, 3, marks=pytest.mark.slow)])
def test_resume_exact_across_epochs_and_inside_a_rollout(tiny_model_path, tmp_path, steps_per_generation, checkpoint):
    """4 prompts, 4 steps per epoch: resume in epoch 2 (and, with steps_per_generation=2, between the two updates of
    one rollout) ends bit-identical to the uninterrupted 6-step run."""
    data = prompt_dataset(1)
    kw = dict(beta=0.1, kl_target=0.5, max_steps=6, save_steps=checkpoint, steps_per_generation=steps_per_generation,
              value_head_learning_rate=1e-2)

    def make(out):
        args = RFTConfig(**_grpo_kwargs(out, validate_reward_funcs=False, **kw))
        return RFTTrainer(model=tiny_model_path, reward_funcs=CountingReward(), args=args, train_dataset=data)

    full = make(tmp_path / "full")
    full.train()
    run = tmp_path / "run"
    shutil.copytree(tmp_path / "full" / f"checkpoint-{checkpoint}", run / f"checkpoint-{checkpoint}")
    resumed = make(run)
    resumed.train(resume_from_checkpoint=str(run / f"checkpoint-{checkpoint}"))
    assert resumed.state.global_step == 6
    full_logs = [e["loss"] for e in full.state.log_history if "loss" in e and e["step"] > checkpoint]
    resumed_logs = [e["loss"] for e in resumed.state.log_history if "loss" in e and e["step"] > checkpoint]
    assert resumed_logs == full_logs
    now = dict(resumed.model.named_parameters())
    for name, p in full.model.named_parameters():
        assert torch.equal(now[name], p), name
    assert resumed.kl_coef == full.kl_coef


@pytest.mark.slow
def test_process_grpo_resume_exact_in_epoch_2_inside_a_rollout(tiny_model_path, tmp_path):
    from trl_ext.trainers.process_grpo import ProcessGRPOConfig, ProcessGRPOTrainer

    data = prompt_dataset(1)

    def make(out):
        args = ProcessGRPOConfig(**_grpo_kwargs(out, max_steps=6, save_steps=5, steps_per_generation=2))
        return ProcessGRPOTrainer(model=tiny_model_path, reward_funcs=CountingReward(), args=args, train_dataset=data)

    full = make(tmp_path / "full")
    full.train()
    shutil.copytree(tmp_path / "full" / "checkpoint-5", tmp_path / "run" / "checkpoint-5")
    resumed = make(tmp_path / "run")
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 6
    now = dict(resumed.model.named_parameters())
    for name, p in full.model.named_parameters():
        assert torch.equal(now[name], p), name
