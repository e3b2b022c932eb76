"""Every GRPOConfig option, audited for RFTTrainer and ProcessGRPOTrainer: it trains like stock GRPOTrainer or is refused
at construction with an error naming it (the README's option table says the same).

``AUDIT`` classifies every field GRPOConfig adds to TrainingArguments; a TRL upgrade that adds one fails
``test_audit_covers_every_grpo_config_field`` until the new option is audited. Options with an observable effect on
CPU are trained for one step with a non-default value (several compatible options share a run); ``pg_loss`` must be
the policy loss TRL returned (``loss = pg_loss + vf_coef · vf_loss`` in RFT, for every ``loss_type``).
"""

import dataclasses
import math

import pytest
from datasets import Dataset
from transformers import TrainingArguments
from trl import GRPOConfig

from trl_ext.rewards import ArithmeticStepVerifier
from trl_ext.trainers.process_grpo import ProcessGRPOConfig, ProcessGRPOTrainer
from trl_ext.trainers.rft import RFTConfig, RFTTrainer
from helpers import PROMPTS, char_variety, grpo_args


# option -> (RFTTrainer, ProcessGRPOTrainer); "yes": trains as in GRPOTrainer (run below where CPU can show it);
# "gpu": inherited unchanged, needs a GPU / vLLM / DeepSpeed to run (not run here); "no": refused at construction.
AUDIT = {
    **{k: ("yes", "yes") for k in (
        "model_init_kwargs", "trust_remote_code", "disable_dropout", "cast_lm_head_to_fp32", "num_generations",
        "num_generations_eval", "max_completion_length", "shuffle_dataset", "pad_to_multiple_of",
        "generation_batch_size", "steps_per_generation", "temperature", "top_p", "top_k", "min_p",
        "generation_kwargs", "chat_template_kwargs", "repetition_penalty", "cache_implementation", "beta",
        "num_iterations", "epsilon", "delta", "epsilon_high", "sapo_temperature_neg", "sapo_temperature_pos",
        "vespo_k_pos", "vespo_lambda_pos", "vespo_k_neg", "vespo_lambda_neg", "importance_sampling_level",
        "reward_weights", "loss_type", "mask_truncated_completions", "sync_ref_model", "ref_model_mixup_alpha",
        "ref_model_sync_steps", "top_entropy_quantile", "entropy_coef", "use_adaptive_entropy", "entropy_coef_min",
        "entropy_coef_max", "entropy_coef_delta", "entropy_target", "off_policy_mask_threshold", "log_completions",
        "log_multimodal", "num_completions_to_print", "log_unique_prompts", "router_aux_loss_coef",
        "use_transformers_paged",
    )},
    **{k: ("gpu", "gpu") for k in (
        "ds3_gather_for_generation", "use_vllm", "vllm_mode", "vllm_model_impl", "vllm_enable_sleep_mode",
        "vllm_structured_outputs_regex", "vllm_server_base_url", "vllm_server_host", "vllm_server_port",
        "vllm_server_timeout", "vllm_group_port", "vllm_gpu_memory_utilization", "vllm_max_model_length",
        "vllm_tensor_parallel_size", "vllm_importance_sampling_correction", "vllm_importance_sampling_mode",
        "vllm_importance_sampling_clip_max", "vllm_importance_sampling_clip_min", "vllm_importance_sampling_cap",
        "use_transformers_continuous_batching", "transformers_continuous_batching_config",
        "log_completions_hub_repo",
    )},
    "scale_rewards": ("no", "yes"),
    "multi_objective_aggregation": ("no", "no"),
    "use_bias_correction_kl": ("no", "yes"),
    "max_tool_calling_iterations": ("yes", "no"),
}
# TrainingArguments fields whose default GRPOConfig overrides (they are Trainer options, audited by transformers)
_TRAINER_FIELDS = {f.name for f in dataclasses.fields(TrainingArguments)}


def test_audit_covers_every_grpo_config_field():
    grpo_fields = {f.name for f in dataclasses.fields(GRPOConfig)} - _TRAINER_FIELDS
    assert set(AUDIT) == grpo_fields, (sorted(grpo_fields - set(AUDIT)), sorted(set(AUDIT) - grpo_fields))


def length_reward(completions, **kwargs):
    return [min(len(c), 40) / 40.0 for c in completions]


def _common(tmp_path, **overrides):
    return grpo_args(tmp_path, **overrides)


RUNS = {
    **{f"loss_type={t}": {"loss_type": t} for t in ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "vespo", "luspo")},
    "sequence-is+delta+eps_high": {"importance_sampling_level": "sequence", "delta": 1.5, "epsilon_high": 0.28,
                                   "num_iterations": 2, "max_steps": 2},
    "entropy": {"top_entropy_quantile": 0.5, "entropy_coef": 0.01, "use_adaptive_entropy": True},
    "off-policy-mask+truncation": {"off_policy_mask_threshold": 0.5, "mask_truncated_completions": True,
                                   "max_completion_length": 24},
    "generation": {"temperature": 0.7, "top_p": 0.9, "top_k": 20, "min_p": 0.01, "repetition_penalty": 1.1,
                   "generation_kwargs": {"do_sample": True}, "num_generations_eval": 2, "eval_strategy": "steps",
                   "eval_steps": 1, "per_device_eval_batch_size": 4},
    "model": {"disable_dropout": True, "cast_lm_head_to_fp32": True, "gradient_checkpointing": True,
              "shuffle_dataset": False, "log_completions": True, "num_completions_to_print": 1},
    "batching": {"steps_per_generation": 2, "gradient_accumulation_steps": 2, "per_device_train_batch_size": 2,
                 "num_iterations": 2, "max_steps": 2, "reward_weights": [0.3, 0.7]},
    "sync_ref_model": {"beta": 0.1, "sync_ref_model": True, "ref_model_sync_steps": 1, "max_steps": 2},
}


def _dataset(repeat=4):
    return Dataset.from_dict({"prompt": PROMPTS * repeat, "answer": ["4", "15", "15", "6"] * repeat})


def _build(trainer_name, tmp_path, options):
    options = dict(options)
    two_funcs = "reward_weights" in options
    if trainer_name == "rft":
        options.setdefault("num_generations", 2)
        return RFTTrainer(
            model=TINY[0], reward_funcs=[char_variety, length_reward] if two_funcs else char_variety,
            args=RFTConfig(**_common(tmp_path, **options)), train_dataset=_dataset(), eval_dataset=_dataset(1),
        )
    options.setdefault("num_generations", 4 if options.get("per_device_train_batch_size", 4) == 4 else 2)
    return ProcessGRPOTrainer(
        model=TINY[0], reward_funcs=[char_variety, length_reward] if two_funcs else [char_variety],
        process_reward_funcs=[ArithmeticStepVerifier()], args=ProcessGRPOConfig(**_common(tmp_path, **options)),
        train_dataset=_dataset(), eval_dataset=_dataset(1),
    )


TINY: list = []


@pytest.fixture(autouse=True)
def _tiny(tiny_model_path):
    TINY[:] = [tiny_model_path]


@pytest.mark.parametrize("trainer_name", ["rft", "process_grpo"])
@pytest.mark.parametrize("run", list(RUNS), ids=list(RUNS))
def test_supported_options_train(trainer_name, run, tmp_path):
    options = RUNS[run]
    trainer = _build(trainer_name, tmp_path, options)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry and "train_runtime" not in entry]
    assert len(logs) == options.get("max_steps", 1)
    for log in logs:
        assert math.isfinite(log["loss"]) and math.isfinite(log["entropy"])
        if trainer_name == "rft":
            # pg_loss is what TRL's loss returned: with the value loss it adds up to the optimised loss
            assert log["loss"] == pytest.approx(log["pg_loss"] + trainer.args.vf_coef * log["vf_loss"], abs=1e-5)
    if "eval_strategy" in options:
        assert any("eval_loss" in entry for entry in trainer.state.log_history)
    if options.get("sync_ref_model"):
        policy = {n: p for n, p in trainer.model.named_parameters() if "value_head" not in n}
        for name, p in trainer.ref_model.named_parameters():  # α = 0.6 mixes towards the policy: not equal, moved
            assert not any("value_head" in n for n, _ in trainer.ref_model.named_parameters())
            assert p.shape == policy[name].shape


@pytest.mark.parametrize(
    "option, value",
    [("scale_rewards", "batch"), ("scale_rewards", "none"), ("multi_objective_aggregation", "normalize_then_sum"),
     ("use_bias_correction_kl", False)],
)
def test_rft_refuses_options_without_meaning_at_construction(option, value, tmp_path):
    with pytest.raises(ValueError, match=rf"RFTConfig\.{option}=.* is not supported by RFTTrainer"):
        RFTConfig(**_common(tmp_path, **{option: value}))


def test_process_grpo_refuses_options_without_meaning_at_construction(tmp_path):
    args = ProcessGRPOConfig(**_common(tmp_path, num_generations=4, multi_objective_aggregation="normalize_then_sum"))
    with pytest.raises(ValueError, match="multi_objective_aggregation='normalize_then_sum' is not supported"):
        ProcessGRPOTrainer(model=TINY[0], reward_funcs=[char_variety], process_reward_funcs=[ArithmeticStepVerifier()],
                           args=args, train_dataset=_dataset())
    args = ProcessGRPOConfig(**_common(tmp_path, num_generations=4))
    with pytest.raises(ValueError, match="does not support `tools`"):
        ProcessGRPOTrainer(model=TINY[0], reward_funcs=[char_variety], process_reward_funcs=[ArithmeticStepVerifier()],
                           args=args, train_dataset=_dataset(), tools=[len])
