"""Sharded training (FSDP2 / DeepSpeed ZeRO-3) on what a CPU machine can show.

- A sharded model's forward is a collective: every process must run it. UnifiedLikelihoodTrainer skips the
  reference forward of a micro-batch without preference pairs; under sharding it runs it anyway (on one sequence),
  so a process whose micro-batch holds only demonstrations does not leave the others waiting (default suite, the
  sharding flag set on a 1-process trainer).
- FSDP2 itself: torch's ``fully_shard`` runs on CPU with gloo, but accelerate (the engine of every Trainer) maps
  ``use_cpu`` to ``MULTI_CPU`` and drops the FSDP plugin, so a Trainer cannot be sharded on CPU (slow: shown with
  2 gloo processes, so that an accelerate release that lifts this makes the test fail and the sharded runs can be
  checked on CPU).
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from datasets import Dataset

from trl_ext.trainers.unified import UnifiedLikelihoodConfig, UnifiedLikelihoodTrainer

from helpers import SCRIPTS, free_port

PROMPTS = ["What is 2 + 2?", "Add 5 and 1.", "Compute 3 times 3.", "What is 10 - 4?"]


def _trainer(model_path, tmp_path):
    rows = [{"prompt": PROMPTS[0], "completion": " 4"}, {"prompt": PROMPTS[1], "completion": " 6"},
            {"prompt": PROMPTS[2], "chosen": " 9", "rejected": " 8"}, {"prompt": PROMPTS[3], "chosen": " 6",
                                                                        "rejected": " 5"}]
    data = Dataset.from_list([{k: r.get(k) for k in ("prompt", "completion", "chosen", "rejected")} for r in rows])
    args = UnifiedLikelihoodConfig(output_dir=str(tmp_path), loss_type=["sigmoid", "sft"], report_to="none",
                                   per_device_train_batch_size=2, max_steps=1, save_strategy="no", use_cpu=True,
                                   bf16=False, seed=0, disable_tqdm=True)
    return UnifiedLikelihoodTrainer(model_path, args=args, train_dataset=data)


def _demo_only_batch(trainer):
    demos = [r for r in trainer.train_dataset if r["row_kind"] == 0]
    assert len(demos) == 2
    return trainer._prepare_inputs(trainer.data_collator(demos))


@pytest.mark.parametrize("sharded", [False, True])
def test_reference_forward_runs_on_a_pairless_micro_batch_only_when_sharded(tiny_model_path, tmp_path, sharded):
    trainer = _trainer(tiny_model_path, tmp_path)
    assert trainer.ref_model is not None  # full fine-tuning: a separate reference model
    calls = []
    hook = trainer.ref_model.register_forward_hook(lambda module, args, kwargs, out: calls.append(1),
                                                   with_kwargs=True)
    inputs = _demo_only_batch(trainer)
    plain = trainer.compute_loss(trainer.model, inputs).item()
    assert calls == []  # unsharded: a batch without pairs needs no reference forward
    trainer.is_fsdp_enabled = sharded
    loss = trainer.compute_loss(trainer.model, inputs).item()
    ref_c, ref_r = trainer.compute_ref_log_probs(trainer.model, inputs)
    hook.remove()
    assert len(calls) == (2 if sharded else 0)  # compute_loss and compute_ref_log_probs each join the collective
    assert loss == plain  # the extra forward changes nothing in the loss
    assert ref_c.tolist() == ref_r.tolist() == [0.0, 0.0]


@pytest.mark.slow
def test_fsdp2_on_cpu_torch_shards_but_accelerate_falls_back_to_multi_cpu(tiny_model_path, tmp_path):
    worker = str(SCRIPTS / "fsdp_cpu_probe.py")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # torch alone: FSDP2's fully_shard shards parameters over 2 gloo CPU processes
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                    free_port(), worker, "torch", str(tmp_path)], check=True, env=env, timeout=300)
    # a trl_ext trainer launched with an FSDP2 accelerate config on CPU
    config = SCRIPTS / "fsdp2_cpu.yaml"
    subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                    "--main_process_port", free_port(), worker, "trainer", str(tmp_path), tiny_model_path],
                   check=True, env=env, timeout=600)
    for rank in (0, 1):
        torch_side = json.loads((tmp_path / f"torch{rank}.json").read_text())
        assert torch_side["param_type"] == "DTensor" and torch_side["local_rows"] == 4  # 8 rows, half each
        trainer_side = json.loads((tmp_path / f"trainer{rank}.json").read_text())
        assert trainer_side["world"] == 2
        assert trainer_side["distributed_type"] == "MULTI_CPU"  # not FSDP: accelerate ignores the FSDP plugin
        assert trainer_side["param_type"] == "Parameter" and trainer_side["is_fsdp_enabled"] is False
