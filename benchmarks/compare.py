# Copyright 2026 trl_ext developers. Apache-2.0.
"""trl_ext vs stock TRL, side by side in one run: step time, tokens/s and peak memory at equal settings.

Comparisons (trl_ext side / stock TRL side):

=============  =======================================================  ==============================================
``rft``        ``RFTTrainer``                                           ``GRPOTrainer``
``process``    ``ProcessGRPOTrainer`` (+ arithmetic step verifier)      ``GRPOTrainer``
``pairs``      ``UnifiedLikelihoodTrainer(loss_type=["sigmoid"])``      ``DPOTrainer(loss_type=["sigmoid"])``
``demos``      ``UnifiedLikelihoodTrainer(loss_type=["sft"])``          ``SFTTrainer`` (completion-only loss)
``mixed``      one ``UnifiedLikelihoodTrainer(["sft", "sigmoid"])`` run  ``SFTTrainer`` → save → ``DPOTrainer`` from it
``pairs_pf``   ``pairs`` with ``padding_free=True``                     ``DPOTrainer`` with ``padding_free=True``
``demos_pf``   ``demos`` with ``padding_free=True``                     ``SFTTrainer`` with ``padding_free=True``
=============  =======================================================  ==============================================

``*_pf``: both sides are configured padding-free. Ours packs the sequences of a batch into one row (``position_ids``);
SFTTrainer packs likewise; TRL 1.16's ``DPOTrainer`` accepts the flag but falls back to padding (it warns so), so
``pairs_pf`` measures our packed forward against DPOTrainer's padded one. Both sides of a ``*_pf`` run use
``max_length=None`` (SFTTrainer refuses a ``max_length`` it would not enforce when padding-free without packing).

Both sides of a comparison get the same model, data, seed, batch size, lengths, learning rate and precision. RL
runs: ``--rl_batch`` completions per step in groups of ``--num_generations``, generation pinned to exactly
``--max_completion_length`` tokens (``min_new_tokens``) so both sides generate the same number of tokens, the same
KL coefficient and the same reward function (the chain_sum grader). Every run is a fresh subprocess (its peak RSS
is its own ``ru_maxrss``; on GPU also ``torch.cuda.max_memory_allocated``); the two sides alternate and swap order
every repetition so that drifting machine load hits both alike; the first ``--warmup`` steps of each run are
dropped. Per run: median step time (``on_step_begin`` → ``on_step_end``: generation, scoring, forward, backward,
optimizer), tokens/s (TRL's logged ``num_tokens``: non-padding prompt+completion tokens, over the measured steps'
time), peak RSS. ``mixed`` compares whole pipelines: wall time of the process(es), model loads and save included.
Ratios are trl_ext / stock of the medians over repetitions (< 1: trl_ext is faster or smaller).

    python benchmarks/compare.py                               # all five, embedded SmolLM2-135M (~25 min, 2 CPUs)
    python benchmarks/compare.py --only rft process --reps 5
    python benchmarks/compare.py --model tiny --reps 1 --steps 1 --out /tmp/smoke.json     # smoke test, seconds

Results are printed as a table and written to ``--out`` (default ``benchmarks/results/compare.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

HERE = Path(__file__).resolve().parent
COMPARISONS = {  # name: (trl_ext run, stock run, what the ratio is of)
    "rft": ("rft", "grpo", "RFTTrainer / GRPOTrainer"),
    "process": ("process_grpo", "grpo", "ProcessGRPOTrainer / GRPOTrainer"),
    "pairs": ("unified_pairs", "dpo", "Unified / DPOTrainer (pairs)"),
    "demos": ("unified_demos", "sft", "Unified / SFTTrainer (demonstrations)"),
    "mixed": ("unified_mixed", "sft_then_dpo", "Unified mixed / SFT-then-DPO"),
    "pairs_pf": ("unified_pairs_pf", "dpo_pf", "Unified / DPOTrainer (pairs, padding_free)"),
    "demos_pf": ("unified_demos_pf", "sft_pf", "Unified / SFTTrainer (demos, padding_free)"),
}


# ---- worker: one training run in a fresh process ------------------------------------------------------------------


def _timed_train(trainer, warmup: int) -> dict:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self.t0)

    timer = StepTimer()
    trainer.add_callback(timer)
    t0 = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t0
    totals = [e["num_tokens"] for e in trainer.state.log_history if "num_tokens" in e]
    per_step = [b - a for a, b in zip([0.0] + totals[:-1], totals)]
    measured = slice(warmup, None) if len(timer.times) > warmup else slice(None)
    tokens, seconds = sum(per_step[measured]), sum(timer.times[measured])
    return {"train_s": train_s, "step_s": timer.times[measured], "tokens": tokens,
            "tokens_per_s": tokens / seconds if seconds else None}


def _rl_trainer(run: str, cfg: dict, out: str):
    import torch
    from trl import GRPOConfig, GRPOTrainer

    from trl_ext.data import rl_dataset
    from trl_ext.rewards import default_grader
    from trl_ext.rewards.process import ArithmeticStepVerifier
    from trl_ext.trainers import ProcessGRPOConfig, ProcessGRPOTrainer, RFTConfig, RFTTrainer

    dataset = rl_dataset("chain_sum", 64, seed=0, conversational=True, max_terms=3)
    common = dict(
        output_dir=out, per_device_train_batch_size=cfg["rl_batch"], num_generations=cfg["num_generations"],
        max_completion_length=cfg["max_completion_length"],
        generation_kwargs={"min_new_tokens": cfg["max_completion_length"]}, max_steps=cfg["warmup"] + cfg["steps"],
        learning_rate=1e-6, beta=0.04, loss_type="bnpo", logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=not torch.cuda.is_available(), bf16=torch.cuda.is_available(), seed=0, disable_tqdm=True,
    )
    kwargs = dict(model=cfg["model"], reward_funcs=[default_grader("chain_sum")], train_dataset=dataset)
    if run == "grpo":
        return GRPOTrainer(args=GRPOConfig(**common), **kwargs)
    if run == "rft":
        return RFTTrainer(args=RFTConfig(**common), **kwargs)
    return ProcessGRPOTrainer(args=ProcessGRPOConfig(step_separator="\n", **common),
                              process_reward_funcs=[ArithmeticStepVerifier()], **kwargs)


def _likelihood_trainer(run: str, model: str, cfg: dict, out: str):
    import torch
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from trl_ext.data import demonstration_dataset, preference_dataset
    from trl_ext.trainers import UnifiedLikelihoodConfig, UnifiedLikelihoodTrainer

    demos = demonstration_dataset(cfg["rows"], seed=0, conversational=True)
    pairs = preference_dataset(cfg["rows"], seed=1, conversational=True)
    common = dict(output_dir=out, per_device_train_batch_size=cfg["batch_size"], num_train_epochs=1,
                  learning_rate=1e-5, max_length=cfg["max_length"], bf16=torch.cuda.is_available(),
                  use_cpu=not torch.cuda.is_available(), gradient_checkpointing=False, logging_steps=1,
                  save_strategy="no", report_to="none", seed=0, dataloader_pin_memory=False, disable_tqdm=True,
                  padding_free=run.endswith("_pf"))
    if run.endswith("_pf"):  # SFTTrainer enforces no max_length when padding-free without packing: neither side
        common["max_length"] = None
    run = run.removesuffix("_pf")
    if run == "dpo":
        return DPOTrainer(model, args=DPOConfig(loss_type=["sigmoid"], **common), train_dataset=pairs)
    if run == "sft":
        return SFTTrainer(model, args=SFTConfig(completion_only_loss=True, **common), train_dataset=demos)
    loss_type, data = {"unified_pairs": (["sigmoid"], pairs), "unified_demos": (["sft"], demos),
                       "unified_mixed": (["sft", "sigmoid"], [demos, pairs])}[run]
    return UnifiedLikelihoodTrainer(model, args=UnifiedLikelihoodConfig(loss_type=loss_type, **common),
                                    train_dataset=data)


def worker(run: str, cfg: dict) -> dict:
    import torch

    torch.manual_seed(0)
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if run in ("rft", "process_grpo", "grpo"):
            trainer = _rl_trainer(run, cfg, tmp)
        elif run == "sft_stage":  # stage 1 of SFT-then-DPO: train on demonstrations, save for stage 2
            trainer = _likelihood_trainer("sft", cfg["model"], cfg, tmp)
        elif run == "dpo_stage":  # stage 2: DPO from the SFT model (also its reference)
            trainer = _likelihood_trainer("dpo", cfg["save_dir"], cfg, tmp)
        else:
            trainer = _likelihood_trainer(run, cfg["model"], cfg, tmp)
        init_s = time.perf_counter() - t0
        result = {"init_s": init_s, **_timed_train(trainer, cfg["warmup"])}
        if run == "sft_stage":
            trainer.save_model(cfg["save_dir"])
            trainer.processing_class.save_pretrained(cfg["save_dir"])
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


# ---- driver -------------------------------------------------------------------------------------------------------


def _subprocess(run: str, cfg: dict) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--worker", run, "--worker_cfg", json.dumps(cfg)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark run {run!r} failed:\n{proc.stderr[-4000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return {**json.loads(line[len("RESULT "):]), "wall_s": time.perf_counter() - t0}


def run_side(run: str, cfg: dict) -> dict:
    """One measured run of a side (the SFT-then-DPO pipeline is two processes, summed)."""
    if run != "sft_then_dpo":
        return _subprocess(run, cfg)
    with tempfile.TemporaryDirectory() as save_dir:
        stages = [_subprocess(stage, {**cfg, "save_dir": save_dir}) for stage in ("sft_stage", "dpo_stage")]
    step_s = stages[0]["step_s"] + stages[1]["step_s"]
    result = {"stages": stages, "step_s": step_s, "tokens": sum(s["tokens"] for s in stages)}
    result["tokens_per_s"] = result["tokens"] / sum(step_s)
    for key in ("wall_s", "train_s", "init_s"):
        result[key] = sum(s[key] for s in stages)
    for key in ("peak_rss_mib", "peak_gpu_mib"):
        if key in stages[0]:
            result[key] = max(s[key] for s in stages)
    return result


METRICS = {  # name: (from a run, shown in the table)
    "step_s": lambda r: statistics.median(r["step_s"]),
    "tokens_per_s": lambda r: r["tokens_per_s"],
    "peak_rss_mib": lambda r: r["peak_rss_mib"],
    "peak_gpu_mib": lambda r: r.get("peak_gpu_mib"),
    "wall_s": lambda r: r["wall_s"],
}


def summarize(runs: list[dict]) -> dict:
    out = {}
    for metric, get in METRICS.items():
        values = [get(r) for r in runs if get(r) is not None]
        if values:
            out[metric] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return out


def machine() -> dict:
    import torch

    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    import accelerate
    import transformers
    import trl

    info.update(torch=torch.__version__, transformers=transformers.__version__, trl=trl.__version__,
                accelerate=accelerate.__version__)
    return info


def print_table(report: dict) -> None:
    print("\nratio = trl_ext / stock TRL (median over repetitions; < 1 is faster/smaller; tokens/s > 1 is faster)")
    header = f"{'comparison':40s}{'step time':>11s}{'tokens/s':>10s}{'peak RSS':>10s}{'peak GPU':>10s}{'wall':>8s}"
    print(header)
    print("-" * len(header))
    for name, comp in report["comparisons"].items():
        cells = []
        for metric in METRICS:
            ratio = comp["ratios"].get(metric)
            cells.append(f"{ratio:.3f}" if ratio is not None else "-")
        print(f"{comp['label']:40s}{cells[0]:>11s}{cells[1]:>10s}{cells[2]:>10s}{cells[3]:>10s}{cells[4]:>8s}")
    print("\nabsolute medians (trl_ext | stock): step s, tokens/s, peak RSS MiB")
    for name, comp in report["comparisons"].items():
        ours, stock = comp["trl_ext"], comp["stock"]
        print(f"{comp['label']:40s}"
              + "  ".join(f"{m}: {ours[m]['median']:.2f} | {stock[m]['median']:.2f}"
                          for m in ("step_s", "tokens_per_s", "peak_rss_mib")))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=list(COMPARISONS), default=list(COMPARISONS))
    parser.add_argument("--model", default=None, help="model path, 'tiny', or the embedded SmolLM2 (default)")
    parser.add_argument("--reps", type=int, default=3, help="alternating repetitions of each side")
    parser.add_argument("--steps", type=int, default=4, help="measured RL steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="first steps of each run not measured")
    parser.add_argument("--rl_batch", type=int, default=4, help="completions per RL step")
    parser.add_argument("--num_generations", type=int, default=4)
    parser.add_argument("--max_completion_length", type=int, default=32)
    parser.add_argument("--rows", type=int, default=12, help="demonstrations and pairs (one epoch each)")
    parser.add_argument("--batch_size", type=int, default=2, help="rows per step of the likelihood trainers")
    parser.add_argument("--max_length", type=int, default=384)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    parser.add_argument("--out", default=str(HERE / "results" / "compare.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker_cfg", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, json.loads(args.worker_cfg))), flush=True)
        return {}

    from trl_ext.models import resolve_model_name_or_path, save_tiny_model

    tmp = tempfile.mkdtemp(prefix="trl_ext_compare_")
    model = str(save_tiny_model(os.path.join(tmp, "tiny"))) if args.model == "tiny" else str(
        resolve_model_name_or_path(args.model))
    cfg = {k: v for k, v in vars(args).items() if k not in ("only", "out", "worker", "worker_cfg")} | {"model": model}
    report: dict = {"settings": cfg, "machine": machine(), "comparisons": {}}
    started = time.perf_counter()
    for name in args.only:
        ours_run, stock_run, label = COMPARISONS[name]
        runs: dict[str, list[dict]] = {"trl_ext": [], "stock": []}
        for rep in range(args.reps):
            order = [("stock", stock_run), ("trl_ext", ours_run)]
            if rep % 2:
                order.reverse()
            for side, run in order:
                result = run_side(run, cfg)
                runs[side].append(result)
                print(f"[{name}] rep {rep} {run:>14s}: step {statistics.median(result['step_s']):.3f} s, "
                      f"{result['tokens_per_s'] or 0:.0f} tokens/s, peak RSS {result['peak_rss_mib']:.0f} MiB, "
                      f"wall {result['wall_s']:.1f} s", flush=True)
        ours, stock = summarize(runs["trl_ext"]), summarize(runs["stock"])
        ratios = {m: ours[m]["median"] / stock[m]["median"] for m in ours if m in stock and stock[m]["median"]}
        report["comparisons"][name] = {"label": label, "trl_ext_trainer": ours_run, "stock_trainer": stock_run,
                                       "trl_ext": ours, "stock": stock, "ratios": ratios, "runs": runs}
    report["total_s"] = time.perf_counter() - started
    print_table(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out} ({report['total_s'] / 60:.1f} min)")
    return report


if __name__ == "__main__":
    main()
