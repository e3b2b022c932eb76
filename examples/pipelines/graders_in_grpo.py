#!/usr/bin/env python
"""trl_ext's graders as the ``reward_funcs`` of stock TRL's ``GRPOTrainer``.

The graders follow TRL's reward-function convention (``fn(prompts=, completions=, **columns) -> list[float | None]``),
so stock GRPO takes them as they are: ``MathVerify`` (the answer after ``####`` vs the ``answer`` column, numeric then
symbolic equivalence; ``NumericMatch`` when ``math-verify`` is not installed) and ``FormatGrader`` (``#### <answer>``
on the last line). TRL logs each as ``rewards/<name>/mean``. Printed: the held-out chain_sum accuracy and format rate
before and after training::

    python examples/pipelines/graders_in_grpo.py              # embedded SmolLM2-135M-Instruct, CPU, LoRA
    trl grpo --model_name_or_path <model> --dataset_name <data> --reward_funcs trl_ext.rewards.numeric_match
"""

from __future__ import annotations

import argparse
import json

import torch
from peft import LoraConfig
from transformers import AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from trl_ext.data import rl_dataset
from trl_ext.evaluation import evaluate_accuracy
from trl_ext.models import resolve_model_name_or_path
from trl_ext.rewards import FormatGrader, MathVerify, NumericMatch, is_math_verify_available

TASK_CONFIG = dict(min_terms=2, max_terms=2, min_digits=1, max_digits=2)  # chain_sum: "15 - 43 ="


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="trl_ext graders in stock TRL GRPOTrainer")
    parser.add_argument("--model_name_or_path", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    parser.add_argument("--output_dir", default="outputs/pipelines/graders_in_grpo")
    parser.add_argument("--max_steps", type=int, default=3)
    parser.add_argument("--eval_size", type=int, default=12, help="held-out chain_sum questions (0: no evaluation)")
    return parser.parse_args(argv)


def held_out(model, tokenizer, dataset, accuracy_grader) -> dict[str, float]:
    """Greedy held-out answer accuracy and format rate."""
    if not len(dataset):
        return {}
    accuracy, texts = evaluate_accuracy(model, tokenizer, dataset, accuracy_grader, max_new_tokens=48,
                                        return_completions=True)
    formats = FormatGrader()(completions=texts)
    return {"accuracy": accuracy, "format": sum(formats) / len(formats)}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    base = resolve_model_name_or_path(args.model_name_or_path)
    accuracy = MathVerify() if is_math_verify_available() else NumericMatch()
    trainer = GRPOTrainer(
        model=base,
        reward_funcs=[accuracy, FormatGrader()],  # trl_ext graders, unchanged
        args=GRPOConfig(args.output_dir, max_steps=args.max_steps, per_device_train_batch_size=8, num_generations=4,
                        max_completion_length=48, temperature=0.7, learning_rate=2e-4, reward_weights=[1.0, 0.5],
                        use_cpu=not torch.cuda.is_available(), bf16=False, gradient_checkpointing=False,
                        report_to="none", save_strategy="no", logging_steps=1, seed=0),
        train_dataset=rl_dataset("chain_sum", 2 * args.max_steps, conversational=True, **TASK_CONFIG),
        processing_class=AutoTokenizer.from_pretrained(base, padding_side="left"),
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    heldout = rl_dataset("chain_sum", max(args.eval_size, 1), split="eval", conversational=True,
                         **TASK_CONFIG).select(range(args.eval_size))
    results = {"before": held_out(trainer.model, trainer.processing_class, heldout, accuracy)}
    trainer.train()
    trainer.save_model(args.output_dir)
    results["after"] = held_out(trainer.model, trainer.processing_class, heldout, accuracy)
    results["logged_grader_means"] = {k: v for k, v in trainer.state.log_history[-2].items() if k.startswith("rewards/")}
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
