# Copyright 2025 the trl_ext developers. Apache-2.0.
"""Learning at equal training wall time, over several seeds: trl_ext's trainers vs stock TRL.

Cells (``--cells``; each compares methods at the same training wall-time budget ``--budget_s``, evaluation excluded):

=================  ===========================================================  =====================================
``process_steps``  RFTTrainer vs GRPOTrainer (TRL) vs ProcessGRPOTrainer         chain_sum, 4–5 terms, the prompt asks
                                                                                for each partial sum on its own line
``process_easy``   the same three                                               chain_sum, 2 terms (one step)
``lora_vs_full``   RFTTrainer with LoRA vs RFTTrainer full fine-tuning          chain_sum, 2 terms
``likelihood``     UnifiedLikelihoodTrainer (demos + pairs, one run) vs         gsm_symbolic demonstrations + pairs
                   SFTTrainer then DPOTrainer (TRL), the budget split between
                   them (``--sft_fraction``)
=================  ===========================================================  =====================================

Every (task, method, seed) is one run, in its own subprocess, written to ``<output_dir>/<task>__<method>__seed<k>.json``
after each evaluation (``"complete": false`` until the budget is spent). A rerun of the same command skips the
complete runs and redoes the rest, so a run killed midway keeps what it measured; a finished run whose settings differ
from the command's stops the command (``--overwrite`` replaces it). Runs shared by cells (RFT with LoRA on 2 terms) run
once. Seeds change the training data, the adapter's initialisation, the data order and the sampling; the held-out set
is the same for every seed (``--eval_seed``), so the methods of one seed are compared on the same prompts (paired).

Held-out metrics at ``--evals`` equally spaced points of training wall time: RL cells: greedy accuracy (the task
grader) and the process diagnostics of the greedy completions (steps per completion, the fraction of arithmetic-claim
steps that are true in wrong answers and in right ones); likelihood cell: greedy answer accuracy on gsm_symbolic
questions, preference accuracy (the policy's log-likelihood of the chosen solution above the rejected one's) and
reward-margin accuracy (``(log π − log π₀)(chosen) − (log π − log π₀)(rejected) > 0``, π₀ the model before training,
i.e. DPO's implicit reward margin with the starting model as the reference, the same reference for both pipelines).

Then ``summary.json``, ``summary.md`` (mean ± 95% t interval and min–max over seeds; each pair of methods compared at
the end of the budget, paired by seed and by Welch's test) and one ``<cell>.png`` per cell (mean line, 95% band,
min–max dotted).

    python benchmarks/bench_learning.py --smoke                                          # tiny model, ~2-3 min
    python benchmarks/bench_learning.py --preset gpu --output_dir benchmarks/results/learning/gpu    # H200, ~8 min
    python benchmarks/bench_learning.py --cells process_easy --methods rft grpo --seeds 0 1 2 --budget_s 120 \\
        --eval_size 128 --output_dir benchmarks/results/learning/cpu_small                   # CPU, ~1 h
    python benchmarks/bench_learning.py --plot_only --output_dir benchmarks/results/learning/gpu
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import learning_stats  # noqa: E402

STEP_INSTRUCTION = (
    "Work from left to right. On each line write one partial sum as an equation: the running total, the next "
    "number with its sign, and the new total. Then write the final line."
)
"""Appended to the chain_sum prompts of ``chain_sum_steps`` so that the arithmetic step verifier has steps to credit."""

TASKS = {  # name: reasoning-gym task, its config, extra instruction, completion and eval lengths
    "chain_sum_2": {"task": "chain_sum", "config": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2},
                    "instruction": None, "max_completion_length": 48, "eval_max_new_tokens": 64},
    "chain_sum_steps": {"task": "chain_sum", "config": {"min_terms": 4, "max_terms": 5, "min_digits": 1,
                                                         "max_digits": 2},
                        "instruction": STEP_INSTRUCTION, "max_completion_length": 96, "eval_max_new_tokens": 128},
    "gsm_symbolic": {"task": "gsm_symbolic", "config": {}, "instruction": None, "max_completion_length": None,
                     "eval_max_new_tokens": 160},
}
RL_METRICS = ["accuracy", "correct_step_frac_wrong", "steps_per_completion"]
LIKELIHOOD_METRICS = ["answer_accuracy", "preference_accuracy", "reward_margin_accuracy"]
CELLS = {
    "process_steps": {"task": "chain_sum_steps", "methods": ["rft", "grpo", "process_grpo"], "metrics": RL_METRICS,
                      "title": "chain_sum, 4–5 terms, one partial sum per line: RFT vs GRPO vs ProcessGRPO"},
    "process_easy": {"task": "chain_sum_2", "methods": ["rft", "grpo", "process_grpo"], "metrics": RL_METRICS,
                     "title": "chain_sum, 2 terms: RFT vs GRPO vs ProcessGRPO"},
    "lora_vs_full": {"task": "chain_sum_2", "methods": ["rft", "rft_full"], "metrics": ["accuracy"],
                     "title": "chain_sum, 2 terms: RFTTrainer with LoRA vs full fine-tuning"},
    "likelihood": {"task": "gsm_symbolic", "methods": ["unified", "sft_then_dpo"], "metrics": LIKELIHOOD_METRICS,
                   "title": "gsm_symbolic: UnifiedLikelihoodTrainer (one run) vs SFTTrainer then DPOTrainer"},
}
LABELS = {"rft": "RFTTrainer, LoRA (trl_ext)", "grpo": "GRPOTrainer (TRL)",
          "process_grpo": "ProcessGRPOTrainer (trl_ext)", "rft_full": "RFTTrainer, full fine-tuning (trl_ext)",
          "unified": "UnifiedLikelihoodTrainer (trl_ext)", "sft_then_dpo": "SFTTrainer → DPOTrainer (TRL)"}
METRIC_TITLES = {"accuracy": "held-out accuracy (greedy)",
                 "correct_step_frac_wrong": "true-claim steps in wrong answers (fraction)",
                 "steps_per_completion": "lines per held-out completion",
                 "answer_accuracy": "held-out answer score (greedy; 1 right, 0.01 wrong)",
                 "preference_accuracy": "held-out pairs: log π(chosen) > log π(rejected)",
                 "reward_margin_accuracy": "held-out pairs: implicit reward margin > 0"}
#: dashed lines in the plots: a change of the policy unrelated to the preferences raises about half the margins (0.5)
REFERENCE_LINES = {"reward_margin_accuracy": (0.5, "coin flip (0.5)")}
PRESETS = {
    "smoke": dict(model="tiny", seeds=[0, 1], budget_s=3.0, evals=3, eval_size=6, eval_max_new_tokens=8,
                  max_completion_length=8, train_rows=64, likelihood_rows=16, max_length=256, jobs=0, threads=1,
                  batch_size=4),
    "gpu": dict(seeds=[0, 1, 2], budget_s=90.0, evals=5, eval_size=256, jobs=9, eval_batch_size=128),
}
# settings that change what a run measures: a finished run with other values is not reused
FINGERPRINT = ("model_label", "budget_s", "evals", "eval_size", "eval_questions", "eval_seed", "eval_max_new_tokens",
               "max_completion_length", "num_generations", "batch_size", "learning_rate", "full_learning_rate",
               "likelihood_learning_rate", "beta", "lora_r", "train_rows", "likelihood_rows", "max_length",
               "sft_fraction", "warmup_steps", "device", "precision", "threads", "concurrent_runs")
#: fingerprint settings that older records lack, at the value those records were measured with
LEGACY_SETTINGS = {"warmup_steps": 5}


# ---- the wall-time clock --------------------------------------------------------------------------------------------


class Clock:
    """Training wall time across one or more trainers, paused while evaluating; evaluates at the ``marks``."""

    def __init__(self, marks: list[float], record):
        self.pending, self.record = list(marks), record
        self.offset = 0.0  # training seconds of the previous stages
        self.steps = 0  # optimizer steps of the previous stages

    def callback(self, stop_at: float):
        """A TrainerCallback for one stage: evaluates at the pending marks and stops at ``stop_at`` seconds."""
        from transformers import TrainerCallback

        clock = self

        class WallTimeBudget(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                self.start, self.paused = time.perf_counter(), 0.0

            def elapsed(self) -> float:
                return clock.offset + time.perf_counter() - self.start - self.paused

            def on_step_end(self, args, state, control, **kwargs):
                elapsed = self.elapsed()
                if clock.pending and elapsed >= clock.pending[0]:
                    while clock.pending and elapsed >= clock.pending[0]:
                        clock.pending.pop(0)
                    tic = time.perf_counter()
                    clock.record(elapsed, clock.steps + state.global_step)
                    self.paused += time.perf_counter() - tic
                if elapsed >= stop_at:
                    control.should_training_stop = True
                    clock.offset, clock.steps = elapsed, clock.steps + state.global_step
                return control

        return WallTimeBudget()


# ---- evaluation -----------------------------------------------------------------------------------------------------


def _autocast(cfg: dict):
    import contextlib

    import torch

    if cfg["precision"] == "bf16":
        return torch.autocast(cfg["device"], dtype=torch.bfloat16)
    return contextlib.nullcontext()


def eval_rl(model, tokenizer, held_out, grader, cfg: dict) -> dict:
    """Greedy held-out accuracy and the step diagnostics of the same completions."""
    from trl_ext.evaluation import generate_completions
    from trl_ext.rewards.process import ArithmeticStepVerifier

    prompts = list(held_out["prompt"])
    with _autocast(cfg):
        texts = generate_completions(model, tokenizer, prompts, max_new_tokens=cfg["eval_max_new_tokens"],
                                     batch_size=cfg["eval_batch_size"], progress=None)
    columns = {c: list(held_out[c]) for c in held_out.column_names if c != "prompt"}
    scores = grader(prompts=prompts, completions=[[{"role": "assistant", "content": t}] for t in texts], **columns)
    graded = [s for s in scores if s is not None]
    out = {"accuracy": sum(graded) / len(graded) if graded else None}
    out.update(learning_stats.step_diagnostics(texts, scores, ArithmeticStepVerifier(), separator="\n"))
    out["example"] = texts[0] if texts else ""
    return out


def pair_logps(model, tokenizer, pairs, cfg: dict):
    """Summed log-probabilities of the chosen and the rejected completions of ``pairs`` under ``model``."""
    import torch
    from trl.data_utils import maybe_apply_chat_template

    device = next(model.parameters()).device
    sums = {"chosen": [], "rejected": []}
    was_training = model.training
    model.eval()
    try:
        step = min(8, cfg["eval_batch_size"])  # full-vocabulary logits of long rows: small batches
        for start in range(0, len(pairs), step):
            rows = [pairs[i] for i in range(start, min(start + step, len(pairs)))]
            for side in ("chosen", "rejected"):
                ids, starts = [], []
                for row in rows:
                    text = maybe_apply_chat_template({"prompt": row["prompt"], "completion": row[side]}, tokenizer)
                    prompt_ids = tokenizer(text["prompt"], add_special_tokens=False)["input_ids"]
                    ids.append(prompt_ids + tokenizer(text["completion"], add_special_tokens=False)["input_ids"])
                    starts.append(len(prompt_ids))
                width = max(len(x) for x in ids)
                input_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
                mask = torch.zeros_like(input_ids)
                for k, x in enumerate(ids):
                    input_ids[k, : len(x)] = torch.tensor(x)
                    mask[k, : len(x)] = 1
                with torch.no_grad(), _autocast(cfg):
                    logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits[:, :-1]
                logits = logits.float()
                targets = input_ids[:, 1:, None].to(device)  # log p = logit of the token − logsumexp of the row
                logp = (logits.gather(-1, targets)[..., 0] - torch.logsumexp(logits, -1)).cpu()
                del logits
                for k, x in enumerate(ids):  # token j+1 is predicted at position j
                    sums[side].append(float(logp[k, starts[k] - 1 : len(x) - 1].sum()))
    finally:
        model.train(was_training)
    return torch.tensor(sums["chosen"]), torch.tensor(sums["rejected"])


def eval_likelihood(model, tokenizer, questions, pairs, grader, cfg: dict, start: dict) -> dict:
    """Held-out answer accuracy, preference accuracy and reward-margin accuracy (``start``: the t = 0 log-probs)."""
    out = {"answer_accuracy": eval_rl(model, tokenizer, questions, grader, cfg)["accuracy"]}
    chosen, rejected = pair_logps(model, tokenizer, pairs, cfg)
    out["preference_accuracy"] = float((chosen > rejected).float().mean())
    if "chosen" not in start:
        start.update(chosen=chosen, rejected=rejected)
        out["reward_margin_accuracy"] = None  # the margin is 0 by definition at t = 0
    else:
        margin = (chosen - start["chosen"]) - (rejected - start["rejected"])
        out["reward_margin_accuracy"] = float((margin > 0).float().mean())
        out["mean_reward_margin"] = float(margin.mean())
    out["mean_logp_margin"] = float((chosen - rejected).mean())
    return out


# ---- one run --------------------------------------------------------------------------------------------------------


def _write(path: Path, record: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp, path)


def _prompts(task_key: str, size: int, seed: int, split: str):
    from trl_ext.data import rl_dataset

    spec = TASKS[task_key]
    ds = rl_dataset(spec["task"], size, seed=seed, split=split, conversational=True, **spec["config"])
    if spec["instruction"]:
        def add(row):
            return {"prompt": [{**m, "content": f"{m['content']}\n{spec['instruction']}"} if m["role"] == "user"
                               else m for m in row["prompt"]]}

        ds = ds.map(add)
    return ds


def _lora(cfg: dict):
    from peft import LoraConfig

    return LoraConfig(r=cfg["lora_r"], lora_alpha=2 * cfg["lora_r"], task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


def _common_args(cfg: dict, name: str) -> dict:
    return dict(output_dir=tempfile.mkdtemp(prefix=f"bench_learning_{name}_"), max_steps=100_000,
                logging_steps=1, save_strategy="no", report_to="none", seed=cfg["seed"],
                use_cpu=cfg["device"] == "cpu", bf16=cfg["precision"] == "bf16", disable_tqdm=True,
                lr_scheduler_type="constant_with_warmup", warmup_steps=cfg["warmup_steps"])


def _rl_trainer(cfg: dict, train, tokenizer):
    from trl import GRPOConfig, GRPOTrainer

    from trl_ext.rewards import FormatGrader, default_grader
    from trl_ext.rewards.process import ArithmeticStepVerifier
    from trl_ext.trainers import ProcessGRPOConfig, ProcessGRPOTrainer, RFTConfig, RFTTrainer

    method = cfg["method"]
    common = dict(_common_args(cfg, method), per_device_train_batch_size=cfg["batch_size"],
                  max_completion_length=cfg["max_completion_length"], temperature=0.7, beta=cfg["beta"],
                  reward_weights=[1.0, 0.5], learning_rate=cfg["learning_rate"])
    kwargs = dict(model=cfg["model"], reward_funcs=[default_grader(TASKS[cfg["task_key"]]["task"]), FormatGrader()],
                  train_dataset=train, processing_class=tokenizer, peft_config=_lora(cfg))
    if method in ("rft", "rft_full"):
        if method == "rft_full":
            common["learning_rate"], kwargs["peft_config"] = cfg["full_learning_rate"], None
        config = RFTConfig(num_generations=1, value_head_learning_rate=1e-4, vf_coef=0.1, cliprange_value=0.2,
                           missing_eos_penalty=0.0, **common)
        return RFTTrainer(args=config, **kwargs)
    if method == "process_grpo":
        config = ProcessGRPOConfig(num_generations=cfg["num_generations"], step_separator="\n", **common)
        return ProcessGRPOTrainer(args=config, process_reward_funcs=[ArithmeticStepVerifier()], **kwargs)
    return GRPOTrainer(args=GRPOConfig(num_generations=cfg["num_generations"], **common), **kwargs)


def _likelihood_args(cfg: dict, name: str) -> dict:
    return dict(_common_args(cfg, name), per_device_train_batch_size=cfg["batch_size"],
                learning_rate=cfg["likelihood_learning_rate"], max_length=cfg["max_length"],
                gradient_checkpointing=False, dataloader_pin_memory=False)


START_KEYS = ("model_label", "eval_size", "eval_questions", "eval_seed", "eval_max_new_tokens", "eval_batch_size",
              "device", "precision")
"""What the evaluation before training depends on: a task's runs with these settings start from the same point."""


def start_point(cfg: dict, path: Path, measure, start_logps: dict) -> dict:
    """The t = 0 evaluation of ``cfg``'s task, measured once and shared by the task's runs in ``path``'s folder.

    Before the first step every run's policy is the starting model (LoRA's B = 0; greedy decoding), so the point is the
    same for every method and seed. The first run to get here measures it under a file lock and writes
    ``<task>__start.json``; the others read it (the likelihood cell also gets the starting pair log-probabilities).
    """
    import fcntl

    import torch

    key = {k: cfg.get(k) for k in START_KEYS}
    cache = path.parent / f"{cfg['task_key']}__start.json"
    folder = os.open(path.parent, os.O_RDONLY)  # the lock is on the folder itself: no lock file is left behind
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        stored = json.loads(cache.read_text()) if cache.exists() else None
        if stored and stored["settings"] == key:
            start_logps.update({k: torch.tensor(v) for k, v in stored["start_logps"].items()})
            return stored["point"]
        point = measure()
        _write(cache, {"settings": key, "point": point,
                       "start_logps": {k: v.tolist() for k, v in start_logps.items()}})
        return point
    finally:
        os.close(folder)  # closing releases the lock


def run(cfg: dict, path: Path) -> dict:
    """Train one (task, method, seed) for the budget, evaluating at the marks; the record is rewritten after each."""
    import torch
    from transformers import AutoTokenizer

    from trl_ext.data import demonstration_dataset, preference_dataset, rl_dataset
    from trl_ext.rewards import default_grader

    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    method, seed = cfg["method"], cfg["seed"]
    likelihood = method in ("unified", "sft_then_dpo")
    tokenizer = AutoTokenizer.from_pretrained(cfg["model"], **({} if likelihood else {"padding_side": "left"}))
    grader = default_grader(TASKS[cfg["task_key"]]["task"])
    record = {"task": cfg["task_key"], "method": method, "seed": seed, "label": LABELS[method], "complete": False,
              "settings": cfg, "curve": [], "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    holder: dict = {}
    start_logps: dict = {}
    if likelihood:
        demos = demonstration_dataset(cfg["likelihood_rows"], seed=seed, conversational=True)
        pairs = preference_dataset(cfg["likelihood_rows"], seed=seed + 100, conversational=True)
        questions = rl_dataset("gsm_symbolic", cfg.get("eval_questions") or cfg["eval_size"], seed=cfg["eval_seed"],
                               split="eval", conversational=True)
        eval_pairs = preference_dataset(cfg["eval_size"], seed=cfg["eval_seed"], split="eval", conversational=True)

        def measure() -> dict:
            return eval_likelihood(holder["model"](), tokenizer, questions, eval_pairs, grader, cfg, start_logps)
    else:
        train = _prompts(cfg["task_key"], cfg["train_rows"], seed, "train")
        held_out = _prompts(cfg["task_key"], cfg["eval_size"], cfg["eval_seed"], "eval")

        def measure() -> dict:
            return eval_rl(holder["model"](), tokenizer, held_out, grader, cfg)

    def record_point(elapsed: float, step: int) -> None:
        tic = time.perf_counter()
        metrics = start_point(cfg, path, measure, start_logps) if step == 0 else measure()
        point = {"train_seconds": elapsed, "step": step, **metrics}
        point["eval_seconds"] = time.perf_counter() - tic
        record["curve"].append(point)
        _write(path, record)
        main_metric = point.get("accuracy", point.get("answer_accuracy"))
        print(f"[{time.strftime('%H:%M:%S')}] {path.stem}: t={elapsed:.0f}s step={step} "
              f"accuracy={main_metric if main_metric is None else round(main_metric, 3)}", flush=True)

    budget = cfg["budget_s"]
    marks = [budget * (i + 1) / (cfg["evals"] - 1) for i in range(cfg["evals"] - 1)]
    clock = Clock(marks, record_point)
    logs: list[dict] = []
    if method == "unified":
        from trl_ext.trainers import UnifiedLikelihoodConfig, UnifiedLikelihoodTrainer

        trainer = UnifiedLikelihoodTrainer(
            cfg["model"], args=UnifiedLikelihoodConfig(loss_type=["sft", "sigmoid"], **_likelihood_args(cfg, method)),
            train_dataset=[demos, pairs], processing_class=tokenizer, peft_config=_lora(cfg))
        stages = [(trainer, budget)]
    elif method == "sft_then_dpo":
        from trl import SFTConfig, SFTTrainer

        trainer = SFTTrainer(cfg["model"], args=SFTConfig(completion_only_loss=True, **_likelihood_args(cfg, "sft")),
                             train_dataset=demos, processing_class=tokenizer, peft_config=_lora(cfg))
        stages = [(trainer, budget * cfg["sft_fraction"]), ("dpo", budget)]
    else:
        trainer = _rl_trainer(cfg, train, tokenizer)
        stages = [(trainer, budget)]
    holder["model"] = lambda: trainer.accelerator.unwrap_model(trainer.model)
    record_point(0.0, 0)
    for stage, stop_at in stages:
        if stage == "dpo":  # stage 2 of the stock pipeline: DPO from the merged SFT model (the reference too)
            from trl import DPOConfig, DPOTrainer

            merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
            trainer = DPOTrainer(merged, args=DPOConfig(loss_type=["sigmoid"], **_likelihood_args(cfg, "dpo")),
                                 train_dataset=pairs, processing_class=tokenizer, peft_config=_lora(cfg))
            stage = trainer
        stage.add_callback(clock.callback(stop_at))
        stage.train()
        logs.append({"trainer": type(stage).__name__, "steps": stage.state.global_step,
                     "log_history": stage.state.log_history[-3:]})
    steps = sum(s["steps"] for s in logs)
    if record["curve"][-1]["train_seconds"] < clock.offset:  # the last stage started past the last mark
        record_point(clock.offset, steps)
    rewards = [e["reward"] for e in trainer.state.log_history if "reward" in e]
    record.update(complete=True, stages=logs, finished=time.strftime("%Y-%m-%d %H:%M:%S"),
                  steps=steps)
    if rewards:
        record.update(reward_first10=sum(rewards[:10]) / len(rewards[:10]),
                      reward_last10=sum(rewards[-10:]) / len(rewards[-10:]))
    if torch.cuda.is_available():
        record["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    _write(path, record)
    return record


# ---- driver ---------------------------------------------------------------------------------------------------------


def run_path(output_dir: Path, task: str, method: str, seed: int) -> Path:
    return output_dir / f"{task}__{method}__seed{seed}.json"


def planned_runs(cells: list[str], seeds: list[int], methods: list[str] | None) -> list[tuple[str, str, int]]:
    """Unique (task, method, seed), seed-major so that a stopped command has whole seeds done."""
    out: list[tuple[str, str, int]] = []
    for seed in seeds:
        for cell in cells:
            for method in CELLS[cell]["methods"]:
                key = (CELLS[cell]["task"], method, seed)
                if (methods is None or method in methods) and key not in out:
                    out.append(key)
    return out


def _fingerprint(settings: dict) -> dict:
    return {k: settings.get(k, LEGACY_SETTINGS.get(k)) for k in FINGERPRINT}


def _todo(path: Path, base: dict, overwrite: bool) -> bool:
    """Whether the run at ``path`` must be (re)done; raises if a finished run was measured with other settings."""
    if not path.exists():
        return True
    record = json.loads(path.read_text())
    if not record.get("complete"):
        return True
    stored, now = _fingerprint(record["settings"]), _fingerprint(base)
    if stored != now:
        if overwrite:
            return True
        diff = {k: (stored[k], now[k]) for k in FINGERPRINT if stored[k] != now[k]}
        raise SystemExit(f"{path} was measured with other settings (stored, now): {diff}. Use another --output_dir, "
                         "or --overwrite to redo it.")
    return False


def execute(todo: list[tuple[str, str, int]], base: dict, output_dir: Path, jobs: int) -> None:
    """Run ``todo``: in this process (``jobs == 0``) or in up to ``jobs`` concurrent subprocesses."""
    cfgs = [(dict(base, task_key=t, method=m, seed=s,
                  max_completion_length=base["max_completion_length"] or TASKS[t]["max_completion_length"],
                  eval_max_new_tokens=base["eval_max_new_tokens"] or TASKS[t]["eval_max_new_tokens"]),
             run_path(output_dir, t, m, s)) for t, m, s in todo]
    if jobs == 0:
        for cfg, path in cfgs:
            run(cfg, path)
        return
    logs = output_dir / "logs"
    logs.mkdir(exist_ok=True)
    running: list[tuple[subprocess.Popen, Path, object]] = []
    failed = []
    queue = list(cfgs)
    while queue or running:
        while queue and len(running) < jobs:
            cfg, path = queue.pop(0)
            log = open(logs / f"{path.stem}.log", "w")
            cmd = [sys.executable, __file__, "--worker", json.dumps(cfg), "--record", str(path)]
            running.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), path, log))
            print(f"[{time.strftime('%H:%M:%S')}] started {path.stem} (log: {log.name})", flush=True)
        time.sleep(1.0)
        for proc, path, log in list(running):
            if proc.poll() is not None:
                log.close()
                running.remove((proc, path, log))
                status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}, see {log.name})"
                if proc.returncode:
                    failed.append(path.stem)
                print(f"[{time.strftime('%H:%M:%S')}] {path.stem}: {status}", flush=True)
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed: {failed}")


def load_records(output_dir: Path, task: str, methods: list[str]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for method in methods:
        records = []
        for path in sorted(output_dir.glob(f"{task}__{method}__seed*.json")):
            record = json.loads(path.read_text())
            if record.get("complete"):
                records.append(record)
        if records:
            out[method] = records
    return out


def report(output_dir: Path, cells: list[str]) -> dict:
    """summary.json, summary.md and one PNG per cell from the complete runs in ``output_dir``."""
    summaries, parts = {}, []
    for cell in cells:
        spec = dict(CELLS[cell], name=cell)
        records = load_records(output_dir, spec["task"], spec["methods"])
        if not records:
            continue
        summary = learning_stats.summarize_cell(spec, records)
        any_record = next(iter(records.values()))[0]
        summary["settings"] = _fingerprint(any_record["settings"])
        summaries[cell] = summary
        learning_stats.plot_cell(summary, LABELS, METRIC_TITLES, str(output_dir / f"{cell}.png"), REFERENCE_LINES)
        parts.append(learning_stats.markdown(summary, LABELS))
    if not summaries:
        raise SystemExit(f"no complete runs in {output_dir}")
    (output_dir / "summary.json").write_text(json.dumps(summaries, indent=2, default=str))
    settings = next(iter(summaries.values()))["settings"]
    header = (f"Settings: {json.dumps(settings)}\n\nEvery number: held-out, at the end of the training budget; "
              "± is the 95% Student-t half-width over seeds, [min–max] the seed range.\n")
    (output_dir / "summary.md").write_text(header + "\n" + "\n".join(parts))
    print("\n" + header + "\n" + "\n".join(parts))
    return summaries


def _resolve(args) -> dict:
    """The settings every run of this command shares (model path, device, precision resolved)."""
    import torch

    from trl_ext.models import resolve_model_name_or_path, save_tiny_model

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.preset == "gpu" and device != "cuda":
        raise SystemExit("--preset gpu runs 9 trainings at once on one CUDA device, and none is available here; "
                         "on CPU pick --cells and --jobs 1 instead")
    precision = args.precision if args.precision != "auto" else ("bf16" if device == "cuda" else "fp32")
    if args.model == "tiny":
        model = str(save_tiny_model(Path(tempfile.mkdtemp(prefix="bench_learning_tiny_")) / "tiny"))
    else:
        model = str(resolve_model_name_or_path(args.model))
    threads = args.threads or (max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else 0)
    skip = {"cells", "seeds", "methods", "output_dir", "plot_only", "overwrite", "smoke", "preset", "worker",
            "record", "model"}
    base = {k: v for k, v in vars(args).items() if k not in skip}
    eval_batch = args.eval_batch_size or (128 if device == "cuda" else 16)
    return dict(base, model=model, model_label=args.model or "embedded SmolLM2-135M-Instruct", device=device,
                precision=precision, threads=threads, eval_batch_size=eval_batch, concurrent_runs=max(1, args.jobs))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--cells", nargs="+", choices=list(CELLS), default=list(CELLS))
    add("--methods", nargs="+", choices=list(LABELS), default=None, help="only these methods of the cells")
    add("--seeds", nargs="+", type=int, default=[0, 1, 2])
    add("--smoke", action="store_true", help="the 'smoke' preset: tiny random model, seconds of training")
    add("--preset", choices=list(PRESETS), default=None, help="defaults for a machine (explicit flags still win)")
    add("--model", default=None, help="model path, 'tiny', or the embedded SmolLM2-135M-Instruct (default)")
    add("--device", choices=["auto", "cpu", "cuda"], default="auto")
    add("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="auto: bf16 on cuda, else fp32")
    add("--budget_s", type=float, default=480.0, help="training wall time per run, seconds (evaluation excluded)")
    add("--evals", type=int, default=5, help="evaluation points, including before training")
    add("--eval_size", type=int, default=128, help="held-out prompts (and held-out pairs)")
    add("--eval_questions", type=int, default=None,
        help="likelihood cell: held-out gsm_symbolic questions of the answer accuracy (greedy generation, the slow "
             "part); default: --eval_size")
    add("--eval_seed", type=int, default=0, help="seed of the held-out set (the same for every training seed)")
    add("--eval_max_new_tokens", type=int, default=None, help="default: per task (64 / 128 / 160)")
    add("--eval_batch_size", type=int, default=None, help="default: 128 on cuda, 16 on cpu")
    add("--max_completion_length", type=int, default=None, help="RL completions; default: per task (48 / 96)")
    add("--num_generations", type=int, default=4, help="GRPO group size (RFT: 1 completion per prompt)")
    add("--batch_size", type=int, default=8, help="completions (RL) or rows (likelihood) per step")
    add("--learning_rate", type=float, default=2e-4, help="RL runs with LoRA")
    add("--full_learning_rate", type=float, default=1e-5, help="RFT full fine-tuning")
    add("--likelihood_learning_rate", type=float, default=1e-4, help="the likelihood cell (LoRA)")
    add("--beta", type=float, default=0.02, help="KL coefficient of the RL runs")
    add("--lora_r", type=int, default=16, help="LoRA rank (alpha = 2 r), all attention and MLP projections")
    add("--train_rows", type=int, default=2000, help="RL training prompts")
    add("--likelihood_rows", type=int, default=256, help="demonstrations and pairs of the likelihood cell")
    add("--max_length", type=int, default=384, help="likelihood cell: token limit of prompt + completion")
    add("--sft_fraction", type=float, default=0.5, help="share of the budget SFT gets in SFT-then-DPO")
    add("--warmup_steps", type=int, default=5,
        help="linear learning-rate warm-up of every trainer (then constant); each stage of SFT-then-DPO warms up "
             "again. Use 0 when a run gets only a few steps (the first step of a warm-up has learning rate 0)")
    add("--jobs", type=int, default=1, help="concurrent runs (0: in this process; on a GPU, e.g. 9)")
    add("--threads", type=int, default=0, help="torch threads per run (0: torch's default, or cpus / jobs)")
    add("--output_dir", default=None, help="default: benchmarks/results/learning/runs (smoke: a temporary folder)")
    add("--overwrite", action="store_true", help="redo finished runs measured with other settings")
    add("--plot_only", action="store_true", help="only the summary, tables and plots of the runs in --output_dir")
    add("--worker", help=argparse.SUPPRESS)
    add("--record", help=argparse.SUPPRESS)
    preset = parser.parse_known_args(argv)[0]
    name = "smoke" if preset.smoke else preset.preset
    if name:
        parser.set_defaults(**PRESETS[name])
    args = parser.parse_args(argv)
    if args.evals < 2:
        parser.error("--evals must be at least 2 (before training and at the end of the budget)")
    if not 0 < args.sft_fraction < 1:
        parser.error("--sft_fraction must be strictly between 0 and 1")
    if args.output_dir is None:
        args.output_dir = (tempfile.mkdtemp(prefix="bench_learning_smoke_") if name == "smoke"
                           else str(HERE / "results" / "learning" / "runs"))
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.worker:
        run(json.loads(args.worker), Path(args.record))
        return {}
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if not args.plot_only:
        started = time.perf_counter()
        base = _resolve(args)
        runs = planned_runs(args.cells, args.seeds, args.methods)
        todo = [r for r in runs if _todo(run_path(output_dir, *r), base, args.overwrite)]
        print(f"{len(runs)} runs planned, {len(runs) - len(todo)} already complete in {output_dir}; device "
              f"{base['device']}, {base['precision']}, {args.jobs} concurrent", flush=True)
        execute(todo, base, output_dir, args.jobs)
        print(f"measured {len(todo)} runs in {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    return report(output_dir, args.cells)


if __name__ == "__main__":
    main()
