# Copyright 2026 trl_ext developers. Apache-2.0.
"""``trl-ext unified``: unified likelihood training (SFT + preference losses in ONE run) on your data or, by default,
on gsm_symbolic demonstrations and corrupted-step preference pairs.

With ``--dataset_name`` every row is a demonstration (``prompt``/``question`` + ``completion``; map yours with
``--completion_column``, e.g. GSM8K's ``answer``) or a preference pair (``chosen`` + ``rejected``; ``--chosen_column``,
``--rejected_column``); both kinds may share a dataset. The test split (``--dataset_test_split`` or
``--dataset_test_size``) is the trainer's ``eval_dataset``: with ``--eval_strategy steps`` the eval losses and the
preference accuracy (``eval_rewards/accuracies``) are logged.

Without a dataset it trains the embedded default model (SmolLM2-135M-Instruct, offline) with ``loss_type=["sft", "sigmoid"]`` on a mix of
step-by-step demonstrations and preference pairs (correct solution vs the same solution with one corrupted
arithmetic step), then reports, before and after training:

- held-out preference accuracy: fraction of held-out pairs where the policy gives the correct solution a higher
  log-likelihood than the corrupted one, and the mean log-likelihood margin;
- after training, the held-out reward-margin accuracy: the fraction of held-out pairs whose margin grew,
  ``(log π − log π₀)(chosen) > (log π − log π₀)(rejected)`` with π₀ the policy before training (the reference), i.e.
  DPO's implicit-reward accuracy (TRL's ``rewards/accuracies``); 0.5 is chance;
- with ``--num_eval_questions N``: held-out answer accuracy, greedy generation graded against the reference answer
  (off by default: the 135M model answers ~1% of gsm_symbolic questions, and the generation is slow on CPU).

It writes ``results.json``, ``unified_curves.png`` (training curves) and a model card into ``--output_dir``.

The defaults (issue 16, measured on the 2-core machine; see the README's UnifiedLikelihoodTrainer example): 32
demonstrations + 32 pairs, one epoch of 4 rows per step, LoRA r 16 on every projection at 2e-4, β 0.1, 48 held-out
pairs.

Usage:

    trl-ext unified                                                   # same as `python examples/unified.py`
    trl-ext unified --dataset_name pairs.jsonl --dataset_test_size 0.1 --eval_strategy steps --eval_steps 10
    trl-ext unified --dataset_name gsm8k.jsonl --completion_column answer --loss_type sft
    trl-ext unified --use_peft false --learning_rate 1e-5                # full fine-tuning
    trl-ext unified --load_in_4bit                                        # QLoRA (CPU works)
    trl-ext unified --num_eval_questions 64                               # also the held-out answer accuracy
    trl-ext unified --loss_type sft sigmoid rft --loss_weights 1 0.5 1   # any loss of the bank
    trl-ext unified --config unified.yaml                                 # TRL-style YAML config
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from trl_ext.cli.common import UnifiedDataArguments


@dataclass
class UnifiedScriptArguments(UnifiedDataArguments):
    """The unified script: the gsm_symbolic data used without --dataset_name, and the before/after evaluation."""

    num_demonstrations: int = field(default=32, metadata={"help": "Training demonstrations (gsm_symbolic)."})
    num_pairs: int = field(default=32, metadata={"help": "Training preference pairs (correct vs corrupted step)."})
    num_eval: int = field(
        default=48,
        metadata={"help": "Held-out preference pairs for the before/after preference accuracy (with --dataset_name: "
                          "at most this many pairs of the test split). A pass over 48 pairs takes ~2.5 min on 2 CPU "
                          "cores."},
    )
    num_eval_questions: int = field(
        default=0,
        metadata={"help": "Held-out questions for the before/after answer accuracy (greedy generation; with "
                          "--dataset_name: at most this many rows of the test split). 0 (the default) skips it: on "
                          "gsm_symbolic the embedded 135M model scores 0.0097 on 32 questions, and 32 questions cost "
                          "~2.5 min per pass on 2 CPU cores."},
    )
    eval_max_new_tokens: int = field(default=160, metadata={"help": "Generation budget of the answer-accuracy eval."})
    eval_batch_size: int = field(default=32, metadata={"help": "Batch size of the evaluation generation."})
    skip_answer_accuracy: bool = field(default=False, metadata={"help": "Skip the (slow) generation-based eval."})
    dataset_seed: int = field(default=0, metadata={"help": "Seed of the reasoning-gym data."})


def main(script_args, training_args, model_args) -> dict:
    import torch
    from transformers import AutoTokenizer
    from trl import get_peft_config, get_quantization_config

    from trl_ext.cli.common import load_unified_splits
    from trl_ext.data import demonstration_dataset, preference_dataset, rl_dataset
    from trl_ext.evaluation import evaluate_accuracy
    from trl_ext.models import resolve_model_name_or_path
    from trl_ext.models.adapters import peft_config_for, tokenizer_source
    from trl_ext.plotting import plot_training_curves
    from trl_ext.rewards import NumericMatch, default_grader
    from trl_ext.trainers.unified import UnifiedLikelihoodTrainer

    conv, seed = script_args.conversational, script_args.dataset_seed
    eval_needed = training_args.eval_strategy != "no"
    # the data first: a wrong file, column or split fails here, before any model is loaded
    if script_args.dataset_name:
        train, test = load_unified_splits(script_args, seed=training_args.seed, require_test=eval_needed)
        train_dataset, eval_dataset = train, test
        kinds = _row_kinds(train)
        train_rows = {"demonstration": kinds["demonstration"], "preference": kinds["preference"]}
        eval_pairs = eval_questions = None
        if test is not None:
            pair_rows = [i for i, k in enumerate(_kind_list(test)) if k == "preference"][: script_args.num_eval]
            eval_pairs = test.select(pair_rows) if pair_rows else None
            if "answer" in test.column_names and script_args.num_eval_questions:
                eval_questions = test.select(range(min(script_args.num_eval_questions, len(test))))
        grader = NumericMatch()
        data_name = script_args.dataset_name
    else:
        demos = demonstration_dataset(script_args.num_demonstrations, seed=seed, conversational=conv)
        pairs = preference_dataset(script_args.num_pairs, seed=seed + 1, conversational=conv)
        eval_pairs = preference_dataset(script_args.num_eval, seed=seed, split="eval", conversational=conv)
        eval_questions = rl_dataset("gsm_symbolic", script_args.num_eval_questions, seed=seed, split="eval",
                                    conversational=conv) if script_args.num_eval_questions else None
        # the held-out pairs are scored before/after by `measure`; the trainer gets them (and precomputes their
        # reference log-probs, a forward pass over every pair) only for --eval_strategy steps/epoch
        train_dataset, eval_dataset = [demos, pairs], eval_pairs if eval_needed else None
        train_rows = {"demonstration": len(demos), "preference": len(pairs)}
        grader = default_grader("gsm_symbolic")
        data_name = "reasoning-gym gsm_symbolic (demonstrations + corrupted-step pairs)"
    print(f"train: {train_rows['demonstration']} demonstrations + {train_rows['preference']} preference pairs; held "
          f"out: {len(eval_pairs) if eval_pairs is not None else 0} pairs, "
          f"{len(eval_questions) if eval_questions is not None else 0} questions; data: {data_name}")

    model_path = str(resolve_model_name_or_path(model_args.model_name_or_path))
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None and model_args.dtype in (None, "auto"):
        quantization_config.bnb_4bit_compute_dtype = torch.float32
    training_args.model_init_kwargs = {
        "dtype": model_args.dtype,
        "attn_implementation": model_args.attn_implementation,
        **({"device_map": "cpu"} if quantization_config is not None and not torch.cuda.is_available() else {}),
        **(training_args.model_init_kwargs or {}),
    }

    trainer = UnifiedLikelihoodTrainer(
        model=model_path,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,  # prepared (and its reference log-probs precomputed) before training
        processing_class=AutoTokenizer.from_pretrained(tokenizer_source(model_path)),
        quantization_config=quantization_config,
        peft_config=peft_config_for(model_path, get_peft_config(model_args), training_args.merge_adapter),
    )

    start_logps: dict = {}  # the held-out pairs' log-probs under the starting policy, i.e. the reference

    def measure(tag: str) -> dict:
        t0 = time.time()
        out = {}
        if eval_pairs is not None:
            s = trainer.pair_logps(eval_pairs)
            w, l = s["chosen_logps"], s["rejected_logps"]
            out = {"preference_accuracy": (w > l).float().mean().item(),
                   "preference_accuracy_length_normalized": (w / s["chosen_tokens"] > l / s["rejected_tokens"])
                   .float().mean().item(),
                   "mean_logp_margin": (w - l).mean().item()}
            if start_logps:  # DPO's implicit reward margin, the reference being the policy before training
                margin = (w - start_logps["w"]) - (l - start_logps["l"])
                out["reward_margin_accuracy"] = (margin > 0).float().mean().item()
            else:
                start_logps.update(w=w, l=l)
        if not script_args.skip_answer_accuracy and eval_questions is not None:
            out["answer_accuracy"] = evaluate_accuracy(
                trainer.model, trainer.processing_class, eval_questions, grader,
                max_new_tokens=script_args.eval_max_new_tokens, batch_size=script_args.eval_batch_size,
            )
        print(f"[{tag}] {json.dumps(out)} ({time.time() - t0:.0f}s)")
        return out

    before = measure("before")
    t0 = time.time()
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    train_seconds = time.time() - t0
    after = measure("after")
    implicit = trainer.evaluate() if training_args.needs_reference and eval_dataset is not None else {}

    output_dir = Path(training_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    keys = [k for k in ("loss", "loss/sft", "loss/sigmoid", "rewards/accuracies", "rewards/margins")
            if any(k in h for h in trainer.state.log_history)]
    last = trainer.state.global_step
    extra = {f"held-out {name.replace('_', ' ')}": [(0, before.get(name)), (last, after.get(name))]
             for name in ("preference_accuracy", "mean_logp_margin", "answer_accuracy") if name in after}
    if "reward_margin_accuracy" in after:
        extra["held-out reward-margin accuracy (0.5: chance)"] = [(0, 0.5), (last, after["reward_margin_accuracy"])]
    title = f"UnifiedLikelihoodTrainer ({' + '.join(training_args.loss_type)}) on {data_name}"
    plot = plot_training_curves(trainer.state.log_history, output_dir / "unified_curves.png", keys, extra_points=extra,
                                title=title)
    results = {
        "model": model_path,
        "loss_type": training_args.loss_type,
        "data": data_name,
        "train_rows": train_rows,
        "train_seconds": round(train_seconds, 1),
        "before": before,
        "after": after,
        # DPO's rewards/accuracies on the held-out pairs: from trainer.evaluate() when the trainer has them, else
        # the same quantity from the before/after log-probs (the reference is the policy before training)
        "heldout_implicit_reward_accuracy": implicit.get("eval_rewards/accuracies",
                                                         after.get("reward_margin_accuracy")),
        "heldout_eval_loss": implicit.get("eval_loss"),
        "eval_metrics": {k: v for e in trainer.state.log_history for k, v in e.items() if k.startswith("eval_")},
        "plot": str(plot) if plot else None,
    }
    from trl_ext.model_card import dumps_strict_json

    (output_dir / "results.json").write_text(dumps_strict_json(results, default=str))
    trainer.card_dataset_name = data_name
    trainer.card_eval_results = [  # held-out results go into the card's model-index
        {"metric_name": f"held-out {name.replace('_', ' ')}", "metric_type": name, "metric_value": after[name],
         "dataset_name": data_name}
        for name in ("answer_accuracy", "preference_accuracy") if after.get(name) is not None
    ]
    trainer.save_model(training_args.output_dir)  # writes the trl_ext card after the weights (and PEFT's README)
    print(json.dumps(results, indent=2))
    return results


def _kind_list(dataset) -> list:
    from trl_ext.trainers.unified_collator import infer_row_kind

    return [infer_row_kind(row) for row in dataset]


def _row_kinds(dataset) -> dict:
    kinds = _kind_list(dataset)
    return {kind: kinds.count(kind) for kind in ("demonstration", "preference", "graded")}


def make_parser(prog: str | None = None):
    from trl import ModelConfig

    from trl_ext.cli.common import LORA_TARGET_MODULES, GroupedTrlParser
    from trl_ext.trainers.unified import UnifiedLikelihoodConfig

    parser = GroupedTrlParser((UnifiedScriptArguments, UnifiedLikelihoodConfig, ModelConfig), prog=prog)
    # defaults for a CPU run of this example; any of them can be overridden on the command line or in --config
    parser.set_defaults(
        output_dir="outputs/unified-gsm",
        loss_type=["sft", "sigmoid"],
        # LoRA on every projection at 2e-4, as the RL examples
        use_peft=True,
        lora_r=16,
        lora_alpha=32,
        lora_target_modules=LORA_TARGET_MODULES,
        learning_rate=2e-4,
        beta=0.1,
        num_train_epochs=1,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        max_length=384,
        precompute_ref_log_probs=True,
        logging_steps=2,
        save_strategy="no",
        report_to="none",
        bf16=False,
        gradient_checkpointing=False,
        dataloader_pin_memory=False,
        seed=0,
    )
    return parser


if __name__ == "__main__":
    from trl_ext.cli.common import run_script

    run_script(make_parser, main)
