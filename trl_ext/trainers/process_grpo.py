"""GRPO with process supervision (DeepSeekMath, Shao et al., 2024, §4.1.3): step rewards, pooled normalisation,
reward-to-go token advantages.

:class:`ProcessGRPOTrainer` is a drop-in subclass of TRL's ``GRPOTrainer``: the same arguments, plus
``process_reward_funcs`` (callables in the process-reward-function convention of :mod:`trl_ext.rewards.process`).
Each completion is split into steps by ``args.step_separator``; every process reward function scores each step;
ordinary TRL reward functions (outcome rewards) count as one more step ending on the completion's last token, weighted
by ``args.outcome_reward_weight``. The advantages are :func:`trl_ext.core.process_advantages` of the *global* batch
(every rank's completions, gathered) — the step rewards of a prompt's group are pooled and normalised by their mean
and std (``args.scale_rewards``: ``"group"``, ``"batch"`` or ``"none"``, as in TRL), and each token gets the sum of the
normalised rewards of the steps ending at or after it. They are handed to TRL's loss as a ``(B, T)`` tensor, so every
``loss_type``, importance-sampling correction, vLLM mode, PEFT/QLoRA set-up and multi-process run works unchanged.

Edge cases, by design:

- A completion with zero scorable steps (no step scored by any process reward function) falls back to its outcome
  reward alone; with no outcome reward either, its advantages are 0 (like TRL's unscorable completions).
- A step scored ``None`` by every process reward function is left out of the pool and adds nothing.
- Several process reward functions are combined per step by a weighted sum (``args.process_reward_weights``), the
  ``None`` ones skipped; several outcome reward functions by TRL's ``reward_weights`` (``sum_then_normalize``).
- With single-step completions and one outcome reward, the advantages equal stock ``GRPOTrainer``'s in every
  ``scale_rewards`` mode (the pool of a group is then exactly GRPO's group), hence the same loss.

Logged metrics (``process/…``): ``steps_per_completion``, ``step_reward_mean``, ``frac_correct_steps`` (scored steps
with reward ≥ ``args.correct_step_threshold``), ``frac_scored_steps``, ``frac_outcome_only``, ``<func>/mean`` per
process reward function, ``advantage_mean``/``advantage_std``/``advantage_min``/``advantage_max`` over completion
tokens, ``scoring_time`` (seconds in process reward functions) and ``overhead_time`` (step splitting and gathering).
The completions table gets a ``step_rewards`` column, and its ``advantage`` column shows ``Â`` at the first completion
token (the sum of the completion's normalised step rewards).

The ``(B, T)`` advantage, from reward to loss, all in this file: :meth:`ProcessGRPOTrainer.score_rollout` (called by
TRL with the decoded completions) splits each completion into steps and scores them; when TRL hands over the rollout
batch, :meth:`ProcessGRPOTrainer.token_advantages` pools, normalises and sums them to go, and
:class:`~trl_ext.trainers.grpo_base.GRPOBase` puts the result in ``batch["advantages"]``, which TRL's loss reads.

Example:
    >>> from trl_ext.rewards.process import ArithmeticStepVerifier
    >>> from trl_ext.trainers.process_grpo import ProcessGRPOConfig, ProcessGRPOTrainer
    >>> args = ProcessGRPOConfig(output_dir="out", num_generations=4, per_device_train_batch_size=4,
    ...                          max_completion_length=64, max_steps=2, step_separator="\\n")  # doctest: +SKIP
    >>> trainer = ProcessGRPOTrainer(
    ...     model="HuggingFaceTB/SmolLM2-135M-Instruct", reward_funcs=[answer_grader],
    ...     process_reward_funcs=[ArithmeticStepVerifier()], args=args, train_dataset=dataset)  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate.utils import gather_object
from torch import nn
from trl import GRPOConfig

from ..core import process_advantages
from ..models.adapters import AdapterFolderArguments
from ..rewards.process import ProcessRewardModel, check_process_rewards, completion_steps, skipped_token_ids
from .checks import callable_name, check_tokenizer_fits, is_async_callable
from .grpo_base import GRPOBase, RolloutRewards, as_list
from .trl_compat import (
    grpo_local_slice,
    grpo_log_extra,
    grpo_log_metric,
    grpo_metrics,
    grpo_num_generations,
    grpo_tokenizer,
)

__all__ = ["ProcessGRPOConfig", "ProcessGRPOTrainer"]

_PROCESS_DEFAULTS = {
    "step_separator": "\n\n",
    "process_reward_weights": None,
    "outcome_reward_weight": 1.0,
    "correct_step_threshold": 0.5,
    "validate_reward_funcs": True,
}


def _check_separator(separator: Any) -> str:
    if not isinstance(separator, str) or separator == "":
        raise ValueError(
            f"step_separator must be a non-empty string (e.g. '\\n\\n', '\\n' or a special step token), got "
            f"{separator!r}."
        )
    return separator


@dataclass
class ProcessGRPOConfig(AdapterFolderArguments, GRPOConfig):
    r"""Configuration of :class:`ProcessGRPOTrainer`: every field of TRL's ``GRPOConfig`` plus the process fields.

    ``scale_rewards`` keeps TRL's meaning, applied to the pooled step rewards of each group: ``"group"`` divides by
    the std of the group's pooled step rewards, ``"batch"`` by the std of all step rewards of the batch, ``"none"``
    only centres. ``multi_objective_aggregation`` must stay ``"sum_then_normalize"``.

    Example:
        >>> config = ProcessGRPOConfig(
        ...     output_dir="out", step_separator="\n", outcome_reward_weight=0.5)  # doctest: +SKIP
    """

    step_separator: str = field(
        default="\n\n",
        metadata={
            "help": "String that separates the steps of a completion. Defaults to a blank line ('\\n\\n'); a single "
            "newline ('\\n') or a special step token also work. Written as '\\n' on the command line or in YAML, the "
            "two characters backslash-n are read as a newline. Text after the last separator is the last step; a "
            "completion without separator is one step."
        },
    )
    process_reward_weights: list[float] | None = field(
        default=None,
        metadata={
            "help": "Weights of the process reward functions, summed per step (steps a function scores None are "
            "skipped). If `None`, all weights are 1.0."
        },
    )
    outcome_reward_weight: float = field(
        default=1.0,
        metadata={
            "help": "Weight of the outcome reward (the `reward_weights`-weighted sum of the ordinary TRL reward "
            "functions), which joins the pool as one more step ending on the completion's last token. Defaults to "
            "1.0; 0.0 ignores the outcome reward functions in the advantages (they are still logged)."
        },
    )
    correct_step_threshold: float = field(
        default=0.5,
        metadata={
            "help": "A scored step counts as correct in the `process/frac_correct_steps` metric when its combined "
            "reward is >= this value. Logging only. Defaults to 0.5."
        },
    )
    validate_reward_funcs: bool = field(
        default=True,
        metadata={
            "help": "Before training, call each outcome reward function once on two dataset rows with placeholder "
            "completions, so that a reward function returning None for every sample (an unusable reference column) "
            "fails before step 1. Disable for reward functions with costly side effects."
        },
    )

    def __post_init__(self):
        if isinstance(self.step_separator, str) and "\\n" in self.step_separator:
            self.step_separator = self.step_separator.replace("\\n", "\n")
        _check_separator(self.step_separator)
        if not math.isfinite(float(self.outcome_reward_weight)):
            raise ValueError(f"outcome_reward_weight must be finite, got {self.outcome_reward_weight}.")
        if self.process_reward_weights is not None and not all(
            math.isfinite(float(w)) for w in self.process_reward_weights
        ):
            raise ValueError(f"process_reward_weights must be finite, got {self.process_reward_weights}.")
        super().__post_init__()


def mean_step_reward(completions, **kwargs):
    """Placeholder outcome column of a ProcessGRPOTrainer without outcome rewards (filled with the mean step reward)."""
    raise RuntimeError("mean_step_reward is filled in by ProcessGRPOTrainer._calculate_rewards and never called.")


class ProcessGRPOTrainer(GRPOBase):
    """TRL's ``GRPOTrainer`` with process supervision: per-step rewards, pooled normalisation, reward-to-go.

    Args:
        model, reward_funcs, args, train_dataset, …: as for ``GRPOTrainer`` (``args`` may be a ``ProcessGRPOConfig``
            or a plain ``GRPOConfig``, whose process fields then take their defaults). ``reward_funcs`` are outcome
            rewards and may be empty when ``process_reward_funcs`` is given.
        process_reward_funcs: callables ``fn(prompts=, completions=, completion_ids=, steps=, **columns)`` returning one
            list of step rewards (``None`` to skip a step) or ``None`` per completion, e.g.
            :class:`~trl_ext.rewards.process.ArithmeticStepVerifier` or
            :class:`~trl_ext.rewards.process.ProcessRewardModel`. A bare PRM ``nn.Module`` must be wrapped in
            ``ProcessRewardModel``.

    Raises (before any training step): ``ValueError`` for an empty separator, a non-callable process reward function,
    mismatched ``process_reward_weights``, no reward at all, ``multi_objective_aggregation="normalize_then_sum"``, or
    tools/environments (multi-turn completions are not split into steps); at the first scoring, for a process reward
    function whose output has the wrong length or a NaN step reward.

    Example:
        >>> import tempfile
        >>> from datasets import Dataset
        >>> from trl_ext.models import save_tiny_model
        >>> from trl_ext.rewards.process import ArithmeticStepVerifier
        >>> folder = tempfile.mkdtemp()
        >>> path = str(save_tiny_model(f"{folder}/tiny"))  # a tiny random Llama; use any causal LM
        >>> args = ProcessGRPOConfig(output_dir=f"{folder}/out", per_device_train_batch_size=4, num_generations=4,
        ...     max_completion_length=16, max_steps=1, use_cpu=True, bf16=False, report_to="none")
        >>> trainer = ProcessGRPOTrainer(model=path, process_reward_funcs=[ArithmeticStepVerifier(no_claim_reward=0.0)],
        ...     args=args, train_dataset=Dataset.from_dict({"prompt": ["What is 2 + 3?"] * 4}))
        >>> trainer.train().global_step  # doctest: +ELLIPSIS
        {...}
        1
    """

    _tag_names = ["trl", "trl-ext", "grpo", "process-supervision"]
    _name = "ProcessGRPO"  # _paper: GRPOTrainer's, DeepSeekMath (process supervision is its §4.1.3)
    _config_class = ProcessGRPOConfig  # a plain GRPOConfig is accepted too (the process fields take their defaults)
    _accepted_configs = (GRPOConfig,)
    _card_template = "process_grpo.md"
    _card_hyperparameters = (
        "step_separator", "process_reward_weights", "outcome_reward_weight", "scale_rewards", "num_generations",
        "max_completion_length", "beta", "loss_type", "temperature",
    )
    _card_plot_keys = (
        "reward", "process/step_reward_mean", "process/frac_correct_steps", "process/steps_per_completion",
        "process/advantage_std", "entropy",
    )
    _card_metric_keys = (
        "reward", "reward_std", "rewards/*", "process/*", "kl", "entropy", "clip_ratio/region_mean",
        "completions/mean_length", "eval_*", "train_loss", "train_runtime",
    )

    _outcome_placeholder = staticmethod(mean_step_reward)  # its column: each completion's mean step reward

    def __init__(self, *grpo_args: Any, process_reward_funcs: Any = None, **grpo_kwargs: Any) -> None:
        self.process_reward_funcs = as_list(process_reward_funcs)  # checked by _check_arguments, before TRL's init
        super().__init__(*grpo_args, **grpo_kwargs)  # GRPOTrainer's arguments
        args = self.args
        self.process_reward_func_names = [callable_name(fn) for fn in self.process_reward_funcs]
        weights = args.process_reward_weights
        self.process_reward_weights = torch.tensor(
            weights if weights is not None else [1.0] * len(self.process_reward_funcs), dtype=torch.float32
        )
        self.outcome_reward_weight = float(args.outcome_reward_weight)
        self.correct_step_threshold = float(args.correct_step_threshold)
        for fn in self.process_reward_funcs:
            if isinstance(fn, ProcessRewardModel):
                fn.model.to(self.accelerator.device)

    def _check_arguments(self, args: Any, reward_funcs: list, grpo_kwargs: dict) -> None:
        for key, default in _PROCESS_DEFAULTS.items():
            if not hasattr(args, key):  # a plain GRPOConfig: drop-in with the process defaults
                setattr(args, key, default)
        self.step_separator = _check_separator(args.step_separator)
        self._check_process_reward_funcs(self.process_reward_funcs, args.process_reward_weights)
        self._has_outcome = bool(reward_funcs)
        if not self._has_outcome and not self.process_reward_funcs:
            raise ValueError(
                "No reward source provided. Pass `reward_funcs`, or an `environment_factory` whose environment "
                "defines a `get_reward` method. ProcessGRPOTrainer needs at least one reward: pass "
                "process_reward_funcs (per-step rewards) and/or reward_funcs (outcome rewards)."
            )
        if getattr(args, "multi_objective_aggregation", "sum_then_normalize") != "sum_then_normalize":
            raise ValueError(
                "ProcessGRPOTrainer pools weighted step and outcome rewards (sum_then_normalize); "
                f"multi_objective_aggregation={args.multi_objective_aggregation!r} is not supported."
            )
        for key in ("tools", "environment_factory"):
            if grpo_kwargs.get(key):
                raise ValueError(
                    f"ProcessGRPOTrainer does not support `{key}`: multi-turn completions with tool outputs are not "
                    "split into steps."
                )

    def _check_process_reward_funcs(self, funcs: list, weights: list | None) -> None:
        """A bare PRM module, a non-callable, an async function, a PRM whose tokenizer it cannot embed, or weights of
        another length: one clear error before any model loads."""
        name = type(self).__name__
        for i, fn in enumerate(funcs):
            if isinstance(fn, nn.Module):
                raise ValueError(
                    f"process_reward_funcs[{i}] is a bare {type(fn).__name__}; wrap a token-classification PRM in "
                    "trl_ext.rewards.process.ProcessRewardModel(model, tokenizer) so its steps can be scored."
                )
            if not callable(fn):
                raise ValueError(f"process_reward_funcs[{i}] ({fn!r}) is not callable.")
            if is_async_callable(fn):
                raise ValueError(
                    f"process_reward_funcs[{i}] ('{callable_name(fn)}') is async; pass a synchronous callable."
                )
            if isinstance(fn, ProcessRewardModel):
                check_tokenizer_fits(fn.tokenizer, fn.model, f"process_reward_funcs[{i}] (a ProcessRewardModel)",
                                     "its tokenizer", name)
        if weights is not None and len(weights) != len(funcs):
            raise ValueError(
                f"process_reward_weights has {len(weights)} entries but {len(funcs)} process reward "
                "functions were given."
            )

    # ---- rollout, 1: step rewards (TRL calls this once per generation batch, with the decoded completions) --------

    def score_rollout(self, inputs: list[dict], prompts: list, completions: list, completion_ids_list: list
                      ) -> RolloutRewards:
        """Outcome rewards (TRL's reward functions) and, per completion of the global batch, its steps' ends and
        combined step rewards (``per_step``)."""
        device = self.accelerator.device
        rewards_per_func = None
        if self._has_outcome:
            rewards_per_func = self.reward_funcs_scores(inputs, prompts, completions, completion_ids_list)

        start = time.perf_counter()
        tokenizer = grpo_tokenizer(self)
        drop_ids = skipped_token_ids(tokenizer, self.step_separator)
        split = [completion_steps(ids, tokenizer, self.step_separator, drop_ids) for ids in completion_ids_list]
        steps = [s.steps for s in split]

        scoring_start = time.perf_counter()
        keys = [key for key in inputs[0] if key not in ("prompt", "completion", "completion_ids")]
        kwargs = {key: [example[key] for example in inputs] for key in keys}
        kwargs.update(
            trainer_state=self.state,
            log_extra=lambda column, values: grpo_log_extra(self, column, values),
            log_metric=lambda name, value: grpo_log_metric(self, name, value),
        )
        per_func = []  # [func][completion][step]
        for fn, name in zip(self.process_reward_funcs, self.process_reward_func_names):
            output = fn(prompts=prompts, completions=completions, completion_ids=completion_ids_list, steps=steps,
                        **kwargs)
            per_func.append(check_process_rewards(output, steps, name))
        scoring_time = time.perf_counter() - scoring_start

        # Combine the process reward functions per step: weighted sum of the non-None ones, NaN when all are None.
        local_rows = []
        for i, completion in enumerate(split):
            if per_func:
                values = torch.tensor([per_func[k][i] for k in range(len(per_func))], dtype=torch.float32)
                values = values.reshape(len(per_func), len(completion.steps))
                combined = (values * self.process_reward_weights.unsqueeze(1)).nansum(0)
                combined[torch.isnan(values).all(0)] = math.nan
                combined = combined.tolist()
            else:
                combined = [math.nan] * len(completion.steps)
            local_rows.append(
                {
                    "ends": completion.ends,
                    "rewards": combined,
                    "per_func": [per_func[k][i] for k in range(len(per_func))],
                    "length": len(completion_ids_list[i]),
                }
            )
        table = [[None if math.isnan(r) else round(r, 4) for r in row["rewards"]] for row in local_rows]
        grpo_log_extra(self, "step_rewards", table)

        # Generations of one prompt may live on different ranks: normalise over the global batch.
        rows = gather_object(local_rows)
        if self.model.training:  # no reward at all / no step scored / separator never written: counted warnings
            outcome = None if rewards_per_func is None else int((~torch.isnan(rewards_per_func).all(1)).sum())
            scored = sum(not math.isnan(r) for row in rows for r in row["rewards"])
            self._rollout_checks.process_rollout([len(r["ends"]) for r in rows], scored, outcome, self.step_separator,
                                                 self.process_reward_func_names, self.state.global_step)
        if rewards_per_func is None:  # process rewards only: TRL's reward column is the mean step reward
            means = [[sum(v) / len(v)] if (v := [r for r in row["rewards"] if not math.isnan(r)]) else [math.nan]
                     for row in rows]
            rewards_per_func = torch.tensor(means, dtype=torch.float32, device=device)
        grpo_log_metric(self, "process/scoring_time", scoring_time)
        grpo_log_metric(self, "process/overhead_time", time.perf_counter() - start - scoring_time)
        return RolloutRewards(rewards_per_func, per_step=rows)

    # ---- rollout, 2: pooled normalisation and reward-to-go → (B, T) advantages ------------------------------------

    def token_advantages(self, batch: dict[str, Any], rewards: RolloutRewards) -> torch.Tensor:
        """This process's rows of the global batch's advantages (:meth:`_global_advantages`), padded or cut to the
        width of its completions."""
        B, width = batch["completion_ids"].shape
        advantages = self._global_advantages(rewards)[grpo_local_slice(self, B)]
        if advantages.shape[1] < width:
            advantages = torch.nn.functional.pad(advantages, (0, width - advantages.shape[1]))
        return advantages[:, :width].contiguous().to(batch["completion_ids"].device)

    def _log_process_metric(self, name: str, value: float) -> None:
        """Log a metric computed from the global batch (the same on every process) for this step."""
        grpo_metrics(self, "train" if self.model.training else "eval")[name].append(value)

    def _global_advantages(self, rewards: RolloutRewards) -> torch.Tensor:
        """``(B_global, T_global)`` advantages from the gathered step rewards and the outcome rewards
        (:func:`trl_ext.core.process_advantages`: pooled normalisation, reward-to-go); logs their statistics."""
        rows, rewards_per_func = rewards.per_step, rewards.per_func
        device = rewards_per_func.device
        n = len(rows)
        if rewards_per_func.shape[0] != n:
            raise RuntimeError(
                f"ProcessGRPOTrainer: {rewards_per_func.shape[0]} outcome rewards but {n} gathered completions."
            )
        use_outcome = self._has_outcome and self.outcome_reward_weight != 0.0
        max_steps = max((len(r["ends"]) for r in rows), default=0)
        width = max_steps + (1 if use_outcome else 0)
        seq_len = max(max((r["length"] for r in rows), default=1), 1)
        step_rewards = torch.full((n, max(width, 1)), math.nan)
        step_ends = torch.zeros((n, max(width, 1)), dtype=torch.long)
        for i, row in enumerate(rows):
            k = len(row["ends"])
            if k:
                step_rewards[i, :k] = torch.tensor(row["rewards"], dtype=torch.float32)
                step_ends[i, :k] = torch.tensor(row["ends"], dtype=torch.long)
        if use_outcome:
            outcome, unscorable = rewards.weighted_sum(self.reward_weights)
            outcome[unscorable] = math.nan
            lengths = torch.tensor([r["length"] for r in rows], dtype=torch.long)
            step_rewards[:, -1] = self.outcome_reward_weight * outcome.float().cpu()
            step_ends[:, -1] = (lengths - 1).clamp(min=0)
            step_rewards[lengths == 0, -1] = math.nan
        step_mask = ~torch.isnan(step_rewards)
        advantages = process_advantages(
            step_rewards, step_ends, step_mask, grpo_num_generations(self), seq_len, scale=self.scale_rewards
        )

        # Metrics over the global batch (identical on every rank). TRL has flushed its log_metric queue by now.
        proc = step_rewards[:, :max_steps]
        proc_valid = step_mask[:, :max_steps]
        num_steps = torch.tensor([len(r["ends"]) for r in rows], dtype=torch.float32)
        self._log_process_metric("process/steps_per_completion", num_steps.mean().item() if n else 0.0)
        if proc_valid.any():
            scored = proc[proc_valid]
            self._log_process_metric("process/step_reward_mean", scored.mean().item())
            correct = (scored >= self.correct_step_threshold).float().mean().item()
            self._log_process_metric("process/frac_correct_steps", correct)
        if num_steps.sum() > 0:
            self._log_process_metric("process/frac_scored_steps", (proc_valid.sum() / num_steps.sum()).item())
        self._log_process_metric("process/frac_outcome_only", (~proc_valid.any(1)).float().mean().item() if n else 0.0)
        for k, name in enumerate(self.process_reward_func_names):
            values = [v for r in rows for v in r["per_func"][k] if not math.isnan(v)]
            if values:
                self._log_process_metric(f"process/{name}/mean", sum(values) / len(values))
        token_mask = torch.arange(seq_len).unsqueeze(0) < torch.tensor([r["length"] for r in rows]).unsqueeze(1)
        if token_mask.any():
            adv = advantages[token_mask]
            self._log_process_metric("process/advantage_mean", adv.mean().item())
            self._log_process_metric("process/advantage_std", adv.std().item() if adv.numel() > 1 else 0.0)
            self._log_process_metric("process/advantage_min", adv.min().item())
            self._log_process_metric("process/advantage_max", adv.max().item())
        return advantages.to(device)
