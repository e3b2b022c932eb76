"""Bad-input checks of the RL trainers (:class:`~trl_ext.trainers.rft.RFTTrainer`,
:class:`~trl_ext.trainers.process_grpo.ProcessGRPOTrainer`), run before any training step; the trainer's class name
is a parameter of every message.

Each raises one clear error naming the argument, column, row or function at fault:

- :func:`check_prompt_column` — a dataset without a ``prompt`` column;
- :func:`check_not_empty` — a train dataset without rows (the Trainer would run 0 steps and log one line);
- :func:`check_prompts_not_none` — ``None`` prompts (named by row);
- :func:`check_tokenizer_fits` / :func:`check_same_vocabulary` — a reward model, PRM or reference model whose
  vocabulary differs from the tokenizer that feeds it (else torch's ``index out of range in self`` mid-step);
- :func:`check_quantization` — ``load_in_4bit`` / ``load_in_8bit`` without ``bitsandbytes``;
- :func:`validated_reward_func` / :func:`check_rewards` — a reward function returning the wrong number of rewards,
  NaN / inf, or strings such as ``'1.0'`` (``None`` stays allowed: TRL skips that sample);
- :func:`check_rewards_not_all_none` — a reward function returning ``None`` for every sample of the probe batch (its
  reference column is unusable);
- :func:`resolve_reward_processing_classes` — a reward model whose tokenizer differs from the policy's and cannot be
  found, with no processing class given.

During training, :class:`RolloutChecks` warns loudly, with a count, about rollouts that train nothing (no reward at
all) or in which a ProcessGRPO step separator never occurs.

Example:
    >>> from trl_ext.trainers.checks import check_rewards
    >>> check_rewards("my_grader", [1.0, None], 2)
    [1.0, None]
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import math
from typing import Any, Callable

from transformers import PreTrainedModel

__all__ = [
    "RolloutChecks",
    "check_not_empty",
    "check_prompt_column",
    "check_prompts_not_none",
    "check_quantization",
    "check_rewards",
    "check_rewards_not_all_none",
    "check_same_vocabulary",
    "check_tokenizer_fits",
    "callable_name",
    "is_async_callable",
    "probe_reward_funcs",
    "is_bitsandbytes_available",
    "resolve_reward_processing_classes",
    "validated_reward_func",
]


def is_bitsandbytes_available() -> bool:
    """Whether ``bitsandbytes`` (4-bit / 8-bit quantization, QLoRA) can be imported."""
    return importlib.util.find_spec("bitsandbytes") is not None


def check_quantization(quantization_config: Any, model_init_kwargs: dict | None, trainer: str) -> None:
    """Raise ``ImportError`` naming ``trainer`` if the quantization config (argument or ``model_init_kwargs``) needs a
    missing or broken bitsandbytes."""
    config = quantization_config
    if config is None:
        config = (model_init_kwargs or {}).get("quantization_config")
    if config is None:
        return
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    for flag in ("load_in_4bit", "load_in_8bit"):
        if get(flag, False) and is_bitsandbytes_available():
            try:
                broken = getattr(importlib.import_module("bitsandbytes"), "__trl_ext_broken__", None)
                if broken is not None:
                    raise ImportError(repr(broken)) from broken
            except ImportError as err:  # installed but broken (see trl_ext._BrokenBitsandbytesGuard)
                raise ImportError(
                    f"{trainer}: the quantization_config asks for {flag}=True (QLoRA) but `bitsandbytes` is "
                    f"installed and fails to import: {err.__cause__ or err}. Reinstall it (`pip install -U "
                    f"'bitsandbytes>=0.46'`) or drop --{flag}."
                ) from err
        if get(flag, False) and not is_bitsandbytes_available():
            raise ImportError(
                f"{trainer}: the quantization_config asks for {flag}=True (QLoRA) but `bitsandbytes` is not "
                "installed. Install it with `pip install 'bitsandbytes>=0.46'` (4-bit works on CPU too), or drop "
                f"--{flag}."
            )


def check_prompt_column(dataset: Any, name: str, trainer: str) -> None:
    """Raise ``ValueError`` naming ``name`` if ``dataset`` (or a split of a ``DatasetDict``) has no ``prompt`` column.

    Example:
        >>> from datasets import Dataset
        >>> check_prompt_column(Dataset.from_dict({"question": ["1+1?"]}), "train_dataset", "ProcessGRPOTrainer")
        Traceback (most recent call last):
        ...
        ValueError: ProcessGRPOTrainer: train_dataset has no 'prompt' column (columns: ['question']). ...
    """
    columns = getattr(dataset, "column_names", None)
    if dataset is None or columns is None:
        return
    if isinstance(columns, dict):  # DatasetDict
        for split, split_columns in columns.items():
            if "prompt" not in split_columns:
                raise ValueError(f"{trainer}: {name}[{split!r}] has no 'prompt' column (columns: {split_columns}).")
    elif "prompt" not in columns:
        raise ValueError(
            f"{trainer}: {name} has no 'prompt' column (columns: {columns}). The trainer samples completions for the "
            "'prompt' of each row (a string, or a list of chat messages): rename your question column, e.g. "
            "dataset.rename_column('question', 'prompt')."
        )


def check_not_empty(dataset: Any, name: str, trainer: str) -> None:
    """Raise ``ValueError`` if ``dataset`` has no rows: the Trainer would run 0 steps and log one line, silently.

    Datasets without a length (``IterableDataset``) pass.

    Example:
        >>> from datasets import Dataset
        >>> check_not_empty(Dataset.from_dict({"prompt": []}), "train_dataset", "RFTTrainer")
        Traceback (most recent call last):
        ...
        ValueError: RFTTrainer: train_dataset has 0 rows, ...
    """
    if dataset is None or not hasattr(dataset, "__len__") or isinstance(getattr(dataset, "column_names", None), dict):
        return
    if len(dataset) == 0:
        raise ValueError(
            f"{trainer}: {name} has 0 rows, so training would run 0 steps (the Trainer logs one line and returns) "
            "and nothing would learn. Pass a dataset with at least one row: check the split, the filters, and "
            "--max_train_samples / select(...)."
        )


def check_prompts_not_none(dataset: Any, name: str, trainer: str) -> None:
    """Raise ``ValueError`` naming the first rows whose ``prompt`` is ``None`` (the tokenizer would fail mid-step,
    or the model would be prompted with the text "None"). A ``datasets.Dataset`` is checked from its Arrow column's
    null count, without reading the prompts; other datasets pass.

    Example:
        >>> from datasets import Dataset
        >>> check_prompts_not_none(Dataset.from_dict({"prompt": ["1+1?", None]}), "train_dataset", "RFTTrainer")
        Traceback (most recent call last):
        ...
        ValueError: RFTTrainer: train_dataset has a None 'prompt' in 1 row(s): row(s) [1]. ...
    """
    from datasets import Dataset

    if not isinstance(dataset, Dataset) or "prompt" not in dataset.column_names:
        return
    if dataset.data.column("prompt").null_count == 0:  # the whole table (a select() view has no more nulls)
        return
    rows = [i for i, prompt in enumerate(dataset["prompt"]) if prompt is None]
    if not rows:
        return
    raise ValueError(
        f"{trainer}: {name} has a None 'prompt' in {len(rows)} row(s): row(s) {rows[:10]}"
        f"{' ...' if len(rows) > 10 else ''}. Every row needs a prompt (a string, or a list of chat messages): "
        "drop those rows (dataset.filter(lambda row: row['prompt'] is not None)) or fill them in."
    )


def is_async_callable(func: Callable) -> bool:
    """Whether calling ``func`` (a function, a ``functools.partial`` of one, or an object with an async ``__call__``)
    returns a coroutine."""
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(getattr(func, "__call__", None))


def callable_name(func: Callable) -> str:
    """The name TRL logs a reward function under: its ``__name__`` (through ``functools.partial``), else its class's."""
    inner = func
    while isinstance(inner, functools.partial):
        inner = inner.func
    return getattr(inner, "__name__", type(inner).__name__)


def check_rewards(name: str, rewards: Any, n: int) -> list:
    try:
        rewards = list(rewards)
    except TypeError:
        raise ValueError(
            f"Reward function {name!r} returned {type(rewards).__name__}; it must return a list with one float (or "
            "None) per completion."
        ) from None
    if len(rewards) != n:
        raise ValueError(
            f"Reward function {name!r} returned {len(rewards)} rewards for {n} completions; it must return exactly "
            "one float (or None to skip a sample) per completion."
        )
    texts = [i for i, r in enumerate(rewards) if isinstance(r, (str, bytes))]
    if texts:
        raise ValueError(
            f"Reward function {name!r} returned a {type(rewards[texts[0]]).__name__} ({rewards[texts[0]]!r}) for "
            f"completion(s) {texts[:8]}; rewards must be numbers (float or int), or None to skip a sample. Return "
            f"float(...) of the value (TRL would fail later with torch's \"too many dimensions 'str'\")."
        )
    bad = []
    for i, r in enumerate(rewards):
        if r is None:
            continue
        try:
            finite = math.isfinite(float(r))
        except (TypeError, ValueError):
            finite = False
        if not finite:
            bad.append(i)
    if bad:
        raise ValueError(
            f"Reward function {name!r} returned a non-finite or non-numeric reward ({rewards[bad[0]]!r}) for "
            f"completion(s) {bad[:8]}. Return a finite float, or None to skip a sample (TRL then leaves it out)."
        )
    return rewards


def _reference_columns(func: Callable) -> tuple[str, ...]:
    """The reference column(s) a grader reads (``answer_column`` of trl_ext graders and module-level functions)."""
    inner = func
    while True:
        if isinstance(inner, functools.partial):
            inner = inner.func
        elif getattr(inner, "__wrapped__", None) is not None:
            inner = inner.__wrapped__
        else:
            break
    columns = getattr(inner, "answer_column", None)
    if isinstance(columns, str):
        return (columns,)
    if isinstance(columns, (list, tuple)) and all(isinstance(c, str) for c in columns):
        return tuple(columns)
    return ()


def check_rewards_not_all_none(name: str, rewards: Any, func: Callable | None = None, columns: Any = None) -> None:
    """Raise ``ValueError`` if a reward function returned ``None`` for every sample of the probe batch.

    ``None`` means "not applicable" (no usable reference): when *every* sample gets it, TRL logs "All reward
    functions returned None", the loss is 0 and nothing learns, without an error. The message names the function
    and the reference column it reads (``answer_column`` of trl_ext graders), with an example of the values found.

    Example:
        >>> check_rewards_not_all_none("numeric_match", [None, 1.0])
        >>> check_rewards_not_all_none("numeric_match", [None, None], columns={"answer": ["x + 1", "y"]})
        Traceback (most recent call last):
        ...
        ValueError: Reward function 'numeric_match' returned None for all 2 probe samples: ...
    """
    rewards = list(rewards) if rewards is not None else []
    if not rewards or any(r is not None for r in rewards):
        return
    columns = dict(columns or {})
    wanted = _reference_columns(func) if func is not None else ()
    present = [c for c in wanted if c in columns]
    if present:
        column = present[0]
        where = f"its reference column {column!r} holds e.g. {str(columns[column][0])[:80]!r}, which it cannot use"
    elif wanted:
        shown = " / ".join(repr(c) for c in wanted)
        where = f"its reference column {shown} is not in the dataset (columns: {sorted(columns)})"
    else:
        where = f"the dataset columns it was given: {sorted(columns)}"
    raise ValueError(
        f"Reward function {name!r} returned None for all {len(rewards)} probe samples: it finds no usable reference, "
        f"so training would learn nothing from it (TRL would log 'All reward functions returned None' and a loss of "
        f"0). Checked before step 1: {where}. Point the grader at the right column (answer_column=..., or the "
        "command's --answer_column), or fix the reference format; if the function applies only to some rows of a "
        "mixed dataset, set validate_reward_funcs=False."
    )


def probe_reward_funcs(
    reward_funcs: list, names: list[str], dataset: Any, tokenizer: Any, trainer_state: Any = None,
    check_output: bool = False,
) -> None:
    """Call each callable reward function once on <= 2 dataset rows with placeholder completions (``""`` and
    ``"#### 0"``) and apply :func:`check_rewards_not_all_none`; with ``check_output`` also :func:`check_rewards`
    (one finite float or None per completion) to functions not already wrapped by :func:`validated_reward_func`.
    Reward models (``nn.Module``), datasets without rows and iterable datasets are skipped.
    """
    import asyncio

    from torch import nn
    from trl.data_utils import is_conversational

    if dataset is None or not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__") or len(dataset) == 0:
        return
    if isinstance(getattr(dataset, "column_names", None), dict):  # a DatasetDict: nothing TRL would train on
        return
    rows = [dataset[i] for i in range(min(2, len(dataset)))]
    if not all(isinstance(row, dict) and "prompt" in row for row in rows):
        return
    prompts = [row["prompt"] for row in rows]
    texts = ["", "#### 0"][: len(rows)]
    conversational = is_conversational({"prompt": prompts[0]})
    completions = [[{"role": "assistant", "content": t}] for t in texts] if conversational else texts
    completion_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts] if tokenizer else None
    columns = {k: [row[k] for row in rows] for k in rows[0] if k not in ("prompt", "completion", "completion_ids")}
    for func, name in zip(reward_funcs, names):
        if isinstance(func, nn.Module) or not callable(func):
            continue
        out = func(prompts=prompts, completions=completions, completion_ids=completion_ids, trainer_state=trainer_state,
                   log_extra=lambda *a, **k: None, log_metric=lambda *a, **k: None, **columns)
        if asyncio.iscoroutine(out):
            loop = asyncio.new_event_loop()
            try:
                out = loop.run_until_complete(out)
            finally:
                loop.close()
        if check_output and not getattr(func, "__wrapped__", None):  # wrapped ones check their own output
            check_rewards(name, out, len(completions))
        check_rewards_not_all_none(name, out, func, columns)


def validated_reward_func(func: Callable) -> Callable:
    """Wrap a TRL-convention reward function so that a wrong number of rewards or a NaN/inf raises a clear error.

    ``None`` entries stay allowed (TRL skips those samples). The wrapper keeps the function's name (TRL logs
    ``rewards/<name>/mean``) and its sync/async nature.

    Example:
        >>> f = validated_reward_func(lambda completions, **kw: [1.0] * len(completions))
        >>> f(prompts=["a"], completions=["b"])
        [1.0]
    """
    name = callable_name(func)
    if is_async_callable(func):

        async def wrapped(*args: Any, **kwargs: Any):
            out = await func(*args, **kwargs)
            return check_rewards(name, out, len(kwargs.get("completions", kwargs.get("prompts", []))))

    else:

        def wrapped(*args: Any, **kwargs: Any):
            out = func(*args, **kwargs)
            return check_rewards(name, out, len(kwargs.get("completions", kwargs.get("prompts", []))))

    wrapped.__name__ = name
    wrapped.__qualname__ = name
    wrapped.__doc__ = getattr(func, "__doc__", None)
    wrapped.__wrapped__ = func  # type: ignore[attr-defined]
    return wrapped


def _vocab_size(config: Any) -> int | None:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "vocab_size", None)


def _load_tokenizer(name: str | None, **kwargs: Any):
    if not name:
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, **kwargs)
    except Exception:  # noqa: BLE001 - any failure means "no tokenizer to be found there"
        return None


def _embedding_rows(model: Any) -> int | None:
    """How many token ids ``model`` embeds (its input embedding's rows, else ``config.vocab_size``)."""
    try:
        return int(model.get_input_embeddings().num_embeddings)
    except Exception:  # noqa: BLE001 - no embedding module (or a custom one): fall back on the config
        return _vocab_size(model.config) if hasattr(model, "config") else None


def _model_label(model: Any) -> str:
    """``'path'`` for a path, ``Class('name_or_path')`` for a model loaded from one, ``Class`` otherwise."""
    if isinstance(model, str):
        return repr(model)
    name = getattr(getattr(model, "config", None), "_name_or_path", "")
    return f"{type(model).__name__}({name!r})" if name else type(model).__name__


def check_tokenizer_fits(tokenizer: Any, model: Any, what: str, tokenizer_what: str, trainer: str) -> None:
    """Raise ``ValueError`` if ``tokenizer`` produces token ids that ``model`` cannot embed (``len(tokenizer)`` above
    the model's embedding rows): torch would fail mid-step with ``index out of range in self``.

    ``what`` names the model (e.g. ``"reward model reward_funcs[0]"``), ``tokenizer_what`` where the tokenizer comes
    from (e.g. ``"reward_processing_classes[0]"``).

    Example:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> class Tok:
        ...     name_or_path = "policy"
        ...     def __len__(self): return 200
        >>> model = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=8, intermediate_size=16,
        ...     num_hidden_layers=1, num_attention_heads=2))
        >>> check_tokenizer_fits(Tok(), model, "the PRM", "its tokenizer", "ProcessGRPOTrainer")
        Traceback (most recent call last):
        ...
        ValueError: ProcessGRPOTrainer: the PRM ... embeds 100 token ids, but its tokenizer ('policy') has 200 ...
    """
    rows = model if isinstance(model, int) else _embedding_rows(model)
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a VLM processor's tokenizer
    if rows is None or tokenizer is None or len(tokenizer) <= rows:
        return
    label = "" if isinstance(model, int) else f" {_model_label(model)}"
    raise ValueError(
        f"{trainer}: {what}{label} embeds {rows} token ids, but {tokenizer_what} "
        f"({getattr(tokenizer, 'name_or_path', type(tokenizer).__name__)!r}) has {len(tokenizer)} tokens: the two "
        "have different vocabularies, and the first token id >= "
        f"{rows} would fail mid-step with torch's 'index out of range in self'. Pass the model's own tokenizer for "
        f"{what}, or a model with the same vocabulary."
    )


def check_same_vocabulary(policy: Any, other: Any, what: str, trainer: str) -> None:
    """Raise ``ValueError`` naming both models if ``other`` (e.g. the reference model, which is fed the policy's token
    ids) embeds a different number of token ids than ``policy``.

    Example:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> def tiny(vocab):
        ...     return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=8, intermediate_size=16,
        ...                                         num_hidden_layers=1, num_attention_heads=2))
        >>> check_same_vocabulary(tiny(100), tiny(100), "ref_model", "UnifiedLikelihoodTrainer")
        >>> check_same_vocabulary(tiny(100), tiny(50), "ref_model", "UnifiedLikelihoodTrainer")
        Traceback (most recent call last):
        ...
        ValueError: UnifiedLikelihoodTrainer: ref_model ... embeds 50 token ids but the policy ... embeds 100; ...
    """
    if policy is None or other is None:
        return
    rows, other_rows = _embedding_rows(policy), _embedding_rows(other)
    if rows is None or other_rows is None or rows == other_rows:
        return
    raise ValueError(
        f"{trainer}: {what} {_model_label(other)} embeds {other_rows} token ids but the policy {_model_label(policy)} "
        f"embeds {rows}; {what} reads the policy's token ids, so their vocabularies must be the same (else torch's "
        "'index out of range in self' mid-step, or log-probs of other tokens). Use a copy of the policy's base "
        f"model as {what}, or leave it None."
    )


def resolve_reward_processing_classes(
    model: Any,
    reward_funcs: list,
    reward_processing_classes: Any,
    processing_class: Any,
    args: Any,
    trainer: str,
) -> list:
    """One processing class per reward function; a reward model gets its own tokenizer or a clear error.

    For a reward model (a path or a ``PreTrainedModel``) without a processing class: its own tokenizer if one loads
    from its path (as TRL would do); otherwise the policy's tokenizer *only* if the reward model has the policy's
    vocabulary. A reward model whose tokenizer differs and cannot be found raises, naming ``reward_processing_classes``;
    so does a processing class (given or found) with more tokens than its reward model embeds.
    """
    from transformers import AutoConfig

    n = len(reward_funcs)
    if reward_processing_classes is None:
        classes = [None] * n
    elif isinstance(reward_processing_classes, (list, tuple)):
        classes = list(reward_processing_classes)
    else:
        classes = [reward_processing_classes]
    if len(classes) != n:
        raise ValueError(
            f"The number of reward processing classes ({len(classes)}) must match the number of reward functions "
            f"({n}). {trainer}: give one per reward function, in the order of reward_funcs (None for callables and "
            "for reward models whose own tokenizer loads from their path)."
        )
    kwargs = {"trust_remote_code": args.trust_remote_code}
    policy_vocab: int | None = None
    policy_tokenizer = None
    for i, func in enumerate(reward_funcs):
        if not isinstance(func, (str, PreTrainedModel)):
            continue
        if classes[i] is not None:
            rows = _vocab_size(AutoConfig.from_pretrained(func, **kwargs)) if isinstance(func, str) else func
            what = f"reward model reward_funcs[{i}]" + (f" ({func!r})" if isinstance(func, str) else "")
            check_tokenizer_fits(classes[i], rows, what, f"its processing class reward_processing_classes[{i}]",
                                 trainer)
            continue
        if isinstance(func, str):
            name, rm_vocab = func, _vocab_size(AutoConfig.from_pretrained(func, **kwargs))
        else:
            name, rm_vocab = getattr(func.config, "_name_or_path", "") or "", _vocab_size(func.config)
        tokenizer = _load_tokenizer(name, **kwargs)
        if tokenizer is not None:
            if rm_vocab is not None and len(tokenizer) > rm_vocab:
                raise ValueError(
                    f"{trainer}: the tokenizer found for reward model reward_funcs[{i}] ({name}) has {len(tokenizer)} "
                    f"tokens but the model embeds only {rm_vocab}; pass its tokenizer in reward_processing_classes."
                )
            classes[i] = tokenizer
            continue
        if policy_vocab is None:
            policy_name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "")
            policy_config = AutoConfig.from_pretrained(model, **kwargs) if isinstance(model, str) else model.config
            policy_vocab = _vocab_size(policy_config)
            policy_tokenizer = processing_class if processing_class is not None else _load_tokenizer(policy_name, **kwargs)
            policy_tokenizer = getattr(policy_tokenizer, "tokenizer", policy_tokenizer)  # a VLM processor's tokenizer
        if rm_vocab is None or rm_vocab != policy_vocab or policy_tokenizer is None:
            raise ValueError(
                f"{trainer}: reward model reward_funcs[{i}] ({name or type(func).__name__}) has no loadable tokenizer "
                f"and its vocabulary ({rm_vocab} tokens) differs from the policy's ({policy_vocab}), so the policy "
                f"tokenizer cannot serve it. Pass its tokenizer: reward_processing_classes=[...] (entry {i})."
            )
        classes[i] = policy_tokenizer
    return classes


class RolloutChecks:
    """Loud, counted warnings about rollouts that look normal but train nothing (or less than asked for).

    Refusing is wrong here — a batch of rows without usable references, or a policy that has not yet learnt to write
    the step separator, can be transient — but silence is wrong too. Each problem is warned about at its 1st, 2nd,
    4th, 8th, … occurrence, with the count of rollouts it affected so far (``counts`` holds them all), on the main
    process only.

    Example:
        >>> import torch, warnings
        >>> checks = RolloutChecks("RFTTrainer")
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     checks.rewards(torch.full((4, 1), float("nan")), ["numeric_match"], step=3)
        >>> checks.counts["no_reward"], "1 of 1 rollout" in str(caught[0].message)
        (1, True)
    """

    def __init__(self, trainer: str, is_main_process: bool = True) -> None:
        self.trainer = trainer
        self.is_main_process = is_main_process
        self.rollouts = 0
        self.counts: dict[str, int] = {}

    def _flag(self, problem: str, message: str, step: int) -> None:
        n = self.counts[problem] = self.counts.get(problem, 0) + 1
        if self.is_main_process and n & (n - 1) == 0:  # 1, 2, 4, 8, ...
            import warnings

            warnings.warn(
                f"{self.trainer} (step {step}): {message} [{n} of {self.rollouts} rollout(s) so far; warned at the "
                "1st, 2nd, 4th, 8th, ... occurrence]",
                RuntimeWarning,
                stacklevel=3,
            )

    def rewards(self, rewards_per_func: Any, names: list[str], step: int) -> None:
        """One rollout's ``(B_global, n_funcs)`` rewards (NaN where a function returned ``None``): flag it when no
        completion got any reward (TRL then warns per row and the rollout trains nothing)."""
        import torch

        self.rollouts += 1
        if rewards_per_func.numel() and bool(torch.isnan(rewards_per_func).all()):
            self._flag(
                "no_reward",
                f"every reward function ({', '.join(names)}) returned None for all {rewards_per_func.shape[0]} "
                "completions of this rollout, so it trains nothing. Check the reference column of these rows (TRL's "
                "warnings above list them; the check before step 1 probes only 2 rows).",
                step,
            )

    def process_rollout(
        self, num_steps: list[int], scored_steps: int, outcome_scored: int | None, separator: str,
        process_names: list[str], step: int,
    ) -> None:
        """One ProcessGRPO rollout (global batch): ``num_steps`` per completion, how many steps some process reward
        function scored, how many completions got an outcome reward (``None`` without outcome rewards). Flags a
        rollout without any reward, one whose process reward functions scored no step, and one in which the step
        separator never occurs (every completion one step: process supervision reduces to outcome rewards)."""
        self.rollouts += 1
        funcs = ", ".join(process_names)
        if scored_steps == 0 and not outcome_scored:
            what = [f"the process reward functions ({funcs}) returned None for every step"] if process_names else []
            if outcome_scored is not None:
                what.append("every outcome reward was None")
            self._flag(
                "no_reward",
                f"no reward at all in the {len(num_steps)} completions of this rollout ({' and '.join(what)}), so it "
                "trains nothing. Check the reward functions' inputs (reference columns, step format; "
                "ArithmeticStepVerifier(no_claim_reward=...) scores steps without arithmetic).",
                step,
            )
        elif process_names and scored_steps == 0:
            self._flag(
                "no_step_reward",
                f"the process reward functions ({funcs}) returned None for every step of the {len(num_steps)} "
                "completions: this rollout trains on the outcome rewards only (plain GRPO).",
                step,
            )
        if process_names and num_steps and max(num_steps) <= 1:
            self._flag(
                "one_step",
                f"the step separator {separator!r} occurs in none of the {len(num_steps)} completions of this "
                "rollout: every completion is one step, so process supervision reduces to one reward per completion "
                "(plain GRPO). Set step_separator to what the model writes between steps (e.g. '\\n' instead "
                "of '\\n\\n'), or prompt it to use the separator.",
                step,
            )

