# Copyright 2025 the trl_ext developers. Apache-2.0.
"""Process-supervised GRPO on chain_sum with the embedded SmolLM2-135M-Instruct and LoRA, on CPU (12 min 20 s on 2
cores, measured; held-out accuracy 0.076 -> 0.355 and true-step fraction 0.39 -> 0.61 on 256 prompts: see the package
script's docstring for the settings tried and what the numbers mean).

A thin copy of the script shipped inside the package, :mod:`trl_ext.cli.scripts.process_grpo`, which the
``trl-ext process-grpo`` command runs (read it for the defaults and every option; ``--help`` lists them). Every
completion is split into steps, the arithmetic verifier scores each step, the answer grader the final answer, and
ProcessGRPOTrainer turns the step rewards into reward-to-go token advantages; held-out accuracy and the fraction of
true arithmetic steps are measured before and after training (``training_curves.png``, ``results.json``)::

    python examples/process_grpo.py                         # == trl-ext process-grpo
    python examples/process_grpo.py --max_steps 60 --output_dir outputs/pgrpo --step_separator '\\n\\n'
    python examples/process_grpo.py --task_config '{"min_terms": 4, "max_terms": 5}'   # more steps per problem
    python examples/process_grpo.py --dataset_name gsm8k.jsonl --dataset_test_size 32
    python examples/process_grpo.py --load_in_4bit                                         # QLoRA (CPU works)
    python examples/process_grpo.py --outcome_only true    # baseline: stock GRPOTrainer, answer grader only
    python examples/process_grpo.py --prm outputs/prm      # step rewards from a PRM trained by examples/prm.py
    accelerate launch --config_file examples/accelerate_configs/cpu_2proc.yaml examples/process_grpo.py
"""

from trl_ext.cli.common import run_script
from trl_ext.cli.scripts.process_grpo import DEFAULTS, ScriptArguments, evaluate, main, make_parser  # noqa: F401

if __name__ == "__main__":
    run_script(make_parser, main)
