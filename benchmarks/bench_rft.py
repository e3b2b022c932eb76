#!/usr/bin/env python
"""Step time and peak memory of RFTTrainer vs stock TRL GRPOTrainer at equal settings.

Both trainers get the same model, data, seed and settings: ``num_generations`` completions per prompt (GRPO needs
groups; RFT accepts them), the same ``beta`` (so both compute reference log-probs), ``loss_type``, batch size and
completion length. Completions are forced to exactly ``max_completion_length`` tokens (``min_new_tokens``), so both do
the same work whatever their sampled text. Each run is a fresh subprocess (peak RSS = its ``ru_maxrss``); runs
alternate between the two trainers (and swap order every repetition) so that drifting machine load hits both. A step
is timed wall-clock from ``on_step_begin`` to ``on_step_end`` (generation, scoring, forward/backward, optimizer);
the first ``--warmup`` steps of each run are dropped.

RFT's extra work per step: GAE/whitening (negligible), the value head (a ``Linear(hidden, 1)``) and the value loss;
its memory adds the value head and its optimizer state. With the defaults (one update per rollout) ``logp_old`` and
``V_old`` come from the training forward; ``--rollout_forward`` measures the other path, one extra no-grad policy
forward per rollout (taken when a rollout feeds several updates: ``num_iterations > 1`` or
``steps_per_generation > 1``).

Example::

    flock /tmp/trl_ext_heavy.lock python benchmarks/bench_rft.py               # embedded SmolLM2-135M, CPU
    python benchmarks/bench_rft.py --tiny --reps 2 --steps 3                    # seconds, tiny random model
    python benchmarks/bench_rft.py --use_peft --output benchmarks/results/bench_rft_lora.json
    python benchmarks/bench_rft.py --rollout_forward     # RFT with the separate rollout forward
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAINERS = ("grpo", "rft")


def worker(args: argparse.Namespace) -> dict:
    """One training run in this process; returns step times and peak RSS."""
    import resource

    import torch
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from trl_ext.data import rl_dataset
    from trl_ext.models import resolve_model_name_or_path, save_tiny_model
    from trl_ext.rewards import default_grader
    from trl_ext.trainers.rft import RFTConfig, RFTTrainer

    torch.set_num_threads(args.threads)
    if args.tiny:
        model_path = str(save_tiny_model(Path(args.workdir) / "tiny"))
    else:
        model_path = resolve_model_name_or_path(args.model_name_or_path)
    dataset = rl_dataset("chain_sum", 64, seed=0, conversational=True, max_terms=3)
    common = dict(
        output_dir=str(Path(args.workdir) / args.worker),
        per_device_train_batch_size=args.batch_size,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        generation_kwargs={"min_new_tokens": args.max_completion_length},
        max_steps=args.warmup + args.steps,
        learning_rate=1e-5,
        beta=args.beta,
        loss_type="bnpo",
        gradient_checkpointing=args.gradient_checkpointing,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
        seed=0,
        disable_tqdm=True,
    )
    peft_config = None
    if args.use_peft:
        from peft import LoraConfig

        peft_config = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    if args.worker == "grpo":
        trainer = GRPOTrainer(model=model_path, reward_funcs=default_grader("chain_sum"), args=GRPOConfig(**common),
                              train_dataset=dataset, peft_config=peft_config)
    else:
        rft_args = RFTConfig(**common, values_from_training_forward=not args.rollout_forward)
        trainer = RFTTrainer(model=model_path, reward_funcs=default_grader("chain_sum"), args=rft_args,
                             train_dataset=dataset, peft_config=peft_config)

    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t0)

    trainer.add_callback(StepTimer())
    trainer.train()
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lengths = [e["completions/mean_length"] for e in trainer.state.log_history if "completions/mean_length" in e]
    return {"trainer": args.worker, "step_times": times[args.warmup :], "peak_rss_mb": peak_rss_mb,
            "mean_completion_length": statistics.mean(lengths) if lengths else None}


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def main(args: argparse.Namespace) -> dict:
    runs: dict[str, list[dict]] = {t: [] for t in TRAINERS}
    with tempfile.TemporaryDirectory() as workdir:
        for rep in range(args.reps):
            order = TRAINERS if rep % 2 == 0 else TRAINERS[::-1]
            for name in order:
                out = Path(workdir) / f"{name}-{rep}.json"
                cmd = [sys.executable, __file__, "--worker", name, "--workdir", workdir, "--json_out", str(out)]
                cmd += [a for a in sys.argv[1:] if a not in ("--worker",)]
                env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
                t0 = time.time()
                result = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if result.returncode != 0:
                    raise RuntimeError(f"{name} run failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
                run = json.loads(out.read_text())
                runs[name].append(run)
                print(f"rep {rep} {name:4s}: median step {statistics.median(run['step_times']):.3f}s, "
                      f"peak RSS {run['peak_rss_mb']:.0f} MB ({time.time() - t0:.0f}s)", flush=True)

    report: dict = {"settings": {k: v for k, v in vars(args).items() if k not in ("worker", "workdir", "json_out")}}
    for name in TRAINERS:
        step_medians = [statistics.median(r["step_times"]) for r in runs[name]]
        all_steps = [t for r in runs[name] for t in r["step_times"]]
        report[name] = {
            "step_time_s": _summary(all_steps),
            "step_time_median_per_run_s": step_medians,
            "peak_rss_mb": _summary([r["peak_rss_mb"] for r in runs[name]]),
            "mean_completion_length": statistics.mean(r["mean_completion_length"] for r in runs[name]),
        }
    report["ratio_step_time"] = report["rft"]["step_time_s"]["median"] / report["grpo"]["step_time_s"]["median"]
    report["ratio_peak_rss"] = report["rft"]["peak_rss_mb"]["median"] / report["grpo"]["peak_rss_mb"]["median"]

    print("\n| trainer | step time median (min-max) [s] | peak RSS median (min-max) [MB] |")
    print("|---|---|---|")
    for name, label in (("grpo", "GRPOTrainer (TRL)"), ("rft", "RFTTrainer")):
        s, m = report[name]["step_time_s"], report[name]["peak_rss_mb"]
        print(f"| {label} | {s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f}) | "
              f"{m['median']:.0f} ({m['min']:.0f}-{m['max']:.0f}) |")
    print(f"\nRFT / GRPO step-time ratio (medians): {report['ratio_step_time']:.3f}   (goal <= 1.15)")
    print(f"RFT / GRPO peak-RSS ratio (medians):  {report['ratio_peak_rss']:.3f}   (goal <= 1.10)")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    parser.add_argument("--tiny", action="store_true", help="a tiny random 2-layer Llama instead (smoke test)")
    parser.add_argument("--use_peft", action="store_true", help="LoRA r=16 on the attention projections")
    parser.add_argument("--reps", type=int, default=3, help="runs per trainer (alternating)")
    parser.add_argument("--steps", type=int, default=5, help="measured steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured first steps per run")
    parser.add_argument("--batch_size", type=int, default=4, help="per_device_train_batch_size")
    parser.add_argument("--num_generations", type=int, default=4)
    parser.add_argument("--max_completion_length", type=int, default=32)
    parser.add_argument("--beta", type=float, default=0.04, help="KL coefficient (both trainers)")
    parser.add_argument("--gradient_checkpointing", action="store_true")
    parser.add_argument("--rollout_forward", action="store_true",
                        help="RFT: V_old from a separate no-grad forward after generation (values_from_training_forward"
                             "=False), the path taken when a rollout feeds several updates")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run")
    parser.add_argument("--output", default=None, help="write the report as JSON here")
    parser.add_argument("--worker", choices=TRAINERS, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--json_out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.worker:
        Path(arguments.json_out).write_text(json.dumps(worker(arguments)))
    else:
        main(arguments)
