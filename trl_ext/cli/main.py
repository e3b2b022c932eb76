"""``trl-ext``: the training scripts of trl_ext from the command line, launched like TRL's own ``trl grpo``.

``trl-ext <command> [flags]`` parses the flags with the command's parser (``--help`` exits there, a typo fails
there), then re-launches the command's script (``trl_ext/cli/scripts/<command>.py``) under ``accelerate launch``:

- flags the script does not know are ``accelerate launch`` flags (``--num_processes 2``, ``--multi_gpu``,
  ``--main_process_port 0``, …), as are the keys of a ``--config`` YAML file that are no script field;
- ``--accelerate_config X`` is ``accelerate launch --config_file X``, where X is a file or the name of a config
  shipped with TRL (``multi_gpu``, ``single_gpu``, ``zero1``-``zero3``, ``fsdp1``, ``fsdp2``).

Commands::

    trl-ext rft            RFTTrainer (PPO with a critic)        trl_ext/cli/scripts/rft.py
    trl-ext process-grpo   ProcessGRPOTrainer (step rewards)    trl_ext/cli/scripts/process_grpo.py
    trl-ext unified        UnifiedLikelihoodTrainer (SFT + DPO)  trl_ext/cli/scripts/unified.py
    trl-ext prm            PRMTrainer (process reward model)     trl_ext/cli/scripts/prm.py
    trl-ext env            versions, for bug reports

Example:
    >>> from trl_ext.cli.main import main
    >>> main(["rft", "--dataset_name", "gsm8k.jsonl", "--max_steps", "2"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import importlib
import importlib.resources as resources
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["COMMANDS", "TrainingCommand", "main", "resolve_accelerate_config", "split_launch_args"]


@dataclass(frozen=True)
class TrainingCommand:
    """A subcommand that runs ``trl_ext/cli/scripts/<script>.py`` under ``accelerate launch``."""

    name: str
    script: str
    help: str

    @property
    def module(self) -> str:
        return f"trl_ext.cli.scripts.{self.script}"

    def script_path(self) -> Path:
        return Path(str(resources.files("trl_ext.cli.scripts").joinpath(f"{self.script}.py")))


COMMANDS = (
    TrainingCommand("rft", "rft", "Reinforcement fine-tuning with a critic (RFTTrainer: PPO value head, GAE, KL)"),
    TrainingCommand("process-grpo", "process_grpo", "Process-supervised GRPO (ProcessGRPOTrainer: per-step rewards)"),
    TrainingCommand("unified", "unified", "Demonstrations + preference pairs in one objective "
                                          "(UnifiedLikelihoodTrainer)"),
    TrainingCommand("prm", "prm", "Process reward model on step labels (PRMTrainer: token classifier)"),
)

LAUNCH_EPILOG = (
    "Launch options (handled by `accelerate launch`, not by the script): --accelerate_config NAME_OR_FILE (a YAML "
    "file, e.g. examples/accelerate_configs/cpu_2proc.yaml, or a config shipped with TRL: multi_gpu, single_gpu, "
    "zero1, zero2, zero3, fsdp1, fsdp2) and any other `accelerate launch` flag (--num_processes, --main_process_port, "
    "--mixed_precision, ...). Options marked '>>>' are trl_ext's own; the others are TRL's and transformers'."
)


def resolve_accelerate_config(launch_args: list[str]) -> list[str]:
    """``--accelerate_config X`` -> ``--config_file <path>``: X is a file, or a config name shipped with TRL.

    Example:
        >>> resolve_accelerate_config(["--accelerate_config", "multi_gpu", "--num_processes", "2"])[0]
        '--config_file'
    """
    if "--accelerate_config" not in launch_args:
        return list(launch_args)
    index = launch_args.index("--accelerate_config")
    if index + 1 >= len(launch_args):
        raise SystemExit("trl-ext: error: --accelerate_config needs a value (a YAML file or a TRL config name)")
    value = launch_args[index + 1]
    if Path(value).expanduser().is_file():
        path = str(Path(value).expanduser())
    else:
        configs = resources.files("trl.accelerate_configs")
        candidate = configs.joinpath(f"{value}.yaml")
        if not candidate.is_file():
            names = sorted(p.name[: -len(".yaml")] for p in configs.iterdir() if p.name.endswith(".yaml"))
            raise SystemExit(
                f"trl-ext: error: --accelerate_config {value!r} is neither a file nor a config shipped with TRL "
                f"({', '.join(names)})"
            )
        path = str(candidate)
    return ["--config_file", path] + launch_args[:index] + launch_args[index + 2:]


def _subtract_subsequence(items: list[str], subsequence: list[str]) -> list[str]:
    """``items`` without the ordered ``subsequence`` (the launch flags picked out of the command line)."""
    remaining = iter(subsequence)
    current = next(remaining, None)
    kept = []
    for item in items:
        if current is not None and item == current:
            current = next(remaining, None)
        else:
            kept.append(item)
    return kept


def split_launch_args(command: TrainingCommand, argv: list[str]) -> tuple[list[str], list[str]]:
    """``(accelerate launch flags, script flags)`` of a command line; ``--help`` prints the script's help and exits."""
    module = importlib.import_module(command.module)
    parser = module.make_parser(prog=f"trl-ext {command.name}")
    parser.epilog = LAUNCH_EPILOG
    *_, config_remaining, cli_remaining = parser.parse_args_and_config(
        list(argv), return_remaining_strings=True, separate_remaining_strings=True
    )
    launch_args = resolve_accelerate_config(config_remaining + cli_remaining)
    return launch_args, _subtract_subsequence(list(argv), cli_remaining)


def run_training_command(command: TrainingCommand, argv: list[str]) -> int:
    """Launch ``command``'s script under ``accelerate launch``; the exit status of the run."""
    from accelerate.commands.launch import launch_command, launch_command_parser

    from .common import PROG_ENV

    launch_args, script_args = split_launch_args(command, argv)
    os.environ[PROG_ENV] = f"trl-ext {command.name}"
    accelerate_args = launch_command_parser().parse_args(launch_args + [str(command.script_path())] + script_args)
    try:
        launch_command(accelerate_args)
    except subprocess.CalledProcessError as err:  # one process: the script already printed its error
        return err.returncode or 1
    except Exception as err:  # torch.distributed's ChildFailedError (several processes) and friends
        if type(err).__name__ == "ChildFailedError":
            return 1
        raise
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trl-ext", allow_abbrev=False,
        description="trl_ext's trainers from the command line (TRL conventions: every config field is a flag, "
                    "--config file.yaml, runs under accelerate launch). `trl-ext <command> --help` lists a "
                    "command's options.",
    )
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="{rft,process-grpo,unified,env}")
    for command in COMMANDS:
        subparsers.add_parser(command.name, help=command.help, add_help=False)
    subparsers.add_parser("env", help="Print the environment (versions) for bug reports, like `trl env`")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``trl-ext`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    args, _ = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "env":
        from .env import print_env

        print_env()
        return 0
    command = next(c for c in COMMANDS if c.name == args.command)
    return run_training_command(command, argv[argv.index(args.command) + 1:])


if __name__ == "__main__":
    raise SystemExit(main())
