"""trl_ext: trainers that plug into Hugging Face TRL.

Sub-packages:

- ``trl_ext.core``: pure tensor functions (advantages, losses, KL) with the formula in each docstring.
- ``trl_ext.rewards``: answer extraction and graders in TRL's reward-function convention.
- ``trl_ext.models``: the embedded default model (SmolLM2-135M-Instruct, offline) and tiny test models.
- ``trl_ext.data``: reasoning-gym tasks in TRL's standard and conversational dataset formats.
- ``trl_ext.trainers``: ``RFTTrainer``, ``ProcessGRPOTrainer``, ``UnifiedLikelihoodTrainer`` and their configs
  (also importable from ``trl_ext`` directly).

Example:
    >>> from trl_ext import RFTConfig, RFTTrainer  # doctest: +SKIP
"""

import importlib
import sys
from typing import Any

__version__ = "0.1.0"

_TRAINER_EXPORTS = (
    "RFTConfig",
    "RFTTrainer",
    "ProcessGRPOConfig",
    "ProcessGRPOTrainer",
    "UnifiedLikelihoodConfig",
    "UnifiedLikelihoodTrainer",
    "PRMConfig",
    "PRMTrainer",
)


class _BrokenBitsandbytesGuard:
    """Import hook: a ``bitsandbytes`` whose import *crashes* (CUDA setup, missing shared library) raises ImportError.

    peft (imported by transformers' Trainer) and transformers import bitsandbytes eagerly and only tolerate an
    ``ImportError``; any other exception from a broken install would break ``import trl_ext.trainers`` even when no
    4-bit model is asked for. bitsandbytes stays lazy (nothing is imported here); its real error is chained, and
    :func:`trl_ext.trainers.checks.check_quantization` reports it when 4-bit / 8-bit is requested.
    """

    _busy = False
    error: BaseException | None = None

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "bitsandbytes" or self._busy:
            return None
        import importlib.util

        if self.error is not None:  # known broken: later (unguarded, e.g. TRL's) imports get a module that says so
            return importlib.util.spec_from_loader(fullname, _StubLoader(self.error))

        self._busy = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        guard, loader = self, spec.loader

        class _Loader:
            def create_module(self, spec):  # noqa: D102
                return loader.create_module(spec)

            def __getattr__(self, name):  # get_resource_reader, is_package, … of the real loader
                return getattr(loader, name)

            def exec_module(self, module):  # noqa: D102
                try:
                    loader.exec_module(module)
                except ImportError:
                    raise
                except Exception as err:  # a broken install: report it as "not importable"
                    guard.error = err
                    raise ImportError(f"bitsandbytes is installed but fails to import: {err!r}") from err

        spec.loader = _Loader()
        return spec


class _StubLoader:
    """Loader of a stand-in ``bitsandbytes`` whose every attribute raises the original import error."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def create_module(self, spec: Any) -> Any:
        import types

        error = self.error
        module = types.ModuleType(spec.name, "stand-in for a bitsandbytes install that fails to import")

        def __getattr__(name: str) -> Any:
            if name.startswith("__"):
                raise AttributeError(name)
            raise ImportError(f"bitsandbytes is installed but fails to import: {error!r}") from error

        module.__getattr__ = __getattr__
        module.__trl_ext_broken__ = error
        return module

    def exec_module(self, module: Any) -> None:
        return None


_bnb_guard = _BrokenBitsandbytesGuard()
sys.meta_path.insert(0, _bnb_guard)


def __getattr__(name: str) -> Any:
    """``from trl_ext import RFTTrainer`` etc., imported on first use."""
    if name in _TRAINER_EXPORTS:
        return getattr(importlib.import_module("trl_ext.trainers"), name)
    raise AttributeError(f"module 'trl_ext' has no attribute {name!r}")
