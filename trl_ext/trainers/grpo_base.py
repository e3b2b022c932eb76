"""One base for the trainers built on TRL's ``GRPOTrainer`` (:class:`~trl_ext.trainers.rft.RFTTrainer`,
:class:`~trl_ext.trainers.process_grpo.ProcessGRPOTrainer`): reward plumbing, bad-input checks, and one template
method for the advantages.

``GRPOTrainer`` turns the rewards of a generation batch into one group-relative advantage per completion. A subclass
of :class:`GRPOBase` replaces that by a ``(B, T)`` tensor — one advantage per completion token — and nothing else of
TRL's loop changes (generation, vLLM, PEFT/QLoRA, the loss of every ``loss_type``, logging, checkpoints). One rollout:

1. TRL's ``_generate_and_score_completions`` generates and calls ``_calculate_rewards``, which here calls the hook
   :meth:`GRPOBase.score_rollout` → a :class:`RolloutRewards` (default: TRL's reward functions, per function).
2. When TRL returns the batch, :meth:`GRPOBase.token_advantages` ``(batch, rewards) -> (B, T)`` — the subclass's one
   template method — gives ``batch["advantages"]``, which TRL's ``_compute_loss`` reads.

TRL computes the rewards in the nested hook and keeps them local to its method, so they reach step 2 through one slot
of this class, open only while one ``_generate_and_score_completions`` runs (:meth:`GRPOBase._rollout_scope`). The
slot is the one crossing between TRL's hooks; subclasses keep no state between hooks.

Bad input fails in :meth:`GRPOBase.__init__`, before any model loads, with the subclass's name in the message: no
reward source; a dataset without rows, without a ``prompt`` column or with ``None`` prompts; 4-bit/8-bit without
``bitsandbytes``; a reward model whose tokenizer cannot be found; then (``validate_reward_funcs``) each reward function
is called once on two rows, so a wrong number of rewards, a NaN or an unusable reference column fails before step 1.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn
from trl import GRPOConfig, GRPOTrainer

from ..hub import HubPushMixin
from ..model_card import ModelCardMixin
from ..models.adapters import resolve_adapter_model, use_base_as_reference
from .checkpointing import ResumeMixin
from .checks import (
    RolloutChecks,
    check_not_empty,
    check_prompt_column,
    check_prompts_not_none,
    check_quantization,
    probe_reward_funcs,
    resolve_reward_processing_classes,
    validated_reward_func,
)
from .trl_compat import grpo_replace_logged_advantages, grpo_tokenizer
from .vllm_sync import VLLMSyncMixin

__all__ = ["GRPOBase", "RolloutRewards", "as_list", "default_output_dir"]


@dataclass
class RolloutRewards:
    """What the reward functions said about one generation batch, all processes' completions in process order.

    Attributes:
        per_func: ``(B_global, n_funcs)`` — TRL's ``rewards_per_func``: one column per entry of ``reward_funcs``,
            NaN where a function returned ``None``.
        per_step: process supervision only (``ProcessGRPOTrainer``): one entry per completion with its step ends and
            step rewards; ``None`` otherwise.
    """

    per_func: torch.Tensor
    per_step: list[dict] | None = None

    def weighted_sum(self, weights: torch.Tensor, rows: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
        """The sequence score ``Σ_k w_k · r_k`` over the functions that returned a reward (TRL's
        ``sum_then_normalize``; ``None`` rewards skipped), and which rows no function scored; both ``(B,)``, for the
        ``rows`` of :attr:`per_func` (e.g. one process's slice).

        Example:
            >>> nan = float("nan")
            >>> rewards = RolloutRewards(torch.tensor([[1.0, 2.0], [nan, 4.0], [nan, nan]]))
            >>> rewards.weighted_sum(torch.tensor([1.0, 0.5]))
            (tensor([2., 2., 0.]), tensor([False, False,  True]))
        """
        per_func = self.per_func[rows]
        scores = (per_func * weights.to(per_func.device).unsqueeze(0)).nansum(dim=1)
        return scores, torch.isnan(per_func).all(dim=1)


def as_list(value: Any) -> list:
    """``None`` → ``[]``, a list or tuple → a list of its items, anything else → ``[value]`` (TRL's convention for
    ``reward_funcs``)."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def default_output_dir(model: Any, suffix: str) -> str:
    """``<model name>-<suffix>``, the output folder a trainer uses when no ``args`` are given (as TRL's
    ``<model name>-GRPO``).

    Example:
        >>> default_output_dir("HuggingFaceTB/SmolLM2-135M-Instruct/", "RFT")
        'SmolLM2-135M-Instruct-RFT'
    """
    name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "model")
    return f"{str(name).rstrip('/').split('/')[-1]}-{suffix}"


_OPEN = object()
"""The slot's value while a rollout runs and ``_calculate_rewards`` has not filled it yet."""


class GRPOBase(ResumeMixin, HubPushMixin, ModelCardMixin, VLLMSyncMixin, GRPOTrainer):
    """``GRPOTrainer`` with the advantages of a subclass: implement :meth:`token_advantages`, optionally
    :meth:`score_rollout`. Takes ``GRPOTrainer``'s arguments in its order; subclasses add theirs as keywords.

    Class attributes of a subclass: ``_name`` (the suffix of the default output folder and the model card's trainer
    name), ``_config_class`` (built when ``args`` is ``None``), ``_accepted_configs`` (what ``args`` may be),
    ``_no_reward_hint`` (appended to TRL's "No reward source provided" error), ``_outcome_placeholder`` (for a
    subclass whose rewards may come from elsewhere, e.g. process rewards: without ``reward_funcs``, TRL — which
    needs one — gets this function as a column that never enters the advantages; :meth:`score_rollout` fills it).
    A subclass's own arguments are keywords of its ``__init__``, which passes the rest on; its bad-input checks go
    into :meth:`_check_arguments`.

    Example (REINFORCE with a batch-mean baseline, every token of a completion getting its score minus the mean):
        >>> import tempfile
        >>> from datasets import Dataset
        >>> from trl_ext.models import save_tiny_model
        >>> from trl_ext.trainers.trl_compat import grpo_local_slice  # this process's rows of a gathered tensor
        >>> class Reinforce(GRPOBase):
        ...     _name = "Reinforce"
        ...     def token_advantages(self, batch, rewards):
        ...         scores, _ = rewards.weighted_sum(self.reward_weights)  # (B_global,), all processes
        ...         local = (scores - scores.mean())[grpo_local_slice(self, len(batch["completion_ids"]))]
        ...         return local[:, None].expand_as(batch["completion_ids"]).float()
        >>> folder = tempfile.mkdtemp()
        >>> args = GRPOConfig(output_dir=folder, per_device_train_batch_size=4, num_generations=2,
        ...     max_completion_length=8, max_steps=1, use_cpu=True, bf16=False, report_to="none")
        >>> trainer = Reinforce(str(save_tiny_model(f"{folder}/tiny")), args=args,
        ...     reward_funcs=lambda completions, **kw: [float(len(c)) for c in completions],
        ...     train_dataset=Dataset.from_dict({"prompt": ["2 + 3 ="] * 4}))
        >>> trainer.train().global_step  # doctest: +ELLIPSIS
        {...}
        1
    """

    _config_class: type = GRPOConfig
    _accepted_configs: tuple[type, ...] = (GRPOConfig,)
    _no_reward_hint: str = ""
    _outcome_placeholder: Callable | None = None

    def __init__(
        self,
        model: Any,
        reward_funcs: Any = None,
        args: GRPOConfig | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        reward_processing_classes: Any = None,
        callbacks: list | None = None,
        optimizers: tuple = (None, None),
        quantization_config: Any = None,
        peft_config: Any = None,
        **grpo_kwargs: Any,
    ) -> None:
        name = type(self).__name__
        args = self._resolve_args(model, args)
        reward_funcs = as_list(reward_funcs)
        self._check_arguments(args, reward_funcs, grpo_kwargs)
        has_environment = grpo_kwargs.get("environment_factory") is not None
        outcome_placeholder = self._outcome_placeholder
        if not reward_funcs and not has_environment and outcome_placeholder is None:
            raise ValueError(
                "No reward source provided. Pass `reward_funcs`, or an `environment_factory` whose environment "
                f"defines a `get_reward` method. {self._no_reward_hint}".rstrip()
            )
        if not has_environment:
            check_prompt_column(train_dataset, "train_dataset", name)
            check_not_empty(train_dataset, "train_dataset", name)
            check_prompts_not_none(train_dataset, "train_dataset", name)
        check_prompt_column(eval_dataset, "eval_dataset", name)
        check_quantization(quantization_config, args.model_init_kwargs, name)
        model, processing_class, quantization_config = resolve_adapter_model(  # a PEFT adapter folder as `model`
            model, args, trainer=name, quantization_config=quantization_config, peft_config=peft_config,
            processing_class=processing_class,
        )
        if reward_funcs:  # TRL's errors mid-step become clear ones (a string reward, a wrong-vocabulary RM)
            reward_processing_classes = resolve_reward_processing_classes(
                model, reward_funcs, reward_processing_classes, processing_class, args, name
            )
            reward_funcs = [f if isinstance(f, (str, nn.Module)) else validated_reward_func(f) for f in reward_funcs]
        has_reward_funcs = bool(reward_funcs)

        super().__init__(
            model=model,
            reward_funcs=reward_funcs or ([outcome_placeholder] if outcome_placeholder is not None else []),
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            reward_processing_classes=reward_processing_classes,
            callbacks=callbacks,
            optimizers=optimizers,
            quantization_config=quantization_config,
            peft_config=peft_config,
            **grpo_kwargs,
        )
        use_base_as_reference(self)  # an adapter folder continued: the reference is its base, adapters off
        self._rollout_checks = RolloutChecks(name, self.accelerator.is_main_process)
        self._rollout_rewards: Any = None  # the slot, see _rollout_scope
        if has_reward_funcs and getattr(args, "validate_reward_funcs", True) and not has_environment:
            probe_reward_funcs(self.reward_funcs, self.reward_func_names, train_dataset, grpo_tokenizer(self),
                               trainer_state=self.state, check_output=True)

    def _check_arguments(self, args: Any, reward_funcs: list, grpo_kwargs: dict) -> None:
        """Hook: a subclass's own bad-input checks, before anything loads (``args`` resolved, ``reward_funcs`` a
        list, ``grpo_kwargs`` the rest of ``GRPOTrainer``'s keywords). Default: none."""

    def _resolve_args(self, model: Any, args: Any) -> Any:
        """``args``, or the subclass's config with the default output folder; a config of another kind raises."""
        if args is None:
            return self._config_class(default_output_dir(model, self._name))
        if not isinstance(args, self._accepted_configs):
            kinds = " or ".join(c.__name__ for c in self._accepted_configs)
            raise TypeError(f"{type(self).__name__}: args must be a {kinds}, got {type(args).__name__}.")
        return args

    # ---- the template ------------------------------------------------------------------------------------------

    def token_advantages(self, batch: dict[str, Any], rewards: RolloutRewards) -> torch.Tensor:
        """The ``(B, T)`` advantages of this process's completions (``batch["completion_ids"]``'s shape).

        ``batch`` is the rollout batch TRL built (``prompt_ids``, ``completion_ids``, ``completion_mask``, …; TRL's
        own ``advantages`` are replaced by the return value); ``rewards`` are the global batch's
        (:meth:`score_rollout`), rows in process order. A subclass may add the keys its loss reads to ``batch``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement token_advantages(batch, rewards).")

    def score_rollout(self, inputs: list[dict], prompts: list, completions: list, completion_ids_list: list
                      ) -> RolloutRewards:
        """The rewards of one generation batch (TRL's ``_calculate_rewards`` arguments). Default: TRL's reward
        functions, with a counted warning for a training rollout in which none returned a reward."""
        per_func = self.reward_funcs_scores(inputs, prompts, completions, completion_ids_list)
        if self.model.training:
            self._rollout_checks.rewards(per_func, self.reward_func_names, self.state.global_step)
        return RolloutRewards(per_func)

    def reward_funcs_scores(self, inputs: list[dict], prompts: list, completions: list, completion_ids_list: list
                            ) -> torch.Tensor:
        """``(B_global, n_funcs)``: TRL's own scoring of ``reward_funcs`` (sync, async, reward models, gathered)."""
        return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)  # the next in the MRO

    # ---- TRL's hooks ---------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _rollout_scope(self) -> Iterator[Callable[[], RolloutRewards]]:
        """Open the slot for one ``_generate_and_score_completions``; yields a getter of what it received."""
        self._rollout_rewards = _OPEN

        def received() -> RolloutRewards:
            if not isinstance(self._rollout_rewards, RolloutRewards):
                raise RuntimeError(
                    f"{type(self).__name__}: GRPOTrainer._generate_and_score_completions did not call "
                    "_calculate_rewards; this TRL version is not supported."
                )
            return self._rollout_rewards

        try:
            yield received
        finally:
            self._rollout_rewards = None

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        if self._rollout_rewards is not _OPEN:
            raise RuntimeError(
                f"{type(self).__name__}._calculate_rewards ran outside _generate_and_score_completions (or twice in "
                "one rollout); this TRL version is not supported."
            )
        rewards = self.score_rollout(inputs, prompts, completions, completion_ids_list)
        self._rollout_rewards = rewards
        return rewards.per_func

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        with self._rollout_scope() as received:
            batch = super()._generate_and_score_completions(inputs)
            rewards = received()
        shape = tuple(batch["completion_ids"].shape)
        advantages = self.token_advantages(batch, rewards)
        if tuple(advantages.shape) != shape:
            raise RuntimeError(
                f"{type(self).__name__}.token_advantages returned a tensor of shape {tuple(advantages.shape)}; the "
                f"batch's completions are {shape}."
            )
        batch["advantages"] = advantages
        if self.log_completions:  # the completions table shows each completion's first-token advantage
            grpo_replace_logged_advantages(self, self.accelerator.gather(advantages[:, 0].contiguous()).tolist())
        return batch
