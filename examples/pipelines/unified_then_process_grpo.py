#!/usr/bin/env python
"""trl_ext's ``UnifiedLikelihoodTrainer`` (demonstrations + preference pairs in one run), then ``ProcessGRPOTrainer``
(GRPO with per-step rewards) from its output folder.

Stage 1 trains SFT + DPO (``loss_type=["sft", "sigmoid"]``) at once on gsm_symbolic demonstrations and pairs (a
correct solution vs one with a corrupted arithmetic step) and saves a full-model folder. Stage 2 runs process
GRPO from that folder: the answer grader scores the final answer, ``ArithmeticStepVerifier`` each line's arithmetic.
Printed: the held-out preference accuracy (the policy gives the correct solution the higher log-likelihood) before
and after stage 1, and the answer / step rewards at the first and last GRPO step::

    python examples/pipelines/unified_then_process_grpo.py    # embedded SmolLM2-135M-Instruct, CPU
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoTokenizer

from trl_ext.data import demonstration_dataset, preference_dataset, rl_dataset
from trl_ext.models import resolve_model_name_or_path
from trl_ext.rewards import ArithmeticStepVerifier, default_grader
from trl_ext.trainers import ProcessGRPOConfig, ProcessGRPOTrainer, UnifiedLikelihoodConfig, UnifiedLikelihoodTrainer

CPU = dict(use_cpu=not torch.cuda.is_available(), bf16=False, gradient_checkpointing=False, report_to="none",
           save_strategy="no", logging_steps=1, seed=0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="UnifiedLikelihoodTrainer -> ProcessGRPOTrainer (trl_ext)")
    parser.add_argument("--model_name_or_path", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    parser.add_argument("--output_dir", default="outputs/pipelines/unified_then_process_grpo")
    parser.add_argument("--unified_steps", type=int, default=4)
    parser.add_argument("--grpo_steps", type=int, default=2)
    parser.add_argument("--eval_size", type=int, default=8, help="held-out preference pairs (0: no evaluation)")
    return parser.parse_args(argv)


def pair_accuracy(trainer: UnifiedLikelihoodTrainer, pairs) -> float:
    """Fraction of pairs whose chosen (correct) solution has the higher sequence log-likelihood."""
    logps = trainer.pair_logps(pairs)
    return (logps["chosen_logps"] > logps["rejected_logps"]).float().mean().item()


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    base = resolve_model_name_or_path(args.model_name_or_path)
    unified_dir, grpo_dir = str(Path(args.output_dir, "unified")), str(Path(args.output_dir, "process_grpo"))
    results = {}

    # 1. demonstrations + preference pairs in one objective -> a full-model folder
    n = 2 * args.unified_steps  # half of each batch of 4 is demonstrations, half pairs
    unified = UnifiedLikelihoodTrainer(
        model=base,
        args=UnifiedLikelihoodConfig(unified_dir, loss_type=["sft", "sigmoid"], beta=0.1, learning_rate=1e-5,
                                     max_steps=args.unified_steps, per_device_train_batch_size=4, max_length=384,
                                     precompute_ref_log_probs=True, dataloader_pin_memory=False, **CPU),
        train_dataset=[demonstration_dataset(n, conversational=True), preference_dataset(n, seed=1, conversational=True)],
        processing_class=AutoTokenizer.from_pretrained(base),
    )
    heldout_pairs = preference_dataset(args.eval_size, split="eval", conversational=True) if args.eval_size else None
    if heldout_pairs is not None:
        results["pair_accuracy_before"] = pair_accuracy(unified, heldout_pairs)
    unified.train()
    unified.save_model(unified_dir)  # weights, config, tokenizer, card
    if heldout_pairs is not None:
        results["pair_accuracy_after"] = pair_accuracy(unified, heldout_pairs)
    print("unified, held-out preference accuracy:", results)
    del unified

    # 2. process-supervised GRPO from the unified folder
    answer = default_grader("gsm_symbolic")
    answer.__name__ = "answer"
    grpo = ProcessGRPOTrainer(
        model=unified_dir,
        reward_funcs=[answer],
        process_reward_funcs=[ArithmeticStepVerifier(step_separator="\n")],
        args=ProcessGRPOConfig(grpo_dir, max_steps=args.grpo_steps, per_device_train_batch_size=4, num_generations=4,
                               max_completion_length=96, learning_rate=5e-6, step_separator="\n", **CPU),
        train_dataset=rl_dataset("gsm_symbolic", args.grpo_steps, conversational=True),
        processing_class=AutoTokenizer.from_pretrained(unified_dir, padding_side="left"),
    )
    grpo.train()
    grpo.save_model(grpo_dir)
    logs = [log for log in grpo.state.log_history if "reward" in log]
    for key in ("rewards/answer/mean", "process/step_reward_mean", "process/frac_correct_steps"):
        results[f"{key} first/last"] = [logs[0].get(key), logs[-1].get(key)]
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
