#!/usr/bin/env python
"""Reinforcement fine-tuning with a critic (PPO: value head, clipped value loss, GAE, KL in the reward).

With no arguments this trains the embedded default model (SmolLM2-135M-Instruct, offline) on reasoning-gym's
``chain_sum`` (sums of two small numbers) with the task's own grader, on CPU, with LoRA, and writes into
``outputs/rft``: the adapter + ``value_head.safetensors``, ``rft_summary.json`` (held-out accuracy before/after) and
``rft_curves.png`` (reward, KL, value loss, … and held-out accuracy over steps)::

    accelerate launch examples/rft.py                       # one process (default accelerate config)
    python examples/rft.py --config my_rft.yaml             # TRL-style YAML config (any field below)
    accelerate launch --config_file examples/accelerate_configs/cpu_2proc.yaml examples/rft.py   # 2 CPU processes (gloo)
    accelerate launch --config_file examples/accelerate_configs/multi_gpu.yaml examples/rft.py   # DDP on 8 GPUs
    python examples/rft.py --load_in_4bit --use_peft        # QLoRA: 4-bit base (bitsandbytes works on CPU)
    python examples/rft.py --model_name_or_path my/model --task basic_arithmetic --max_steps 200 --use_peft false

Arguments are TRL's: ``ScriptArguments`` + the RFT script's own fields below, :class:`trl_ext.trainers.rft.RFTConfig`
(every ``GRPOConfig``/``TrainingArguments`` field, plus ``vf_coef``, ``cliprange_value``, ``gamma``, ``lam``,
``kl_target``, ``missing_eos_penalty``, ``value_head_learning_rate``, …) and ``ModelConfig`` (``--use_peft``,
``--lora_r``, ``--load_in_4bit``, …). The defaults below are the demo's; each can be overridden.

Why LoRA by default: the demo is 80 updates of 8 completions (~25 min on 2 CPU cores, measured). LoRA (r=16 on all
projections) lets it use a high learning rate (2e-4) on few parameters, so the policy improves within those updates,
where full fine-tuning of all 135M weights is usually run at ~1e-6 for RL; the reference policy is the same weights
with the adapter disabled (no second model copy in memory), and the backward pass skips the base weights' gradients
and Adam states. (Full fine-tuning was not compared on this task: ``--use_peft false --learning_rate 1e-6``.)
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoTokenizer
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config, get_quantization_config

from trl_ext.data import rl_dataset
from trl_ext.evaluation import evaluate_accuracy
from trl_ext.models import resolve_model_name_or_path
from trl_ext.plotting import plot_training_curves
from trl_ext.rewards import FormatGrader, default_grader
from trl_ext.trainers.rft import RFTConfig, RFTTrainer

PLOT_KEYS = ("reward", "kl", "vf_loss", "rlhf_reward", "explained_variance", "value_mean", "entropy",
             "completions/mean_length")


@dataclass
class RFTScriptArguments(ScriptArguments):
    """Arguments of this script (the data and the held-out evaluation)."""

    task: str = field(
        default="chain_sum",
        metadata={"help": "reasoning-gym task of trl_ext.data.rl_dataset (chain_sum, basic_arithmetic, countdown, "
                          "gsm_symbolic)."},
    )
    task_config: str = field(
        default='{"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}',
        metadata={"help": "JSON of the reasoning-gym task config (e.g. number of terms and digits)."},
    )
    train_size: int = field(default=2000, metadata={"help": "Training prompts."})
    eval_size: int = field(default=64, metadata={"help": "Held-out prompts (a disjoint split) for the accuracy."})
    eval_max_new_tokens: int = field(default=64, metadata={"help": "Greedy tokens per held-out answer."})
    eval_batch_size: int = field(default=16, metadata={"help": "Batch size of the held-out evaluation."})
    conversational: bool = field(
        default=True, metadata={"help": "Chat-formatted prompts (the model's chat template) instead of plain text."}
    )
    format_reward_weight: float = field(
        default=0.5,
        metadata={"help": "Weight of a FormatGrader reward (1 if the completion ends with '#### <answer>') added to "
                          "the task grader; 0 disables it."},
    )


# The demo's defaults (CPU: ~25 min on 2 cores, measured 2026-11-22); each can be overridden (CLI or YAML).
DEMO_DEFAULTS = dict(
    output_dir="outputs/rft",
    max_steps=80,
    per_device_train_batch_size=8,
    num_generations=1,
    max_completion_length=48,
    temperature=0.7,
    learning_rate=2e-4,
    value_head_learning_rate=1e-4,
    lr_scheduler_type="constant_with_warmup",
    warmup_steps=5,
    beta=0.02,
    vf_coef=0.1,
    cliprange_value=0.2,
    missing_eos_penalty=0.5,
    gradient_checkpointing=False,
    logging_steps=5,
    save_strategy="no",
    report_to="none",
    seed=0,
    use_peft=True,
    lora_r=16,
    lora_alpha=32,
    lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
)


def main(script_args: RFTScriptArguments, training_args: RFTConfig, model_args: ModelConfig) -> dict:
    started = time.time()
    model_path = resolve_model_name_or_path(model_args.model_name_or_path)
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        **(training_args.model_init_kwargs or {}),
    }
    task_config = json.loads(script_args.task_config) if script_args.task_config else {}
    train_dataset = rl_dataset(script_args.task, script_args.train_size, seed=training_args.seed, split="train",
                               conversational=script_args.conversational, **task_config)
    eval_dataset = rl_dataset(script_args.task, script_args.eval_size, seed=training_args.seed, split="eval",
                              conversational=script_args.conversational, **task_config)
    grader = default_grader(script_args.task)
    reward_funcs = [grader]
    if script_args.format_reward_weight:
        reward_funcs.append(FormatGrader())
        training_args.reward_weights = [1.0, script_args.format_reward_weight]

    tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
    trainer = RFTTrainer(
        model=model_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )
    accelerator = trainer.accelerator
    accelerator.print(f"RFT: model={model_path} task={script_args.task} world_size={accelerator.num_processes} "
                      f"peft={model_args.use_peft} 4bit={model_args.load_in_4bit}")

    def held_out_accuracy() -> float | None:
        accuracy = None
        if accelerator.is_main_process:
            accuracy = evaluate_accuracy(
                accelerator.unwrap_model(trainer.model), tokenizer, eval_dataset, grader,
                max_new_tokens=script_args.eval_max_new_tokens, batch_size=script_args.eval_batch_size,
            )
        accelerator.wait_for_everyone()
        return accuracy

    accuracy_before = held_out_accuracy()
    accelerator.print(f"held-out accuracy before: {accuracy_before}")
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    accuracy_after = held_out_accuracy()
    accelerator.print(f"held-out accuracy after:  {accuracy_after}")

    trainer.save_model(training_args.output_dir)
    summary = {}
    if accelerator.is_main_process:
        output_dir = Path(training_args.output_dir)
        step = trainer.state.global_step
        plot_training_curves(
            trainer.state.log_history, output_dir / "rft_curves.png", keys=PLOT_KEYS,
            extra_points={"held-out accuracy": [(0, accuracy_before), (step, accuracy_after)]},
            title=f"RFTTrainer on {script_args.task}",
        )
        rewards = [e["reward"] for e in trainer.state.log_history if "reward" in e]
        summary = {
            "model": str(model_path),
            "task": script_args.task,
            "task_config": task_config,
            "world_size": accelerator.num_processes,
            "steps": step,
            "accuracy_before": accuracy_before,
            "accuracy_after": accuracy_after,
            "eval_size": script_args.eval_size,
            "reward_first": rewards[0] if rewards else None,
            "reward_last": rewards[-1] if rewards else None,
            "train_runtime_s": next((e["train_runtime"] for e in trainer.state.log_history if "train_runtime" in e),
                                    None),
            "total_runtime_s": round(time.time() - started, 1),
        }
        (output_dir / "rft_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        accelerator.print(json.dumps(summary, indent=2))
        if training_args.push_to_hub:
            trainer.push_to_hub()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def make_parser() -> TrlParser:
    parser = TrlParser((RFTScriptArguments, RFTConfig, ModelConfig))
    defaults = dict(DEMO_DEFAULTS)
    if not torch.cuda.is_available():
        defaults.update(use_cpu=True, bf16=False)
    parser.set_defaults(**defaults)
    return parser


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    script_args, training_args, model_args = make_parser().parse_args_and_config()
    main(script_args, training_args, model_args)
