#!/usr/bin/env python
"""Stock TRL ``RewardTrainer`` on preference pairs, then trl_ext's ``RFTTrainer`` with that reward model as the reward
*and* as the critic's initialisation.

Stage 1 trains a reward model (``AutoModelForSequenceClassification``, one score) on gsm_symbolic pairs: a correct
solution vs the same solution with one corrupted arithmetic step; it is saved as a full-model folder. Stage 2 runs
RFT on gsm_symbolic prompts, scored by that folder (``reward_funcs=[rm_dir]`` with its tokenizer as
``reward_processing_classes``, as TRL's GRPOTrainer accepts), and its value head starts as a copy of the reward
model's score head (``RFTConfig(value_head_init="reward_model")``). Printed: the reward model's held-out pair
accuracy before/after stage 1, and the reward-model score of the RFT completions at the first and last step::

    python examples/pipelines/reward_model_then_rft.py        # embedded SmolLM2-135M-Instruct, CPU
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from peft import LoraConfig
from transformers import AutoTokenizer
from trl import RewardConfig, RewardTrainer

from trl_ext.data import preference_dataset, rl_dataset
from trl_ext.models import resolve_model_name_or_path
from trl_ext.trainers import RFTConfig, RFTTrainer

CPU = dict(use_cpu=not torch.cuda.is_available(), bf16=False, gradient_checkpointing=False, report_to="none",
           save_strategy="no", logging_steps=1, seed=0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="RewardTrainer (stock TRL) -> RFTTrainer (trl_ext)")
    parser.add_argument("--model_name_or_path", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    parser.add_argument("--output_dir", default="outputs/pipelines/reward_model_then_rft")
    parser.add_argument("--rm_steps", type=int, default=6)
    parser.add_argument("--rft_steps", type=int, default=2)
    parser.add_argument("--eval_size", type=int, default=8, help="held-out preference pairs (0: no evaluation)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    base = resolve_model_name_or_path(args.model_name_or_path)
    rm_dir, rft_dir = str(Path(args.output_dir, "reward_model")), str(Path(args.output_dir, "rft"))
    results = {}

    # 1. stock TRL reward model on preference pairs -> a full-model folder
    rm = RewardTrainer(
        model=base,
        args=RewardConfig(rm_dir, max_steps=args.rm_steps, per_device_train_batch_size=2, learning_rate=2e-5,
                          max_length=512, **CPU),
        train_dataset=preference_dataset(2 * args.rm_steps, conversational=True),
        eval_dataset=preference_dataset(args.eval_size, split="eval", conversational=True) if args.eval_size else None,
        processing_class=AutoTokenizer.from_pretrained(base),
    )
    if args.eval_size:
        results["rm_pair_accuracy_before"] = rm.evaluate()["eval_accuracy"]
    rm.train()
    rm.save_model(rm_dir)  # weights (with the score head), config, tokenizer
    if args.eval_size:
        results["rm_pair_accuracy_after"] = rm.evaluate()["eval_accuracy"]
    print("reward model, held-out pair accuracy:", results)
    del rm

    # 2. RFT scored by the reward model folder, the critic initialised from its score head
    rft = RFTTrainer(
        model=base,
        reward_funcs=[rm_dir],
        reward_processing_classes=[AutoTokenizer.from_pretrained(rm_dir)],
        args=RFTConfig(rft_dir, value_head_init="reward_model", max_steps=args.rft_steps,
                       per_device_train_batch_size=8, max_completion_length=64, temperature=0.7, learning_rate=2e-4,
                       value_head_learning_rate=1e-4, beta=0.02, **CPU),
        train_dataset=rl_dataset("gsm_symbolic", 8 * args.rft_steps, conversational=True),
        processing_class=AutoTokenizer.from_pretrained(base, padding_side="left"),
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    rft.train()
    rft.save_model(rft_dir)  # adapter + value_head.safetensors + card
    rewards = [log["reward"] for log in rft.state.log_history if "reward" in log]
    results["rft_reward_model_score_first_last"] = [rewards[0], rewards[-1]] if rewards else None
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
