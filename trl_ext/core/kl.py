"""KL estimators, the RLHF per-token reward, and the adaptive KL coefficient."""

from __future__ import annotations

import math

import torch


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k1 estimator of KL(π ‖ π_ref) per token: ``logp − logp_ref`` (unbiased, can be negative; use in rewards).

    Example:
        >>> kl_k1(torch.tensor([-1.0]), torch.tensor([-2.0]))
        tensor([1.])
    """
    return logp - ref_logp


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(π ‖ π_ref) per token (Schulman, 2020): ``exp(logp_ref − logp) − (logp_ref − logp) − 1 ≥ 0``.

    Example:
        >>> kl_k3(torch.tensor([0.0]), torch.tensor([0.0]))
        tensor([0.])
    """
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1.0


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last valid token of each row of a ``(B, T)`` mask (-1 for an all-padding row)."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(dim=1).values


def rlhf_token_rewards(
    scores: torch.Tensor,
    logp_old: torch.Tensor,
    logp_ref: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token RLHF reward (Ziegler et al., 2019; Stiennon et al., 2020)::

        r_t = −β · (logp_old_t − logp_ref_t)          (k1 KL penalty, every valid token)
        r_T += score                                  (on the last valid token T of each completion)

    Rows with no valid token get no score. Padding positions are 0.

    Args:
        scores: ``(B,)`` sequence-level rewards (grader / reward-model scores, after any EOS penalty).
        logp_old: ``(B, T)`` rollout log-probs of the policy.
        logp_ref: ``(B, T)`` log-probs of the reference policy.
        mask: ``(B, T)`` completion mask.
        beta: KL coefficient ``β``.

    Returns:
        ``(rewards, kl_penalty)``, both ``(B, T)``; ``kl_penalty = −β · k1`` on valid tokens.

    Example:
        >>> r, _ = rlhf_token_rewards(torch.tensor([1.0]), torch.tensor([[-1.0, -1.0, 0.0]]),
        ...                           torch.tensor([[-2.0, -1.0, 0.0]]), torch.tensor([[1, 1, 0]]), beta=0.1)
        >>> r
        tensor([[-0.1000,  1.0000,  0.0000]])
    """
    valid = mask.bool()
    kl_penalty = torch.where(valid, -beta * kl_k1(logp_old, logp_ref), torch.zeros_like(logp_old))
    rewards = kl_penalty.clone()
    last = last_token_index(mask)
    rows = torch.nonzero(last >= 0, as_tuple=True)[0]
    rewards[rows, last[rows]] += scores[rows].to(rewards.dtype)
    return rewards, kl_penalty


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al., 2019, §2.2) steering the observed KL towards a target::

        e_t  = clip(KL_t / KL_target − 1, −0.2, 0.2)
        β_{t+1} = β_t · (1 + e_t · n_steps / horizon)

    Example:
        >>> ctl = AdaptiveKLController(init_beta=0.1, target=6.0, horizon=10000)
        >>> ctl.update(current_kl=12.0, n_steps=100)
        0.1002
    """

    def __init__(self, init_beta: float, target: float, horizon: float = 10000.0) -> None:
        if init_beta < 0 or target <= 0 or horizon <= 0:
            raise ValueError(
                f"AdaptiveKLController: need init_beta >= 0, target > 0, horizon > 0; got {init_beta}, {target}, {horizon}."
            )
        self.value = float(init_beta)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Update ``β`` from the KL measured over the last ``n_steps`` samples; returns the new ``β``."""
        if not math.isfinite(current_kl):
            return self.value
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return round(self.value, 10)
