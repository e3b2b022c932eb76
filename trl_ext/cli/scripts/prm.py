# Copyright 2025 the trl_ext developers. Apache-2.0.
"""``trl-ext prm``: train a process reward model (PRM) from the embedded SmolLM2-135M-Instruct on step-labelled gsm_symbolic, on CPU.

``trl_ext.data.step_labelled_dataset`` gives solutions split into steps, half of them with one corrupted arithmetic
step (labelled False from it on). PRMTrainer trains a token classifier whose P(correct) at each step's separator is
the step score. The held-out split is scored three ways on the same steps: the untrained model (random score head),
the trained PRM, and trl_ext's ArithmeticStepVerifier (a step is predicted incorrect when its claims score < 0.5; a
step without a claim counts as correct). Results go to ``<output_dir>/results.json``; the trained PRM folder is what
``trl-ext process-grpo --prm <output_dir>`` loads.

Usage (TRL script conventions; every PRMConfig / TrainingArguments / ModelConfig field is a flag):

    trl-ext prm                                                      # == python examples/prm.py; ~6 min on 2 CPUs
    trl-ext prm --max_steps 200 --train_size 2048 --output_dir outputs/prm
    trl-ext prm --use_peft --lora_r 16 --learning_rate 2e-4          # LoRA (+ score head); saved merged
    trl-ext prm --config prm.yaml                                    # TRL-style YAML config
    trl-ext process-grpo --prm outputs/prm                           # use it as the process reward
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForTokenClassification
from trl import ModelConfig, get_peft_config, get_quantization_config

from trl_ext.cli.common import GroupedTrlParser, run_script

from trl_ext.core.prm_metrics import prm_metrics, scores_to_predictions
from trl_ext.data import step_labelled_dataset
from trl_ext.models import resolve_model_name_or_path
from trl_ext.rewards.process import ArithmeticStepVerifier
from trl_ext.trainers.prm import ID2LABEL, LABEL2ID, PRMConfig, PRMTrainer


@dataclass
class ScriptArguments:
    """Data of the example."""

    train_size: int = field(default=320, metadata={"help": "Number of step-labelled training solutions."})
    eval_size: int = field(default=48, metadata={"help": "Number of held-out solutions (hash-disjoint questions)."})
    conversational: bool = field(default=False, metadata={"help": "Conversational prompts (read as the user text)."})
    train_top_layers: int = field(
        default=4,
        metadata={
            "help": "Without PEFT: train only the score head and the top N decoder layers (the backward pass stops "
            "there, ~2x faster on CPU); 0 trains the whole model."
        },
    )


DEFAULTS = dict(
    output_dir="outputs/prm",
    max_steps=40,
    per_device_train_batch_size=8,
    per_device_eval_batch_size=16,
    learning_rate=1e-4,
    lr_scheduler_type="linear",
    warmup_steps=5,
    logging_steps=5,
    eval_strategy="no",
    save_strategy="no",
    report_to="none",
    seed=0,
    use_cpu=not torch.cuda.is_available(),
    bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
)


def verifier_metrics(dataset, separator: str) -> dict[str, float]:
    """ArithmeticStepVerifier's PRM metrics on the same steps (score < 0.5 = incorrect, no claim = correct)."""
    scores = ArithmeticStepVerifier(step_separator=separator)(steps=dataset["completions"])
    return prm_metrics(scores_to_predictions(scores, 0.5, none_is_correct=True), dataset["labels"])


def main(script_args: ScriptArguments, training_args: PRMConfig, model_args: ModelConfig) -> dict:
    model_path = resolve_model_name_or_path(model_args.model_name_or_path)
    seed = training_args.seed
    train = step_labelled_dataset(script_args.train_size, seed=seed, conversational=script_args.conversational)
    held_out = step_labelled_dataset(script_args.eval_size, seed=seed, split="eval",
                                     conversational=script_args.conversational)
    peft_config = get_peft_config(model_args)
    model = model_path
    if peft_config is None and script_args.train_top_layers > 0:
        model = AutoModelForTokenClassification.from_pretrained(model_path, num_labels=2, id2label=ID2LABEL,
                                                                label2id=LABEL2ID)
        layers = model.model.layers
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith("score.")
        for layer in layers[len(layers) - script_args.train_top_layers:]:
            layer.requires_grad_(True)
        model.model.norm.requires_grad_(True)
    trainer = PRMTrainer(model, args=training_args, train_dataset=train, eval_dataset=held_out,
                         peft_config=peft_config, quantization_config=get_quantization_config(model_args))
    results: dict = {"model": model_path, "train_size": len(train), "eval_size": len(held_out),
                     "max_steps": training_args.max_steps, "peft": peft_config is not None,
                     "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)}
    start = time.perf_counter()
    results["untrained"] = trainer.evaluate(metric_key_prefix="untrained")
    results["eval_seconds"] = time.perf_counter() - start
    results["arithmetic_verifier"] = verifier_metrics(held_out, training_args.step_separator)
    # the trivial baseline: every step predicted correct
    results["all_correct"] = prm_metrics([[True] * len(y) for y in held_out["labels"]], held_out["labels"])
    trainer.accelerator.print(f"untrained PRM: {results['untrained']}\narithmetic verifier: "
                              f"{results['arithmetic_verifier']}")

    start = time.perf_counter()
    trainer.train()
    results["train_seconds"] = time.perf_counter() - start
    results["trained"] = trainer.evaluate(metric_key_prefix="trained")
    trainer.accelerator.print(f"trained PRM: {results['trained']}")

    if peft_config is not None:  # ProcessRewardModel(folder) loads a plain token classifier: merge the adapter
        trainer.model = trainer.model.merge_and_unload()
    trainer.card_eval_results = [  # held-out results go into the card's model-index
        {"task_type": "token-classification", "metric_name": f"held-out {name.replace('_', ' ')}",
         "metric_type": name, "metric_value": results["trained"].get(f"trained_{name}"),
         "dataset_name": "trl_ext.data.step_labelled_dataset (gsm_symbolic)"}
        for name in ("step_accuracy", "first_error_accuracy")
    ]
    trainer.card_dataset_name = "trl_ext.data.step_labelled_dataset (gsm_symbolic)"
    trainer.save_model(training_args.output_dir)  # writes the trl_ext card after the weights
    if trainer.accelerator.is_main_process:
        summary = {
            name: {k: results[name].get(f"{prefix}{k}") for k in
                   ("step_accuracy", "incorrect_precision", "incorrect_recall", "first_error_accuracy")}
            for name, prefix in (("untrained", "untrained_"), ("trained", "trained_"), ("arithmetic_verifier", ""),
                                 ("all_correct", ""))
        }
        results["summary"] = summary
        results["log_history"] = trainer.state.log_history
        with open(os.path.join(training_args.output_dir, "results.json"), "w") as f:
            from trl_ext.model_card import dumps_strict_json

            f.write(dumps_strict_json(results, default=str))
        trainer.accelerator.print(json.dumps(summary, indent=2))
        trainer.accelerator.print(f"PRM, card and results in {training_args.output_dir}")
    return results


def make_parser(prog: str | None = None) -> GroupedTrlParser:
    parser = GroupedTrlParser((ScriptArguments, PRMConfig, ModelConfig), prog=prog)
    parser.set_defaults(**DEFAULTS)
    return parser


if __name__ == "__main__":
    run_script(make_parser, main)
