"""Pieces shared by the ``trl-ext`` training scripts: the grouped argument parser, the data arguments, reward
function resolution, and the ``__main__`` runner that turns data errors into one clear line.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, get_type_hints

from trl import ScriptArguments, TrlParser

from ..data.loading import DatasetLoadingError, load_dataset_splits, prepare_rl_dataset, prepare_unified_dataset
from ..data.tasks import ANSWER_FORMAT_INSTRUCTION

__all__ = [
    "DataArguments",
    "UsageError",
    "GroupedTrlParser",
    "LORA_TARGET_MODULES",
    "RLDataArguments",
    "RLTaskArguments",
    "UnifiedDataArguments",
    "load_rl_splits",
    "load_unified_splits",
    "rl_command_splits",
    "task_config_of",
    "answer_instruction_of",
    "resolve_reward_funcs",
    "run_script",
]


class UsageError(ValueError):
    """A command-line value the script cannot use (an unknown reward function, …); the message says which."""


# --------------------------------------------------------------------------------------------------- the parser


def _owner(dtype: type, name: str) -> type:
    """The most derived class of ``dtype``'s MRO that declares (or re-declares) the field ``name``."""
    for cls in dtype.__mro__:
        if name in cls.__dict__.get("__annotations__", {}):
            return cls
    return dtype


def _group_title(cls: type) -> tuple[str, str | None]:
    package = cls.__module__.split(".")[0]
    if package == "__main__":
        package = "script"
    doc = (cls.__doc__ or "").strip().splitlines()
    description = doc[0].strip() if doc and not doc[0].startswith(cls.__name__ + "(") else None
    marker = ">>> " if package == "trl_ext" else ""
    return f"{marker}{cls.__name__} ({package})", description


class GroupedTrlParser(TrlParser):
    """:class:`trl.TrlParser` whose ``--help`` shows one group per class that declares fields: trl_ext's own options
    (``>>> RFTConfig (trl_ext)``, ``>>> RLDataArguments (trl_ext)``, …) apart from the inherited TRL and transformers
    ones (``GRPOConfig (trl)``, ``TrainingArguments (transformers)``). Parsing is TrlParser's, unchanged."""

    def _add_dataclass_arguments(self, dtype):
        # HfArgumentParser adds every field of a dataclass to one group; this splits them by declaring class. It needs
        # HfArgumentParser._parse_dataclass_field (transformers 4.x-5.x); without it, the stock single group is used.
        from ..trainers.trl_compat import trl_parser_field_adder

        parse_field = trl_parser_field_adder(self)
        if parse_field is None or hasattr(dtype, "_argument_group_name"):
            return super()._add_dataclass_arguments(dtype)
        type_hints = get_type_hints(dtype)
        groups: dict[type, Any] = {}
        for dc_field in dataclasses.fields(dtype):
            if not dc_field.init:
                continue
            owner = _owner(dtype, dc_field.name)
            if owner not in groups:
                title, description = _group_title(owner)
                groups[owner] = self.add_argument_group(title, description)
            dc_field.type = type_hints[dc_field.name]
            parse_field(groups[owner], dc_field)


# ----------------------------------------------------------------------------------------------- data arguments


#: LoRA on every attention and MLP projection of a Llama-style model (the embedded default model): the RL examples'
#: recipe (``lora_target_modules``).
LORA_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class DataArguments(ScriptArguments):
    """Your own data: how its columns become prompts (with --dataset_name; reasoning-gym tasks without it)."""

    prompt_column: str | None = field(
        default=None,
        metadata={"help": "Column holding the prompts. Default: 'prompt' if the dataset has it (kept as is: TRL's "
                          "standard or conversational format), else 'question' (a plain question, formatted as below)."},
    )
    conversational: bool = field(
        default=True,
        metadata={"help": "A plain question becomes a chat message (the model's chat template is applied) instead "
                          "of plain text."},
    )
    answer_instruction: str = field(
        default=ANSWER_FORMAT_INSTRUCTION,
        metadata={"help": "Appended (after a blank line) to every plain question, a reasoning-gym task's too; '' "
                          "appends nothing. The default asks for a final '#### <answer>' line, which the graders "
                          "read (process-grpo on chain_sum: one partial sum per line, then that line)."},
    )
    system_prompt: str | None = field(
        default=None,
        metadata={"help": "System message put before every plain question, a reasoning-gym task's too "
                          "(conversational only). '' puts an empty one (SmolLM2's template then drops its default)."},
    )
    dataset_test_size: float | None = field(
        default=None,
        metadata={"help": "When the dataset has no --dataset_test_split split: hold this many rows (>= 1) or this "
                          "fraction (< 1) of the training split out as the test split (seeded by --seed)."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on the first N rows of the training split only (default: all)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Evaluate on the first N rows of the test split only (default: all)."}
    )


@dataclass
class RLDataArguments(DataArguments):
    """The reference answers of your data and the reward functions that grade completions against them."""

    answer_column: str = field(
        default="answer",
        metadata={"help": "Column holding each prompt's reference answer (renamed 'answer' for the graders); a "
                          "GSM8K rationale ending in '#### N' is kept whole."},
    )
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={"help": "Reward functions: a name in trl_ext.rewards (e.g. NumericMatch; a class is instantiated "
                          "with no arguments) or trl.rewards (e.g. accuracy_reward), or any dotted import path "
                          "(my_lib.rewards.my_reward). Default: the task's grader (reasoning-gym), NumericMatch with "
                          "--dataset_name."},
    )
    reward_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A sequence-classification reward model (Hub id or folder) added to the reward functions."},
    )


@dataclass
class RLTaskArguments(RLDataArguments):
    """The reasoning-gym task used without --dataset_name, and the held-out accuracy before/after training."""

    task: str = field(
        default="chain_sum",
        metadata={"help": "reasoning-gym task of trl_ext.data.rl_dataset (chain_sum, basic_arithmetic, countdown, "
                          "gsm_symbolic), used when no --dataset_name is given."},
    )
    train_size: int = field(default=2000, metadata={"help": "Training prompts (reasoning-gym task)."})
    eval_size: int = field(
        default=256,
        metadata={"help": "Held-out prompts (a disjoint split) for the accuracy before/after training; with "
                          "--dataset_name, the first N rows of the test split (none: no accuracy). 0 skips it."},
    )
    eval_max_new_tokens: int = field(default=32, metadata={"help": "Greedy tokens per held-out answer."})
    eval_batch_size: int = field(default=64, metadata={"help": "Batch size of the held-out evaluation."})
    task_config: str | None = field(
        default=None,
        metadata={"help": "JSON of the reasoning-gym task's config, e.g. '{\"min_terms\": 4, \"max_terms\": 5}' for "
                          "chain_sum (number of terms and digits). Unset: the command's own config for chain_sum (2 "
                          "terms of 1-2 digits), the task's defaults otherwise. Ignored with --dataset_name."},
    )


def task_config_of(args: RLTaskArguments, defaults: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """``--task_config`` as a dict; unset, ``defaults[args.task]`` (a command's own config per task) or ``{}``.

    ``{}`` with ``--dataset_name``. A value that is not a JSON object fails with an error naming ``--task_config``.

    Example:
        >>> task_config_of(RLTaskArguments(task_config='{"min_terms": 3}'))
        {'min_terms': 3}
        >>> task_config_of(RLTaskArguments(task="gsm_symbolic"), defaults={"chain_sum": {"min_terms": 2}})
        {}
    """
    if args.dataset_name:
        return {}
    if not args.task_config:
        return dict((defaults or {}).get(args.task, {}))
    try:
        config = json.loads(args.task_config)
    except json.JSONDecodeError as error:
        raise DatasetLoadingError(f"--task_config is not valid JSON ({error}): {args.task_config!r}") from None
    if not isinstance(config, dict):
        raise DatasetLoadingError(f"--task_config must be a JSON object like '{{\"min_terms\": 3}}', got "
                                  f"{args.task_config!r}")
    return config


def answer_instruction_of(args: RLTaskArguments, defaults: dict[str, str] | None = None) -> str:
    """``--answer_instruction``; unset (``None``, a command's default), ``defaults[args.task]`` (a command's own
    instruction per task, not with ``--dataset_name``) or the package's ``ANSWER_FORMAT_INSTRUCTION``.

    Example:
        >>> answer_instruction_of(RLTaskArguments(answer_instruction=None), defaults={"chain_sum": "One sum a line."})
        'One sum a line.'
        >>> answer_instruction_of(RLTaskArguments(answer_instruction=""), defaults={"chain_sum": "One sum a line."})
        ''
    """
    if args.answer_instruction is not None:
        return args.answer_instruction
    task_default = None if args.dataset_name else (defaults or {}).get(args.task)
    return ANSWER_FORMAT_INSTRUCTION if task_default is None else task_default


@dataclass
class UnifiedDataArguments(DataArguments):
    """Columns of your demonstrations and preference pairs (a row may be either kind)."""

    completion_column: str | None = field(
        default=None, metadata={"help": "Column of the demonstrations (default: 'completion' if present)."}
    )
    chosen_column: str | None = field(
        default=None, metadata={"help": "Column of the preferred answers (default: 'chosen' if present)."}
    )
    rejected_column: str | None = field(
        default=None, metadata={"help": "Column of the dispreferred answers (default: 'rejected' if present)."}
    )


def _check_streaming(args: DataArguments) -> None:
    if args.dataset_streaming:
        raise DatasetLoadingError("--dataset_streaming is not supported by the trl-ext commands (they need row access)")


def _head(ds, n: int | None, flag: str):
    if ds is None or n is None:
        return ds
    if n < 1:
        raise DatasetLoadingError(f"{flag} must be >= 1, got {n}")
    return ds.select(range(min(n, len(ds))))


def _test_size(value: float | None) -> float | int | None:
    return int(value) if value is not None and value >= 1 and float(value).is_integer() else value


def _load_prepared_splits(args: DataArguments, prepare: Callable[..., Any], *, seed: int, require_test: bool,
                          **columns: Any) -> tuple[Any, Any | None]:
    """(train, test) of ``--dataset_name``: loaded, cut to ``--max_*_samples`` and mapped by ``prepare``."""
    _check_streaming(args)
    train, test = load_dataset_splits(
        args.dataset_name, args.dataset_config, train_split=args.dataset_train_split,
        test_split=args.dataset_test_split, test_size=_test_size(args.dataset_test_size), seed=seed,
        require_test=require_test,
    )
    kwargs = dict(prompt_column=args.prompt_column, conversational=args.conversational,
                  instruction=args.answer_instruction, system_prompt=args.system_prompt, **columns)
    train = prepare(_head(train, args.max_train_samples, "--max_train_samples"), name="train", **kwargs)
    if test is not None:
        test = prepare(_head(test, args.max_eval_samples, "--max_eval_samples"), name="test", **kwargs)
    return train, test


def task_split(args: RLDataArguments, size: int, *, seed: int, split: str, **task_config: Any):
    """``size`` prompts of the reasoning-gym task ``args.task`` (:func:`~trl_ext.data.rl_dataset`), shaped by the same
    ``--conversational``, ``--system_prompt`` and ``--answer_instruction`` as a user's own questions."""
    from ..data import rl_dataset

    return rl_dataset(args.task, size, seed=seed, split=split, conversational=args.conversational,
                      system_prompt=args.system_prompt, instruction=args.answer_instruction, **task_config)


def load_rl_splits(args: RLDataArguments, *, seed: int, require_test: bool) -> tuple[Any, Any | None]:
    """(train, test) of ``--dataset_name`` for the RL commands: prompts + ``answer`` references."""
    return _load_prepared_splits(args, prepare_rl_dataset, seed=seed, require_test=require_test,
                                 answer_column=args.answer_column)


def rl_command_splits(args: RLTaskArguments, training_args: Any,
                      default_task_configs: dict[str, dict[str, Any]] | None = None,
                      default_instructions: dict[str, str] | None = None):
    """(train, eval_dataset or None, held-out rows for the accuracy or None, a name for the data) of an RL command.

    With ``--dataset_name``: its splits (:func:`load_rl_splits`), the held-out rows being the first ``--eval_size``
    rows of the test split. Else ``--train_size`` prompts of ``args.task`` (its config: :func:`task_config_of` with
    ``default_task_configs``) and a disjoint ``eval`` split of ``--eval_size`` prompts (:func:`task_split`; 64 if
    ``--eval_size`` is 0 and only ``--eval_strategy`` needs it). ``eval_dataset`` is that test / eval split unless
    ``--eval_strategy no``; ``--eval_size 0``: no held-out rows. The prompts' instruction:
    :func:`answer_instruction_of` with ``default_instructions`` (``args`` itself is left as the user gave it).
    """
    args = dataclasses.replace(args, answer_instruction=answer_instruction_of(args, default_instructions))
    eval_needed = training_args.eval_strategy != "no"
    seed = training_args.seed
    if args.dataset_name:
        train, test = load_rl_splits(args, seed=seed, require_test=eval_needed)
        heldout = test.select(range(min(args.eval_size, len(test)))) if test is not None else None
        return train, test if eval_needed else None, heldout if args.eval_size else None, args.dataset_name
    task_config = task_config_of(args, default_task_configs)
    train = task_split(args, args.train_size, seed=seed, split="train", **task_config)
    heldout = None
    if args.eval_size or eval_needed:
        heldout = task_split(args, args.eval_size or 64, seed=seed, split="eval", **task_config)
    return train, heldout if eval_needed else None, heldout if args.eval_size else None, args.task


def load_unified_splits(args: UnifiedDataArguments, *, seed: int, require_test: bool) -> tuple[Any, Any | None]:
    """(train, test) of ``--dataset_name`` for the unified command: demonstrations and/or preference pairs."""
    return _load_prepared_splits(args, prepare_unified_dataset, seed=seed, require_test=require_test,
                                 completion_column=args.completion_column, chosen_column=args.chosen_column,
                                 rejected_column=args.rejected_column)


# ------------------------------------------------------------------------------------------------------ rewards


def resolve_reward_funcs(names: list[str]) -> list[Callable[..., Any]]:
    """Reward functions from names: an attribute of :mod:`trl_ext.rewards`, then of :mod:`trl.rewards`, or a dotted
    import path (the current directory is importable, as in ``trl grpo``). A class is instantiated with no arguments.

    Example:
        >>> [type(f).__name__ for f in resolve_reward_funcs(["NumericMatch", "trl_ext.rewards.FormatGrader"])]
        ['NumericMatch', 'FormatGrader']
    """
    import trl.rewards

    from .. import rewards as ours

    funcs = []
    for name in names:
        if "." not in name:
            obj = getattr(ours, name, None)
            if obj is None:
                obj = getattr(trl.rewards, name, None)
            if obj is None:
                known = sorted(n for n in getattr(ours, "__all__", []) if not n.startswith("_"))
                raise UsageError(
                    f"unknown reward function {name!r}: not in trl_ext.rewards ({', '.join(known)}) nor trl.rewards; "
                    "or give a dotted import path (my_module.my_reward)"
                )
        else:
            module_path, attr = name.rsplit(".", 1)
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            try:
                module = importlib.import_module(module_path)
            except ImportError as err:
                raise UsageError(f"reward function {name!r}: cannot import module {module_path!r} ({err})") from err
            if not hasattr(module, attr):
                raise UsageError(f"reward function {name!r}: module {module_path!r} has no attribute {attr!r}")
            obj = getattr(module, attr)
        if isinstance(obj, type):
            obj = obj()
        if not callable(obj):
            raise UsageError(f"reward function {name!r} is a {type(obj).__name__}, not callable")
        funcs.append(obj)
    return funcs


# ------------------------------------------------------------------------------------------------------ running

#: Environment variable through which ``trl-ext <command>`` names itself in the launched script's messages.
PROG_ENV = "TRL_EXT_PROG"


def run_script(make_parser: Callable[..., TrlParser], main: Callable[..., Any], prog: str | None = None) -> None:
    """Parse ``sys.argv`` (``--config`` YAML keys that are not fields are left to ``accelerate launch``) and run
    ``main``; a :class:`~trl_ext.data.loading.DatasetLoadingError` or :class:`UsageError` exits with status 2 and one ``error:`` line."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = make_parser(prog=prog or os.environ.get(PROG_ENV))
    parsed = parser.parse_args_and_config(fail_with_unknown_args=False)
    try:
        main(*parsed)
    except (DatasetLoadingError, UsageError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
