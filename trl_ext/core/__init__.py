"""Pure tensor functions for the trainers of trl_ext; each docstring writes its formula.

Example:
    >>> import torch
    >>> from trl_ext.core import gae, whiten
    >>> adv, ret = gae(torch.tensor([[0.0, 1.0]]), torch.zeros(1, 2), torch.ones(1, 2), gamma=1.0, lam=0.95)
    >>> whiten(adv, torch.ones(1, 2)).shape
    torch.Size([1, 2])

The likelihood / preference loss bank (SFT, DPO sigmoid, IPO, hinge, robust, SimPO, ORPO, RWR, RFT) is
``trl_ext.core.likelihood``.
"""

from .advantages import gae, group_advantages, process_advantages
from . import likelihood
from .kl import AdaptiveKLController, kl_k1, kl_k3, last_token_index, rlhf_token_rewards
from .losses import clipped_value_loss, ppo_per_token_loss, ppo_policy_loss
from .masked import (
    explained_variance,
    explained_variance_from_moments,
    masked_mean,
    masked_moments,
    masked_sum,
    masked_var,
    moments_mean_var,
    whiten,
    whiten_with_stats,
)

__all__ = [
    "AdaptiveKLController",
    "likelihood",
    "clipped_value_loss",
    "explained_variance",
    "explained_variance_from_moments",
    "gae",
    "group_advantages",
    "kl_k1",
    "kl_k3",
    "last_token_index",
    "masked_mean",
    "masked_moments",
    "masked_sum",
    "masked_var",
    "moments_mean_var",
    "ppo_per_token_loss",
    "ppo_policy_loss",
    "process_advantages",
    "rlhf_token_rewards",
    "whiten",
    "whiten_with_stats",
]
