# Copyright 2025 the trl_ext developers. Apache-2.0.
"""A trained PRM as ProcessGRPO's step reward vs the arithmetic verifier vs outcome-only GRPO, at equal wall time.

Three runs on gsm_symbolic (the task the PRM of ``examples/prm.py`` was trained on), each with the same model (the
embedded SmolLM2-135M-Instruct), LoRA adapter, learning rate, prompts, completion length, group size, outcome rewards
(the answer grader + 0.5 x the format grader) and training wall-time budget (``--budget_s``; model loading and
evaluation excluded):

- ``prm``: ProcessGRPOTrainer, step rewards from ``ProcessRewardModel(--prm)`` (P(correct) of each step; its forward
  pass is part of the training wall time),
- ``verifier``: ProcessGRPOTrainer, step rewards from ``ArithmeticStepVerifier``,
- ``grpo``: stock TRL GRPOTrainer, outcome rewards only.

After the budget each run measures greedy held-out accuracy and the fraction of true arithmetic claims of its
completions (the same prompts for all; the untrained model is measured once, in the first run). Runs go one after
the other, each in its own subprocess:

    python examples/prm.py --output_dir outputs/prm                        # train the PRM first (a few minutes)
    python benchmarks/bench_prm.py --prm outputs/prm --output_dir benchmarks/results/prm     # ~12 min on 2 cores

Caveat: the default is one seed and a short budget (about ten optimizer steps per run on 2 CPU cores); differences
of a few points of accuracy on 32 prompts are within run-to-run variation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_learning import _budget_callback  # noqa: E402

RUNS = ("prm", "verifier", "grpo")
LABELS = {"prm": "ProcessGRPO + trained PRM", "verifier": "ProcessGRPO + arithmetic verifier",
          "grpo": "GRPOTrainer (outcome only)"}


def run_one(name: str, args) -> dict:
    import torch
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from trl_ext.data import rl_dataset
    from trl_ext.evaluation import evaluate_accuracy
    from trl_ext.models import resolve_model_name_or_path
    from trl_ext.rewards import FormatGrader, default_grader
    from trl_ext.rewards.process import ArithmeticStepVerifier, ProcessRewardModel
    from trl_ext.trainers import ProcessGRPOConfig, ProcessGRPOTrainer

    model_path = str(resolve_model_name_or_path(args.model))
    train = rl_dataset("gsm_symbolic", 1000, seed=args.seed, split="train", conversational=True)
    held_out = rl_dataset("gsm_symbolic", args.eval_size, seed=args.seed, split="eval", conversational=True)
    grader = default_grader("gsm_symbolic")
    rewards = [grader, FormatGrader()]
    verifier = ArithmeticStepVerifier(step_separator="\n")
    tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
    peft_config = LoraConfig(r=16, lora_alpha=32, task_type="CAUSAL_LM",
                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"])
    common = dict(
        output_dir=tempfile.mkdtemp(prefix=f"bench_prm_{name}_"), max_steps=100_000, per_device_train_batch_size=8,
        num_generations=args.num_generations, max_completion_length=args.max_completion_length, temperature=0.7,
        learning_rate=2e-4, lr_scheduler_type="constant_with_warmup", warmup_steps=2, beta=0.02,
        reward_weights=[1.0, 0.5], logging_steps=1, save_strategy="no", report_to="none", seed=args.seed,
        use_cpu=not torch.cuda.is_available(), bf16=False, disable_tqdm=True,
    )
    if name == "grpo":
        trainer = GRPOTrainer(model=model_path, reward_funcs=rewards, args=GRPOConfig(**common), train_dataset=train,
                              processing_class=tokenizer, peft_config=peft_config)
    else:
        step_reward = ProcessRewardModel(args.prm, name="prm") if name == "prm" else verifier
        trainer = ProcessGRPOTrainer(model=model_path, reward_funcs=rewards, train_dataset=train,
                                     args=ProcessGRPOConfig(step_separator="\n", **common),
                                     process_reward_funcs=[step_reward], processing_class=tokenizer,
                                     peft_config=peft_config)

    def evaluate() -> dict:
        tic = time.perf_counter()
        accuracy, texts = evaluate_accuracy(trainer.accelerator.unwrap_model(trainer.model), tokenizer, held_out,
                                            grader, max_new_tokens=args.eval_max_new_tokens, batch_size=16,
                                            return_completions=True)
        scores = [s for c in verifier(completions=texts) for s in c if s is not None]
        return {"accuracy": float(accuracy), "true_step_fraction": sum(scores) / len(scores) if scores else None,
                "checked_steps": len(scores), "eval_seconds": time.perf_counter() - tic}

    result: dict = {"run": name, "label": LABELS[name]}
    if args.measure_before:
        result["before"] = evaluate()
        print(f"{name}: before training {result['before']}", flush=True)
    trainer.add_callback(_budget_callback(args.budget_s, [], lambda: 0.0, []))
    tic = time.perf_counter()
    trainer.train()
    result["train_seconds"] = time.perf_counter() - tic
    result["after"] = evaluate()
    print(f"{name}: after {trainer.state.global_step} steps {result['after']}", flush=True)
    logs = trainer.state.log_history
    result.update(
        steps=trainer.state.global_step,
        reward_mean=[e["reward"] for e in logs if "reward" in e],
        step_reward_mean=[e.get("process/step_reward_mean") for e in logs if "reward" in e],
        step_time_mean=result["train_seconds"] / max(1, trainer.state.global_step),
        settings={k: v for k, v in vars(args).items() if k not in ("only",)},
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prm", required=True, help="folder of a PRM trained by examples/prm.py")
    parser.add_argument("--model", default=None, help="policy path (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--budget_s", type=float, default=150.0, help="training wall time per run, seconds")
    parser.add_argument("--eval_size", type=int, default=32)
    parser.add_argument("--eval_max_new_tokens", type=int, default=96)
    parser.add_argument("--max_completion_length", type=int, default=96)
    parser.add_argument("--num_generations", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=RUNS, default=None, help="one run in this process")
    parser.add_argument("--measure_before", action="store_true", help="(with --only) also evaluate before training")
    parser.add_argument("--output_dir", default="benchmarks/results/prm")
    args = parser.parse_args()
    os.makedirs(args.output_dir, exist_ok=True)
    if args.only:
        result = run_one(args.only, args)
        with open(os.path.join(args.output_dir, f"{args.only}.json"), "w") as f:
            json.dump(result, f, indent=2)
        return
    start = time.perf_counter()
    for i, name in enumerate(RUNS):
        cmd = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--only", name]
        if i == 0:
            cmd.append("--measure_before")
        print("running", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    results = {}
    for name in RUNS:
        with open(os.path.join(args.output_dir, f"{name}.json")) as f:
            results[name] = json.load(f)
    before = results[RUNS[0]]["before"]
    summary = {"seeds": [args.seed], "budget_s": args.budget_s, "eval_size": args.eval_size,
               "total_wall_seconds": time.perf_counter() - start, "before": before,
               "after": {name: {**r["after"], "steps": r["steps"], "step_time_mean": r["step_time_mean"]}
                         for name, r in results.items()}}
    with open(os.path.join(args.output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"\none seed ({args.seed}), {args.budget_s:.0f} s of training each, {args.eval_size} held-out prompts")
    print(f"{'':36s}{'steps':>6s}{'s/step':>8s}{'accuracy':>10s}{'true steps':>12s}")
    print(f"{'untrained':36s}{'':6s}{'':8s}{before['accuracy']:10.3f}{before['true_step_fraction'] or 0:12.3f}")
    for name, r in results.items():
        a = r["after"]
        print(f"{LABELS[name]:36s}{r['steps']:6d}{r['step_time_mean']:8.1f}{a['accuracy']:10.3f}"
              f"{a['true_step_fraction'] or 0:12.3f}")


if __name__ == "__main__":
    main()
