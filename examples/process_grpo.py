# Copyright 2025 the trl_ext developers. Apache-2.0.
"""Process-supervised GRPO on gsm_symbolic with the embedded SmolLM2-135M-Instruct, on CPU in about 10-15 minutes.

Every completion is split into steps (one per line by default); the arithmetic verifier scores each step by the
fraction of its claims (``35 × 3 = 105``) that are true, the answer grader scores the final answer as one more step,
and ProcessGRPOTrainer turns the pooled, normalised step rewards into reward-to-go token advantages. Held-out accuracy
and the fraction of true arithmetic steps are measured before and after training, and the curves are plotted into
the output folder (``training_curves.png``, ``results.json``).

Usage (TRL script conventions; every ProcessGRPOConfig / GRPOConfig / ModelConfig field is a flag):

    python examples/process_grpo.py
    python examples/process_grpo.py --max_steps 60 --output_dir outputs/pgrpo --step_separator '\\n\\n'
    python examples/process_grpo.py --use_peft --lora_r 16 --learning_rate 1e-4            # LoRA
    python examples/process_grpo.py --use_peft --load_in_4bit --learning_rate 1e-4         # QLoRA (CPU works)
    python examples/process_grpo.py --config my_config.yaml
    python examples/process_grpo.py --outcome_only true    # baseline: stock GRPOTrainer, answer grader only
    accelerate launch --config_file examples/accelerate_configs/cpu_2proc.yaml examples/process_grpo.py
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

import torch
from trl import GRPOTrainer, ModelConfig, TrlParser, get_peft_config, get_quantization_config

from trl_ext.data import rl_dataset
from trl_ext.evaluation import evaluate_accuracy
from trl_ext.models import resolve_model_name_or_path
from trl_ext.plotting import plot_training_curves
from trl_ext.rewards import default_grader
from trl_ext.rewards.process import ArithmeticStepVerifier
from trl_ext.trainers.process_grpo import ProcessGRPOConfig, ProcessGRPOTrainer


@dataclass
class ScriptArguments:
    """Data and evaluation of the example."""

    task: str = field(default="gsm_symbolic", metadata={"help": "reasoning-gym task (trl_ext.data.rl_dataset)."})
    train_size: int = field(default=512, metadata={"help": "Number of training prompts."})
    eval_size: int = field(default=24, metadata={"help": "Number of held-out prompts for the before/after accuracy."})
    eval_max_new_tokens: int = field(default=128, metadata={"help": "Generation length of the evaluation."})
    eval_batch_size: int = field(default=16, metadata={"help": "Batch size of the evaluation's generation."})
    skip_eval: bool = field(default=False, metadata={"help": "Skip the before/after evaluation."})
    outcome_only: bool = field(
        default=False,
        metadata={"help": "Baseline: train with stock GRPOTrainer and the answer grader only (no process reward)."},
    )


DEFAULTS = dict(
    output_dir="outputs/process_grpo",
    max_steps=30,
    per_device_train_batch_size=4,
    num_generations=4,
    max_completion_length=128,
    learning_rate=5e-6,
    lr_scheduler_type="constant",
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


def main(script_args: ScriptArguments, training_args: ProcessGRPOConfig, model_args: ModelConfig) -> dict:
    model_path = resolve_model_name_or_path(model_args.model_name_or_path)
    train_dataset = rl_dataset(script_args.task, script_args.train_size, seed=training_args.seed, conversational=True)
    eval_dataset = rl_dataset(script_args.task, script_args.eval_size, seed=training_args.seed, split="eval",
                              conversational=True)
    grader = default_grader(script_args.task)
    grader.__name__ = "answer"
    verifier = ArithmeticStepVerifier(step_separator=training_args.step_separator)

    common = dict(
        model=model_path, reward_funcs=[grader], args=training_args, train_dataset=train_dataset,
        peft_config=get_peft_config(model_args), quantization_config=get_quantization_config(model_args),
    )
    if script_args.outcome_only:
        trainer = GRPOTrainer(**common)
    else:
        trainer = ProcessGRPOTrainer(**common, process_reward_funcs=[verifier])

    results: dict = {"model": model_path, "trainer": type(trainer).__name__, "max_steps": training_args.max_steps}
    if not script_args.skip_eval:
        start = time.perf_counter()
        results["before"] = evaluate(trainer.model, trainer.processing_class, eval_dataset, grader, verifier,
                                     script_args)
        trainer.accelerator.print(f"before training: {results['before']} ({time.perf_counter() - start:.0f} s)")

    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    results["train_seconds"] = time.perf_counter() - start

    if not script_args.skip_eval:
        results["after"] = evaluate(trainer.model, trainer.processing_class, eval_dataset, grader, verifier,
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
            extra_points=extra, title=f"{results['trainer']} on {script_args.task}",
        )
        results["plot"] = str(plot) if plot else None
        results["log_history"] = trainer.state.log_history
        with open(os.path.join(training_args.output_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=2, default=str)
        trainer.accelerator.print(f"results and curves in {training_args.output_dir}")
    trainer.save_model(training_args.output_dir)
    return results


def make_parser() -> TrlParser:
    parser = TrlParser((ScriptArguments, ProcessGRPOConfig, ModelConfig))
    parser.set_defaults(**DEFAULTS)
    return parser


if __name__ == "__main__":
    script_args, training_args, model_args = make_parser().parse_args_and_config()
    main(script_args, training_args, model_args)
