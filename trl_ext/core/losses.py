"""PPO losses: clipped policy surrogate with asymmetric clip, and the clipped value loss."""

from __future__ import annotations

import torch

from .masked import masked_mean


def ppo_per_token_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token clipped surrogate (Schulman et al., 2017) with an asymmetric clip range (DAPO)::

        ρ_t = exp(logp_t − logp_old_t)
        L_t = max(−A_t · ρ_t, −A_t · clip(ρ_t, 1 − ε_low, 1 + ε_high))

    Args:
        logp: ``(B, T)`` log-probs of the sampled tokens under the current policy.
        old_logp: ``(B, T)`` log-probs at rollout time (detached).
        advantages: ``(B, T)`` or ``(B,)`` (broadcast over tokens).
        epsilon_low: ``ε_low``.
        epsilon_high: ``ε_high`` (defaults to ``ε_low``).

    Returns:
        ``(per_token_loss, is_clipped, ratio)``; ``is_clipped`` marks tokens where the clipped term is the max.

    Example:
        >>> loss, clipped, _ = ppo_per_token_loss(torch.tensor([[0.5]]), torch.tensor([[0.0]]), torch.tensor([1.0]))
        >>> loss, clipped
        (tensor([[-1.2000]]), tensor([[True]]))
    """
    if epsilon_high is None:
        epsilon_high = epsilon_low
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)
    return torch.maximum(unclipped, clipped), clipped > unclipped, ratio


def ppo_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO policy loss, token mean over valid tokens of the batch::

        pg_loss     = masked_mean(max(−A·ρ, −A·clip(ρ, 1 − ε_low, 1 + ε_high)))
        pg_clipfrac = masked_mean(1[clipped term > unclipped term])
        approx_kl   = masked_mean((ρ − 1) − log ρ)          (k3 estimator of KL(π_old ‖ π))

    Args:
        logp, old_logp, advantages, epsilon_low, epsilon_high: see :func:`ppo_per_token_loss`.
        mask: ``(B, T)`` completion mask.

    Returns:
        ``(pg_loss, {"pg_clipfrac": …, "approx_kl": …})`` (stats detached).

    Example:
        >>> loss, stats = ppo_policy_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([2.0]), torch.ones(1, 2))
        >>> loss, stats["pg_clipfrac"]
        (tensor(-2.), tensor(0.))
    """
    per_token, is_clipped, ratio = ppo_per_token_loss(logp, old_logp, advantages, epsilon_low, epsilon_high)
    log_ratio = logp - old_logp
    stats = {
        "pg_clipfrac": masked_mean(is_clipped.to(logp.dtype), mask).detach(),
        "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask).detach(),
    }
    return masked_mean(per_token, mask), stats


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float | None = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss of PPO (OpenAI baselines ppo2; OpenRLHF, verl)::

        V_clip      = clip(V, V_old − ε_v, V_old + ε_v)            (= V_old + clip(V − V_old, −ε_v, ε_v))
        vf_loss     = ½ · masked_mean(max((V − R)², (V_clip − R)²))
        vf_clipfrac = masked_mean(1[(V_clip − R)² > (V − R)²])

    The max is element-wise, before the mean; ``vf_clipfrac`` compares the clipped error with the error of the
    *unclamped* prediction. The prediction itself is clamped (as verl and OpenRLHF do), so inside the range
    ``V_clip`` *is* ``V`` bit for bit and an inactive clip gives ``vf_clipfrac == 0`` exactly (``V_old + clip(V −
    V_old, …)`` differs from ``V`` by rounding and would count unclipped tokens). ``ε_v`` (``cliprange_value``) is in reward units; ``None`` disables clipping
    (``vf_loss = ½ · masked_mean((V − R)²)``, ``vf_clipfrac = 0``).

    Args:
        values: ``(B, T)`` current value predictions ``V``.
        old_values: ``(B, T)`` rollout value predictions ``V_old`` (detached).
        returns: ``(B, T)`` value targets ``R`` (detached).
        mask: ``(B, T)`` completion mask.
        cliprange_value: ``ε_v > 0`` or ``None``.

    Returns:
        ``(vf_loss, vf_clipfrac)``.

    Example:
        >>> clipped_value_loss(torch.tensor([[2.0]]), torch.tensor([[0.0]]), torch.tensor([[1.0]]), torch.ones(1, 1), 0.5)
        (tensor(0.5000), tensor(0.))
    """
    unclipped_err = (values - returns) ** 2
    if cliprange_value is None:
        return 0.5 * masked_mean(unclipped_err, mask), torch.zeros((), dtype=values.dtype, device=values.device)
    if cliprange_value <= 0:
        raise ValueError(f"clipped_value_loss: cliprange_value must be > 0 or None, got {cliprange_value}.")
    v_clip = torch.clamp(values, old_values - cliprange_value, old_values + cliprange_value)
    clipped_err = (v_clip - returns) ** 2
    vf_loss = 0.5 * masked_mean(torch.maximum(unclipped_err, clipped_err), mask)
    vf_clipfrac = masked_mean((clipped_err > unclipped_err).to(values.dtype), mask).detach()
    return vf_loss, vf_clipfrac
