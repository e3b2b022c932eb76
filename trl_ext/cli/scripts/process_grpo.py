# Copyright 2025 the trl_ext developers. Apache-2.0.
"""``trl-ext process-grpo``: process-supervised GRPO; by default on reasoning-gym's chain_sum with the embedded
SmolLM2-135M-Instruct, LoRA, on CPU in about 12 minutes (2 cores, measured).

Every completion is split into steps (one per line by default); the arithmetic verifier scores each step by the
fraction of its claims (``35 × 3 = 105``) that are true, the answer grader scores the final answer as one more step,
and ProcessGRPOTrainer turns the pooled, normalised step rewards into reward-to-go token advantages. Held-out accuracy
and the fraction of true arithmetic steps are measured before and after training, and the curves are plotted into
the output folder (``training_curves.png``, ``results.json``).

The defaults (issue 16, measured on the 2-core machine): chain_sum with two terms of 1-2 digits, the prompt asking
for one partial sum per line (:data:`~trl_ext.data.PARTIAL_SUMS_INSTRUCTION`, an empty system message), 20 steps of 2
prompts x 4 completions of at most 48 tokens at temperature 0.7, LoRA r 16 on every projection at 2e-4, 256 held-out
prompts (greedy, 48 tokens). ``python examples/process_grpo.py`` with them: held-out accuracy 0.076 -> 0.355 (binomial
standard errors 0.017, 0.030), true-step fraction 0.39 -> 0.61, 12 min 20 s in all. Settings tried (held-out accuracy
on 256 prompts; true-step fraction):

- these settings, 24 steps with extra evaluations: accuracy 0.076 -> 0.346 (step 8) -> 0.355 (16) -> 0.348 (24),
  true-step fraction 0.39 -> 0.40 -> 0.54 -> 0.65. Most of the accuracy gain is learning to answer briefly (the
  completions drop from ~35 to ~12 tokens, from 1.9 to 1.0 checked equations); the true-step fraction then keeps
  rising on that one equation;
- a task-neutral instruction ("Write each step of the calculation on its own line as one equation with its result.
  Then give the final line #### <answer>."), 20 steps: 0.094 -> 0.178, true-step fraction 0.36 -> 0.40 (11 min 55 s);
- chain_sum with three terms (64-token completions): 0.025 -> 0.035 after 10 steps, too hard to show in 15 minutes
  (``--task_config '{"min_terms": 3, "max_terms": 3}'``).

With ``--dataset_name`` it trains on your prompts (``prompt`` or ``question`` column) graded against their
references (``--answer_column``, e.g. a GSM8K rationale ending in ``#### N``) by ``NumericMatch`` (or
``--reward_funcs``), the arithmetic verifier scoring the steps the same way.

Usage (TRL script conventions; every ProcessGRPOConfig / GRPOConfig / ModelConfig field is a flag):

    trl-ext process-grpo                                   # same as `python examples/process_grpo.py`
    trl-ext process-grpo --max_steps 60 --output_dir outputs/pgrpo --step_separator '\\n\\n'
    trl-ext process-grpo --dataset_name gsm8k.jsonl --dataset_test_size 32 --eval_strategy steps --eval_steps 10
    trl-ext process-grpo --task_config '{"min_terms": 4, "max_terms": 5}'      # more steps per problem
    trl-ext process-grpo --task gsm_symbolic --step_separator '\\n\\n' --max_completion_length 128
    trl-ext process-grpo --use_peft false --learning_rate 5e-6                 # full fine-tuning
    trl-ext process-grpo --load_in_4bit                                        # QLoRA (CPU works)
    trl-ext process-grpo --config my_config.yaml
    trl-ext process-grpo --outcome_only true    # baseline: stock GRPOTrainer, answer grader only
    trl-ext process-grpo --prm outputs/prm      # step rewards from a PRM trained by examples/prm.py
    trl-ext process-grpo --accelerate_config examples/accelerate_configs/cpu_2proc.yaml
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import torch
from trl import GRPOTrainer, ModelConfig, get_peft_config, get_quantization_config

from trl_ext.cli.common import (LORA_TARGET_MODULES, GroupedTrlParser, RLTaskArguments, resolve_reward_funcs,
                                rl_command_splits, run_script)
from trl_ext.data import PARTIAL_SUMS_INSTRUCTION
from trl_ext.evaluation import evaluate_accuracy
from trl_ext.models import resolve_model_name_or_path
from trl_ext.models.adapters import peft_config_for
from trl_ext.model_card import dumps_strict_json
from trl_ext.plotting import plot_training_curves
from trl_ext.rewards import NumericMatch, default_grader
from trl_ext.rewards.process import ArithmeticStepVerifier, ProcessRewardModel
from trl_ext.trainers.process_grpo import ProcessGRPOConfig, ProcessGRPOTrainer


@dataclass
class ScriptArguments(RLTaskArguments):
    """The process-GRPO script: the baselines, the process reward model and skipping the before/after evaluation."""

    skip_eval: bool = field(default=False, metadata={"help": "Skip the before/after evaluation."})
    outcome_only: bool = field(
        default=False,
        metadata={"help": "Baseline: train with stock GRPOTrainer and the answer grader only (no process reward)."},
    )
    prm: str | None = field(
        default=None,
        metadata={"help": "Folder (or Hub id) of a token-classification process reward model, e.g. one trained by "
                          "examples/prm.py: its P(correct) of each step (trl_ext.rewards.ProcessRewardModel, steps "
                          "split on --step_separator) replaces the arithmetic verifier as the process reward. The "
                          "before/after true-step fraction is still measured by the verifier."},
    )


#: The example's task config per task (unless --task_config is given): chain_sum with two terms of 1-2 digits (with
#: three, the base model got 2.5% of 256 held-out prompts and 3.5% after 10 steps: too hard to show learning in 15 min).
TASK_CONFIGS = {"chain_sum": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}}

#: The example's answer instruction per task (unless --answer_instruction is given): one partial sum per line for
#: chain_sum; other tasks and --dataset_name get the package's ANSWER_FORMAT_INSTRUCTION.
TASK_INSTRUCTIONS = {"chain_sum": PARTIAL_SUMS_INSTRUCTION}

# The example's defaults (CPU, 2 cores; measured, see the module docstring); each can be overridden.
DEFAULTS = dict(
    # chain_sum, one partial sum per line: every equation a completion writes is a step the arithmetic verifier checks
    task="chain_sum",
    system_prompt="",  # an empty system message drops SmolLM2's default one: a shorter prompt, a cheaper step
    answer_instruction=None,  # the task's own (TASK_INSTRUCTIONS), else ANSWER_FORMAT_INSTRUCTION
    train_size=2000,
    eval_size=256,
    eval_max_new_tokens=48,
    eval_batch_size=256,
    output_dir="outputs/process_grpo",
    max_steps=20,
    per_device_train_batch_size=8,  # 2 prompts x 4 completions per step
    num_generations=4,
    max_completion_length=48,
    temperature=0.7,
    learning_rate=2e-4,
    lr_scheduler_type="constant_with_warmup",
    warmup_steps=5,
    use_peft=True,
    lora_r=16,
    lora_alpha=32,
    lora_target_modules=LORA_TARGET_MODULES,
    logging_steps=1,
    step_separator="\n",
    save_strategy="no",
    report_to="none",
    seed=0,
    use_cpu=not torch.cuda.is_available(),
    bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
)


def evaluate(model, tokenizer, dataset, grader, verifier, script_args) -> dict[str, float]:
    """Held-out accuracy (greedy) and the mean arithmetic-step score of the same completions."""
    accuracy, texts = evaluate_accuracy(
        model, tokenizer, dataset, grader, max_new_tokens=script_args.eval_max_new_tokens,
        batch_size=script_args.eval_batch_size, return_completions=True,
    )
    scores = [s for completion in verifier(completions=texts) for s in completion if s is not None]
    return {
        "accuracy": float(accuracy),
        "true_step_fraction": float(sum(scores) / len(scores)) if scores else float("nan"),
        "checked_steps_per_completion": len(scores) / max(len(texts), 1),
    }


def build_datasets(script_args: ScriptArguments, training_args: ProcessGRPOConfig):
    """(train, eval_dataset or None, held-out rows for the before/after accuracy or None, a name for the data)."""
    return rl_command_splits(script_args, training_args, TASK_CONFIGS, TASK_INSTRUCTIONS)


def main(script_args: ScriptArguments, training_args: ProcessGRPOConfig, model_args: ModelConfig) -> dict:
    # the data first: a wrong file, column or split fails here, before any model is loaded
    train_dataset, eval_dataset, heldout, data_name = build_datasets(script_args, training_args)
    if script_args.reward_funcs:
        reward_funcs = resolve_reward_funcs(script_args.reward_funcs)
        grader = reward_funcs[0]
    else:
        grader = NumericMatch() if script_args.dataset_name else default_grader(script_args.task)
        grader.__name__ = "answer"
        reward_funcs = [grader]
    if script_args.reward_model_name_or_path:
        reward_funcs.append(script_args.reward_model_name_or_path)
    model_path = resolve_model_name_or_path(model_args.model_name_or_path)
    verifier = ArithmeticStepVerifier(step_separator=training_args.step_separator)

    common = dict(
        model=model_path, reward_funcs=reward_funcs, args=training_args, train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=peft_config_for(model_path, get_peft_config(model_args), training_args.merge_adapter),
        quantization_config=get_quantization_config(model_args),
    )
    if script_args.outcome_only:
        trainer = GRPOTrainer(**common)
    else:
        step_reward = verifier
        if script_args.prm:
            # scored with the separator the PRM was trained on (recorded in its config), whatever --step_separator
            step_reward = ProcessRewardModel(script_args.prm, name="prm")
        trainer = ProcessGRPOTrainer(**common, process_reward_funcs=[step_reward])

    results: dict = {"model": model_path, "trainer": type(trainer).__name__, "max_steps": training_args.max_steps,
                     "data": data_name, "process_reward": None if script_args.outcome_only else
                     ("prm" if script_args.prm else "arithmetic_verifier")}
    evaluate_before_after = not script_args.skip_eval and heldout is not None and len(heldout) > 0
    if evaluate_before_after:
        start = time.perf_counter()
        results["before"] = evaluate(trainer.model, trainer.processing_class, heldout, grader, verifier,
                                     script_args)
        trainer.accelerator.print(f"before training: {results['before']} ({time.perf_counter() - start:.0f} s)")

    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    results["train_seconds"] = time.perf_counter() - start

    if evaluate_before_after:
        results["after"] = evaluate(trainer.model, trainer.processing_class, heldout, grader, verifier,
                                    script_args)
        trainer.accelerator.print(f"after training: {results['after']}")

    if trainer.accelerator.is_main_process:
        os.makedirs(training_args.output_dir, exist_ok=True)
        extra = {}
        if "before" in results:
            last = trainer.state.global_step
            extra = {
                "eval accuracy": [(0, results["before"]["accuracy"]), (last, results["after"]["accuracy"])],
                "eval true-step fraction": [
                    (0, results["before"]["true_step_fraction"]), (last, results["after"]["true_step_fraction"])
                ],
            }
        plot = plot_training_curves(
            trainer.state.log_history, os.path.join(training_args.output_dir, "training_curves.png"),
            keys=["reward", "rewards/answer/mean", "process/step_reward_mean", "process/frac_correct_steps",
                  "process/steps_per_completion", "completions/mean_length", "process/advantage_std", "loss"],
            extra_points=extra, title=f"{results['trainer']} on {data_name}",
        )
        results["plot"] = str(plot) if plot else None
        results["log_history"] = trainer.state.log_history
        with open(os.path.join(training_args.output_dir, "results.json"), "w") as f:
            f.write(dumps_strict_json(results, default=str))
        trainer.accelerator.print(f"results and curves in {training_args.output_dir}")
    trainer.card_dataset_name = data_name
    if "after" in results:  # held-out results go into the card's model-index
        trainer.card_eval_results = [
            {"metric_name": "held-out answer accuracy", "metric_type": "accuracy",
             "metric_value": results["after"]["accuracy"], "dataset_name": data_name},
            {"metric_name": "held-out true-step fraction", "metric_type": "true_step_fraction",
             "metric_value": results["after"]["true_step_fraction"], "dataset_name": data_name},
        ]
    trainer.save_model(training_args.output_dir)  # writes the trl_ext card after the weights (and PEFT's README)
    return results


def make_parser(prog: str | None = None) -> GroupedTrlParser:
    parser = GroupedTrlParser((ScriptArguments, ProcessGRPOConfig, ModelConfig), prog=prog)
    parser.set_defaults(**DEFAULTS)
    return parser


if __name__ == "__main__":
    run_script(make_parser, main)
