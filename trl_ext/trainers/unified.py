"""Unified likelihood training: demonstrations, preference pairs and graded samples in one objective.

"All roads lead to likelihood" (Swamy et al., 2025; DeepSeekMath §5.2): SFT, DPO and rejection-sampling fine-tuning
are the same sequence log-likelihood with different weights. :class:`UnifiedLikelihoodTrainer` trains on rows of
three kinds (see :mod:`trl_ext.trainers.unified_collator`) in one run, one forward pass per batch, with a weighted
bank of losses from :mod:`trl_ext.core.likelihood`.

Example:
    >>> from datasets import Dataset
    >>> from trl_ext.trainers.unified import UnifiedLikelihoodConfig, UnifiedLikelihoodTrainer
    >>> demos = Dataset.from_dict({"prompt": ["2+2="], "completion": ["4"]})
    >>> pairs = Dataset.from_dict({"prompt": ["3+3="], "chosen": ["6"], "rejected": ["7"]})
    >>> args = UnifiedLikelihoodConfig("out", loss_type=["sft", "sigmoid"], max_steps=1, report_to="none", bf16=False)
    >>> trainer = UnifiedLikelihoodTrainer("path/to/model", args=args, train_dataset=[demos, pairs])  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
import textwrap
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset, IterableDataset
from transformers.utils import ModelOutput
from trl import DPOConfig, DPOTrainer
from trl.data_utils import extract_prompt

from ..core.likelihood import (
    F_DIVERGENCE_TYPES,
    LOSSES,
    NLL_NORMALIZATIONS,
    LossBatch,
    LossParams,
    RowKind,
    ld_sequence_logps,
    reduce_loss,
    sequence_logps,
    wpo_sequence_weights,
)
from ..hub import HubPushMixin
from ..model_card import ModelCardMixin
from ..models.adapters import AdapterFolderArguments, resolve_adapter_model, use_base_as_reference
from .checkpointing import ResumeMixin, remove_stale_cache_temporaries
from .checks import check_not_empty, check_quantization, check_same_vocabulary
from .trl_compat import (
    common_prefix_len,
    dpo_count_train_tokens,
    dpo_metrics,
    dpo_model_hash_skipped,
    dpo_ref_cache_shared_across_processes,
    dpo_reference_context,
    dpo_tokenizer,
    tokenize_example,
)
from .unified_collator import (
    _KIND_HELP,
    DEMONSTRATION,
    GRADED,
    KIND_NAMES,
    PREFERENCE,
    PREPARED_COLUMNS,
    REF_COLUMNS,
    DataCollatorForUnifiedLikelihood,
    check_beta,
    check_row_format,
    infer_row_kind,
    mix_datasets,
    pack_sequences,
    unpack_shifted,
)

__all__ = ["UnifiedLikelihoodConfig", "UnifiedLikelihoodTrainer"]

#: The per-token outputs of the fused LM head that the trainer reads.
_FUSED_FIELDS = ("log_probs", "entropy", "mean_logits", "is_top1", "log_sum_sq_probs")


def _loss_type_help() -> str:
    kinds = {}
    for name, spec in LOSSES.items():
        key = " + ".join(sorted(k.label for k in spec.kinds))
        kinds.setdefault(key, []).append(f"`'{name}'`" + ("" if spec.needs_reference else " (reference-free)"))
    return ("Losses to combine (weights in `loss_weights`, default 1.0 each); each applies to the rows it makes sense "
            "for, with DPOTrainer's meaning where DPOTrainer has it. " + "; ".join(
                f"{kind} rows: {', '.join(names)}" for kind, names in kinds.items())
            + ". `'sft'` is the NLL of the demonstrations and of the chosen completion of every pair (one token mean "
            "over both), as DPOTrainer's `['sigmoid', 'sft']`.")


@dataclass
class UnifiedLikelihoodConfig(AdapterFolderArguments, DPOConfig):
    """Configuration of :class:`UnifiedLikelihoodTrainer`; every :class:`trl.DPOConfig` field applies as in DPO
    (``loss_type``, ``loss_weights``, ``beta``, ``label_smoothing``, ``ld_alpha``, ``f_divergence_type``,
    ``use_weighting``, ``discopop_tau``, ``padding_free``, ``precompute_ref_log_probs``, …).

    The loss is ``L = Σ_k loss_weights[k] · L_k`` over ``loss_type``; each term ``L_k`` is normalised over the rows it
    applies to only (pairs for DPO-family losses, demonstration and chosen tokens for ``sft``, graded rows for
    ``rwr``/``rft``), over the whole gradient-accumulation step and all processes, so the proportion of kinds in a
    batch never changes a term's scale.

    Example:
        >>> from trl_ext.trainers.unified import UnifiedLikelihoodConfig
        >>> args = UnifiedLikelihoodConfig("out", loss_type=["sft", "sigmoid"], loss_weights=[1.0, 0.5], bf16=False)
        >>> args.needs_reference
        True
    """

    loss_type: list[str] = field(
        default_factory=lambda: ["sft", "sigmoid"],
        metadata={"help": _loss_type_help()},
    )
    nll_normalization: str = field(
        default="token",
        metadata={
            "help": "Normalisation of the NLL losses (`sft`, `rwr`, `rft`): `'token'` divides the summed NLL by the "
            "number of completion tokens (SFTTrainer's completion-only loss, DPOTrainer's `sft`), `'sequence'` "
            "averages the per-sequence token means.",
            "choices": list(NLL_NORMALIZATIONS),
        },
    )
    simpo_beta: float = field(
        default=2.0,
        metadata={"help": "β of the SimPO loss (reward scale of the length-normalised log-probs). Default 2.0."},
    )
    simpo_gamma: float = field(
        default=0.5, metadata={"help": "Target reward margin γ of the SimPO loss. Default 0.5."}
    )
    orpo_lambda: float = field(
        default=0.1, metadata={"help": "Weight λ of the odds-ratio term of the ORPO loss. Default 0.1."}
    )
    rwr_temperature: float = field(
        default=1.0,
        metadata={"help": "Temperature τ of the reward-weighted NLL (`rwr`): w = exp(reward / τ). Default 1.0."},
    )
    rft_reward_threshold: float = field(
        default=0.5,
        metadata={
            "help": "For `rft`, a graded row without a `label` is accepted when its reward is ≥ this value. Default "
            "0.5 (a 0/1 correctness grader). Rows with a `label` use it."
        },
    )

    def __post_init__(self):
        if isinstance(self.loss_type, str):
            self.loss_type = [self.loss_type]
        where = "UnifiedLikelihoodConfig"
        unknown = [t for t in self.loss_type if t not in LOSSES]
        if unknown:
            raise ValueError(f"{where}.loss_type: unknown loss type(s) {unknown}; choose from {list(LOSSES)}")
        if len(set(self.loss_type)) != len(self.loss_type):
            raise ValueError(f"{where}.loss_type: duplicate loss types in {self.loss_type}")
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ValueError(
                f"{where}.loss_weights has {len(self.loss_weights)} value(s) for {len(self.loss_type)} loss type(s) "
                f"{self.loss_type}"
            )
        if self.nll_normalization not in NLL_NORMALIZATIONS:
            raise ValueError(
                f"{where}.nll_normalization must be one of {NLL_NORMALIZATIONS}, got {self.nll_normalization!r}"
            )
        if self.f_divergence_type not in F_DIVERGENCE_TYPES:
            raise ValueError(
                f"{where}.f_divergence_type must be one of {F_DIVERGENCE_TYPES}, got {self.f_divergence_type!r}"
            )
        if self.f_divergence_type != "reverse_kl":
            bad = [t for t in self.loss_type if not LOSSES[t].f_divergence]
            if bad:
                raise ValueError(
                    f"{where}.f_divergence_type={self.f_divergence_type!r} is defined only for losses built on the "
                    f"chosen-rejected reward difference ({[n for n, s in LOSSES.items() if s.f_divergence]}); "
                    f"{bad} have none. Use f_divergence_type='reverse_kl' with them."
                )
        if self.use_weighting:
            bad = [t for t in self.loss_type if LOSSES[t].sorts_pairs]
            if bad:
                raise NotImplementedError(
                    f"{where}.use_weighting (WPO) is not defined for {bad}: they sort the pairs of the batch, so a "
                    "loss no longer belongs to one pair"
                )
        if self.ld_alpha is not None and not 0.0 <= self.ld_alpha <= 1.0:
            raise ValueError(f"{where}.ld_alpha must lie in [0, 1], got {self.ld_alpha}")
        if self.truncation_mode not in ("keep_start", "keep_end"):
            raise ValueError(
                f"{where}.truncation_mode must be 'keep_start' or 'keep_end', got {self.truncation_mode!r}"
            )
        if "robust" in self.loss_type and not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(
                f"{where}.label_smoothing must lie in [0, 0.5) for 'robust', got {self.label_smoothing}"
            )
        if "exo_pair" in self.loss_type and not 0.0 < self.label_smoothing < 1.0:
            raise ValueError(
                f"{where}.label_smoothing must lie in (0, 1) for 'exo_pair' (the EXO paper recommends 1e-3), got "
                f"{self.label_smoothing}"
            )
        if self.rwr_temperature <= 0:
            raise ValueError(f"{where}.rwr_temperature must be > 0, got {self.rwr_temperature}")
        check_beta(self.beta, self.loss_type, where)
        super().__post_init__()

    @property
    def needs_reference(self) -> bool:
        """Whether a loss in ``loss_type`` needs reference log-probs (see ``LOSSES[...].needs_reference``)."""
        return any(LOSSES[t].needs_reference for t in self.loss_type)

    def loss_params(self) -> LossParams:
        """The hyper-parameters the losses of :data:`~trl_ext.core.likelihood.LOSSES` read."""
        return LossParams(
            beta=self.beta, label_smoothing=self.label_smoothing, discopop_tau=self.discopop_tau,
            f_divergence_type=self.f_divergence_type, f_alpha_divergence_coef=self.f_alpha_divergence_coef,
            simpo_beta=self.simpo_beta, simpo_gamma=self.simpo_gamma, orpo_lambda=self.orpo_lambda,
            rwr_temperature=self.rwr_temperature, normalization=self.nll_normalization,
        )


def _tokenize_row(
    example: dict[str, Any], idx: int, processing_class: Any, eos_token: str, dataset_name: str
) -> dict[str, Any]:
    """Validate one row, infer its kind and tokenize it as TRL's DPO/SFT trainers do (prompt, prompt+completion,
    completion = what follows their common prefix; EOS appended to standard-format completions)."""
    where = f"UnifiedLikelihoodTrainer: row {idx} of the {dataset_name} dataset"
    kind = infer_row_kind(example)
    if kind is None:
        filled = sorted(k for k, v in example.items() if v is not None)
        raise ValueError(f"{where} matches no kind; its columns with a value are {filled}. Expected {_KIND_HELP}.")
    check_row_format(example, kind, where)
    if kind == "preference" and example.get("prompt") is None:
        example = {**example, **extract_prompt({"chosen": example["chosen"], "rejected": example["rejected"]})}
    prompt = example["prompt"]
    conversational = isinstance(prompt, list)
    completions = [example["chosen"], example["rejected"]] if kind == "preference" else [example["completion"]]
    if kind == "preference" and example["chosen"] == example["rejected"]:
        raise ValueError(f"{where}: 'chosen' is identical to 'rejected' (a pair carries no preference)")
    if not conversational:
        completions = [c if c.endswith(eos_token) else c + eos_token for c in completions]

    kwargs: dict[str, Any] = {}
    if conversational:
        import json

        tools = example.get("tools")
        kwargs = {"tools": json.loads(tools) if isinstance(tools, str) else tools,
                  **(example.get("chat_template_kwargs") or {})}
        prompt_ids = tokenize_example(processing_class, prompt, add_generation_prompt=True, **kwargs)
        full = [tokenize_example(processing_class, prompt + c, **kwargs) for c in completions]
    else:
        prompt_ids = tokenize_example(processing_class, prompt)
        full = [tokenize_example(processing_class, prompt + c) for c in completions]
    prompt_len = min(common_prefix_len(prompt_ids, f) for f in full)
    out = {
        "prompt_ids": prompt_ids[:prompt_len],
        "completion_ids": full[0][prompt_len:],
        "rejected_ids": full[1][prompt_len:] if kind == "preference" else [],
        "row_kind": int({"demonstration": DEMONSTRATION, "preference": PREFERENCE, "graded": GRADED}[kind]),
        "row_reward": float("nan"),
        "row_label": -1,
    }
    if kind == "preference" and out["completion_ids"] == out["rejected_ids"]:
        raise ValueError(f"{where}: 'chosen' and 'rejected' tokenize identically (a pair carries no preference)")
    if kind == "graded":
        reward, label = example.get("reward"), example.get("label")
        if reward is not None:
            try:
                reward = float(reward)
            except (TypeError, ValueError):
                raise ValueError(f"{where}: column 'reward' must be a number, got {reward!r}") from None
            if not math.isfinite(reward):
                raise ValueError(f"{where}: column 'reward' is {reward} (NaN/inf rewards are not allowed)")
            out["row_reward"] = reward
        if label is not None:
            if label not in (True, False, 0, 1):
                raise ValueError(f"{where}: column 'label' must be a boolean, got {label!r}")
            out["row_label"] = int(bool(label))
    return out


_DPO_CITATION = """@inproceedings{rafailov2023direct,
    title     = {{Direct Preference Optimization: Your Language Model is Secretly a Reward Model}},
    author    = {Rafael Rafailov and Archit Sharma and Eric Mitchell and Christopher D. Manning and Stefano Ermon and Chelsea Finn},
    year      = 2023,
    booktitle = {Advances in Neural Information Processing Systems 36}
}"""


class UnifiedLikelihoodTrainer(ResumeMixin, HubPushMixin, ModelCardMixin, DPOTrainer):
    """Trains on demonstrations, preference pairs and graded samples with one weighted likelihood objective.

    Subclasses TRL's :class:`~trl.DPOTrainer` and reuses its model/PEFT/quantisation loading, reference handling
    (separate reference model, or adapters disabled under PEFT), reference precompute and caching, fused LM head
    (per-token log-probs without materialising the logits) and metric logging. It overrides dataset preparation
    (three kinds of rows), the collator (all sequences of a batch in one padded forward) and the loss (the bank of
    :mod:`trl_ext.core.likelihood`).

    Args:
        model: model id/path, ``PreTrainedModel`` or ``PeftModel`` (as DPOTrainer).
        ref_model: optional explicit reference model; ignored (with a warning) when no loss needs one.
        args: :class:`UnifiedLikelihoodConfig`.
        train_dataset: a ``Dataset`` whose rows may be of any kind, or a list of datasets (mixed with
            :func:`~trl_ext.trainers.unified_collator.mix_datasets`).
        eval_dataset, processing_class, compute_metrics, callbacks, optimizers, quantization_config, peft_config:
            as :class:`~trl.DPOTrainer`.

    Example:
        >>> from datasets import Dataset
        >>> from trl_ext.trainers.unified import UnifiedLikelihoodConfig, UnifiedLikelihoodTrainer
        >>> data = [Dataset.from_dict({"prompt": ["2+2="], "completion": ["4"]}),
        ...         Dataset.from_dict({"prompt": ["3+3="], "chosen": ["6"], "rejected": ["7"]}),
        ...         Dataset.from_dict({"prompt": ["1+1="], "completion": ["2"], "label": [True]})]
        >>> args = UnifiedLikelihoodConfig("out", loss_type=["sft", "sigmoid", "rft"], max_steps=2, report_to="none",
        ...                                bf16=False)
        >>> trainer = UnifiedLikelihoodTrainer("path/to/model", args=args, train_dataset=data)  # doctest: +SKIP
        >>> trainer.train()  # doctest: +SKIP
    """

    # the loss is normalised by the counts of the whole gradient-accumulation step (see `get_batch_samples`)
    loss_is_scaled_for_ga = True

    _tag_names = ["trl", "trl-ext", "unified-likelihood", "dpo", "sft"]
    _name = "UnifiedLikelihood"
    _paper = {
        "title": "All Roads Lead to Likelihood: The Value of Reinforcement Learning in Fine-Tuning",
        "id": "2503.01067",
        "citation": textwrap.dedent("""\
            @article{swamy2025roads,
                title   = {{All Roads Lead to Likelihood: The Value of Reinforcement Learning in Fine-Tuning}},
                author  = {Gokul Swamy and Sanjiban Choudhury and Wen Sun and Zhiwei Steven Wu and J. Andrew Bagnell},
                year    = 2025,
                journal = {arXiv preprint arXiv:2503.01067},
            }"""),
    }
    _card_template = "unified.md"
    _card_hyperparameters = ("loss_type", "loss_weights", "beta", "nll_normalization", "max_length",
                             "precompute_ref_log_probs", "label_smoothing", "use_weighting", "ld_alpha",
                             "f_divergence_type", "padding_free")
    _card_plot_keys = ("loss", "rewards/accuracies", "rewards/margins", "nll/demonstration")
    _card_metric_keys = ("loss", "nll/*", "loss/*", "rewards/accuracies", "rewards/margins", "rewards/*", "logps/*",
                         "eval_*", "train_loss", "train_runtime")

    @property
    def _card_citation(self) -> str:  # type: ignore[override]
        return _DPO_CITATION + "\n\n" + self._paper["citation"]

    def __init__(
        self,
        model: Any,
        ref_model: Any = None,
        args: UnifiedLikelihoodConfig | None = None,
        data_collator: Any = None,
        train_dataset: Dataset | IterableDataset | list | tuple | None = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        compute_metrics: Any = None,
        callbacks: Any = None,
        optimizers: tuple = (None, None),
        quantization_config: Any = None,
        peft_config: Any = None,
    ):
        if args is None:
            args = UnifiedLikelihoodConfig("UnifiedLikelihood")
        elif not isinstance(args, UnifiedLikelihoodConfig):
            raise TypeError(
                f"UnifiedLikelihoodTrainer: `args` must be a UnifiedLikelihoodConfig, got {type(args).__name__}"
            )
        if isinstance(train_dataset, (list, tuple)):
            train_dataset = mix_datasets(train_dataset)
        if isinstance(eval_dataset, (list, tuple)):
            eval_dataset = mix_datasets(eval_dataset)
        elif isinstance(eval_dataset, dict):
            eval_dataset = {k: mix_datasets(v) if isinstance(v, (list, tuple)) else v for k, v in eval_dataset.items()}
        check_not_empty(train_dataset, "train_dataset", type(self).__name__)  # TRL: a bare StopIteration
        check_quantization(quantization_config, args.model_init_kwargs, type(self).__name__)

        model, processing_class, quantization_config = resolve_adapter_model(  # a PEFT adapter folder as `model`
            model, args, trainer="UnifiedLikelihoodTrainer", quantization_config=quantization_config,
            peft_config=peft_config, processing_class=processing_class,
        )
        self._needs_reference = args.needs_reference
        if not self._needs_reference and ref_model is not None:
            warnings.warn(
                f"UnifiedLikelihoodTrainer: loss_type={args.loss_type} needs no reference; `ref_model` is ignored",
                stacklevel=2,
            )
            ref_model = None
        user_precompute, user_padding_free = args.precompute_ref_log_probs, args.padding_free
        # DPOTrainer loads a reference model unless PEFT or `precompute_ref_log_probs`: claim the latter while it
        # initialises when no loss needs a reference (and then skip its model hash: nothing is cached); defer its
        # precompute until our collator is in place. DPOTrainer 1.16 switches `padding_free` off with a warning;
        # this trainer implements it, so DPOTrainer does not see it.
        self._defer_precompute = True
        args.precompute_ref_log_probs = user_precompute or not self._needs_reference
        args.padding_free = False
        try:
            with contextlib.ExitStack() as stack:
                if not self._needs_reference:
                    stack.enter_context(dpo_model_hash_skipped())
                super().__init__(
                    model=model,
                    ref_model=ref_model,
                    args=args,
                    data_collator=data_collator,
                    train_dataset=train_dataset,
                    eval_dataset=eval_dataset,
                    processing_class=processing_class,
                    compute_metrics=compute_metrics,
                    callbacks=callbacks,
                    optimizers=optimizers,
                    quantization_config=quantization_config,
                    peft_config=peft_config,
                )
        finally:
            args.precompute_ref_log_probs = user_precompute
            args.padding_free = user_padding_free
            self._defer_precompute = False
        check_same_vocabulary(self.model, self.ref_model, "ref_model", type(self).__name__)
        use_base_as_reference(self)  # an adapter folder continued: the reference is its base, adapters off
        self.padding_free = user_padding_free
        self.loss_params = args.loss_params()
        self.precompute_ref_logps = user_precompute and self._needs_reference
        # mode → optimizer step → metric → [Σ numerator, Σ denominator] over micro-batches and processes (`log`)
        self._unified_step_sums: defaultdict[str, dict[int, dict[str, list[float]]]] = defaultdict(dict)
        if data_collator is None:
            self.data_collator = DataCollatorForUnifiedLikelihood(
                pad_token_id=dpo_tokenizer(self).pad_token_id,
                max_length=args.max_length,
                pad_to_multiple_of=None if user_padding_free else args.pad_to_multiple_of,
                truncation_mode=args.truncation_mode,
            )
        if self.precompute_ref_logps:
            self.train_dataset = self._precompute_ref_logps(
                self.train_dataset, "train", args.precompute_ref_batch_size or args.per_device_train_batch_size
            )
            if self.eval_dataset is not None:
                bs = args.precompute_ref_batch_size or args.per_device_eval_batch_size
                if isinstance(self.eval_dataset, dict):
                    self.eval_dataset = {k: self._precompute_ref_logps(v, k, bs) for k, v in self.eval_dataset.items()}
                else:
                    self.eval_dataset = self._precompute_ref_logps(self.eval_dataset, "eval", bs)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """As :meth:`trl.DPOTrainer.evaluate`; ``eval_dataset`` may also be a list of datasets to mix."""
        if isinstance(eval_dataset, (list, tuple)):
            eval_dataset = mix_datasets(eval_dataset)
        elif isinstance(eval_dataset, dict):
            eval_dataset = {k: mix_datasets(v) if isinstance(v, (list, tuple)) else v for k, v in eval_dataset.items()}
        return super().evaluate(eval_dataset=eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    @torch.no_grad()
    def pair_logps(self, dataset: Dataset | list[Dataset], batch_size: int = 8) -> dict[str, torch.Tensor]:
        """Sequence log-probs and token counts of the preference pairs of ``dataset`` under the current policy:
        ``{"chosen_logps", "rejected_logps", "chosen_tokens", "rejected_tokens"}`` (one value per pair; rows of other
        kinds are ignored). Needs no reference, so it is defined before training too.

        Example:
            >>> scores = trainer.pair_logps(preference_dataset(32, split="eval"))  # doctest: +SKIP
            >>> (scores["chosen_logps"] > scores["rejected_logps"]).float().mean()  # doctest: +SKIP
            tensor(0.5938)
        """
        prepared = self._prepare_dataset(dataset, self.processing_class, self.args, "scored")
        rows = [i for i, k in enumerate(prepared["row_kind"]) if k == PREFERENCE]
        if not rows:
            raise ValueError("UnifiedLikelihoodTrainer.pair_logps: the dataset has no preference rows")
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        out: dict[str, list[torch.Tensor]] = {k: [] for k in ("chosen_logps", "rejected_logps", "chosen_tokens",
                                                               "rejected_tokens")}
        try:
            for start in range(0, len(rows), batch_size):
                chunk = [prepared[i] for i in rows[start : start + batch_size]]
                batch = self._prepare_inputs(self.data_collator(chunk))
                completion_mask = batch["completion_mask"]
                labels = batch["input_ids"].masked_fill(completion_mask == 0, -100)
                logps = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                              use_cache=False, fused_lm_head=True).log_probs
                shift = completion_mask[:, 1:]
                S, n = sequence_logps(logps[:, -shift.size(1):], shift)
                for key, value in zip(("chosen_logps", "rejected_logps"), S.float().cpu().chunk(2), strict=True):
                    out[key].append(value)
                for key, value in zip(("chosen_tokens", "rejected_tokens"), n.float().cpu().chunk(2), strict=True):
                    out[key].append(value)
        finally:
            model.train(was_training)
        return {k: torch.cat(v) for k, v in out.items()}

    def preference_accuracy(
        self, dataset: Dataset | list[Dataset], batch_size: int = 8, length_normalized: bool = False
    ) -> float:
        """Fraction of the preference pairs of ``dataset`` to which the current policy gives the chosen completion a
        higher log-likelihood than the rejected one: ``mean(1[S_w > S_l])`` (``S/n`` when ``length_normalized``).
        See :meth:`pair_logps`.

        Example:
            >>> trainer.preference_accuracy(preference_dataset(32, split="eval"))  # doctest: +SKIP
            0.59375
        """
        s = self.pair_logps(dataset, batch_size)
        chosen, rejected = s["chosen_logps"], s["rejected_logps"]
        if length_normalized:
            chosen, rejected = chosen / s["chosen_tokens"].clamp(min=1), rejected / s["rejected_tokens"].clamp(min=1)
        return (chosen > rejected).float().mean().item()

    # ---- data ----------------------------------------------------------------------------------------------------

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """Validate every row, infer its kind and tokenize it; idempotent on an already prepared dataset."""
        if isinstance(dataset, (list, tuple)):
            dataset = mix_datasets(dataset)
        columns = dataset.column_names or list(next(iter(dataset)).keys())
        if "row_kind" in columns:
            return dataset
        if not ({"completion"} <= set(columns) or {"chosen", "rejected"} <= set(columns)):
            raise ValueError(
                f"UnifiedLikelihoodTrainer: the {dataset_name} dataset has columns {sorted(columns)}; rows must be "
                f"{_KIND_HELP}"
            )
        map_kwargs: dict[str, Any] = {}
        if isinstance(dataset, Dataset):
            map_kwargs = {"num_proc": args.dataset_num_proc, "desc": f"Tokenizing {dataset_name} dataset"}
        dataset = dataset.map(
            _tokenize_row,
            with_indices=True,
            fn_kwargs={"processing_class": processing_class, "eos_token": dpo_tokenizer(self).eos_token,
                       "dataset_name": dataset_name},
            **map_kwargs,
        )
        dataset = self._drop_fully_truncated(dataset, args, dataset_name)
        if isinstance(dataset, Dataset):
            self._check_prepared(dataset, args, dataset_name)
        return dataset

    def _drop_fully_truncated(self, dataset, args: UnifiedLikelihoodConfig, dataset_name: str):
        """Drop the rows whose prompt alone fills ``max_length`` (``keep_start`` truncation would leave them no
        completion token), as DPOTrainer does, with one warning that counts them; an error if no row is left."""
        if args.max_length is None or args.truncation_mode != "keep_start":
            return dataset
        if not isinstance(dataset, Dataset):  # streaming: filtered lazily, as DPOTrainer
            return dataset.filter(lambda row: len(row["prompt_ids"]) < args.max_length)
        lengths = [len(ids) for ids in dataset["prompt_ids"]]
        dropped = [i for i, n in enumerate(lengths) if n >= args.max_length]
        if not dropped:
            return dataset
        where = f"UnifiedLikelihoodTrainer: the {dataset_name} dataset"
        if len(dropped) == len(lengths):
            raise ValueError(
                f"{where} has no row left: the prompt of each of its {len(lengths)} row(s) has ≥ "
                f"max_length={args.max_length} tokens, which leaves no completion token to train on. Raise "
                "`max_length` or shorten the prompts."
            )
        warnings.warn(
            f"{where}: dropped {len(dropped)} of {len(lengths)} row(s) (first: {dropped[:5]}) whose prompt has ≥ "
            f"max_length={args.max_length} tokens and would keep no completion token after truncation",
            stacklevel=4,
        )
        keep = set(range(len(lengths))) - set(dropped)
        return dataset.select(sorted(keep))

    def _check_prepared(self, dataset: Dataset, args: UnifiedLikelihoodConfig, dataset_name: str) -> None:
        counts = Counter(KIND_NAMES[k] for k in dataset["row_kind"])
        if dataset_name != "train":
            return
        for loss_type in args.loss_type:
            kinds = sorted(k.label for k in LOSSES[loss_type].kinds)
            if not any(counts[k] for k in kinds):
                warnings.warn(
                    f"UnifiedLikelihoodTrainer: loss_type {loss_type!r} applies to {' and '.join(kinds)} rows, and "
                    f"the train dataset has none (kinds present: {dict(counts)}); this term will be 0",
                    stacklevel=4,
                )
        used = {k.label for t in args.loss_type for k in LOSSES[t].kinds}
        for kind, n in counts.items():
            if n and kind not in used:
                warnings.warn(
                    f"UnifiedLikelihoodTrainer: the train dataset has {n} {kind} row(s) but no loss in "
                    f"loss_type={args.loss_type} applies to them; they only cost compute",
                    stacklevel=4,
                )

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = list(PREPARED_COLUMNS) + list(REF_COLUMNS)

    # ---- reference -----------------------------------------------------------------------------------------------

    def _precompute_ref_logps(self, dataset, name, batch_size):
        """DPOTrainer's precompute (each process computes its shard of the rows, the values are gathered and cached
        in the dataset), with a cache file that every process finds also for in-memory datasets."""
        if self._defer_precompute or not self._needs_reference:
            return dataset
        if self.accelerator.is_main_process:
            remove_stale_cache_temporaries(dataset)  # tmp files of a killed cache write (never a live one)
        with dpo_ref_cache_shared_across_processes(self, dataset):
            return super()._precompute_ref_logps(dataset, name, batch_size)

    def _fused_forward(self, model, inputs: dict[str, Any], n_seqs: int | None = None, **model_kwargs):
        """One forward through TRL's fused LM head over the first ``n_seqs`` sequences of a collated batch (all by
        default): ``({field: (n, T − 1)}, aux_loss)`` with the per-token fields of :data:`_FUSED_FIELDS` in the
        right-padded layout (entry ``[i, t − 1]`` scores token ``t``), whether the forward ran padded or, with
        ``padding_free``, packed into one row."""
        rows = slice(None, n_seqs)
        input_ids, attention_mask = inputs["input_ids"][rows], inputs["attention_mask"][rows]
        labels = input_ids.masked_fill(inputs["completion_mask"][rows] == 0, -100)
        seq_len = input_ids.size(1) - 1
        if self.padding_free:
            packed_ids, position_ids, packed_labels = pack_sequences(input_ids, attention_mask, labels)
            out = model(input_ids=packed_ids, position_ids=position_ids, labels=packed_labels, use_cache=False,
                        fused_lm_head=True, **model_kwargs)
            fields = {k: unpack_shifted(getattr(out, k), attention_mask) for k in _FUSED_FIELDS
                      if getattr(out, k, None) is not None}
        else:
            out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, use_cache=False,
                        fused_lm_head=True, **model_kwargs)
            # prompt-learning PEFT prepends virtual tokens to the outputs; keep the positions of the real tokens
            fields = {k: getattr(out, k)[:, -seq_len:] for k in _FUSED_FIELDS if getattr(out, k, None) is not None}
        return fields, getattr(out, "aux_loss", None)

    def _pair_sequence_logps(self, per_token_logps: torch.Tensor, shift_mask: torch.Tensor) -> torch.Tensor:
        """Sequence log-probs of the ``2P`` pair sequences as the pair losses use them: plain sums, or LD-DPO's
        length-desensitised sums under ``ld_alpha``."""
        if self.args.ld_alpha is None:
            return sequence_logps(per_token_logps, shift_mask)[0]
        return ld_sequence_logps(per_token_logps, shift_mask, self.args.ld_alpha)

    @property
    def _sharded_reference_forward(self) -> bool:
        """Whether a reference forward is a collective (FSDP, DeepSpeed ZeRO-3: every process must run it, else the
        processes holding pairs wait forever for the one whose micro-batch holds none)."""
        if self.is_fsdp_enabled:
            return True
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None) if self.is_deepspeed_enabled else None
        return plugin is not None and plugin.zero_stage == 3

    def _pair_reference_logps(self, inputs: dict[str, Any]) -> torch.Tensor:
        """Reference sequence log-probs of the ``2P`` pair sequences (chosen then rejected) of a collated batch,
        from the reference model, or from the policy with its adapters disabled under PEFT. With ``P = 0`` it returns
        an empty tensor; under sharding it still runs the reference forward (on one sequence) so that every process
        takes part in the collective."""
        n_pair_seqs = 2 * inputs["pair_rows"].numel()
        if n_pair_seqs == 0 and not self._sharded_reference_forward:
            return inputs["input_ids"].new_zeros(0, dtype=torch.float32)
        model = self.ref_model if self.ref_model is not None else self.model
        with dpo_reference_context(self), self.accelerator.autocast():
            fields, _ = self._fused_forward(model, inputs, n_pair_seqs or 1)
        return self._pair_sequence_logps(fields["log_probs"][:n_pair_seqs],
                                         inputs["completion_mask"][:n_pair_seqs, 1:])

    def compute_ref_log_probs(self, model, inputs):
        """Per-row reference log-probs ``(ref_chosen (B,), ref_rejected (B,))`` of a collated batch; 0 for rows
        that are not pairs (they need none). Used by DPOTrainer's precompute, which caches them in the dataset."""
        batch_size = inputs["row_kind"].numel()
        device = inputs["input_ids"].device
        ref_chosen = torch.zeros(batch_size, device=device)
        ref_rejected = torch.zeros(batch_size, device=device)
        pair_logps = self._pair_reference_logps(inputs)  # also on a batch without pairs when sharded
        if inputs["pair_rows"].numel():
            chosen, rejected = pair_logps.float().chunk(2)
            ref_chosen[inputs["pair_rows"]] = chosen
            ref_rejected[inputs["pair_rows"]] = rejected
        return ref_chosen, ref_rejected

    # ---- loss ----------------------------------------------------------------------------------------------------

    def _graded_targets(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rewards, accepted)`` of the graded rows: a label-only row has reward ``1[label]``; a reward-only row
        is accepted when ``reward ≥ rft_reward_threshold``."""
        rewards, labels = inputs["rewards"], inputs["graded_labels"]
        reward = torch.where(torch.isnan(rewards), labels.clamp(min=0).to(rewards.dtype), rewards)
        accepted = torch.where(labels >= 0, labels == 1, rewards >= self.args.rft_reward_threshold)
        return reward, accepted

    def _split(self, x: torch.Tensor, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        P, D, G = (inputs[k].numel() for k in ("pair_rows", "demo_rows", "graded_rows"))
        chosen, rejected, demo, graded = x.split([P, P, D, G])
        return {"chosen": chosen, "rejected": rejected, "demonstration": demo, "graded": graded}

    def _loss_batch(self, inputs, S, N, pair_S=None, ref=None, pair_weights=None) -> LossBatch:
        """The :class:`~trl_ext.core.likelihood.LossBatch` of a collated batch from its per-sequence sums ``S`` and
        token counts ``N`` (``(n_seqs,)``, collator order)."""
        s, n = self._split(S, inputs), self._split(N, inputs)
        reward, accepted = self._graded_targets(inputs)
        chosen, rejected = (s["chosen"], s["rejected"]) if pair_S is None else pair_S.chunk(2)
        return LossBatch(
            params=self.loss_params, chosen_logps=chosen, rejected_logps=rejected, chosen_nll_logps=s["chosen"],
            chosen_tokens=n["chosen"], rejected_tokens=n["rejected"], demo_logps=s["demonstration"],
            demo_tokens=n["demonstration"], graded_logps=s["graded"], graded_tokens=n["graded"],
            graded_rewards=reward.to(N.device), graded_accepted=accepted.to(N.device),
            ref_chosen_logps=None if ref is None else ref[0], ref_rejected_logps=None if ref is None else ref[1],
            pair_weights=pair_weights,
        )

    def _loss_denominators(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The normaliser ``Σ d_i`` of every loss term for one collated batch (known before the forward)."""
        n_tokens = inputs["completion_mask"][:, 1:].sum(dim=1).float()
        batch = self._loss_batch(inputs, torch.zeros_like(n_tokens), n_tokens)
        return {t: LOSSES[t].denominator(batch).sum() for t in self.loss_types}

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Collect the micro-batches of one optimizer step and return, as ``num_items_in_batch``, the normaliser of
        every loss term summed over them and over all processes (so accumulation never changes the loss)."""
        batch_samples, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        if not batch_samples:
            return batch_samples, None
        totals: dict[str, torch.Tensor] = {}
        for batch in batch_samples:
            for key, value in self._loss_denominators(batch).items():
                totals[key] = totals.get(key, 0.0) + value.float().cpu()
        keys = sorted(totals)
        stacked = torch.stack([torch.as_tensor(totals[k]) for k in keys]).to(device)
        if self.accelerator.num_processes > 1:
            stacked = self.accelerator.reduce(stacked, reduction="sum")
        return batch_samples, {"denominators": dict(zip(keys, stacked.unbind(0), strict=True))}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """``L = Σ_k w_k · Σ_i ℓ_k,i / D_k`` from one forward over all sequences of the batch, the losses ``ℓ_k`` and
        normalisers ``D_k`` from :data:`~trl_ext.core.likelihood.LOSSES`; plus the MoE router loss."""
        mode = "train" if self.model.training else "eval"
        model_kwargs = {"output_router_logits": True} if self.aux_loss_enabled else {}
        fields, aux_loss = self._fused_forward(model, inputs, **model_kwargs)
        per_token_logps = fields["log_probs"]
        shift_mask = inputs["completion_mask"][:, 1:]
        sum_logps, n_tokens = sequence_logps(per_token_logps, shift_mask)
        n_pairs = inputs["pair_rows"].numel()
        pair_rows = slice(None, 2 * n_pairs)
        pair_S = self._pair_sequence_logps(per_token_logps[pair_rows], shift_mask[pair_rows])

        ref = None
        if self._needs_reference and "ref_chosen_logps" in inputs:
            ref = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        elif self._needs_reference and (n_pairs or self._sharded_reference_forward):  # sharded: every process runs it
            ref = self._pair_reference_logps(inputs).chunk(2)
        ref = tuple(r.to(sum_logps.dtype) for r in ref) if ref is not None and n_pairs else None
        pair_weights = None
        if self.args.use_weighting and n_pairs:
            w = wpo_sequence_weights(per_token_logps[pair_rows], fields["log_sum_sq_probs"][pair_rows],
                                     shift_mask[pair_rows])
            pair_weights = w[:n_pairs] * w[n_pairs:]
        batch = self._loss_batch(inputs, sum_logps, n_tokens, pair_S, ref, pair_weights)

        global_norm = isinstance(num_items_in_batch, dict) and "denominators" in num_items_in_batch
        totals = num_items_in_batch["denominators"] if global_norm else {}
        loss = 0.0 * sum_logps.sum()  # keeps the graph connected when no term has rows
        stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for loss_type, weight in zip(self.loss_types, self.loss_weights, strict=True):
            spec = LOSSES[loss_type]
            losses, dens = spec.loss(batch), spec.denominator(batch)
            loss = loss + weight * reduce_loss(losses, dens, totals.get(loss_type) if global_norm else None)
            stats[f"loss/{loss_type}"] = (losses.detach().sum(), dens.detach().sum())

        ga_steps = getattr(self, "current_gradient_accumulation_steps", 1) if mode == "train" else 1
        if global_norm and self.accelerator.num_processes > 1:
            loss = loss * self.accelerator.num_processes  # DDP averages the gradients over processes
        elif not global_norm:
            loss = loss / ga_steps  # fallback: micro-batch normalisation
        if self.aux_loss_enabled:
            # DPOTrainer's scale: the micro-batch's router loss, averaged over the accumulation steps
            loss = loss + self.router_aux_loss_coef * aux_loss / ga_steps

        self._log_unified_metrics(mode, inputs, batch, fields, stats, aux_loss)
        if return_outputs:
            # the fused head builds no logits; `compute_metrics` gets them from an extra (padded) forward, as in
            # DPOTrainer
            with torch.no_grad():
                logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                               use_cache=False).logits
            return loss, ModelOutput(loss=loss.detach(), logits=logits)
        return loss

    def _pair_rewards(self, batch: LossBatch) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Implicit rewards of the pairs to log: ``β·ρ`` with a reference (DPOTrainer's), else those of the first
        reference-free pair loss that defines them (SimPO, ORPO)."""
        if batch.ref_chosen_logps is not None:
            return tuple(self.beta * r.detach() for r in batch.logratios())
        for loss_type in self.loss_types:
            rewards = LOSSES[loss_type].rewards
            if rewards is not None:
                return tuple(r.detach() for r in rewards(batch))
        return None

    def _logs_rewards(self) -> bool:
        return any(LOSSES[t].kinds == {RowKind.PREFERENCE} and (LOSSES[t].needs_reference or LOSSES[t].rewards)
                   for t in self.loss_types)

    def _log_unified_metrics(self, mode, inputs, batch: LossBatch, fields, stats, aux_loss) -> None:
        metrics = dpo_metrics(self, mode)
        S = {"chosen": batch.chosen_logps, "rejected": batch.rejected_logps, "demonstration": batch.demo_logps,
             "graded": batch.graded_logps}
        device = batch.chosen_logps.device
        one = lambda x: torch.tensor(float(x), device=device)  # noqa: E731
        items: dict[str, tuple[torch.Tensor, torch.Tensor]] = dict(stats)
        for kind, values in S.items():
            items[f"logps/{kind}"] = (values.detach().sum(), one(values.numel()))
        items["nll/demonstration"] = (-batch.demo_logps.detach().sum(), batch.demo_tokens.sum())
        # token statistics as DPOTrainer's: entropy over every completion token; the top-1 accuracy over the tokens
        # the model imitates (chosen completions and demonstrations); mean logits of the chosen / rejected tokens
        mask = self._split(inputs["completion_mask"][:, 1:].bool(), inputs)
        token_stats = {k: self._split(v.detach(), inputs) for k, v in fields.items() if k != "log_probs"}
        all_mask = inputs["completion_mask"][:, 1:].bool()
        if "entropy" in fields:
            items["entropy"] = (fields["entropy"].detach()[all_mask].float().sum(), all_mask.sum())
        if "is_top1" in fields:
            top1 = token_stats["is_top1"]
            hits = sum((top1[k] & mask[k]).sum() for k in ("chosen", "demonstration"))
            items["mean_token_accuracy"] = (one(hits), one(mask["chosen"].sum() + mask["demonstration"].sum()))
        if "mean_logits" in fields:
            for kind in ("chosen", "rejected"):
                items[f"logits/{kind}"] = (token_stats["mean_logits"][kind][mask[kind]].float().sum(),
                                           mask[kind].sum())
        if self.aux_loss_enabled and aux_loss is not None:
            items["aux_loss"] = (aux_loss.detach().float(), one(1))
        if self._logs_rewards():
            # every process reduces the same keys, also when its micro-batch holds no pair (0 / 0, skipped)
            rewards = self._pair_rewards(batch) if batch.n_pairs else None
            rw, rl = rewards if rewards is not None else (batch.chosen_logps[:0].detach(),) * 2
            n = one(rw.numel())
            items["rewards/chosen"] = (rw.sum(), n)
            items["rewards/rejected"] = (rl.sum(), n)
            items["rewards/margins"] = ((rw - rl).sum(), n)
            items["rewards/accuracies"] = ((rw > rl).float().sum(), n)
        for kind in RowKind:
            items[f"rows/{kind.label}"] = (one((inputs["row_kind"] == int(kind)).sum().item()), one(1))
        keys = list(items)
        values = torch.stack([torch.stack([items[k][0].float().to(device), items[k][1].float().to(device)])
                              for k in keys])
        values = self.accelerator.reduce(values, reduction="sum") if self.accelerator.num_processes > 1 else values
        # (numerator, denominator) summed over the micro-batches of this optimizer step: `log` reports their ratio
        step_sums = self._unified_step_sums[mode].setdefault(self.state.global_step, {})
        for key, (num, den) in zip(keys, values.tolist(), strict=True):
            acc = step_sums.setdefault(key, [0.0, 0.0])
            acc[0] += num
            acc[1] += den
            if den > 0:
                metrics[key].append(num / den)  # this micro-batch's value; `log` replaces the list by the step's
        if mode == "train":
            metrics["num_tokens"] = [dpo_count_train_tokens(self, inputs["attention_mask"])]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """As :meth:`trl.DPOTrainer.log`, except that every ``loss/*``, ``logps/*``, ``nll/*``, ``rewards/*`` and
        ``rows/*`` metric is pooled over the whole optimizer step — ``Σ numerator / Σ denominator`` over all its
        micro-batches and processes, then averaged over the steps since the last log — instead of averaging
        per-micro-batch ratios. ``loss/<type>`` is thus exactly the term ``L_k`` of the step's loss, and the metrics do
        not depend on how the step is split into processes × micro-batches."""
        mode = "train" if self.model.training else "eval"
        metrics = dpo_metrics(self, mode)
        per_step: dict[str, list[float]] = {}
        for step_sums in self._unified_step_sums.pop(mode, {}).values():
            for key, (num, den) in step_sums.items():
                if den > 0:
                    per_step.setdefault(key, []).append(num / den)
        for key, values in per_step.items():
            metrics[key] = [sum(values) / len(values)]
        super().log(logs, start_time)
