# Copyright 2025 the trl_ext developers. Apache-2.0.
"""ProcessGRPOTrainer vs stock TRL GRPOTrainer: step time at equal settings, and learning at equal steps.

Speed (default): both trainers are built once on the same model, data, reward function and config; they then train
``--steps`` steps in turn, ``--reps`` times, alternating which goes first (the first round is a warm-up and is
dropped). Completion lengths are pinned (``min_new_tokens = max_completion_length``) so both generate the same number
of tokens. The per-step time is TRL's ``step_time`` (generation + scoring + loss + backward + optimizer); for
ProcessGRPOTrainer the time spent inside the process reward functions (``process/scoring_time``) is subtracted, so the
ratio measures the trainer's own overhead: step splitting, gathering, reward-to-go advantages, logging.

    python benchmarks/bench_process_grpo.py                         # embedded SmolLM2-135M, CPU
    python benchmarks/bench_process_grpo.py --model tiny --reps 7   # a tiny random Llama: overhead-dominated

Learning (``--learning``): ``examples/process_grpo.py`` is run twice with the same settings and steps — stock
GRPOTrainer with the answer grader (outcome reward) and ProcessGRPOTrainer with the answer grader + arithmetic step
verifier — and the held-out accuracy / true-step fraction before and after are printed side by side.

    python benchmarks/bench_process_grpo.py --learning --learning_steps 30
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def speed(args) -> dict:
    import torch
    from trl import GRPOConfig, GRPOTrainer

    from trl_ext.data import rl_dataset
    from trl_ext.models import default_model_path, save_tiny_model
    from trl_ext.rewards import default_grader
    from trl_ext.rewards.process import ArithmeticStepVerifier
    from trl_ext.trainers.process_grpo import ProcessGRPOConfig, ProcessGRPOTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = tempfile.mkdtemp(prefix="bench_process_grpo_")
    if args.model == "tiny":
        model = str(save_tiny_model(os.path.join(tmp, "tiny")))
    else:
        model = args.model or str(default_model_path())
    dataset = rl_dataset("gsm_symbolic", 256, seed=0, conversational=True)
    grader = default_grader("gsm_symbolic")
    grader.__name__ = "answer"
    common = dict(
        num_generations=args.num_generations, per_device_train_batch_size=args.batch_size,
        max_completion_length=args.max_completion_length,
        generation_kwargs={"min_new_tokens": args.max_completion_length}, max_steps=args.steps, logging_steps=1,
        learning_rate=1e-6, report_to="none", save_strategy="no", use_cpu=True, bf16=False, seed=0,
        disable_tqdm=True,
    )
    stock = GRPOTrainer(model=model, reward_funcs=[grader], train_dataset=dataset,
                        args=GRPOConfig(output_dir=os.path.join(tmp, "stock"), **common))
    process = ProcessGRPOTrainer(model=model, reward_funcs=[grader], train_dataset=dataset,
                                 process_reward_funcs=[ArithmeticStepVerifier()],
                                 args=ProcessGRPOConfig(output_dir=os.path.join(tmp, "process"), step_separator="\n",
                                                        **common))
    times: dict[str, list[float]] = {"stock": [], "process": [], "process_with_scoring": [], "scoring": []}
    for rep in range(args.reps + 1):
        order = [("stock", stock), ("process", process)]
        if rep % 2:
            order.reverse()
        for name, trainer in order:
            trainer.train()
            logs = [e for e in trainer.state.log_history if "step_time" in e]
            if rep == 0:
                continue  # warm-up round
            for entry in logs:
                if name == "stock":
                    times["stock"].append(entry["step_time"])
                else:
                    scoring = entry.get("process/scoring_time", 0.0)
                    times["process_with_scoring"].append(entry["step_time"])
                    times["scoring"].append(scoring)
                    times["process"].append(entry["step_time"] - scoring)
        print(f"round {rep}{' (warm-up)' if rep == 0 else ''}: done", flush=True)
    result = {k: _summary(v) for k, v in times.items() if v}
    result["ratio_median"] = result["process"]["median"] / result["stock"]["median"]
    result["ratio_with_scoring_median"] = result["process_with_scoring"]["median"] / result["stock"]["median"]
    result["settings"] = {k: v for k, v in vars(args).items()} | {"model_path": model}
    print(f"\nstep time, s ({result['stock']['n']} steps each; {args.batch_size} completions x "
          f"{args.max_completion_length} tokens per step)")
    print(f"{'':28s}{'median':>9s}{'min':>9s}{'max':>9s}")
    for key in ("stock", "process", "process_with_scoring", "scoring"):
        s = result[key]
        print(f"{key:28s}{s['median']:9.3f}{s['min']:9.3f}{s['max']:9.3f}")
    print(f"ratio ProcessGRPO / GRPO (process scoring excluded): {result['ratio_median']:.3f}  (goal <= 1.05)")
    print(f"ratio ProcessGRPO / GRPO (scoring included):         {result['ratio_with_scoring_median']:.3f}")
    return result


def learning(args) -> dict:
    example = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "process_grpo.py")
    out = args.output_dir or tempfile.mkdtemp(prefix="bench_process_grpo_learning_")
    results = {}
    for name, extra in (("outcome (GRPOTrainer)", ["--outcome_only", "true"]), ("process (ProcessGRPOTrainer)", [])):
        folder = os.path.join(out, "outcome" if extra else "process")
        cmd = [sys.executable, example, "--output_dir", folder, "--max_steps", str(args.learning_steps),
               "--eval_size", str(args.eval_size)] + extra
        if args.model and args.model != "tiny":
            cmd += ["--model_name_or_path", args.model]
        start = time.perf_counter()
        print("running", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        with open(os.path.join(folder, "results.json")) as f:
            results[name] = json.load(f)
        results[name]["wall_seconds"] = time.perf_counter() - start
        results[name].pop("log_history", None)
    print(f"\nlearning at equal steps ({args.learning_steps}) on gsm_symbolic, {args.eval_size} held-out prompts")
    print(f"{'':32s}{'acc before':>11s}{'acc after':>11s}{'steps ok before':>17s}{'steps ok after':>16s}{'wall s':>8s}")
    for name, r in results.items():
        b, a = r["before"], r["after"]
        print(f"{name:32s}{b['accuracy']:11.3f}{a['accuracy']:11.3f}{b['true_step_fraction']:17.3f}"
              f"{a['true_step_fraction']:16.3f}{r['wall_seconds']:8.0f}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model path, 'tiny', or the embedded SmolLM2 (default)")
    parser.add_argument("--reps", type=int, default=4, help="timed rounds per trainer (after one warm-up round)")
    parser.add_argument("--steps", type=int, default=2, help="training steps per round")
    parser.add_argument("--num_generations", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--max_completion_length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--learning", action="store_true", help="run the learning comparison instead of the speed one")
    parser.add_argument("--learning_steps", type=int, default=30)
    parser.add_argument("--eval_size", type=int, default=32)
    parser.add_argument("--output_dir", default=None, help="where the learning runs write (default: a temp dir)")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    args = parser.parse_args()
    result = learning(args) if args.learning else speed(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2, default=str)


if __name__ == "__main__":
    main()
