#!/usr/bin/env python
"""Train a process reward model (PRM) on step-labelled gsm_symbolic from the embedded model, on CPU.

This file is a thin copy of the script shipped inside the package, :mod:`trl_ext.cli.scripts.prm`, which the
``trl-ext prm`` command runs (read it for the defaults and every option; ``python examples/prm.py --help``). It writes
the trained PRM, its card and ``results.json`` (held-out step accuracy and first-error accuracy of the untrained model,
the trained PRM and the arithmetic verifier on the same steps) into ``outputs/prm``::

    python examples/prm.py                                   # == trl-ext prm
    python examples/process_grpo.py --prm outputs/prm        # the trained PRM as ProcessGRPO's step reward
"""

from trl_ext.cli.common import run_script
from trl_ext.cli.scripts.prm import DEFAULTS, ScriptArguments, main, make_parser  # noqa: F401

if __name__ == "__main__":
    run_script(make_parser, main)
