"""The pipelines of examples/pipelines/ (stock TRL trainers chained with trl_ext's), run on the tiny model.

Each test imports the script as a module, swaps the second stage's trainer class for a subclass that records what
the trainer starts from (the class the script uses, so nothing of the script is copied), runs ``main`` with tiny step
counts, and checks the handoff against the saved folders read back independently (``from_pretrained``, safetensors).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

PIPELINES = Path(__file__).resolve().parents[1] / "examples" / "pipelines"
NAMES = ("sft_then_rft", "reward_model_then_rft", "unified_then_process_grpo", "graders_in_grpo")
PROBE = "Question: 12 + 30 = ? Answer: 42"


def load_pipeline(name: str):
    spec = importlib.util.spec_from_file_location(f"pipeline_{name}", PIPELINES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@torch.no_grad()
def probe_logits(model, tokenizer) -> torch.Tensor:
    was_training = model.training
    model.eval()
    logits = model(**tokenizer([PROBE], return_tensors="pt")).logits.float()
    model.train(was_training)
    return logits


def causal_lm_logits(folder, tokenizer) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    return probe_logits(AutoModelForCausalLM.from_pretrained(str(folder)), tokenizer)


def recording(trainer_cls, seen: dict, tokenizer):
    """A subclass of ``trainer_cls`` that stores itself and its starting policy's probe logits in ``seen``."""

    class Recording(trainer_cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen["trainer"] = self
            seen["model_arg"] = kwargs.get("model", args[0] if args else None)
            seen["start_logits"] = probe_logits(self.accelerator.unwrap_model(self.model), tokenizer)

    return Recording


def tiny_args(tiny_model_path, tmp_path, *extra: str) -> list[str]:
    return ["--model_name_or_path", tiny_model_path, "--output_dir", str(tmp_path / "out"), "--eval_size", "2", *extra]


@pytest.mark.parametrize("name", NAMES)
def test_pipeline_defaults_run_the_embedded_model(name):
    """With no arguments every pipeline trains the embedded default model, a few steps, into outputs/pipelines/."""
    args = load_pipeline(name).parse_args([])
    assert args.model_name_or_path is None  # -> trl_ext.models.default_model_path()
    assert args.output_dir == f"outputs/pipelines/{name}"
    steps = [v for k, v in vars(args).items() if k.endswith("steps")]
    assert steps and all(0 < s <= 30 for s in steps)


@pytest.mark.slow
def test_sft_then_rft_starts_rft_from_the_sft_weights(tiny_model_path, tokenizer, tmp_path, monkeypatch):
    pipeline = load_pipeline("sft_then_rft")
    seen: dict = {}
    monkeypatch.setattr(pipeline, "RFTTrainer", recording(pipeline.RFTTrainer, seen, tokenizer))
    results = pipeline.main(tiny_args(tiny_model_path, tmp_path, "--sft_steps", "2", "--rft_steps", "1"))

    sft_dir, rft_dir = tmp_path / "out" / "sft", tmp_path / "out" / "rft"
    assert seen["model_arg"] == str(sft_dir)
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in sft_dir.iterdir()}
    sft_logits = causal_lm_logits(sft_dir, tokenizer)
    # RFT's starting policy (LoRA with B = 0 over the SFT weights) computes exactly the SFT model
    torch.testing.assert_close(seen["start_logits"], sft_logits, rtol=0, atol=1e-6)
    assert (sft_logits - causal_lm_logits(tiny_model_path, tokenizer)).abs().max() > 1e-4  # SFT did train
    assert seen["trainer"].state.global_step == 1
    assert {"adapter_model.safetensors", "value_head.safetensors", "README.md"} <= {p.name for p in rft_dir.iterdir()}
    assert set(results) >= {"base", "after_sft", "after_rft", "rft_reward_first_last"}
    assert 0.0 <= results["after_rft"]["format"] <= 1.0


@pytest.mark.slow
def test_sft_lora_then_rft_continues_the_sft_adapter(tiny_model_path, tokenizer, tmp_path, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    pipeline = load_pipeline("sft_then_rft")
    seen: dict = {}
    monkeypatch.setattr(pipeline, "RFTTrainer", recording(pipeline.RFTTrainer, seen, tokenizer))
    pipeline.main(tiny_args(tiny_model_path, tmp_path, "--sft_steps", "2", "--rft_steps", "1", "--sft_lora"))

    sft_dir = tmp_path / "out" / "sft"
    names = {p.name for p in sft_dir.iterdir()}
    assert "adapter_config.json" in names and "model.safetensors" not in names  # stage 1 wrote an adapter folder
    assert seen["model_arg"] == str(sft_dir)
    sft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_path), str(sft_dir))
    sft_logits = probe_logits(sft_model, tokenizer)
    torch.testing.assert_close(seen["start_logits"], sft_logits, rtol=0, atol=1e-6)  # RFT continued that adapter
    assert (sft_logits - causal_lm_logits(tiny_model_path, tokenizer)).abs().max() > 0  # the SFT adapter is not B = 0
    rft_model = seen["trainer"].accelerator.unwrap_model(seen["trainer"].model)
    assert list(rft_model.peft_config) == ["default"]  # one adapter: the SFT one, trained on


@pytest.mark.slow
def test_reward_model_then_rft_uses_the_trained_rm_as_reward_and_critic_init(tiny_model_path, tokenizer, tmp_path,
                                                                             monkeypatch):
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, set_seed

    pipeline = load_pipeline("reward_model_then_rft")
    seen: dict = {}

    class Recording(recording(pipeline.RFTTrainer, seen, tokenizer)):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen["value_head_start"] = {k: v.clone() for k, v in self.value_head.state_dict().items()}

    monkeypatch.setattr(pipeline, "RFTTrainer", Recording)
    results = pipeline.main(tiny_args(tiny_model_path, tmp_path, "--rm_steps", "2", "--rft_steps", "1"))

    rm_dir = tmp_path / "out" / "reward_model"
    saved = load_file(str(rm_dir / "model.safetensors"))
    # the critic started as a copy of the trained reward model's score head (no bias: a Llama score head has none)
    torch.testing.assert_close(seen["value_head_start"]["summary.weight"], saved["score.weight"].float(), rtol=0, atol=0)
    torch.testing.assert_close(seen["value_head_start"]["summary.bias"], torch.zeros(1), rtol=0, atol=0)
    set_seed(0)  # RewardTrainer seeds before it adds the random score head: that head, untrained
    untrained = AutoModelForSequenceClassification.from_pretrained(tiny_model_path, num_labels=1).score.weight
    assert (saved["score.weight"].float() - untrained.float()).abs().max() > 0  # the head was trained
    # the reward function is that folder: same weights, its own tokenizer
    trainer = seen["trainer"]
    reward_model = trainer.reward_funcs[0]
    assert isinstance(reward_model, torch.nn.Module) and reward_model.config.num_labels == 1
    for key in ("score.weight", "model.layers.0.self_attn.q_proj.weight"):
        torch.testing.assert_close(reward_model.state_dict()[key].float(), saved[key].float(), rtol=0, atol=0)
    assert trainer.reward_processing_classes[0].name_or_path == str(rm_dir)
    assert trainer.args.value_head_init == "reward_model"
    logged = {k for log in trainer.state.log_history for k in log}
    assert "rewards/reward_model/mean" in logged  # TRL names a reward model by its folder
    assert set(results) >= {"rm_pair_accuracy_before", "rm_pair_accuracy_after", "rft_reward_model_score_first_last"}


@pytest.mark.slow
def test_unified_then_process_grpo_starts_from_the_unified_weights(tiny_model_path, tokenizer, tmp_path,
                                                                  monkeypatch):
    pipeline = load_pipeline("unified_then_process_grpo")
    seen: dict = {}
    monkeypatch.setattr(pipeline, "ProcessGRPOTrainer", recording(pipeline.ProcessGRPOTrainer, seen, tokenizer))
    results = pipeline.main(tiny_args(tiny_model_path, tmp_path, "--unified_steps", "2", "--grpo_steps", "1"))

    unified_dir = tmp_path / "out" / "unified"
    assert seen["model_arg"] == str(unified_dir)
    unified_logits = causal_lm_logits(unified_dir, tokenizer)
    torch.testing.assert_close(seen["start_logits"], unified_logits, rtol=0, atol=1e-6)
    assert (unified_logits - causal_lm_logits(tiny_model_path, tokenizer)).abs().max() > 1e-4
    logged = {k for log in seen["trainer"].state.log_history for k in log}
    assert {"rewards/answer/mean", "process/steps_per_completion", "process/frac_outcome_only"} <= logged
    assert set(results) >= {"pair_accuracy_before", "pair_accuracy_after"}
    assert (tmp_path / "out" / "process_grpo" / "model.safetensors").is_file()


@pytest.mark.slow
def test_graders_in_stock_grpo_are_logged_under_their_names(tiny_model_path, tokenizer, tmp_path, monkeypatch):
    import trl

    from trl_ext.rewards import FormatGrader, MathVerify, NumericMatch, is_math_verify_available

    accuracy_cls, accuracy_name = (MathVerify, "math_verify") if is_math_verify_available() else \
        (NumericMatch, "numeric_match")
    pipeline = load_pipeline("graders_in_grpo")
    assert pipeline.GRPOTrainer is trl.GRPOTrainer  # stock TRL, not a trl_ext subclass
    seen: dict = {}
    monkeypatch.setattr(pipeline, "GRPOTrainer", recording(trl.GRPOTrainer, seen, tokenizer))
    results = pipeline.main(tiny_args(tiny_model_path, tmp_path, "--max_steps", "1"))

    trainer = seen["trainer"]
    assert [type(f) for f in trainer.reward_funcs] == [accuracy_cls, FormatGrader]
    log = next(log for log in trainer.state.log_history if "reward" in log)
    for name in (accuracy_name, "format"):
        assert 0.0 <= log[f"rewards/{name}/mean"] <= 1.0
    # TRL's reward is the weighted sum of the graders' means (weights 1 and 0.5)
    assert log["reward"] == pytest.approx(log[f"rewards/{accuracy_name}/mean"] + 0.5 * log["rewards/format/mean"])
    assert set(results) == {"before", "after", "logged_grader_means"}
