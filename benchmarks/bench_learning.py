# Copyright 2025 the trl_ext developers. Apache-2.0.
"""Learning at equal wall time: held-out accuracy curves of RFTTrainer, ProcessGRPOTrainer and stock GRPOTrainer.

Each trainer gets the same training wall-time budget (``--budget_s``, evaluation time excluded), the same model (the
embedded SmolLM2-135M-Instruct unless ``--model``), LoRA adapter, learning rate, prompts, completion length,
temperature, KL coefficient and rewards (the task grader + 0.5 x format grader), and the same number of completions
per step. They differ only in what each method is: RFT is PPO with a value head and one completion per prompt
(GAE advantages, KL in the reward); GRPO and ProcessGRPO sample ``--num_generations`` completions per prompt, and
ProcessGRPO adds the arithmetic step verifier's per-step rewards. Greedy held-out accuracy (a split disjoint from
training) is measured at ``--evals`` equally spaced points of training wall time; the evaluation pauses the clock.

Each trainer runs in its own subprocess, one after the other (never concurrently), and the curves are plotted to a
PNG with the results in a JSON file:

    python benchmarks/bench_learning.py --output_dir benchmarks/results/learning          # ~40 min on 2 CPU cores
    python benchmarks/bench_learning.py --only rft --budget_s 60 --output_dir /tmp/l     # one trainer, quick look
    python benchmarks/bench_learning.py --plot_only --output_dir benchmarks/results/learning

Caveat: one seed per trainer; on CPU sampling is not bit-reproducible across runs, so differences of a few points
of accuracy on 128 prompts are within run-to-run variation.
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

TRAINERS = ("rft", "process_grpo", "grpo")
LABELS = {"rft": "RFTTrainer (trl_ext)", "process_grpo": "ProcessGRPOTrainer (trl_ext)", "grpo": "GRPOTrainer (TRL)"}
TASK_CONFIG = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}


def _budget_callback(budget_s: float, marks: list[float], evaluate, record: list[dict]):
    """A TrainerCallback that evaluates at training wall-time ``marks`` and stops at ``budget_s`` (eval excluded)."""
    from transformers import TrainerCallback

    class WallTimeBudget(TrainerCallback):
        def __init__(self):
            self.start = None
            self.paused = 0.0
            self.pending = list(marks)

        def elapsed(self) -> float:
            return time.perf_counter() - self.start - self.paused

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            elapsed = self.elapsed()
            if self.pending and elapsed >= self.pending[0]:
                while self.pending and elapsed >= self.pending[0]:
                    self.pending.pop(0)
                tic = time.perf_counter()
                accuracy = evaluate()
                self.paused += time.perf_counter() - tic
                record.append({"train_seconds": elapsed, "step": state.global_step, "accuracy": accuracy,
                               "eval_seconds": time.perf_counter() - tic})
                print(f"[{time.strftime('%H:%M:%S')}] t={elapsed:.0f}s step={state.global_step} "
                      f"accuracy={accuracy:.3f}", flush=True)
            if elapsed >= budget_s:
                control.should_training_stop = True
            return control

    return WallTimeBudget()


def run_one(name: str, args) -> dict:
    """Train one trainer for the budget in this process and return its accuracy curve."""
    import torch
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from trl_ext.data import rl_dataset
    from trl_ext.evaluation import evaluate_accuracy
    from trl_ext.models import resolve_model_name_or_path
    from trl_ext.rewards import FormatGrader, default_grader
    from trl_ext.rewards.process import ArithmeticStepVerifier
    from trl_ext.trainers import ProcessGRPOConfig, ProcessGRPOTrainer, RFTConfig, RFTTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    model_path = str(resolve_model_name_or_path(args.model))
    train = rl_dataset(args.task, 2000, seed=args.seed, split="train", conversational=True, **TASK_CONFIG)
    held_out = rl_dataset(args.task, args.eval_size, seed=args.seed, split="eval", conversational=True,
                          **TASK_CONFIG)
    grader = default_grader(args.task)
    rewards = [grader, FormatGrader()]
    tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
    peft_config = LoraConfig(r=16, lora_alpha=32, task_type="CAUSAL_LM",
                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"])
    common = dict(
        output_dir=tempfile.mkdtemp(prefix=f"bench_learning_{name}_"), max_steps=100_000, per_device_train_batch_size=8,
        max_completion_length=48, temperature=0.7, learning_rate=2e-4, lr_scheduler_type="constant_with_warmup",
        warmup_steps=5, beta=0.02, reward_weights=[1.0, 0.5], logging_steps=1, save_strategy="no",
        report_to="none", seed=args.seed, use_cpu=not torch.cuda.is_available(), bf16=False, disable_tqdm=True,
    )
    if name == "rft":
        config = RFTConfig(num_generations=1, value_head_learning_rate=1e-4, vf_coef=0.1, cliprange_value=0.2,
                           missing_eos_penalty=args.rft_missing_eos_penalty, **common)
        trainer = RFTTrainer(model=model_path, reward_funcs=rewards, args=config, train_dataset=train,
                             processing_class=tokenizer, peft_config=peft_config)
    elif name == "process_grpo":
        config = ProcessGRPOConfig(num_generations=args.num_generations, step_separator="\n", **common)
        trainer = ProcessGRPOTrainer(model=model_path, reward_funcs=rewards, args=config, train_dataset=train,
                                     process_reward_funcs=[ArithmeticStepVerifier()], processing_class=tokenizer,
                                     peft_config=peft_config)
    else:
        config = GRPOConfig(num_generations=args.num_generations, **common)
        trainer = GRPOTrainer(model=model_path, reward_funcs=rewards, args=config, train_dataset=train,
                              processing_class=tokenizer, peft_config=peft_config)

    def evaluate() -> float:
        return evaluate_accuracy(trainer.accelerator.unwrap_model(trainer.model), tokenizer, held_out, grader,
                                 max_new_tokens=args.eval_max_new_tokens, batch_size=16)

    tic = time.perf_counter()
    curve = [{"train_seconds": 0.0, "step": 0, "accuracy": evaluate()}]
    curve[0]["eval_seconds"] = time.perf_counter() - tic
    print(f"{name}: accuracy before training {curve[0]['accuracy']:.3f} ({curve[0]['eval_seconds']:.0f} s eval)",
          flush=True)
    marks = [args.budget_s * (i + 1) / (args.evals - 1) for i in range(args.evals - 1)]
    trainer.add_callback(_budget_callback(args.budget_s, marks, evaluate, curve))
    trainer.train()
    rewards_logged = [e["reward"] for e in trainer.state.log_history if "reward" in e]
    return {
        "trainer": LABELS[name], "curve": curve, "steps": trainer.state.global_step,
        "completions_per_step": 8, "reward_first10": sum(rewards_logged[:10]) / max(1, len(rewards_logged[:10])),
        "reward_last10": sum(rewards_logged[-10:]) / max(1, len(rewards_logged[-10:])),
        "model": model_path, "task": args.task, "task_config": TASK_CONFIG, "eval_size": args.eval_size,
        "budget_s": args.budget_s, "num_generations": 1 if name == "rft" else args.num_generations,
        "settings": {k: v for k, v in vars(args).items() if k not in ("only", "plot_only")},
    }


def plot(results: dict, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, result in results.items():
        xs = [p["train_seconds"] / 60 for p in result["curve"]]
        ys = [p["accuracy"] for p in result["curve"]]
        ax.plot(xs, ys, "o-", label=f"{result['trainer']} ({result['steps']} steps)")
    ax.set_xlabel("training wall time, minutes (evaluation excluded)")
    ax.set_ylabel("held-out accuracy (greedy)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model path (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--task", default="chain_sum", help="reasoning-gym task of trl_ext.data.rl_dataset")
    parser.add_argument("--budget_s", type=float, default=480.0, help="training wall time per trainer, seconds")
    parser.add_argument("--evals", type=int, default=5, help="evaluation points, including before training")
    parser.add_argument("--eval_size", type=int, default=128, help="held-out prompts")
    parser.add_argument("--eval_max_new_tokens", type=int, default=64)
    parser.add_argument("--num_generations", type=int, default=4, help="GRPO group size (RFT uses 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rft_missing_eos_penalty", type=float, default=0.0,
                        help="RFTConfig.missing_eos_penalty (0: the same rewards as the GRPO runs)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--only", choices=TRAINERS, default=None, help="run one trainer in this process")
    parser.add_argument("--plot_only", action="store_true", help="re-plot the JSON files in --output_dir")
    parser.add_argument("--output_dir", default="benchmarks/results/learning")
    args = parser.parse_args()
    if args.evals < 2:
        parser.error("--evals must be at least 2 (before training and at the end of the budget)")
    os.makedirs(args.output_dir, exist_ok=True)

    if args.only:
        result = run_one(args.only, args)
        with open(os.path.join(args.output_dir, f"{args.only}.json"), "w") as f:
            json.dump(result, f, indent=2)
        return
    if not args.plot_only:
        for name in TRAINERS:
            cmd = [sys.executable, os.path.abspath(__file__), "--only", name] + [
                a for a in sys.argv[1:] if a not in ("--only",)]
            print("running", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
    results = {}
    for name in TRAINERS:
        path = os.path.join(args.output_dir, f"{name}.json")
        if os.path.exists(path):
            with open(path) as f:
                results[name] = json.load(f)
    if not results:
        raise SystemExit(f"no results in {args.output_dir}: run without --plot_only first")
    png = os.path.join(args.output_dir, "learning_curves.png")
    any_result = next(iter(results.values()))
    plot(results, png, f"{any_result['task']} (2 terms, <= 2 digits), {any_result['eval_size']} held-out prompts, "
                       f"equal wall time")
    print(f"\nheld-out accuracy at equal training wall time ({any_result['budget_s']:.0f} s each)")
    print(f"{'':32s}{'steps':>7s}{'acc t=0':>9s}{'acc end':>9s}{'best':>7s}{'reward first10':>16s}"
          f"{'reward last10':>15s}")
    for result in results.values():
        accs = [p["accuracy"] for p in result["curve"]]
        print(f"{result['trainer']:32s}{result['steps']:7d}{accs[0]:9.3f}{accs[-1]:9.3f}{max(accs):7.3f}"
              f"{result['reward_first10']:16.3f}{result['reward_last10']:15.3f}")
    print(f"plot: {png}")


if __name__ == "__main__":
    main()
