"""``trl-ext rft``: reinforcement fine-tuning with a critic (PPO: value head, clipped value loss, GAE, KL in the reward).

With no dataset this trains the embedded default model (SmolLM2-135M-Instruct, offline) on reasoning-gym's
``chain_sum`` (sums of two small numbers) with the task's own grader, on CPU, with LoRA, and writes into
``outputs/rft``: the adapter + ``value_head.safetensors``, ``rft_summary.json`` (held-out accuracy before/after) and
``rft_curves.png`` (reward, KL, value loss, … and held-out accuracy over steps)::

    trl-ext rft                                             # the demo (same as `accelerate launch examples/rft.py`)
    trl-ext rft --config my_rft.yaml                        # TRL-style YAML config (any field below)
    trl-ext rft --dataset_name gsm8k.jsonl --dataset_test_size 64 --eval_strategy steps --eval_steps 20
    trl-ext rft --dataset_name openai/gsm8k --dataset_config main --reward_funcs NumericMatch
    trl-ext rft --accelerate_config examples/accelerate_configs/cpu_2proc.yaml   # 2 CPU processes (gloo)
    trl-ext rft --accelerate_config multi_gpu --num_processes 8                  # DDP (TRL's shipped configs)
    trl-ext rft --load_in_4bit --use_peft                   # QLoRA: 4-bit base (bitsandbytes works on CPU)

Arguments are TRL's: ``ScriptArguments`` (``--dataset_name``, splits) + the data and script fields below,
:class:`trl_ext.trainers.rft.RFTConfig` (every ``GRPOConfig``/``TrainingArguments`` field, plus ``vf_coef``,
``cliprange_value``, ``gamma``, ``lam``, ``kl_target``, ``missing_eos_penalty``, ``value_head_learning_rate``, …) and
``ModelConfig`` (``--use_peft``, ``--lora_r``, ``--load_in_4bit``, …). The defaults below are the demo's; each can be
overridden. With ``--eval_strategy steps`` the test split (or the reasoning-gym held-out split) is the trainer's
``eval_dataset``: ``eval_reward``, ``eval_vf_loss``, … are logged.

The demo's settings (issue 16; measured, see the README's RFT example): 25 updates of 8 completions of at most 32
tokens, a short prompt (an empty system message and the one-line instruction :data:`DEMO_INSTRUCTION`: 46-48
tokens instead of 90-92, so an update costs ~15 s instead of 26.5 s on 2 cores), no missing-EOS penalty (with 0.5
the first updates learned to stop early rather than to answer: benchmarks/README.md), held-out accuracy on 256
prompts with greedy answers of at most 32 tokens (the training budget), generated in batches of 256. Measured with
``make demo`` in fresh clones on the 2-core machine: held-out accuracy 0.082 → 0.361 (n=256; binomial standard
errors 0.017 and 0.030), 11 min 51 s and 11 min 02 s in two runs in a row on the idle machine, install included
(``make demo`` sets ``OMP_NUM_THREADS`` to the cores: a plain single-process ``accelerate launch`` uses one).
Much of the gain is learning to answer briefly: with this prompt the base model rambles (85% of its first sampled
completions hit the 32-token limit).

Why LoRA by default: LoRA (r=16 on all projections) lets it use a high learning rate (2e-4) on few parameters, so
the policy improves within those updates, where full fine-tuning of all 135M weights is usually run at ~1e-6 for RL;
the reference policy is the same weights with the adapter disabled (no second model copy in memory), and the
backward pass skips the base weights' gradients and Adam states. (Full fine-tuning was not compared on this task:
``--use_peft false --learning_rate 1e-6``.)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from trl import ModelConfig, get_peft_config, get_quantization_config

from trl_ext.cli.common import (LORA_TARGET_MODULES, GroupedTrlParser, RLTaskArguments, resolve_reward_funcs,
                                rl_command_splits, run_script, task_config_of)
from trl_ext.evaluation import evaluate_accuracy
from trl_ext.models import resolve_model_name_or_path
from trl_ext.models.adapters import peft_config_for, tokenizer_source
from trl_ext.model_card import dumps_strict_json
from trl_ext.plotting import plot_training_curves
from trl_ext.rewards import FormatGrader, NumericMatch, default_grader
from trl_ext.trainers.rft import RFTConfig, RFTTrainer

PLOT_KEYS = ("reward", "kl", "vf_loss", "rlhf_reward", "explained_variance", "value_mean", "entropy",
             "completions/mean_length")


@dataclass
class RFTScriptArguments(RLTaskArguments):
    """The RFT script: the format reward."""

    format_reward_weight: float = field(
        default=0.5,
        metadata={"help": "Weight of a FormatGrader reward (1 if the completion ends with '#### <answer>') added to "
                          "the task grader; 0 disables it."},
    )


#: The demo's task config per task (unless --task_config is given): chain_sum with two terms of 1-2 digits.
DEMO_TASK_CONFIGS = {"chain_sum": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}}

#: The demo's answer instruction (the package default, ``ANSWER_FORMAT_INSTRUCTION``, is three times as long).
DEMO_INSTRUCTION = "Think step by step, then give the final line #### <answer>."

# The demo's defaults (CPU: 11-12 min on 2 cores, measured; see the module docstring); each can be overridden.
DEMO_DEFAULTS = dict(
    output_dir="outputs/rft",
    max_steps=25,
    # a short prompt (46-48 tokens instead of 90-92: an empty system message, a one-line instruction) makes each update
    # ~40% cheaper; the base model then rambles more (0.082 held-out accuracy instead of 0.170) and learns to answer
    system_prompt="",
    answer_instruction=DEMO_INSTRUCTION,
    per_device_train_batch_size=8,
    num_generations=1,
    max_completion_length=32,
    temperature=0.7,
    learning_rate=2e-4,
    value_head_learning_rate=1e-4,
    lr_scheduler_type="constant_with_warmup",
    warmup_steps=5,
    beta=0.02,
    vf_coef=0.1,
    cliprange_value=0.2,
    missing_eos_penalty=None,  # a penalty made the first updates stop early instead of answering
    gradient_checkpointing=False,
    logging_steps=5,
    save_strategy="no",
    report_to="none",
    seed=0,
    eval_batch_size=256,  # the held-out generation: 90 s for 256 prompts on 2 CPU cores, 140 s in batches of 64
    use_peft=True,
    lora_r=16,
    lora_alpha=32,
    lora_target_modules=LORA_TARGET_MODULES,
)


def build_datasets(script_args: RFTScriptArguments, training_args: RFTConfig):
    """(train, eval_dataset or None, held-out rows for the accuracy or None, a name for the data)."""
    return rl_command_splits(script_args, training_args, DEMO_TASK_CONFIGS)


def build_reward_funcs(script_args: RFTScriptArguments, training_args: RFTConfig) -> tuple[list, object]:
    """(reward functions, the grader of the held-out accuracy or None)."""
    if script_args.reward_funcs:
        reward_funcs = resolve_reward_funcs(script_args.reward_funcs)
    elif script_args.dataset_name:
        reward_funcs = [NumericMatch()]
    else:
        reward_funcs = [default_grader(script_args.task)]
    grader = reward_funcs[0]
    if script_args.reward_model_name_or_path:
        reward_funcs.append(script_args.reward_model_name_or_path)
    if script_args.format_reward_weight:
        reward_funcs.append(FormatGrader())
        if training_args.reward_weights is None:
            training_args.reward_weights = [1.0] * (len(reward_funcs) - 1) + [script_args.format_reward_weight]
    return reward_funcs, grader


def main(script_args: RFTScriptArguments, training_args: RFTConfig, model_args: ModelConfig) -> dict:
    started = time.time()
    # the data first: a wrong file, column or split fails here, before any model is loaded
    train_dataset, eval_dataset, heldout, data_name = build_datasets(script_args, training_args)
    reward_funcs, grader = build_reward_funcs(script_args, training_args)
    task_config = task_config_of(script_args, DEMO_TASK_CONFIGS)

    from transformers import AutoTokenizer

    model_path = resolve_model_name_or_path(model_args.model_name_or_path)
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        **(training_args.model_init_kwargs or {}),
    }

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(model_path), padding_side="left")
    trainer = RFTTrainer(
        model=model_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config_for(model_path, get_peft_config(model_args), training_args.merge_adapter),
        quantization_config=get_quantization_config(model_args),
    )
    accelerator = trainer.accelerator
    accelerator.print(f"RFT: model={model_path} data={data_name} world_size={accelerator.num_processes} "
                      f"peft={model_args.use_peft} 4bit={model_args.load_in_4bit}")

    def held_out_accuracy() -> float | None:
        accuracy = None
        if accelerator.is_main_process and heldout is not None and callable(grader) and not isinstance(grader, str) \
                and not isinstance(grader, torch.nn.Module):
            accuracy = evaluate_accuracy(
                accelerator.unwrap_model(trainer.model), tokenizer, heldout, grader,
                max_new_tokens=script_args.eval_max_new_tokens, batch_size=script_args.eval_batch_size,
            )
        accelerator.wait_for_everyone()
        return accuracy

    accuracy_before = held_out_accuracy()
    accelerator.print(f"held-out accuracy before: {accuracy_before}")
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    accuracy_after = held_out_accuracy()
    accelerator.print(f"held-out accuracy after:  {accuracy_after}")

    trainer.card_dataset_name = data_name
    if accuracy_after is not None:  # the held-out result goes into the card's model-index
        trainer.card_eval_results = [{"metric_name": "held-out answer accuracy", "metric_type": "accuracy",
                                      "metric_value": accuracy_after, "dataset_name": data_name}]
    trainer.save_model(training_args.output_dir)  # writes the trl_ext card after the weights (and PEFT's README)
    summary = {}
    if accelerator.is_main_process:
        output_dir = Path(training_args.output_dir)
        step = trainer.state.global_step
        plot_training_curves(
            trainer.state.log_history, output_dir / "rft_curves.png", keys=PLOT_KEYS,
            extra_points={"held-out accuracy": [(0, accuracy_before), (step, accuracy_after)]},
            title=f"RFTTrainer on {data_name}",
        )
        rewards = [e["reward"] for e in trainer.state.log_history if "reward" in e]
        summary = {
            "model": str(model_path),
            "task": None if script_args.dataset_name else script_args.task,
            "task_config": task_config,
            "dataset": script_args.dataset_name,
            "world_size": accelerator.num_processes,
            "steps": step,
            "accuracy_before": accuracy_before,
            "accuracy_after": accuracy_after,
            "eval_size": len(heldout) if heldout is not None else 0,
            "eval_metrics": {k: v for e in trainer.state.log_history for k, v in e.items() if k.startswith("eval_")},
            "reward_first": rewards[0] if rewards else None,
            "reward_last": rewards[-1] if rewards else None,
            "train_runtime_s": next((e["train_runtime"] for e in trainer.state.log_history if "train_runtime" in e),
                                    None),
            "total_runtime_s": round(time.time() - started, 1),
        }
        (output_dir / "rft_summary.json").write_text(dumps_strict_json(summary))
        accelerator.print(json.dumps(summary, indent=2))
        if training_args.push_to_hub:
            trainer.push_to_hub()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def make_parser(prog: str | None = None) -> GroupedTrlParser:
    parser = GroupedTrlParser((RFTScriptArguments, RFTConfig, ModelConfig), prog=prog)
    defaults = dict(DEMO_DEFAULTS)
    if not torch.cuda.is_available():
        defaults.update(use_cpu=True, bf16=False)
    parser.set_defaults(**defaults)
    return parser


if __name__ == "__main__":
    run_script(make_parser, main)
