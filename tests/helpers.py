"""Test data and argument sets shared by the test files (``from helpers import ...``: pytest puts ``tests/`` on
``sys.path``, as for ``hub_fixtures``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from datasets import Dataset

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SCRIPTS = TESTS / "scripts"
"""The scripts that tests run in subprocesses (``tests/scripts/*.py``)."""

PROMPTS = ["What is 2+2?", "Compute 3*5.", "Add 7 and 8.", "What is 10-4?"]
ANSWERS = ["4", "15", "15", "6"]


def prompt_dataset(n_repeat: int = 2) -> Dataset:
    """``PROMPTS`` with their ``answer`` column, ``n_repeat`` times."""
    return Dataset.from_dict({"prompt": PROMPTS * n_repeat, "answer": ANSWERS * n_repeat})


def char_variety(completions: list, **kwargs: Any) -> list[float]:
    """An outcome reward that varies between random completions: distinct characters / 10."""
    return [len(set(c)) / 10.0 for c in completions]


def run_args(output_dir: Any, **overrides: Any) -> dict[str, Any]:
    """``TrainingArguments`` keywords of a one-step CPU run without saving or reporting (any trainer's config)."""
    args = dict(output_dir=str(output_dir), per_device_train_batch_size=4, max_steps=1, logging_steps=1,
                learning_rate=1e-3, report_to="none", save_strategy="no", use_cpu=True, bf16=False, seed=0,
                disable_tqdm=True)
    args.update(overrides)
    return args


def grpo_args(output_dir: Any, **overrides: Any) -> dict[str, Any]:
    """:func:`run_args` plus 8-token completions: a one-step run of a GRPO-based config."""
    return run_args(output_dir, **{"max_completion_length": 8, **overrides})


def free_port() -> str:
    """A free localhost TCP port, for ``torch.distributed.run`` / ``accelerate launch``."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def script_env(**extra: str) -> dict[str, str]:
    """Environment of a subprocess running a script of :data:`SCRIPTS`: offline, 1 OpenMP thread per process, and
    the repository and ``tests/`` on ``PYTHONPATH`` (a script imports ``trl_ext`` and ``helpers``)."""
    path = os.pathsep.join([str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": path, **extra}


def run_script(name: str, *args: Any, nproc: int = 1, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``tests/scripts/<name>.py args...`` (under ``torch.distributed.run`` with ``nproc`` gloo processes when
    ``nproc > 1``) with :func:`script_env`; a non-zero exit fails the test with the end of its output."""
    cmd = [sys.executable, str(SCRIPTS / f"{name}.py"), *map(str, args)]
    if nproc > 1:
        cmd[1:1] = ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", free_port()]
    result = subprocess.run(cmd, env=script_env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def nf4_config(**extra: Any):
    """QLoRA's 4-bit NF4 quantization with float32 compute (what bitsandbytes runs on CPU)."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32,
                              **extra)


def train_quantized(trainer: Any, assert_trained: Callable[[Any, dict], None]) -> None:
    """Train a trainer built on a 4-bit base: its model has 4-bit layers, ``assert_trained(trainer, before)`` holds
    after training (``before``: every parameter before) and every logged loss is finite."""
    import math

    assert any("4bit" in type(m).__name__ for m in trainer.model.modules())
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert_trained(trainer, before)
    assert all(math.isfinite(e["loss"]) for e in trainer.state.log_history if "loss" in e)
