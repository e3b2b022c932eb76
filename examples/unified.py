# Copyright 2026 trl_ext developers. Apache-2.0.
"""Unified likelihood training on gsm_symbolic: demonstrations and corrupted-step preference pairs in ONE run.

A thin copy of the script shipped inside the package, :mod:`trl_ext.cli.scripts.unified`, which the
``trl-ext unified`` command runs (read it for the defaults and every option; ``--help`` lists them). It trains the
embedded default model with ``loss_type=["sft", "sigmoid"]`` and LoRA, and reports held-out preference accuracy
before and after training and the implicit-reward (margin) accuracy after it (``results.json``,
``unified_curves.png``, a model card). Measured on 2 CPU cores: 11 min 57 s; on 48 held-out pairs the reward-margin
accuracy is 0.854 (chance 0.5) and the mean log-likelihood margin 6.16 -> 9.42, the raw preference accuracy staying
at 0.81 (see the README's UnifiedLikelihoodTrainer example)::

    python examples/unified.py                                                   # == trl-ext unified
    python examples/unified.py --dataset_name pairs.jsonl --dataset_test_size 0.1   # your demonstrations / pairs
    python examples/unified.py --load_in_4bit                                       # QLoRA (CPU works)
    python examples/unified.py --loss_type sft sigmoid rft --loss_weights 1 0.5 1   # any loss of the bank
    python examples/unified.py --config unified.yaml                                 # TRL-style YAML config
"""

from trl_ext.cli.common import run_script
from trl_ext.cli.scripts.unified import UnifiedScriptArguments, main, make_parser  # noqa: F401

if __name__ == "__main__":
    run_script(make_parser, main)
