"""The accelerate configs in examples/accelerate_configs/ start the number of processes they claim.

Each config is launched with ``accelerate launch --config_file`` on tests/scripts/accelerate_world.py, which builds
``TrainingArguments`` the way every trainer does (``use_cpu`` when there is no GPU) and writes the world size, rank,
distributed type and backend each process sees. The 2-process CPU config runs everywhere (default suite). The GPU
configs run as they are where the machine has the GPUs (and DeepSpeed for the ZeRO configs); on CPU-only machines their
DDP launcher is still checked to start ``num_processes`` processes with ``use_cpu: true`` patched in (slow), since
accelerate ignores FSDP/DeepSpeed on CPU.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from helpers import SCRIPTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, "examples", "accelerate_configs")
CONFIGS = sorted(f for f in os.listdir(CONFIG_DIR) if f.endswith(".yaml"))

# what each config must claim: (distributed_type, num_processes, extra checks on its sections)
EXPECTED = {
    "cpu_2proc.yaml": ("MULTI_GPU", 2, {"use_cpu": True, "mixed_precision": "no"}),
    "single_gpu.yaml": ("NO", 1, {"use_cpu": False}),
    "multi_gpu.yaml": ("MULTI_GPU", 8, {"use_cpu": False}),
    "deepspeed_zero2.yaml": ("DEEPSPEED", 8, {"deepspeed_config.zero_stage": 2}),
    "deepspeed_zero3.yaml": ("DEEPSPEED", 8, {"deepspeed_config.zero_stage": 3}),
    "fsdp2.yaml": ("FSDP", 8, {"fsdp_config.fsdp_version": 2}),
}


def _load(name: str) -> dict:
    with open(os.path.join(CONFIG_DIR, name)) as f:
        return yaml.safe_load(f)


def _launch(config_path: str, tmp_path) -> list[dict]:
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_path),
         "--main_process_port", "0", str(SCRIPTS / "accelerate_world.py"), str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [json.loads((out / name).read_text()) for name in sorted(os.listdir(out))]


def test_every_config_is_listed_and_claims_what_it_is_named_for():
    assert set(CONFIGS) == set(EXPECTED), "a config was added or removed: update EXPECTED"
    from accelerate.commands.config.config_args import load_config_from_file

    for name, (kind, processes, extra) in EXPECTED.items():
        raw = _load(name)
        parsed = load_config_from_file(os.path.join(CONFIG_DIR, name))  # accelerate's own validation
        assert parsed.distributed_type.name == kind, name
        assert raw["num_processes"] == processes, name
        for key, value in extra.items():
            node = raw
            for part in key.split("."):
                node = node[part]
            assert node == value, (name, key)
        with open(os.path.join(CONFIG_DIR, name)) as f:
            assert f"accelerate launch --config_file examples/accelerate_configs/{name}" in f.read(), name


def test_cpu_config_starts_two_gloo_processes(tmp_path):
    ranks = _launch(os.path.join(CONFIG_DIR, "cpu_2proc.yaml"), tmp_path)
    assert [r["rank"] for r in ranks] == [0, 1]
    for r in ranks:
        assert r["world"] == 2 and r["type"] == "MULTI_CPU" and r["backend"] == "gloo"


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in CONFIGS if n != "cpu_2proc.yaml"])
def test_gpu_config_starts_the_processes_it_claims(name, tmp_path):
    kind, processes, _ = EXPECTED[name]
    config = _load(name)
    enough_gpus = torch.cuda.is_available() and torch.cuda.device_count() >= processes
    if enough_gpus:
        if kind == "DEEPSPEED":
            pytest.importorskip("deepspeed")
        path = os.path.join(CONFIG_DIR, name)
        expected_type = kind
    else:
        # CPU-only machine: the same launcher and process count, on CPU (accelerate then runs MULTI_CPU/gloo, it has
        # no CPU FSDP/DeepSpeed); the DeepSpeed launcher needs deepspeed and GPUs, so it is checked through DDP.
        config.update(use_cpu=True, mixed_precision="no")
        if kind in ("DEEPSPEED", "FSDP"):
            config["distributed_type"] = "MULTI_GPU"
            config.pop("deepspeed_config", None), config.pop("fsdp_config", None)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config))
        expected_type = "NO" if processes == 1 else "MULTI_CPU"
    ranks = _launch(str(path), tmp_path)
    assert [r["rank"] for r in ranks] == list(range(processes))
    assert all(r["world"] == processes and r["type"] == expected_type for r in ranks)
