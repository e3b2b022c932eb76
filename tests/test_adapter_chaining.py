"""A PEFT adapter folder as ``model=`` (issue 15, item 2): RFTTrainer, ProcessGRPOTrainer and UnifiedLikelihoodTrainer
continue the folder's adapter (its saved weights, then moved by training; the base frozen; the reference = the base
with adapters off, checked against an independent forward of the base model), or with ``merge_adapter=True`` start
from base + adapter merged (checked against W + s·B·A by hand, for the policy and the reference); the tokenizer of the
folder; a 4-bit base; clear errors; (slow) the ``trl-ext rft`` command on an adapter folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file

from trl_ext.rewards.process import ArithmeticStepVerifier
from trl_ext.trainers.process_grpo import ProcessGRPOConfig, ProcessGRPOTrainer
from trl_ext.trainers.rft import RFTConfig, RFTTrainer
from trl_ext.trainers.unified import UnifiedLikelihoodConfig, UnifiedLikelihoodTrainer

from helpers import PROMPTS, char_variety, grpo_args, nf4_config, prompt_dataset, run_args

REPO = Path(__file__).resolve().parents[1]
R, ALPHA, TARGETS = 4, 8, ("q_proj", "v_proj")
MAX_LENGTH_MARK = 777  # model_max_length of the tokenizer saved in the adapter folder (the base's differs)


def _save_adapter(tiny_model_path, path, with_tokenizer):
    """A LoRA adapter on the tiny model with nonzero B (so base + adapter ≠ base), saved as PEFT saves it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_path),
                           LoraConfig(r=R, lora_alpha=ALPHA, target_modules=list(TARGETS), lora_dropout=0.0,
                                      task_type="CAUSAL_LM"))
    torch.manual_seed(3)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    model.save_pretrained(str(path))
    if with_tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
        tokenizer.model_max_length = MAX_LENGTH_MARK
        tokenizer.save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_path, tmp_path_factory):
    return _save_adapter(tiny_model_path, tmp_path_factory.mktemp("adapter") / "sft-lora", with_tokenizer=True)


@pytest.fixture(scope="module")
def bare_adapter_dir(tiny_model_path, tmp_path_factory):
    return _save_adapter(tiny_model_path, tmp_path_factory.mktemp("adapter") / "bare-lora", with_tokenizer=False)


def _pairs():
    return Dataset.from_dict({"prompt": PROMPTS, "chosen": [" 4", " 15", " It is 15.", " 6 exactly"],
                              "rejected": [" 5 probably", " 7", " 8", " 5"]})


def _grpo_kwargs(tmp_path, **overrides):
    return grpo_args(tmp_path / "out", **{"learning_rate": 1e-2, "beta": 0.1, **overrides})


def _unified_args(tmp_path, **overrides):
    return UnifiedLikelihoodConfig(**run_args(
        tmp_path / "out", **{"loss_type": ["sigmoid", "sft"], "precompute_ref_log_probs": True, "max_steps": 2,
                             "learning_rate": 1e-2, "gradient_checkpointing": False, "dataloader_pin_memory": False,
                             **overrides}))


# ---- independent references: the base model by itself, and base + adapter merged by hand -------------------------


def _base_model(tiny_model_path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()


def _saved_lora(adapter):
    """{module path (e.g. 'model.layers.0.self_attn.q_proj'): (A, B)} from adapter_model.safetensors."""
    weights = load_file(os.path.join(adapter, "adapter_model.safetensors"))
    out = {}
    for key, value in weights.items():
        module, kind = key.removeprefix("base_model.model.").rsplit(".lora_", 1)
        out.setdefault(module, {})[kind.split(".")[0]] = value
    return {m: (ab["A"], ab["B"]) for m, ab in out.items()}


def _merged_by_hand(tiny_model_path, adapter):
    """State dict of the base with W + (alpha / r)·B·A on every adapted projection."""
    state = {k: v.clone() for k, v in _base_model(tiny_model_path).state_dict().items()}
    for module, (A, B) in _saved_lora(adapter).items():
        state[f"{module}.weight"] += (ALPHA / R) * B @ A
    return state


def _completion_logps(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature=1.0):
    """log p(completion token | prefix) by a plain forward (no fused head), 0 where the completion is padding."""
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention = torch.cat([prompt_mask, completion_mask], dim=1)
    T = completion_ids.size(1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attention).logits[:, -T - 1 : -1].float() / temperature
    logps = torch.log_softmax(logits, -1).gather(-1, completion_ids[..., None])[..., 0]
    return logps * completion_mask


def _lora_params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def _assert_starts_from_saved_adapter(model, adapter):
    saved = _saved_lora(adapter)
    params = dict(model.named_parameters())
    assert "ref" not in model.peft_config, "TRL's frozen copy of the adapter is still there"
    assert list(model.peft_config) == ["default"]
    for module, (A, B) in saved.items():
        for kind, value in (("A", A), ("B", B)):
            param = params[f"base_model.model.{module}.lora_{kind}.default.weight"]
            assert param.requires_grad, (module, kind)
            # TRL casts trainable adapter weights of a quantized (QLoRA) policy to bf16
            torch.testing.assert_close(param.detach(), value.to(param.dtype), rtol=0, atol=0)


def _assert_continued(model, lora_before, tiny_model_path):
    """Training moved the loaded adapter, and left every base weight equal to the base model's."""
    now = _lora_params(model)
    assert any(not torch.equal(now[n], lora_before[n]) for n in lora_before), "the adapter did not move"
    base = _base_model(tiny_model_path).state_dict()
    checked = 0
    for name, param in model.named_parameters():
        if "lora_" in name or "value_head" in name:
            continue
        key = name.removeprefix("base_model.model.").replace(".base_layer", "")
        torch.testing.assert_close(param.detach(), base[key], rtol=0, atol=0)
        checked += 1
    assert checked > 0


def _record_reference(monkeypatch, module, name):
    """Record (batch, result) of every call of ``module.name`` (trl_compat's reference log-probs as RFT calls it)."""
    calls = []
    original = getattr(module, name)

    def recorded(trainer, batch, *args, **kwargs):
        out = original(trainer, batch, *args, **kwargs)
        calls.append(({k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in batch.items()},
                      out.detach().clone()))
        return out

    monkeypatch.setattr(module, name, recorded)
    return calls


def _assert_reference_is_base(batch, ref_logps, tiny_model_path, adapter):
    """The reference log-probs equal the base model's (independent forward), and differ from base + adapter's."""
    from peft import PeftModel

    keys = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")
    mask = batch["completion_mask"]
    base = _completion_logps(_base_model(tiny_model_path), *(batch[k] for k in keys))
    torch.testing.assert_close(ref_logps * mask, base, atol=2e-5, rtol=1e-5)
    with_adapter = PeftModel.from_pretrained(_base_model(tiny_model_path), adapter).eval()
    policy = _completion_logps(with_adapter, *(batch[k] for k in keys))
    assert (policy - base).abs().max() > 1e-2, "the adapter does not change the log-probs: the test cannot fail"


# ---- RFTTrainer -------------------------------------------------------------------------------------------------


def test_rft_continues_the_adapter_with_the_base_as_reference(adapter_dir, tiny_model_path, tmp_path, monkeypatch):
    import trl_ext.trainers.rft as rft

    calls = _record_reference(monkeypatch, rft, "grpo_reference_logps")
    trainer = RFTTrainer(model=adapter_dir, reward_funcs=char_variety, train_dataset=prompt_dataset(),
                         args=RFTConfig(**_grpo_kwargs(tmp_path)))
    assert trainer.ref_model is None
    _assert_starts_from_saved_adapter(trainer.model, adapter_dir)
    assert trainer.processing_class.model_max_length == MAX_LENGTH_MARK  # the folder's tokenizer
    assert trainer.processing_class.padding_side == "left"
    lora_before = _lora_params(trainer.model)
    trainer.train()
    _assert_continued(trainer.model, lora_before, tiny_model_path)
    assert calls, "RFT computed no reference log-probs"
    _assert_reference_is_base(*calls[0], tiny_model_path, adapter_dir)


def test_rft_merge_adapter_starts_from_the_merged_model(adapter_dir, tiny_model_path, tmp_path):
    trainer = RFTTrainer(model=adapter_dir, reward_funcs=char_variety, train_dataset=prompt_dataset(),
                         args=RFTConfig(**_grpo_kwargs(tmp_path, merge_adapter=True)))
    expected = _merged_by_hand(tiny_model_path, adapter_dir)
    assert not hasattr(trainer.model, "peft_config")  # a full model
    for label, model in (("policy", trainer.model), ("reference", trainer.ref_model)):
        state = {k: v for k, v in model.state_dict().items() if "value_head" not in k}
        assert set(state) == set(expected), label
        for key, value in expected.items():
            torch.testing.assert_close(state[key], value, atol=1e-6, rtol=1e-6, msg=f"{label}: {key}")
    merged = tmp_path / "out" / "_merged_base"
    assert (merged / "config.json").is_file() and (merged / "tokenizer_config.json").is_file()
    assert trainer.processing_class.model_max_length == MAX_LENGTH_MARK


def test_bare_adapter_folder_uses_the_base_tokenizer(bare_adapter_dir, tiny_model_path, tmp_path):
    from transformers import AutoTokenizer

    trainer = RFTTrainer(model=bare_adapter_dir, reward_funcs=char_variety, train_dataset=prompt_dataset(),
                         args=RFTConfig(**_grpo_kwargs(tmp_path)))
    base_tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    assert trainer.processing_class.model_max_length == base_tokenizer.model_max_length != MAX_LENGTH_MARK
    assert trainer.processing_class.padding_side == "left"  # loaded by TRL, as for any string model
    _assert_starts_from_saved_adapter(trainer.model, bare_adapter_dir)


def test_adapter_folder_and_peft_config_is_refused(adapter_dir, tmp_path):
    from peft import LoraConfig

    with pytest.raises(ValueError, match=r"is a PEFT adapter folder .*peft_config was given too.*merge_adapter=True"):
        RFTTrainer(model=adapter_dir, reward_funcs=char_variety, train_dataset=prompt_dataset(),
                   args=RFTConfig(**_grpo_kwargs(tmp_path)), peft_config=LoraConfig(r=2))


def test_adapter_whose_base_cannot_be_found(adapter_dir, tmp_path):
    import shutil

    lost = tmp_path / "lost-lora"
    shutil.copytree(adapter_dir, lost)
    config = json.loads((lost / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "nobody-trl-ext/no-such-base"
    (lost / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(OSError, match=r"model='.*lost-lora' is a PEFT adapter folder whose base model "
                                      r"'nobody-trl-ext/no-such-base' .*cannot be found"):
        RFTTrainer(model=str(lost), reward_funcs=char_variety, train_dataset=prompt_dataset(),
                   args=RFTConfig(**_grpo_kwargs(tmp_path)))


@pytest.mark.slow
def test_rft_continues_an_adapter_on_a_4bit_base(adapter_dir, tiny_model_path, tmp_path):
    import bitsandbytes as bnb

    quantization = nf4_config()
    trainer = RFTTrainer(model=adapter_dir, reward_funcs=char_variety, train_dataset=prompt_dataset(),
                         args=RFTConfig(**_grpo_kwargs(tmp_path)), quantization_config=quantization)
    assert [m for m in trainer.model.modules() if isinstance(m, bnb.nn.Linear4bit)], "the base is not 4-bit"
    _assert_starts_from_saved_adapter(trainer.model, adapter_dir)
    lora_before = _lora_params(trainer.model)
    trainer.train()
    now = _lora_params(trainer.model)
    assert any(not torch.equal(now[n], lora_before[n]) for n in lora_before)


# ---- ProcessGRPOTrainer -------------------------------------------------------------------------------------------


def test_process_grpo_continues_the_adapter_with_the_base_as_reference(adapter_dir, tiny_model_path, tmp_path):
    trainer = ProcessGRPOTrainer(
        model=adapter_dir, reward_funcs=[char_variety], process_reward_funcs=[ArithmeticStepVerifier()],
        args=ProcessGRPOConfig(**_grpo_kwargs(tmp_path, num_generations=4, step_separator=" ")),
        train_dataset=prompt_dataset(),
    )
    _assert_starts_from_saved_adapter(trainer.model, adapter_dir)
    assert trainer.processing_class.model_max_length == MAX_LENGTH_MARK
    captured = []
    original = trainer._generate_and_score_completions

    def spy(inputs):
        output = original(inputs)
        captured.append({k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in output.items()})
        return output

    trainer._generate_and_score_completions = spy
    lora_before = _lora_params(trainer.model)
    trainer.train()
    _assert_continued(trainer.model, lora_before, tiny_model_path)
    batch = captured[0]
    _assert_reference_is_base(batch, batch["ref_per_token_logps"], tiny_model_path, adapter_dir)


# ---- UnifiedLikelihoodTrainer ------------------------------------------------------------------------------------


def _pair_logps_by_hand(model, batch):
    """Sequence log-probs of the collated pair sequences (chosen rows then rejected rows) by a plain forward."""
    n = 2 * batch["pair_rows"].numel()
    ids, attention, completion = (batch[k][:n] for k in ("input_ids", "attention_mask", "completion_mask"))
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
    logps = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
    return (logps * completion[:, 1:]).sum(-1)


def test_unified_continues_the_adapter_with_the_base_as_reference(adapter_dir, tiny_model_path, tmp_path):
    from peft import PeftModel

    trainer = UnifiedLikelihoodTrainer(adapter_dir, args=_unified_args(tmp_path), train_dataset=_pairs())
    assert trainer.ref_model is None
    _assert_starts_from_saved_adapter(trainer.model, adapter_dir)
    assert trainer.processing_class.model_max_length == MAX_LENGTH_MARK
    # the reference log-probs cached before step 1 are the base model's, not base + adapter's
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    cached = torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]])
    base = _pair_logps_by_hand(_base_model(tiny_model_path), batch)
    torch.testing.assert_close(cached, base, atol=1e-4, rtol=1e-5)
    with_adapter = _pair_logps_by_hand(PeftModel.from_pretrained(_base_model(tiny_model_path), adapter_dir).eval(),
                                       batch)
    assert (with_adapter - base).abs().max() > 1e-2
    lora_before = _lora_params(trainer.model)
    trainer.train()
    _assert_continued(trainer.model, lora_before, tiny_model_path)


def test_unified_merge_adapter_with_a_new_lora(adapter_dir, tiny_model_path, tmp_path):
    from peft import LoraConfig

    trainer = UnifiedLikelihoodTrainer(
        adapter_dir, args=_unified_args(tmp_path, merge_adapter=True, max_steps=1), train_dataset=_pairs(),
        peft_config=LoraConfig(r=2, lora_alpha=4, target_modules=["k_proj"], lora_dropout=0.0, task_type="CAUSAL_LM"),
    )
    model = trainer.model
    assert list(model.peft_config) == ["default"]
    assert model.peft_config["default"].base_model_name_or_path == str(tmp_path / "out" / "_merged_base")
    expected = _merged_by_hand(tiny_model_path, adapter_dir)
    for name, param in model.named_parameters():
        if "lora_" not in name:
            key = name.removeprefix("base_model.model.").replace(".base_layer", "")
            torch.testing.assert_close(param.detach(), expected[key], atol=1e-6, rtol=1e-6, msg=key)
    # the reference (adapters off) is the merged model: its cached log-probs match a plain forward of it
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    merged.load_state_dict(expected)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    torch.testing.assert_close(torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]]),
                               _pair_logps_by_hand(merged.eval(), batch), atol=1e-4, rtol=1e-5)


# ---- the command -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_rft_command_on_an_adapter_folder(adapter_dir, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "trl_ext.cli", "rft", "--model_name_or_path", adapter_dir, "--output_dir", str(out),
         "--max_steps", "1", "--train_size", "4", "--per_device_train_batch_size", "2", "--max_completion_length",
         "8", "--eval_max_new_tokens", "8", "--eval_size", "2", "--logging_steps", "1", "--warmup_steps", "0"],
        env=env, capture_output=True, text=True, timeout=900, cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "is a PEFT adapter folder: continuing its adapter" in result.stdout
    summary = json.loads((out / "rft_summary.json").read_text())
    assert summary["steps"] == 1
    saved = json.loads((out / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == json.loads(
        (Path(adapter_dir) / "adapter_config.json").read_text())["base_model_name_or_path"]
    moved = load_file(str(out / "adapter_model.safetensors"))
    start = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    assert set(moved) == set(start) and any(not torch.equal(moved[k], start[k]) for k in start)
