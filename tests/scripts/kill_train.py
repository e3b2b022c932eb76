"""The training run that tests/test_reliability_kill.py SIGKILLs and restarts (issue 14, "Done when").

One trainer (``rft``, ``rft_spg2`` = RFT with ``steps_per_generation=2``, ``process_grpo`` or ``unified``) on the tiny
model for 2 epochs of 8 steps, a checkpoint after every step (``save_total_limit=2``), each save made slow in its
middle (after the model and value head are written, before optimizer / scheduler / RNG / rollout buffer /
``trainer_state.json``) so that kills land inside saves. Restarts resume with ``resume_from_checkpoint=True`` as soon
as ``output_dir`` holds a ``checkpoint-N`` folder. At the end the final weights go to ``output_dir/final``.

Events are appended, one flushed line each, to ``events`` (``<attempt> <unix time> TRAIN_BEGIN <step>``,
``… SAVE_BEGIN <step>``, ``… SAVE_END <step>``, ``… DONE <step>``), so the killer knows where each kill landed.

Run as a script::

    python tests/scripts/kill_train.py CASE MODEL OUTPUT_DIR EVENTS [--attempt A] [--save-delay S]

The test calls :func:`run` in processes forked from a forkserver that imported this module once (a restart then
costs the trainer set-up, not the imports).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import TrainerCallback

from trl_ext.trainers.process_grpo import ProcessGRPOConfig, ProcessGRPOTrainer
from trl_ext.trainers.rft import RFTConfig, RFTTrainer
from trl_ext.trainers.unified import UnifiedLikelihoodConfig, UnifiedLikelihoodTrainer

CASES = ("rft", "rft_spg2", "process_grpo", "unified")
PROMPTS = ["What is 2+2?", "Compute 3*5.", "Add 7 and 8.", "What is 10-4?"]
STEPS = 8
"""Total optimizer steps of every case (2 epochs of 4 steps)."""


def char_variety(completions, **kwargs):
    """A reward that differs between completions (distinct characters / 10)."""
    return [len(set(str(c))) / 10.0 for c in completions]


class _Events:
    def __init__(self, path: str, attempt: str):
        self.path, self.attempt = path, attempt

    def __call__(self, *words) -> None:
        with open(self.path, "a") as f:
            f.write(" ".join([self.attempt, f"{time.time():.3f}", *map(str, words)]) + "\n")
            f.flush()


class _TrainBegin(TrainerCallback):
    def __init__(self, log: _Events):
        self.log = log

    def on_train_begin(self, args, state, control, **kwargs):
        self.log("TRAIN_BEGIN", state.global_step)


def _common(out: str) -> dict:
    return dict(output_dir=out, num_train_epochs=2, logging_steps=1, learning_rate=1e-3, report_to="none",
                save_strategy="steps", save_steps=1, save_total_limit=2, use_cpu=True, bf16=False, seed=0,
                disable_tqdm=True, dataloader_pin_memory=False)


def build(case: str, model: str, out: str, max_steps: int = -1):
    """The trainer of ``case`` (not trained yet); ``max_steps > 0`` stops before the 2 epochs."""
    prompts = Dataset.from_dict({"prompt": PROMPTS})
    common = dict(max_steps=max_steps, **_common(out))
    grpo = dict(per_device_train_batch_size=4, num_generations=4, max_completion_length=6, **common)
    if case in ("rft", "rft_spg2"):
        args = RFTConfig(beta=0.1, kl_target=0.5, value_head_learning_rate=1e-2, validate_reward_funcs=False,
                         steps_per_generation=2 if case == "rft_spg2" else None, **grpo)
        return RFTTrainer(model=model, reward_funcs=char_variety, args=args, train_dataset=prompts)
    if case == "process_grpo":
        args = ProcessGRPOConfig(**grpo)
        return ProcessGRPOTrainer(model=model, reward_funcs=char_variety, args=args, train_dataset=prompts)
    if case == "unified":
        pairs = Dataset.from_dict({"prompt": PROMPTS, "chosen": [" 4", " 15", " 15", " 6"],
                                   "rejected": [" 5", " 7", " 8", " 5"]})
        args = UnifiedLikelihoodConfig(per_device_train_batch_size=1, **common)
        return UnifiedLikelihoodTrainer(model, args=args, train_dataset=pairs)
    raise ValueError(f"kill_train: unknown case {case!r}; one of {CASES}")


def _instrument(trainer, log: _Events, save_delay: float) -> None:
    """Log each checkpoint save's begin and end; sleep ``save_delay`` s in its middle."""
    save_checkpoint = trainer._save_checkpoint
    save_optimizer = trainer._save_optimizer_and_scheduler

    def logged_save_checkpoint(model, trial):
        log("SAVE_BEGIN", trainer.state.global_step)
        save_checkpoint(model, trial)
        log("SAVE_END", trainer.state.global_step)

    def slow_save_optimizer(output_dir):
        time.sleep(save_delay)  # model, value head, rft_state.json written; the rest not yet
        save_optimizer(output_dir)

    trainer._save_checkpoint = logged_save_checkpoint
    trainer._save_optimizer_and_scheduler = slow_save_optimizer
    trainer.add_callback(_TrainBegin(log))


def run(case: str, model: str, out: str, events: str, attempt: str = "0", save_delay: float = 0.3,
        log_file: str | None = None, max_steps: int = -1) -> None:
    """Train ``case`` to the end (resuming when ``out`` has a checkpoint), then save the final weights."""
    if log_file:
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    torch.set_num_threads(1)
    log = _Events(events, attempt)
    trainer = build(case, model, out, max_steps=max_steps)
    _instrument(trainer, log, save_delay)
    resume = True if any(p.is_dir() for p in Path(out).glob("checkpoint-*")) else None
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(os.path.join(out, "final"))
    log("DONE", trainer.state.global_step)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=CASES)
    parser.add_argument("model")
    parser.add_argument("output_dir")
    parser.add_argument("events")
    parser.add_argument("--attempt", default="0")
    parser.add_argument("--save-delay", type=float, default=0.3)
    parser.add_argument("--max-steps", type=int, default=-1)
    args = parser.parse_args(argv)
    run(args.case, args.model, args.output_dir, args.events, attempt=args.attempt, save_delay=args.save_delay,
        max_steps=args.max_steps)


if __name__ == "__main__":
    sys.exit(main())
