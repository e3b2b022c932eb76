"""The ``trl-ext`` command: ``trl-ext rft``, ``trl-ext process-grpo``, ``trl-ext unified`` (each re-launched under
``accelerate launch``, as ``trl grpo`` is) and ``trl-ext env``. See :mod:`trl_ext.cli.main`."""

from .main import main

__all__ = ["main"]
