# Copyright 2026 trl_ext developers. Apache-2.0.
"""UnifiedLikelihoodTrainer vs stock TRL at equal settings: step time and peak RSS, side by side.

Comparisons (same model, data, batch size, max_length, learning rate, precision; every run in its own subprocess so
that peak RSS (``ru_maxrss``) is the run's own; repetitions alternate between the two sides so that drifting load
on a shared machine hits both alike):

1. ``pairs``  — ``DPOTrainer(loss_type=["sigmoid"])`` vs ``UnifiedLikelihoodTrainer(loss_type=["sigmoid"])`` on
   preference pairs (goal: step time ratio ≤ 1.0, peak RSS ratio ≤ 1.0);
2. ``demos``  — ``SFTTrainer`` (completion-only loss) vs ``UnifiedLikelihoodTrainer(loss_type=["sft"])`` on
   demonstrations (goal ≤ 1.0);
3. ``mixed``  — one ``UnifiedLikelihoodTrainer(loss_type=["sft", "sigmoid"])`` run over demonstrations + pairs vs the
   usual pipeline SFT-then-DPO (``SFTTrainer`` on the demonstrations, save, ``DPOTrainer`` on the pairs from the SFT
   model, which is also its reference); each row is seen once on both sides (goal: time ratio ≤ 0.8).

Usage (wrap in the shared lock on the 2-core machine):

    flock /tmp/trl_ext_heavy.lock python benchmarks/bench_unified.py                  # embedded SmolLM2-135M
    python benchmarks/bench_unified.py --model /tmp/tiny --rows 8 --reps 1             # quick smoke run

Ratios are unified / stock of the medians over repetitions (and of the best runs, ``ratio_of_best``, which is
less sensitive to other load on a shared machine). Results: printed as a table and written to
``benchmarks/results/unified.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent


# ---- worker (runs in a subprocess) -------------------------------------------------------------------------------


def _data(kind: str, rows: int, seed: int):
    from trl_ext.data import demonstration_dataset, preference_dataset

    if kind == "demos":
        return demonstration_dataset(rows, seed=seed, conversational=True)
    if kind == "pairs":
        return preference_dataset(rows, seed=seed + 1, conversational=True)
    return [demonstration_dataset(rows, seed=seed, conversational=True),
            preference_dataset(rows, seed=seed + 1, conversational=True)]


def _common(cfg: dict, out: str) -> dict:
    return dict(output_dir=out, per_device_train_batch_size=cfg["batch_size"], num_train_epochs=1,
                learning_rate=1e-5, max_length=cfg["max_length"], bf16=False, gradient_checkpointing=False,
                logging_steps=1, save_strategy="no", report_to="none", seed=0, dataloader_pin_memory=False,
                disable_tqdm=True)


def _train(trainer) -> dict:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self._t = [], None

        def on_step_begin(self, args, state, control, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self._t)

    timer = StepTimer()
    trainer.add_callback(timer)
    t0 = time.perf_counter()
    trainer.train()
    return {"train_s": time.perf_counter() - t0, "step_s": timer.times}


def _stage(trainer_name: str, model: str, data, cfg: dict, out: str, save: bool = False) -> dict:
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from trl_ext.trainers.unified import UnifiedLikelihoodConfig, UnifiedLikelihoodTrainer

    t0 = time.perf_counter()
    common = _common(cfg, out)
    if trainer_name == "dpo":
        trainer = DPOTrainer(model, args=DPOConfig(loss_type=["sigmoid"], **common), train_dataset=data)
    elif trainer_name == "sft":
        trainer = SFTTrainer(model, args=SFTConfig(completion_only_loss=True, **common), train_dataset=data)
    else:
        args = UnifiedLikelihoodConfig(loss_type=cfg["loss_type"], **common)
        trainer = UnifiedLikelihoodTrainer(model, args=args, train_dataset=data)
    init_s = time.perf_counter() - t0
    result = {"init_s": init_s, **_train(trainer)}
    if save:
        t1 = time.perf_counter()
        trainer.save_model(out)
        result["save_s"] = time.perf_counter() - t1
    return result


def worker(cfg: dict) -> dict:
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if cfg.get("run") == "sft_then_dpo_sft":  # stage 1 of the pipeline: SFT, save the model for stage 2
            res = _stage("sft", cfg["model"], _data("demos", cfg["rows"], 0), cfg, cfg["save_dir"], save=True)
        elif cfg.get("run") == "sft_then_dpo_dpo":  # stage 2: DPO from the SFT model (also the reference)
            res = _stage("dpo", cfg["save_dir"], _data("pairs", cfg["rows"], 0), cfg, tmp)
        else:
            res = _stage(cfg["trainer"], cfg["model"], _data(cfg["data"], cfg["rows"], 0), cfg, tmp)
    res["in_process_s"] = time.perf_counter() - t_start
    res["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


# ---- driver ------------------------------------------------------------------------------------------------------


def _run(cfg: dict) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"worker {cfg['name']} failed:\n{proc.stderr[-4000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    res = json.loads(line[len("RESULT "):])
    res["wall_s"] = wall
    return res


def _median_step(res: dict, warmup: int) -> float:
    steps = res["step_s"][warmup:] or res["step_s"]
    return statistics.median(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help="Model path (default: the embedded SmolLM2-135M-Instruct).")
    parser.add_argument("--rows", type=int, default=12, help="Rows per kind (demonstrations, pairs).")
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--max_length", type=int, default=384)
    parser.add_argument("--reps", type=int, default=3, help="Alternating repetitions of each side.")
    parser.add_argument("--warmup", type=int, default=1, help="Steps excluded from the median step time.")
    parser.add_argument("--only", nargs="*", default=["pairs", "demos", "mixed"])
    parser.add_argument("--out", default=str(HERE / "results" / "unified.json"))
    a = parser.parse_args()
    if a.worker:
        print("RESULT " + json.dumps(worker(json.loads(a.worker))), flush=True)
        return

    from trl_ext.models import resolve_model_name_or_path

    model = str(resolve_model_name_or_path(a.model))
    base = {"model": model, "rows": a.rows, "batch_size": a.batch_size, "max_length": a.max_length}
    sides = {
        "pairs": ({**base, "name": "dpo", "trainer": "dpo", "data": "pairs"},
                  {**base, "name": "unified", "trainer": "unified", "data": "pairs", "loss_type": ["sigmoid"]}),
        "demos": ({**base, "name": "sft", "trainer": "sft", "data": "demos"},
                  {**base, "name": "unified", "trainer": "unified", "data": "demos", "loss_type": ["sft"]}),
        "mixed": ({**base, "name": "sft_then_dpo", "run": "pipeline"},
                  {**base, "name": "unified", "trainer": "unified", "data": "mixed", "loss_type": ["sft", "sigmoid"]}),
    }
    report: dict = {"settings": {**base, "reps": a.reps, "warmup": a.warmup}, "comparisons": {}}
    for name in a.only:
        stock_cfg, ours_cfg = sides[name]
        runs: dict[str, list[dict]] = {"stock": [], "ours": []}
        for rep in range(a.reps):
            order = [("stock", stock_cfg), ("ours", ours_cfg)]
            if rep % 2:
                order.reverse()
            for side, cfg in order:
                if cfg.get("run") == "pipeline":
                    with tempfile.TemporaryDirectory() as save_dir:
                        s1 = _run({**cfg, "run": "sft_then_dpo_sft", "save_dir": save_dir})
                        s2 = _run({**cfg, "run": "sft_then_dpo_dpo", "save_dir": save_dir})
                    res = {"wall_s": s1["wall_s"] + s2["wall_s"],
                           "in_process_s": s1["in_process_s"] + s2["in_process_s"],
                           "train_s": s1["train_s"] + s2["train_s"],
                           "step_s": s1["step_s"] + s2["step_s"],
                           "peak_rss_mib": max(s1["peak_rss_mib"], s2["peak_rss_mib"]),
                           "stages": [s1, s2]}
                else:
                    res = _run(cfg)
                runs[side].append(res)
                print(f"[{name}] rep {rep} {cfg['name']:>13}: step {_median_step(res, a.warmup):.3f}s  "
                      f"train {res['train_s']:.1f}s  in-process {res['in_process_s']:.1f}s  wall {res['wall_s']:.1f}s  "
                      f"peak RSS {res['peak_rss_mib']:.0f} MiB", flush=True)

        def med(side, f):
            return statistics.median(f(r) for r in runs[side])

        def best(side, f):
            return min(f(r) for r in runs[side])

        summary = {}
        for metric, f in {
            "median_step_s": lambda r: _median_step(r, a.warmup),
            "train_s": lambda r: r["train_s"],
            "in_process_s": lambda r: r["in_process_s"],
            "wall_s": lambda r: r["wall_s"],
            "peak_rss_mib": lambda r: r["peak_rss_mib"],
        }.items():
            s, o = med("stock", f), med("ours", f)
            bs, bo = best("stock", f), best("ours", f)
            summary[metric] = {"stock": round(s, 4), "unified": round(o, 4), "ratio": round(o / s, 3),
                               "ratio_of_best": round(bo / bs, 3)}
        report["comparisons"][name] = {"stock": stock_cfg["name"], "summary": summary, "runs": runs}
        print(f"== {name}: unified / {stock_cfg['name']} ratios: "
              + ", ".join(f"{k} {v['ratio']} (best-of {v['ratio_of_best']})" for k, v in summary.items()), flush=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
