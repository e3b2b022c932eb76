#!/usr/bin/env python
"""Stock TRL ``SFTTrainer`` on demonstrations, then trl_ext's ``RFTTrainer`` (PPO with a critic) from the SFT folder.

Stage 1 fine-tunes the base model on step-by-step gsm_symbolic demonstrations that end with ``#### <answer>``
(it learns the answer format); the SFT output is a full-model folder (weights + tokenizer). Stage 2 starts RFT from
that folder, with LoRA, on chain_sum sums graded by ``NumericMatch`` + ``FormatGrader``. The held-out chain_sum
accuracy and format rate are printed for the base model, after SFT and after RFT::

    python examples/pipelines/sft_then_rft.py                          # embedded SmolLM2-135M-Instruct, CPU
    python examples/pipelines/sft_then_rft.py --sft_lora               # SFT adapter folder; RFT continues it
    python examples/pipelines/sft_then_rft.py --model_name_or_path HuggingFaceTB/SmolLM2-360M-Instruct --rft_steps 50
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from trl_ext.data import demonstration_dataset, rl_dataset
from trl_ext.evaluation import evaluate_accuracy
from trl_ext.models import resolve_model_name_or_path
from trl_ext.rewards import FormatGrader, NumericMatch
from trl_ext.trainers import RFTConfig, RFTTrainer

TASK_CONFIG = dict(min_terms=2, max_terms=2, min_digits=1, max_digits=2)  # chain_sum: "15 - 43 ="
CPU = dict(use_cpu=not torch.cuda.is_available(), bf16=False, gradient_checkpointing=False, report_to="none",
           save_strategy="no", logging_steps=1, seed=0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="SFTTrainer (stock TRL) -> RFTTrainer (trl_ext)")
    parser.add_argument("--model_name_or_path", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    parser.add_argument("--output_dir", default="outputs/pipelines/sft_then_rft")
    parser.add_argument("--sft_steps", type=int, default=8)
    parser.add_argument("--rft_steps", type=int, default=4)
    parser.add_argument("--eval_size", type=int, default=12, help="held-out chain_sum questions (0: no evaluation)")
    parser.add_argument("--sft_lora", action="store_true",
                        help="SFT trains a LoRA adapter; RFT continues that adapter folder (trl_ext adapter chaining)")
    return parser.parse_args(argv)


def lora() -> LoraConfig:
    return LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")


def held_out(model_or_path, tokenizer, dataset) -> dict[str, float]:
    """Greedy held-out answer accuracy and format rate (``#### <answer>`` on the last line)."""
    if not len(dataset):
        return {}
    model = AutoModelForCausalLM.from_pretrained(model_or_path) if isinstance(model_or_path, str) else model_or_path
    accuracy, texts = evaluate_accuracy(model, tokenizer, dataset, NumericMatch(), max_new_tokens=48,
                                        return_completions=True)
    formats = FormatGrader()(completions=texts)
    return {"accuracy": accuracy, "format": sum(formats) / len(formats)}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    base = resolve_model_name_or_path(args.model_name_or_path)
    sft_dir, rft_dir = str(Path(args.output_dir, "sft")), str(Path(args.output_dir, "rft"))
    heldout = rl_dataset("chain_sum", max(args.eval_size, 1), split="eval", conversational=True,
                         **TASK_CONFIG).select(range(args.eval_size))
    tokenizer = AutoTokenizer.from_pretrained(base)
    results = {"base": held_out(base, tokenizer, heldout)}
    print("base model:", results["base"])

    # 1. stock TRL SFT on demonstrations -> a full-model folder (an adapter folder with --sft_lora)
    sft = SFTTrainer(
        model=base,
        args=SFTConfig(sft_dir, max_steps=args.sft_steps, per_device_train_batch_size=4,
                       learning_rate=2e-4 if args.sft_lora else 5e-5, max_length=320, **CPU),
        train_dataset=demonstration_dataset(4 * args.sft_steps, conversational=True),
        processing_class=tokenizer,
        peft_config=lora() if args.sft_lora else None,
    )
    sft.train()
    sft.save_model(sft_dir)  # weights (or the adapter), config, tokenizer
    results["after_sft"] = held_out(sft.model, tokenizer, heldout)
    print("after SFT:", results["after_sft"])
    del sft

    # 2. RFT from the SFT folder: LoRA on the SFT weights (the reference policy = the SFT model, adapters off); an
    #    adapter folder is continued (the reference policy = the base model, adapters off)
    rft = RFTTrainer(
        model=sft_dir,
        reward_funcs=[NumericMatch(), FormatGrader()],
        args=RFTConfig(rft_dir, max_steps=args.rft_steps, per_device_train_batch_size=8, max_completion_length=48,
                       temperature=0.7, learning_rate=2e-4, value_head_learning_rate=1e-4, beta=0.02,
                       reward_weights=[1.0, 0.5], missing_eos_penalty=0.5, **CPU),
        train_dataset=rl_dataset("chain_sum", 8 * args.rft_steps, conversational=True, **TASK_CONFIG),
        processing_class=AutoTokenizer.from_pretrained(sft_dir, padding_side="left"),
        peft_config=None if args.sft_lora else lora(),
    )
    rft.train()
    rft.save_model(rft_dir)  # adapter + value_head.safetensors + card
    results["after_rft"] = held_out(rft.model, tokenizer, heldout)
    print("after RFT:", results["after_rft"])
    rewards = [log["reward"] for log in rft.state.log_history if "reward" in log]
    results["rft_reward_first_last"] = [rewards[0], rewards[-1]] if rewards else None
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
