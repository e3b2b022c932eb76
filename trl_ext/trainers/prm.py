"""Process reward model training: a token classifier that says, step by step, whether a solution is still correct.

TRL 1.16 removed its ``PRMTrainer``; :class:`PRMTrainer` trains an ``AutoModelForTokenClassification`` on TRL's
stepwise-supervision format (columns ``prompt``, ``completions`` = list of step strings, ``labels`` = one bool per
step, True = correct), the format :func:`trl_ext.data.step_labelled_dataset` writes. It is a ``transformers.Trainer``:
the loss is the model's own token-classification cross-entropy over labelled tokens, evaluation reports PRM metrics
(:mod:`trl_ext.core.prm_metrics`), and the trained folder is read by :class:`trl_ext.rewards.ProcessRewardModel`
(and so by :class:`~trl_ext.trainers.process_grpo.ProcessGRPOTrainer`).

Input layout (the one :class:`~trl_ext.rewards.ProcessRewardModel` scores, so training and scoring see the same
tokens)::

    [bos] prompt  step_1 sep  step_2 sep  …  step_n sep
          -100…   -100… y_1   -100… y_2      -100… y_n

Each piece is tokenized on its own without special tokens; the label of step ``j`` (1 = correct, 0 = incorrect)
sits on the **last token of** ``step_j + sep`` (the last separator token), every other token is ``-100``.
Conversational prompts are read as the content of their last user message (as ``ProcessRewardModel`` reads them).
Truncation: ``max_prompt_length`` keeps the prompt's last tokens, ``max_completion_length`` the completion's first
tokens, and past ``max_length`` the prompt is cut from the left first (to at least one token), then the whole from
the right — the order ``ProcessRewardModel`` uses. A step whose last token is cut keeps no label; rows left with no
label are dropped (with a warning).

Example:
    >>> from trl_ext.data import step_labelled_dataset
    >>> from trl_ext.trainers.prm import PRMConfig, PRMTrainer
    >>> args = PRMConfig("out", max_steps=10, report_to="none")
    >>> trainer = PRMTrainer("path/to/model", args=args, train_dataset=step_labelled_dataset(64))  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP
    >>> from trl_ext.rewards import ProcessRewardModel  # doctest: +SKIP
    >>> prm = ProcessRewardModel("out")  # after trainer.save_model()  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence as SequenceOf
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from datasets import Features, Sequence, Value
from torch import nn
from transformers import (
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    Trainer,
    TrainingArguments,
)

from ..core.prm_metrics import prm_metrics, scores_to_predictions, token_level_to_steps
from ..hub import HubPushMixin
from ..model_card import ModelCardMixin
from ..text import prompt_text
from .checkpointing import ResumeMixin
from .checks import check_not_empty, check_tokenizer_fits

__all__ = ["CORRECT_LABEL", "ID2LABEL", "LABEL2ID", "PRMConfig", "PRMTrainer", "check_step_row", "tokenize_step_row"]

ID2LABEL = {0: "incorrect", 1: "correct"}
LABEL2ID = {v: k for k, v in ID2LABEL.items()}
CORRECT_LABEL = 1
"""Class index of a correct step (``ProcessRewardModel``'s default ``correct_label="correct"`` finds it by name)."""

_REQUIRED_COLUMNS = ("prompt", "completions", "labels")


@dataclass
class PRMConfig(TrainingArguments):
    """Configuration of :class:`PRMTrainer`; every ``transformers.TrainingArguments`` field applies.

    Example:
        >>> from trl_ext.trainers.prm import PRMConfig
        >>> PRMConfig("out", step_separator="\\n", max_length=512).max_length
        512
    """

    learning_rate: float = field(
        default=1e-5, metadata={"help": "Initial learning rate of AdamW (TRL's former PRMConfig default: 1e-5)."}
    )
    logging_steps: float = field(default=10, metadata={"help": "Log every X update steps. Default 10."})
    max_length: int | None = field(
        default=1024,
        metadata={
            "help": "Maximum tokens of prompt + steps. Past it the prompt is cut from the left first (to at least one "
            "token), then the sequence from the right; a step whose last token is cut carries no label. Use the "
            "same value as ProcessRewardModel's max_length (default: the model's max_position_embeddings). "
            "None: no limit. Default 1024."
        },
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "Maximum prompt tokens (the last ones are kept, BOS included in the count). Default None: the "
            "prompt is only cut through max_length, as ProcessRewardModel does when scoring."
        },
    )
    max_completion_length: int | None = field(
        default=None,
        metadata={
            "help": "Maximum tokens of the steps (the first ones are kept; cut steps lose their label). Default None."
        },
    )
    step_separator: str = field(
        default="\n",
        metadata={
            "help": "String appended to every step; the step's label sits on its last token. Must match "
            "ProcessRewardModel's step_separator (both default to '\\n', TRL's former PRMConfig default)."
        },
    )
    train_on_last_step_only: bool = field(
        default=False,
        metadata={
            "help": "Train on the label of the last step only (outcome supervision in the PRM format); evaluation "
            "still labels every step. Default False."
        },
    )
    correct_threshold: float = field(
        default=0.5,
        metadata={
            "help": "A step is predicted correct when P(correct) >= this value (for the evaluation metrics). "
            "Default 0.5."
        },
    )
    disable_dropout: bool = field(
        default=True, metadata={"help": "Set every dropout probability of the model to 0. Default True."}
    )
    dataset_num_proc: int | None = field(
        default=None, metadata={"help": "Processes for tokenizing the dataset (datasets.map). Default None."}
    )
    model_init_kwargs: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments of AutoModelForTokenClassification.from_pretrained when `model` is a path "
            "(e.g. {'dtype': 'bfloat16', 'device_map': 'cpu'})."
        },
    )

    def __post_init__(self):
        for name in ("max_length", "max_prompt_length", "max_completion_length"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"PRMConfig.{name} must be a positive int or None, got {value!r}.")
        if not isinstance(self.step_separator, str) or self.step_separator == "":
            raise ValueError(f"PRMConfig.step_separator must be a non-empty string, got {self.step_separator!r}.")
        if not 0.0 < float(self.correct_threshold) < 1.0:
            raise ValueError(f"PRMConfig.correct_threshold must lie in (0, 1), got {self.correct_threshold}.")
        super().__post_init__()


# ----------------------------------------------------------------------------------------------------------------------
# Validation and tokenization of one row (pure functions of the row and the tokenizer)
# ----------------------------------------------------------------------------------------------------------------------


def check_step_row(row: dict[str, Any], index: int, dataset_name: str = "train") -> None:
    """Raise ``ValueError`` naming row ``index`` of ``dataset_name`` when it is not a stepwise-supervision row.

    A row needs a ``prompt`` (str, or a list of ``{"role", "content"}`` messages), a non-empty ``completions`` list
    of step strings and ``labels``: one ``bool`` per step (True = correct step).
    """
    where = f"PRMTrainer: row {index} of the {dataset_name} dataset"
    prompt = row.get("prompt")
    if not isinstance(prompt, str) and not (
        isinstance(prompt, list) and all(isinstance(m, dict) and "content" in m for m in prompt)
    ):
        raise ValueError(f"{where}: 'prompt' must be a string or a list of chat messages, got {type(prompt).__name__}.")
    steps, labels = row.get("completions"), row.get("labels")
    if not isinstance(steps, (list, tuple)):
        raise ValueError(f"{where}: 'completions' must be a list of step strings, got {type(steps).__name__}.")
    if len(steps) == 0:
        raise ValueError(f"{where}: 'completions' is an empty list; a row needs at least one step.")
    for j, step in enumerate(steps):
        if not isinstance(step, str):
            raise ValueError(f"{where}: completions[{j}] must be a string (one step), got {type(step).__name__}.")
    if not isinstance(labels, (list, tuple)):
        raise ValueError(f"{where}: 'labels' must be a list of bools (one per step), got {type(labels).__name__}.")
    if len(labels) != len(steps):
        raise ValueError(
            f"{where}: 'labels' has {len(labels)} entries but 'completions' has {len(steps)} steps; give one label "
            "per step."
        )
    for j, label in enumerate(labels):
        if not isinstance(label, (bool, np.bool_)):
            raise ValueError(
                f"{where}: labels[{j}] is {label!r} ({type(label).__name__}); labels must be booleans "
                "(True = correct step, False = incorrect step)."
            )


def separator_token_ids(tokenizer: Any, separator: str) -> list[int]:
    """Token ids of ``separator`` (tokenized alone, no special tokens), as ``ProcessRewardModel`` appends them.

    Raises ``ValueError`` when the separator gives no token or the unknown token (it is not in the vocabulary);
    warns when it takes several tokens (the label then sits on the last of them).
    """
    ids = tokenizer(separator, add_special_tokens=False)["input_ids"]
    unk = getattr(tokenizer, "unk_token_id", None)
    unk_token = getattr(tokenizer, "unk_token", None)
    if not ids or (unk is not None and unk in ids and separator != unk_token):
        raise ValueError(
            f"PRMTrainer: the step separator {separator!r} is missing from the tokenizer's vocabulary (it tokenizes "
            f"to {ids}); choose a separator the tokenizer knows (e.g. '\\n'), or add it as a token."
        )
    if len(ids) > 1:
        warnings.warn(
            f"PRMTrainer: the step separator {separator!r} is a multi-token separator ({len(ids)} tokens: {ids}); each "
            "step's label sits on its last token.",
            stacklevel=3,
        )
    return list(ids)


def tokenize_step_row(
    prompt: Any,
    steps: SequenceOf[str],
    labels: SequenceOf[bool],
    tokenizer: Any,
    separator_ids: SequenceOf[int],
    *,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    max_completion_length: int | None = None,
    train_on_last_step_only: bool = False,
) -> dict[str, list[int]]:
    """``{"input_ids", "labels"}`` of one row in the layout of the module docstring (labels: 1 correct, 0 incorrect,
    -100 ignored), with the truncation rules of :class:`PRMConfig`."""
    prompt_ids = list(tokenizer(prompt_text(prompt), add_special_tokens=False)["input_ids"])
    if tokenizer.bos_token_id is not None:
        prompt_ids = [tokenizer.bos_token_id] + prompt_ids
    if max_prompt_length is not None and len(prompt_ids) > max_prompt_length:
        prompt_ids = prompt_ids[len(prompt_ids) - max_prompt_length :]
    step_labels = [int(bool(y)) for y in labels]
    if train_on_last_step_only:
        step_labels = [-100] * (len(step_labels) - 1) + step_labels[-1:]
    completion_ids: list[int] = []
    completion_labels: list[int] = []
    for step, label in zip(steps, step_labels):
        piece = list(tokenizer(step, add_special_tokens=False)["input_ids"]) + list(separator_ids)
        completion_ids.extend(piece)
        completion_labels.extend([-100] * (len(piece) - 1) + [label])
    if max_completion_length is not None:
        completion_ids = completion_ids[:max_completion_length]
        completion_labels = completion_labels[:max_completion_length]
    if max_length is not None and len(prompt_ids) + len(completion_ids) > max_length:
        keep = max(max_length - len(completion_ids), min(len(prompt_ids), 1))
        prompt_ids = prompt_ids[len(prompt_ids) - keep :]
    input_ids = prompt_ids + completion_ids
    token_labels = [-100] * len(prompt_ids) + completion_labels
    if max_length is not None:
        input_ids, token_labels = input_ids[:max_length], token_labels[:max_length]
    return {"input_ids": input_ids, "labels": token_labels}


# ----------------------------------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------------------------------


def _keep_head_unquantized(quantization_config: Any) -> Any:
    """A copy of a bitsandbytes config that leaves the (new, trainable) score head in full precision.

    transformers would otherwise quantize ``score`` too: a freshly initialised head then has no quantization state and
    cannot train.
    """
    import copy

    if isinstance(quantization_config, dict):
        config = dict(quantization_config)
        skip = list(config.get("llm_int8_skip_modules") or [])
        config["llm_int8_skip_modules"] = skip + [m for m in _HEAD_MODULES if m not in skip]
        return config
    if not hasattr(quantization_config, "llm_int8_skip_modules"):
        return quantization_config
    config = copy.deepcopy(quantization_config)
    skip = list(config.llm_int8_skip_modules or [])
    config.llm_int8_skip_modules = skip + [m for m in _HEAD_MODULES if m not in skip]
    return config


_HEAD_MODULES = ("score", "classifier")


def _is_quantized(model: nn.Module) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


class PRMTrainer(ResumeMixin, HubPushMixin, ModelCardMixin, Trainer):
    """Train a process reward model (token classification) on step-labelled data.

    Args:
        model: a path / Hub id (loaded with ``AutoModelForTokenClassification``, 2 labels ``incorrect``/``correct``,
            ``args.model_init_kwargs`` and ``quantization_config``) or a token-classification model with 2 labels.
        args: a :class:`PRMConfig`.
        train_dataset, eval_dataset: ``datasets.Dataset`` (eval: or a dict of them) with ``prompt``, ``completions``,
            ``labels``; validated row by row before anything is tokenized.
        processing_class: the tokenizer (loaded from ``model``'s path when omitted).
        compute_metrics: default :func:`trl_ext.core.prm_metrics.prm_metrics` of the eval split (``eval_step_accuracy``,
            ``eval_incorrect_precision``/``_recall``/``_f1``, ``eval_first_error_accuracy``, …).
        peft_config: a ``peft`` LoRA config: only the adapter and the score head train (task type ``TOKEN_CLS``).
        quantization_config: e.g. ``BitsAndBytesConfig(load_in_4bit=True)`` (QLoRA; needs ``peft_config``).

    Example:
        >>> trainer = PRMTrainer(model_path, args=PRMConfig("prm", max_steps=50),  # doctest: +SKIP
        ...                      train_dataset=step_labelled_dataset(256), eval_dataset=step_labelled_dataset(32,
        ...                      split="eval"))
        >>> trainer.train(); trainer.evaluate()["eval_first_error_accuracy"]  # doctest: +SKIP
    """

    _tag_names = ["trl", "trl-ext", "prm", "process-reward-model", "token-classification"]
    _name = "PRM"
    _card_template = "prm.md"
    _card_hyperparameters = (
        "step_separator", "max_length", "max_prompt_length", "max_completion_length", "train_on_last_step_only",
        "correct_threshold",
    )
    _card_plot_keys = ("loss", "eval_loss", "eval_step_accuracy", "eval_first_error_accuracy", "eval_incorrect_f1")
    _card_metric_keys = ("eval_step_accuracy", "eval_first_error_accuracy", "eval_incorrect_f1", "eval_incorrect_*",
                         "eval_loss", "eval_*", "loss", "train_loss", "train_runtime")
    _paper = {
        "title": "Solving Math Word Problems With Process- and Outcome-Based Feedback",
        "id": "2211.14275",
        "citation": """@article{uesato2022solving,
    title   = {{Solving Math Word Problems With Process- and Outcome-Based Feedback}},
    author  = {Uesato, Jonathan and Kushman, Nate and Kumar, Ramana and Song, Francis and Siegel, Noah and Wang, Lisa and Creswell, Antonia and Irving, Geoffrey and Higgins, Irina},
    year    = 2022,
    journal = {arXiv preprint arXiv:2211.14275}
}""",
    }

    def __init__(
        self,
        model: Any,
        args: PRMConfig | None = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        compute_metrics: Any = None,
        callbacks: Any = None,
        optimizers: tuple = (None, None),
        preprocess_logits_for_metrics: Any = None,
        peft_config: Any = None,
        quantization_config: Any = None,
    ):
        if args is None:
            name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "model")
            args = PRMConfig(f"{str(name).rstrip('/').split('/')[-1]}-PRM")
        elif not isinstance(args, PRMConfig):
            raise TypeError(f"PRMTrainer: `args` must be a PRMConfig, got {type(args).__name__}.")

        # ---- data first: bad rows fail before the model is loaded --------------------------------------------------
        self._check_dataset(train_dataset, "train")
        check_not_empty(train_dataset, "train_dataset", type(self).__name__)
        if isinstance(eval_dataset, dict):
            for key, split in eval_dataset.items():
                self._check_dataset(split, f"eval[{key!r}]")
        else:
            self._check_dataset(eval_dataset, "eval")

        model_path = model if isinstance(model, str) else getattr(model.config, "_name_or_path", None)
        if processing_class is None:
            if not model_path:
                raise ValueError("PRMTrainer: pass `processing_class` (the tokenizer) with a model object.")
            processing_class = AutoTokenizer.from_pretrained(model_path)
        if processing_class.pad_token is None:
            processing_class.pad_token = processing_class.eos_token
        self._separator_ids = separator_token_ids(processing_class, args.step_separator)

        # ---- model ---------------------------------------------------------------------------------------------
        if isinstance(model, str):
            init_kwargs = dict(args.model_init_kwargs or {})
            if quantization_config is not None:
                init_kwargs["quantization_config"] = quantization_config
            if init_kwargs.get("quantization_config") is not None:
                init_kwargs["quantization_config"] = _keep_head_unquantized(init_kwargs["quantization_config"])
            model = AutoModelForTokenClassification.from_pretrained(
                model, num_labels=2, id2label=ID2LABEL, label2id=LABEL2ID, **init_kwargs
            )
        elif quantization_config is not None:
            raise ValueError("PRMTrainer: `quantization_config` applies when `model` is a path; got a model object.")
        self._check_model(model)
        check_tokenizer_fits(processing_class, model, "the model", "processing_class", type(self).__name__)
        # saved with the model's config.json: ProcessRewardModel(folder) scores with the separator it was trained on
        model.config.step_separator = args.step_separator
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = processing_class.pad_token_id
        if args.disable_dropout:
            for module in model.modules():
                if isinstance(module, nn.Dropout):
                    module.p = 0.0
        if peft_config is not None:
            model = self._wrap_peft(model, peft_config, args)
        elif _is_quantized(model):
            raise ValueError(
                "PRMTrainer: the model is quantized (4/8-bit) and cannot be trained as is; pass a `peft_config` "
                "(QLoRA)."
            )

        # ---- tokenization ------------------------------------------------------------------------------------------
        train_dataset = self._tokenize(train_dataset, processing_class, args, "train", is_eval=False)
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: self._tokenize(v, processing_class, args, f"eval[{k!r}]", True)
                            for k, v in eval_dataset.items()}
        else:
            eval_dataset = self._tokenize(eval_dataset, processing_class, args, "eval", is_eval=True)
        if data_collator is None:
            data_collator = DataCollatorForTokenClassification(processing_class, label_pad_token_id=-100)
        if compute_metrics is None:
            compute_metrics = self._compute_prm_metrics
            if preprocess_logits_for_metrics is None:
                preprocess_logits_for_metrics = _correct_probability
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        )

    # ---- checks ------------------------------------------------------------------------------------------------------
    @staticmethod
    def _check_dataset(dataset: Any, name: str) -> None:
        if dataset is None:
            return
        columns = getattr(dataset, "column_names", None)
        if columns is None or isinstance(columns, dict):
            raise TypeError(
                f"PRMTrainer: the {name} dataset must be a datasets.Dataset with columns {list(_REQUIRED_COLUMNS)}, "
                f"got {type(dataset).__name__}."
            )
        missing = [c for c in _REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise ValueError(
                f"PRMTrainer: the {name} dataset has no {missing} column(s) (columns: {columns}); the stepwise-"
                "supervision format needs 'prompt', 'completions' (list of steps) and 'labels' (one bool per step)."
            )
        for index, row in enumerate(dataset.select_columns(list(_REQUIRED_COLUMNS))):
            check_step_row(row, index, name)

    @staticmethod
    def _check_model(model: nn.Module) -> None:
        config = model.config
        if int(getattr(config, "num_labels", 0)) != 2:
            raise ValueError(
                f"PRMTrainer: the model has num_labels={getattr(config, 'num_labels', None)}; a PRM is a token "
                "classifier with 2 labels (0 = incorrect, 1 = correct)."
            )
        if not type(model).__name__.endswith("ForTokenClassification"):
            raise ValueError(
                f"PRMTrainer: the model is a {type(model).__name__}; pass a path (loaded as "
                "AutoModelForTokenClassification) or a *ForTokenClassification model."
            )
        names = {int(k): str(v).lower() for k, v in (getattr(config, "id2label", None) or {}).items()}
        if names.get(CORRECT_LABEL) != "correct":
            if "correct" in names.values():
                raise ValueError(
                    f"PRMTrainer: the model's labels {config.id2label} put 'correct' at another index than "
                    f"{CORRECT_LABEL}; PRMTrainer trains label {CORRECT_LABEL} = correct."
                )
            config.id2label, config.label2id = dict(ID2LABEL), dict(LABEL2ID)  # default LABEL_0/LABEL_1 names

    @staticmethod
    def _wrap_peft(model: nn.Module, peft_config: Any, args: PRMConfig) -> nn.Module:
        from peft import TaskType, get_peft_model, prepare_model_for_kbit_training

        task_type = getattr(peft_config, "task_type", None)
        if task_type not in (None, TaskType.TOKEN_CLS, "TOKEN_CLS"):
            warnings.warn(
                f"PRMTrainer: peft_config.task_type={task_type!r} changed to TOKEN_CLS (a PRM is a token classifier; "
                "its score head trains with the adapter).",
                stacklevel=3,
            )
        if task_type not in (TaskType.TOKEN_CLS, "TOKEN_CLS"):
            peft_config = dataclasses.replace(peft_config, task_type=TaskType.TOKEN_CLS)
        if _is_quantized(model):
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing)
        return get_peft_model(model, peft_config)

    # ---- data ------------------------------------------------------------------------------------------------------
    def _tokenize(self, dataset: Any, tokenizer: Any, args: PRMConfig, name: str, is_eval: bool):
        if dataset is None:
            return None
        separator_ids = self._separator_ids
        options = dict(
            max_length=args.max_length,
            max_prompt_length=args.max_prompt_length,
            max_completion_length=args.max_completion_length,
            train_on_last_step_only=args.train_on_last_step_only and not is_eval,
        )

        def tokenize(row):
            return tokenize_step_row(row["prompt"], row["completions"], row["labels"], tokenizer, separator_ids,
                                     **options)

        # explicit features: with the old `labels` column removed, datasets would otherwise keep its bool type and
        # cast -100 to True
        features = Features({"input_ids": Sequence(Value("int64")), "labels": Sequence(Value("int64"))})
        tokenized = dataset.map(
            tokenize, remove_columns=dataset.column_names, num_proc=args.dataset_num_proc, features=features,
            desc=f"Tokenizing the {name} dataset",
        )
        has_label = [any(y != -100 for y in labels) for labels in tokenized["labels"]]
        dropped = [i for i, ok in enumerate(has_label) if not ok]
        if dropped:
            warnings.warn(
                f"PRMTrainer: {len(dropped)} row(s) of the {name} dataset keep no step label after truncation "
                f"(rows {dropped[:10]}{' ...' if len(dropped) > 10 else ''}; max_length={args.max_length}, "
                f"max_completion_length={args.max_completion_length}) and are dropped.",
                stacklevel=3,
            )
            tokenized = tokenized.select([i for i, ok in enumerate(has_label) if ok])
            if len(tokenized) == 0:
                raise ValueError(f"PRMTrainer: no row of the {name} dataset keeps a step label after truncation.")
        return tokenized

    # ---- metrics ---------------------------------------------------------------------------------------------------
    def _compute_prm_metrics(self, eval_prediction) -> dict[str, float]:
        """:func:`~trl_ext.core.prm_metrics.prm_metrics` of the eval split from P(correct) at the labelled tokens."""
        scores, labels = token_level_to_steps(eval_prediction.predictions, eval_prediction.label_ids)
        metrics = prm_metrics(scores_to_predictions(scores, self.args.correct_threshold), labels)
        return {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}

    # ---- model card --------------------------------------------------------------------------------------------
    def _card_load_snippet(self, repo_id: str, peft: bool) -> str:
        separator = self.args.step_separator
        load = (
            "from peft import AutoPeftModelForTokenClassification\n"
            f'model = AutoPeftModelForTokenClassification.from_pretrained("{repo_id}").merge_and_unload()\n'
            if peft else
            "from transformers import AutoModelForTokenClassification\n"
            f'model = AutoModelForTokenClassification.from_pretrained("{repo_id}")\n'
        )
        return (
            load + "from transformers import AutoTokenizer\nfrom trl_ext.rewards import ProcessRewardModel\n\n"
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")\n'
            f"prm = ProcessRewardModel(model, tokenizer, step_separator={separator!r})\n"
            '# P(correct) of each step\n'
            'prm(prompts=["What is 2 + 3 * 4?"], steps=[["3 * 4 = 12", "2 + 12 = 14", "#### 14"]])'
        )

    def create_model_card(self, model_name=None, dataset_name=None, tags=None) -> None:
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if self.is_world_process_zero():
            from pathlib import Path

            card = Path(self.args.output_dir, "README.md")
            if card.is_file():  # ModelCardMixin writes the generative pipeline tag; a PRM classifies tokens
                card.write_text(card.read_text().replace("pipeline_tag: text-generation",
                                                         "pipeline_tag: token-classification", 1))


def _correct_probability(logits: Any, labels: torch.Tensor) -> torch.Tensor:
    """P(correct) per token, so evaluation gathers ``(B, T)`` instead of ``(B, T, 2)`` logits."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.float().softmax(-1)[..., CORRECT_LABEL]
