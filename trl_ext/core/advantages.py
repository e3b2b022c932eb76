"""Advantage estimators: GAE (PPO), group-relative outcome advantages (GRPO), process-supervised step advantages.

All functions are pure: tensors in, tensors out, no trainer state.
"""

from __future__ import annotations

from typing import Literal

import torch

from .masked import masked_mean, masked_var

ScaleMode = Literal["group", "batch", "none"]


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized Advantage Estimation (Schulman et al., 2016) over token sequences.

    For valid tokens (``mask = 1``) of each row, with ``V_{T} = 0`` after the last valid token::

        δ_t = r_t + γ · V_{t+1} − V_t
        A_t = δ_t + γ · λ · A_{t+1}
        R_t = A_t + V_t            (the value targets, "returns")

    Masked positions are skipped: ``t+1`` means the next *valid* token, so right padding and holes inside a
    sequence (e.g. tool outputs) are both handled. Advantages and returns are 0 on masked positions.

    Args:
        rewards: ``(B, T)`` per-token rewards.
        values: ``(B, T)`` value estimates ``V_t`` (detached rollout values).
        mask: ``(B, T)`` 1 for completion tokens, 0 for padding.
        gamma: discount ``γ``.
        lam: GAE ``λ``.

    Returns:
        ``(advantages, returns)``, both ``(B, T)``.

    Example:
        >>> adv, ret = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]), torch.ones(1, 2), 1.0, 1.0)
        >>> adv, ret
        (tensor([[0.5000, 0.5000]]), tensor([[1., 1.]]))
    """
    if rewards.shape != values.shape or rewards.shape != mask.shape:
        raise ValueError(
            f"gae: rewards {tuple(rewards.shape)}, values {tuple(values.shape)} and mask {tuple(mask.shape)} "
            "must have the same (B, T) shape."
        )
    valid = mask.bool()
    rewards = torch.where(valid, rewards, torch.zeros_like(rewards))
    values = torch.where(valid, values, torch.zeros_like(values))
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_adv = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv_t = delta + gamma * lam * next_adv
        m = valid[:, t]
        advantages[:, t] = torch.where(m, adv_t, torch.zeros_like(adv_t))
        next_value = torch.where(m, values[:, t], next_value)
        next_adv = torch.where(m, adv_t, next_adv)
    returns = torch.where(valid, advantages + values, torch.zeros_like(values))
    return advantages, returns


def _check_groups(n: int, num_generations: int, fn: str) -> int:
    if num_generations < 1:
        raise ValueError(f"{fn}: num_generations must be >= 1, got {num_generations}.")
    if n % num_generations != 0:
        raise ValueError(
            f"{fn}: the batch of {n} completions is not a whole number of groups of num_generations="
            f"{num_generations}; pass the global (all-rank) batch."
        )
    return n // num_generations


def _group_normalise(
    rewards: torch.Tensor, valid: torch.Tensor, num_generations: int, scale: ScaleMode, eps: float, fn: str
) -> torch.Tensor:
    """Centre each group's valid rewards on the group mean and scale them; 0 where not ``valid``::

        r̃ = (r − mean_group) / (std + eps)      std over the group (scale="group") or the batch (scale="batch")
        r̃ =  r − mean_group                     scale="none"

    A group is ``num_generations`` consecutive rows of ``rewards`` (``(B,)`` or ``(B, S)``: a row's entries pool
    with those of the other rows of its group); std is the unbiased :func:`~trl_ext.core.masked.masked_var`'s root.
    """
    n_groups = _check_groups(rewards.shape[0], num_generations, fn)
    pooled, pvalid = rewards.reshape(n_groups, -1), valid.reshape(n_groups, -1)
    per_row = (-1,) + (1,) * (rewards.dim() - 1)  # a group statistic broadcast over its rows

    def each_row(group_stat: torch.Tensor) -> torch.Tensor:
        return group_stat.repeat_interleave(num_generations).view(per_row)

    centered = rewards - each_row(masked_mean(pooled, pvalid, dim=1))
    if scale == "group":
        normed = centered / (each_row(masked_var(pooled, pvalid, dim=1).sqrt()) + eps)
    elif scale == "batch":
        normed = centered / (masked_var(rewards, valid).sqrt() + eps)
    elif scale == "none":
        normed = centered
    else:
        raise ValueError(f"{fn}: scale must be 'group', 'batch' or 'none', got {scale!r}.")
    return torch.where(valid, normed, torch.zeros_like(normed))


def group_advantages(
    rewards: torch.Tensor,
    num_generations: int,
    scale: ScaleMode = "group",
    eps: float = 1e-4,
) -> torch.Tensor:
    """Group-relative outcome advantages of GRPO (Shao et al., 2024), as computed by TRL's ``GRPOTrainer``.

    For the ``G = num_generations`` consecutive completions of one prompt with rewards ``r_1..r_G``::

        Â_i = (r_i − mean(r)) / (std(r) + eps)      scale="group" (std over the group, unbiased)
        Â_i = (r_i − mean(r)) / (std_batch + eps)   scale="batch" (std over the whole batch)
        Â_i =  r_i − mean(r)                        scale="none"

    NaN rewards (no reward function applied) are ignored in the statistics; a group of one, or of equal rewards,
    gets advantage 0.

    Args:
        rewards: ``(B,)`` rewards of the global batch, grouped consecutively by prompt.
        num_generations: group size ``G``.
        scale: ``"group"``, ``"batch"`` or ``"none"`` (TRL's ``scale_rewards``).
        eps: added to the std.

    Example:
        >>> group_advantages(torch.tensor([1.0, 0.0, 3.0, 3.0]), num_generations=2)
        tensor([ 0.7070, -0.7070,  0.0000,  0.0000])
    """
    if rewards.dim() != 1:
        raise ValueError(f"group_advantages: rewards must be 1-D (B,), got shape {tuple(rewards.shape)}.")
    return _group_normalise(rewards, ~torch.isnan(rewards), num_generations, scale, eps, "group_advantages")


def process_advantages(
    step_rewards: torch.Tensor,
    step_ends: torch.Tensor,
    step_mask: torch.Tensor,
    num_generations: int,
    seq_len: int,
    scale: ScaleMode | bool = "group",
    eps: float = 1e-4,
) -> torch.Tensor:
    """Process-supervision advantages (DeepSeekMath §4.1.3): pooled step normalisation, reward-to-go per token.

    For the ``G`` completions of one prompt, pool every valid step reward ``R = {r_i^j}`` and normalise::

        r̃_i^j = (r_i^j − mean(R)) / (std(R) + eps)        (scale="group"; std unbiased over the pooled steps)

    ``scale="batch"`` divides by the std of all valid steps of the batch instead, ``"none"`` only centres
    (``True``/``False`` mean ``"group"``/``"none"``). Token ``t`` of completion ``i`` gets the sum of the
    normalised rewards of the steps that end at or after it::

        Â_{i,t} = Σ_{j : end(j) ≥ t} r̃_i^j

    Tokens after the last step's end get 0. A pool of one step, or of equal step rewards, gives 0 everywhere.
    With a single step per completion ending on its last token this equals :func:`group_advantages`
    broadcast over the completion.

    Args:
        step_rewards: ``(B, S)`` step rewards, padded to ``S`` steps.
        step_ends: ``(B, S)`` long, index (inclusive, in ``[0, seq_len)``) of the last token of each step.
        step_mask: ``(B, S)`` 1 for real steps, 0 for padding or unscored steps.
        num_generations: group size ``G``; rows ``[k·G, (k+1)·G)`` share a prompt. Pass the global batch.
        seq_len: ``T`` of the returned ``(B, T)`` tensor.
        scale: ``"group"``, ``"batch"`` or ``"none"``.
        eps: added to the std.

    Returns:
        ``(B, T)`` token advantages.

    Example:
        >>> adv = process_advantages(
        ...     torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[1, 2], [0, 0]]),
        ...     torch.tensor([[1, 1], [1, 0]]), num_generations=2, seq_len=4, scale="none")
        >>> adv
        tensor([[-0.3333, -0.3333, -0.6667,  0.0000],
                [ 0.3333,  0.0000,  0.0000,  0.0000]])
    """
    if step_rewards.shape != step_ends.shape or step_rewards.shape != step_mask.shape or step_rewards.dim() != 2:
        raise ValueError(
            f"process_advantages: step_rewards {tuple(step_rewards.shape)}, step_ends {tuple(step_ends.shape)} and "
            f"step_mask {tuple(step_mask.shape)} must share one (B, S) shape."
        )
    if scale is True:
        scale = "group"
    elif scale is False:
        scale = "none"
    B = step_rewards.shape[0]
    _check_groups(B, num_generations, "process_advantages")
    valid = step_mask.bool() & ~torch.isnan(step_rewards)
    if valid.any() and (step_ends[valid].min() < 0 or step_ends[valid].max() >= seq_len):
        raise ValueError(f"process_advantages: step_ends must lie in [0, seq_len={seq_len}) for valid steps.")
    rewards = torch.where(valid, step_rewards, torch.zeros_like(step_rewards))
    normed = _group_normalise(rewards, valid, num_generations, scale, eps, "process_advantages")

    per_token = torch.zeros(B, seq_len, dtype=step_rewards.dtype, device=step_rewards.device)
    ends = torch.where(valid, step_ends, torch.zeros_like(step_ends)).long()
    per_token.scatter_add_(1, ends, normed)
    # reward-to-go: Â_t = Σ_{t' ≥ t} per_token[t']
    return per_token.flip(1).cumsum(1).flip(1)
