"""The likelihood / preference loss bank: SFT, DPO and variants, SimPO, ORPO, reward-weighted and rejection NLL.

"All roads lead to likelihood" (Swamy et al., 2025; DeepSeekMath §5.2): every loss here is a function of the
sequence log-probability ``logπ(y|x) = Σ_t log π(y_t | x, y_<t)`` summed over the completion tokens, and of the
number of those tokens ``|y|``. :func:`sequence_logps` computes both once; every loss below consumes them.

Notation: ``S = logπ(y)`` (summed over completion tokens), ``n = |y|``, ``S_ref`` the same under the reference,
``w``/``l`` the chosen/rejected side of a pair, and

    h = β·[(S_w − S_ref_w) − (S_l − S_ref_l)]          (the DPO implicit-reward margin)

Reductions. Every loss returns **per-example** values. Pair losses are reduced by the mean over pairs (as TRL's
``DPOTrainer``). The NLL losses (:func:`sft_loss`, :func:`rwr_loss`, :func:`rft_loss`) return
``(losses, denominators)`` and are reduced by :func:`reduce_loss` as ``Σ losses / Σ denominators``, where the sums
may run over several micro-batches (gradient accumulation). With ``normalization="token"`` the denominator of a row
is its token count (a token mean, as TRL's ``SFTTrainer`` completion-only loss); with ``"sequence"`` it is 1 and the
row's loss is already divided by its length (a mean of per-sequence means).

Example:
    >>> import torch
    >>> from trl_ext.core.likelihood import sequence_logps, dpo_sigmoid_loss
    >>> S, n = sequence_logps(torch.tensor([[-1.0, -2.0], [-3.0, 0.0]]), torch.tensor([[1, 1], [1, 0]]))
    >>> S, n
    (tensor([-3., -3.]), tensor([2., 1.]))
    >>> losses, rw, rl = dpo_sigmoid_loss(S[:1], S[1:], torch.tensor([-3.0]), torch.tensor([-3.0]), beta=0.1)
    >>> round(losses.item(), 4)  # h = 0 → log 2
    0.6931
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "F_DIVERGENCE_TYPES",
    "LIKELIHOOD_LOSS_TYPES",
    "LOSSES",
    "NLL_NORMALIZATIONS",
    "PAIR_LOSS_TYPES",
    "REFERENCE_LOSS_TYPES",
    "LossBatch",
    "LossParams",
    "LossSpec",
    "RowKind",
    "aot_loss",
    "aot_unpaired_loss",
    "apo_down_loss",
    "apo_zero_loss",
    "bco_pair_loss",
    "discopop_loss",
    "dpo_sigmoid_loss",
    "exo_pair_loss",
    "f_divergence_scores",
    "hinge_loss",
    "ipo_loss",
    "ld_sequence_logps",
    "log1mexp",
    "nca_pair_loss",
    "orpo_loss",
    "reduce_loss",
    "rft_loss",
    "robust_loss",
    "rwr_loss",
    "rwr_weights",
    "sequence_logps",
    "sft_loss",
    "sigmoid_norm_loss",
    "simpo_loss",
    "sppo_hard_loss",
    "wpo_sequence_weights",
]

#: Normalisations of the NLL losses.
NLL_NORMALIZATIONS = ("token", "sequence")
#: f-divergences of f-DPO (Wang et al., 2023), as TRL's ``DPOConfig.f_divergence_type``.
F_DIVERGENCE_TYPES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")


def sequence_logps(per_token_logps: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence sum of token log-probs and token count over the completion mask::

        S_i = Σ_t m_it · logp_it,      n_i = Σ_t m_it

    Padding positions (``m = 0``) are excluded with ``where``, so NaN/inf there cannot leak into ``S``.

    Args:
        per_token_logps: ``(B, T)`` log-probs of the target tokens.
        mask: ``(B, T)`` completion mask (bool or 0/1).

    Returns:
        ``(sum_logps (B,), n_tokens (B,))``, ``n_tokens`` in the dtype of ``per_token_logps``.

    Example:
        >>> sequence_logps(torch.tensor([[-1.0, -2.0, float("nan")]]), torch.tensor([[1, 1, 0]]))
        (tensor([-3.]), tensor([2.]))
    """
    if per_token_logps.shape != mask.shape:
        raise ValueError(
            f"sequence_logps: per_token_logps {tuple(per_token_logps.shape)} and mask {tuple(mask.shape)} differ in "
            "shape"
        )
    m = mask.bool()
    sum_logps = torch.where(m, per_token_logps, torch.zeros_like(per_token_logps)).sum(dim=-1)
    return sum_logps, m.sum(dim=-1).to(per_token_logps.dtype)


def _check_normalization(normalization: str, fn: str) -> None:
    if normalization not in NLL_NORMALIZATIONS:
        raise ValueError(f"{fn}: normalization must be one of {NLL_NORMALIZATIONS}, got {normalization!r}")


def _nll(sum_logps: torch.Tensor, n_tokens: torch.Tensor, normalization: str) -> tuple[torch.Tensor, torch.Tensor]:
    if normalization == "token":
        return -sum_logps, n_tokens.to(sum_logps.dtype)
    return -sum_logps / n_tokens.clamp(min=1).to(sum_logps.dtype), torch.ones_like(sum_logps)


def sft_loss(
    sum_logps: torch.Tensor, n_tokens: torch.Tensor, normalization: str = "token"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Negative log-likelihood of demonstrations, per example, with its normaliser::

        token:     ℓ_i = −S_i,        d_i = n_i     →  L = Σ ℓ_i / Σ d_i = −Σ_i S_i / Σ_i n_i
        sequence:  ℓ_i = −S_i / n_i,  d_i = 1       →  L = mean_i(−S_i / n_i)

    ``token`` equals TRL's ``SFTTrainer`` completion-only loss (token mean over all completion tokens of the batch,
    ``num_items_in_batch`` under gradient accumulation). Reduce with :func:`reduce_loss`.

    Example:
        >>> losses, den = sft_loss(torch.tensor([-3.0, -1.0]), torch.tensor([2.0, 1.0]))
        >>> reduce_loss(losses, den)
        tensor(1.3333)
    """
    _check_normalization(normalization, "sft_loss")
    return _nll(sum_logps, n_tokens, normalization)


def rwr_weights(rewards: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Reward-weighted-regression weights ``w_i = exp(R_i / τ)`` (Peters & Schaal, 2007; detached).

    Example:
        >>> rwr_weights(torch.tensor([0.0, 1.0]), temperature=1.0)
        tensor([1.0000, 2.7183])
    """
    if temperature <= 0:
        raise ValueError(f"rwr_weights: temperature must be > 0, got {temperature}")
    return torch.exp(rewards.detach() / temperature)


def rwr_loss(
    sum_logps: torch.Tensor,
    n_tokens: torch.Tensor,
    rewards: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    temperature: float = 1.0,
    normalization: str = "token",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reward-weighted NLL of graded samples::

        w_i = exp(R_i / τ)   (or the given ``weights``)
        token:     ℓ_i = −w_i·S_i,        d_i = n_i
        sequence:  ℓ_i = −w_i·S_i / n_i,  d_i = 1          L = Σ ℓ_i / Σ d_i

    The weights are not self-normalised: a batch of high rewards weighs more (pass ``weights`` to normalise them
    yourself).

    Example:
        >>> losses, den = rwr_loss(torch.tensor([-2.0]), torch.tensor([2.0]), rewards=torch.tensor([0.0]))
        >>> losses, den
        (tensor([2.]), tensor([2.]))
    """
    _check_normalization(normalization, "rwr_loss")
    if (rewards is None) == (weights is None):
        raise ValueError("rwr_loss: pass exactly one of `rewards` (w = exp(R/τ)) or `weights`")
    w = rwr_weights(rewards, temperature) if weights is None else weights.detach()
    losses, den = _nll(sum_logps, n_tokens, normalization)
    return w.to(losses.dtype) * losses, den


def rft_loss(
    sum_logps: torch.Tensor, n_tokens: torch.Tensor, labels: torch.Tensor, normalization: str = "token"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rejection-sampling fine-tuning: NLL on the accepted samples only (``w_i = 1[label_i]``)::

        token:     ℓ_i = −1[label_i]·S_i,        d_i = 1[label_i]·n_i
        sequence:  ℓ_i = −1[label_i]·S_i / n_i,  d_i = 1[label_i]          L = Σ ℓ_i / Σ d_i

    Rejected samples contribute neither to the loss nor to its normaliser, so the loss is the SFT loss of the
    accepted samples whatever the acceptance rate.

    Example:
        >>> losses, den = rft_loss(torch.tensor([-2.0, -5.0]), torch.tensor([2.0, 1.0]), torch.tensor([True, False]))
        >>> losses, den, reduce_loss(losses, den)
        (tensor([2., 0.]), tensor([2., 0.]), tensor(1.))
    """
    _check_normalization(normalization, "rft_loss")
    keep = labels.bool()
    losses, den = _nll(sum_logps, n_tokens, normalization)
    zero = torch.zeros_like(losses)
    return torch.where(keep, losses, zero), torch.where(keep, den, torch.zeros_like(den))


def reduce_loss(
    losses: torch.Tensor, denominators: torch.Tensor, total_denominator: torch.Tensor | float | None = None
) -> torch.Tensor:
    """``L = Σ_i ℓ_i / D`` with ``D = Σ_i d_i`` (or the given ``total_denominator``, e.g. the sum over all the
    micro-batches of a gradient-accumulation step); 0 (still connected to the graph) when ``D = 0``.

    Example:
        >>> reduce_loss(torch.tensor([3.0, 1.0]), torch.tensor([2.0, 1.0]))
        tensor(1.3333)
        >>> reduce_loss(torch.tensor([3.0]), torch.tensor([2.0]), total_denominator=6.0)
        tensor(0.5000)
    """
    total = denominators.sum() if total_denominator is None else total_denominator
    total = torch.as_tensor(total, dtype=losses.dtype, device=losses.device)
    return losses.sum() / total.clamp(min=1e-12) if bool(total > 0) else losses.sum() * 0.0


def _margin(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps):
    chosen_logratios = chosen_logps - ref_chosen_logps
    rejected_logratios = rejected_logps - ref_rejected_logps
    return chosen_logratios, rejected_logratios, chosen_logratios - rejected_logratios


def dpo_sigmoid_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO (Rafailov et al., 2023), TRL ``loss_type="sigmoid"``::

        ℓ_i = −log σ(h_i),   h_i = β·[(S_w − S_ref_w) − (S_l − S_ref_l)]
        rewards: r_w = β·(S_w − S_ref_w),  r_l = β·(S_l − S_ref_l)   (detached)

    Returns:
        ``(losses (B,), chosen_rewards (B,), rejected_rewards (B,))``; reduce by the mean over pairs.

    Example:
        >>> w, l, ref = torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.0])
        >>> dpo_sigmoid_loss(w, l, ref, ref, beta=1.0)[0]
        tensor([0.3133])
    """
    cr, rr, delta = _margin(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return -F.logsigmoid(beta * delta), beta * cr.detach(), beta * rr.detach()


def hinge_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SLiC hinge loss (Zhao et al., 2023), TRL ``loss_type="hinge"``::

        ℓ_i = max(0, 1 − h_i)

    Returns ``(losses, chosen_rewards, rejected_rewards)`` as :func:`dpo_sigmoid_loss`.

    Example:
        >>> hinge_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.0]), torch.tensor([-1.0]), 0.5)[0]
        tensor([0.5000])
    """
    cr, rr, delta = _margin(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return torch.relu(1 - beta * delta), beta * cr.detach(), beta * rr.detach()


def ipo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_n_tokens: torch.Tensor,
    rejected_n_tokens: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """IPO (Azar et al., 2023, Eq. 17) in TRL's length-normalised form, ``loss_type="ipo"``::

        Δ_i = (S_w − S_ref_w)/n_w − (S_l − S_ref_l)/n_l
        ℓ_i = (Δ_i − 1/(2β))²

    (``n`` clamped to ≥ 1). Rewards as :func:`dpo_sigmoid_loss` (unnormalised, as TRL logs them).

    Example:
        >>> ipo_loss(torch.tensor([-1.0]), torch.tensor([-1.0]), torch.tensor([-1.0]), torch.tensor([-1.0]),
        ...          torch.tensor([1.0]), torch.tensor([1.0]), beta=0.5)[0]
        tensor([1.])
    """
    cr, rr, _ = _margin(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    delta = cr / chosen_n_tokens.clamp(min=1.0) - rr / rejected_n_tokens.clamp(min=1.0)
    return (delta - 1 / (2 * beta)) ** 2, beta * cr.detach(), beta * rr.detach()


def robust_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Robust DPO (Chowdhury et al., 2024), TRL ``loss_type="robust"``, with flip probability ``ε``::

        ℓ_i = [−(1 − ε)·log σ(h_i) + ε·log σ(−h_i)] / (1 − 2ε)

    Example:
        >>> robust_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.0]), torch.tensor([-1.0]),
        ...             beta=1.0, label_smoothing=0.0)[0]
        tensor([0.3133])
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"robust_loss: label_smoothing must lie in [0, 0.5), got {label_smoothing}")
    cr, rr, delta = _margin(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)
    clean = -(1 - label_smoothing) * F.logsigmoid(beta * delta)
    flipped = -label_smoothing * F.logsigmoid(-beta * delta)
    return (clean - flipped) / (1 - 2 * label_smoothing), beta * cr.detach(), beta * rr.detach()


def simpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_n_tokens: torch.Tensor,
    rejected_n_tokens: torch.Tensor,
    beta: float = 2.0,
    gamma: float = 0.5,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimPO (Meng et al., 2024), reference-free, as TRL's ``CPOTrainer(loss_type="simpo")``::

        z_i = β·S_w/n_w − β·S_l/n_l − γ
        ℓ_i = −(1 − ε)·log σ(z_i) − ε·log σ(−z_i)
        rewards: r_w = β·S_w/n_w,  r_l = β·S_l/n_l   (detached)

    (TRL's CPO writes ``γ/β`` inside ``β·(…)``; the two are the same.)

    Example:
        >>> simpo_loss(torch.tensor([-1.0]), torch.tensor([-1.0]), torch.tensor([1.0]), torch.tensor([1.0]),
        ...            beta=2.0, gamma=0.0)[0]
        tensor([0.6931])
    """
    avg_w = chosen_logps / chosen_n_tokens.clamp(min=1.0)
    avg_l = rejected_logps / rejected_n_tokens.clamp(min=1.0)
    z = beta * avg_w - beta * avg_l - gamma
    losses = -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    return losses, beta * avg_w.detach(), beta * avg_l.detach()


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """Numerically stable ``log(1 − exp(x))`` for ``x < 0`` (Mächler, 2012): ``log(−expm1(x))`` for
    ``x > −ln 2``, ``log1p(−exp(x))`` otherwise.

    Example:
        >>> log1mexp(torch.tensor([-1.0]))
        tensor([-0.4587])
    """
    return torch.where(x < -math.log(2.0), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_n_tokens: torch.Tensor,
    rejected_n_tokens: torch.Tensor,
    lam: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ORPO (Hong et al., 2024), reference-free, with length-averaged log-probs ``a = S/n`` as TRL's ``ORPOTrainer``::

        log odds(y) = a − log(1 − exp(a))
        ℓ_i = −a_w − λ·log σ(log odds(y_w) − log odds(y_l))
        rewards: r_w = λ·a_w,  r_l = λ·a_l   (detached)

    The NLL term here is the per-sequence mean ``−a_w`` (TRL's ORPOTrainer token-means the NLL over the batch; the
    two agree when the chosen completions have equal lengths).

    Example:
        >>> orpo_loss(torch.tensor([-1.0]), torch.tensor([-1.0]), torch.tensor([1.0]), torch.tensor([1.0]), lam=1.0)[0]
        tensor([1.6931])
    """
    avg_w = chosen_logps / chosen_n_tokens.clamp(min=1.0)
    avg_l = rejected_logps / rejected_n_tokens.clamp(min=1.0)
    # a = 0 exactly (probability 1) would give log(0); keep it finite
    a_w = avg_w.clamp(max=-1e-6)
    a_l = avg_l.clamp(max=-1e-6)
    log_odds = (a_w - a_l) - (log1mexp(a_w) - log1mexp(a_l))
    losses = -avg_w - lam * F.logsigmoid(log_odds)
    return losses, lam * avg_w.detach(), lam * avg_l.detach()


# ---- the DPO variants of TRL 1.16's DPOTrainer (same formulas; written once here) -----------------------------------
#
# Notation as above, with the log-ratios  ρ_w = S_w − S_ref_w,  ρ_l = S_l − S_ref_l  and, under an f-divergence
# (:func:`f_divergence_scores`), the scores  s_w = f'(ρ_w),  s_l = f'(ρ_l)  (s = ρ for the reverse KL, plain DPO);
# Δ = s_w − s_l. Every function returns per-pair losses; reduce by the mean over pairs.


def f_divergence_scores(logratios: torch.Tensor, f_divergence_type: str = "reverse_kl",
                        alpha: float = 0.5) -> torch.Tensor:
    """f-DPO scores (Wang et al., 2023, "Beyond Reverse KL"), ``s = f'(t)`` at ``t = π/π_ref = exp(ρ)``::

        reverse_kl:        s = ρ
        forward_kl:        s = 1 − exp(−ρ)
        js_divergence:     s = log 2 + log σ(ρ)
        alpha_divergence:  s = (exp((α − 1)·ρ) − 1) / (α − 1)     (exponent clamped at 80; α → 1 gives ρ)

    Example:
        >>> f_divergence_scores(torch.tensor([0.0]), "forward_kl")
        tensor([0.])
        >>> round(f_divergence_scores(torch.tensor([0.0]), "js_divergence").item(), 4)  # log 2 + log ½
        0.0
    """
    if f_divergence_type == "reverse_kl":
        return logratios
    if f_divergence_type == "forward_kl":
        return 1 - torch.exp(-logratios)
    if f_divergence_type == "js_divergence":
        return math.log(2) + F.logsigmoid(logratios)
    if f_divergence_type == "alpha_divergence":
        if abs(alpha - 1.0) < 1e-6:
            return logratios
        t = torch.clamp(((alpha - 1.0) * logratios).float(), max=80.0)
        return (torch.exp(t) - 1.0).to(logratios.dtype) / (alpha - 1.0)
    raise ValueError(f"f_divergence_scores: f_divergence_type must be one of {F_DIVERGENCE_TYPES}, "
                     f"got {f_divergence_type!r}")


def ld_sequence_logps(per_token_logps: torch.Tensor, mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """Length-desensitised sequence log-probs of LD-DPO (Liu et al., 2024) for ``P`` pairs laid out as
    ``[chosen_1..P; rejected_1..P]`` (``(2P, T)``)::

        ℓ_p = min(n_w, n_l)                         (the length both completions share)
        S_i = Σ_{k ≤ ℓ_p} logp_ik + α · Σ_{k > ℓ_p} logp_ik      (k: index among the completion tokens of row i)

    ``α = 1`` is the plain sum; ``α = 0`` drops the tokens past the shorter completion.

    Example:
        >>> lp = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, 0.0, 0.0]])
        >>> ld_sequence_logps(lp, torch.tensor([[1, 1, 1], [1, 0, 0]]), alpha=0.5)
        tensor([-2., -2.])
    """
    m = mask.bool()
    position = m.long().cumsum(dim=1)  # 1-based index among the completion tokens
    chosen_n, rejected_n = m.sum(dim=1).chunk(2)
    shared = torch.minimum(chosen_n, rejected_n).repeat(2).unsqueeze(1)
    logps = torch.where(m, per_token_logps, torch.zeros_like(per_token_logps))
    shared_part = torch.where(position <= shared, logps, torch.zeros_like(logps)).sum(dim=1)
    tail_part = torch.where(position > shared, logps, torch.zeros_like(logps)).sum(dim=1)
    return shared_part + alpha * tail_part


def wpo_sequence_weights(per_token_logps: torch.Tensor, log_sum_sq_probs: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
    """WPO weights (Zhou et al., 2024, Eq. 2) per sequence, detached::

        w_i = exp( (1/n_i) · Σ_t m_it · (logp_it − log Σ_v p_v,t²) )

    (the length-normalised probability of the sequence under the policy, aligned by the sharpness of each next-token
    distribution). A pair's weight is ``w_chosen · w_rejected``.

    Example:
        >>> wpo_sequence_weights(torch.tensor([[-1.0, -1.0]]), torch.tensor([[-1.0, -1.0]]), torch.tensor([[1, 1]]))
        tensor([1.])
    """
    m = mask.to(per_token_logps.dtype)
    with torch.no_grad():
        aligned = ((per_token_logps - log_sum_sq_probs) * m).sum(dim=1)
        return torch.exp(aligned / m.sum(dim=1).clamp(min=1))


def exo_pair_loss(delta: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    """EXO-pref (Ji et al., 2024, Eq. 16), ``K = 2``, target ``[1 − ε, ε]`` (``ε > 0``)::

        q_w = σ(βΔ),  q_l = σ(−βΔ)
        ℓ = q_w·(log q_w − log(1 − ε)) + q_l·(log q_l − log ε)

    Example:
        >>> round(exo_pair_loss(torch.tensor([0.0]), 1.0, 0.5).item(), 6)  # q = target: KL 0
        0.0
    """
    if not 0.0 < label_smoothing < 1.0:
        raise ValueError(f"exo_pair_loss: label_smoothing (ε) must lie in (0, 1), got {label_smoothing}")
    x = beta * delta
    return (torch.sigmoid(x) * (F.logsigmoid(x) - math.log1p(-label_smoothing))
            + torch.sigmoid(-x) * (F.logsigmoid(-x) - math.log(label_smoothing)))


def nca_pair_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float) -> torch.Tensor:
    """NCA (Chen et al., 2024), pairwise::

        ℓ = −log σ(βρ_w) − ½·log σ(−βρ_w) − ½·log σ(−βρ_l)

    Example:
        >>> round(nca_pair_loss(torch.tensor([0.0]), torch.tensor([0.0]), 1.0).item(), 4)  # 2·log 2
        1.3863
    """
    rw, rl = beta * chosen_logratios, beta * rejected_logratios
    return -F.logsigmoid(rw) - 0.5 * F.logsigmoid(-rw) - 0.5 * F.logsigmoid(-rl)


def bco_pair_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float) -> torch.Tensor:
    """BCO on pairs (Jung et al., 2024), without the reward shift::

        ℓ = −log σ(βρ_w) − log σ(−βρ_l)

    Example:
        >>> round(bco_pair_loss(torch.tensor([0.0]), torch.tensor([0.0]), 1.0).item(), 4)
        1.3863
    """
    return -F.logsigmoid(beta * chosen_logratios) - F.logsigmoid(-beta * rejected_logratios)


def sppo_hard_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float) -> torch.Tensor:
    """SPPO (Wu et al., 2024, Eq. 4.7) with hard probabilities (winner 1, loser 0)::

        ℓ = (ρ_w − 1/(2β))² + (ρ_l + 1/(2β))²

    Example:
        >>> sppo_hard_loss(torch.tensor([0.5]), torch.tensor([-0.5]), 1.0)
        tensor([0.])
    """
    return (chosen_logratios - 0.5 / beta) ** 2 + (rejected_logratios + 0.5 / beta) ** 2


def _smoothed_logistic(x: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    return -F.logsigmoid(x) * (1 - label_smoothing) - F.logsigmoid(-x) * label_smoothing


def aot_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
             ref_rejected_logps: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """AOT, paired (Melnyk et al., 2024): distributional alignment by sorting over the pairs of the batch::

        u = sort(S_w − S_l),  u_ref = sort(S_ref_w − S_ref_l)      (ascending, over the batch)
        ℓ_k = −(1 − ε)·log σ(β(u_k − u_ref_k)) − ε·log σ(−β(u_k − u_ref_k))

    The k-th loss belongs to the k-th quantile, not to pair k.

    Example:
        >>> aot_loss(torch.tensor([-1.0, -2.0]), torch.tensor([-1.0, -1.0]), torch.tensor([-1.0, -1.0]),
        ...          torch.tensor([-1.0, -2.0]), beta=1.0).shape
        torch.Size([2])
    """
    u = torch.sort(chosen_logps - rejected_logps, dim=0).values
    u_ref = torch.sort(ref_chosen_logps - ref_rejected_logps, dim=0).values
    return _smoothed_logistic(beta * (u - u_ref), label_smoothing)


def aot_unpaired_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float,
                      label_smoothing: float = 0.0) -> torch.Tensor:
    """AOT, unpaired (Melnyk et al., 2024): the chosen and rejected log-ratios sorted separately::

        ℓ_k = −(1 − ε)·log σ(β(sort(ρ_w)_k − sort(ρ_l)_k)) − ε·log σ(−β(…))

    Example:
        >>> round(aot_unpaired_loss(torch.tensor([0.0]), torch.tensor([0.0]), 1.0).item(), 4)
        0.6931
    """
    delta = torch.sort(chosen_logratios, dim=0).values - torch.sort(rejected_logratios, dim=0).values
    return _smoothed_logistic(beta * delta, label_smoothing)


def apo_zero_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float) -> torch.Tensor:
    """APO-zero (D'Oosterlinck et al., 2024, Eq. 7): raise the chosen, lower the rejected likelihood::

        ℓ = 1 − σ(βρ_w) + σ(βρ_l)

    Example:
        >>> apo_zero_loss(torch.tensor([0.0]), torch.tensor([0.0]), 1.0)
        tensor([1.])
    """
    return 1 - torch.sigmoid(beta * chosen_logratios) + torch.sigmoid(beta * rejected_logratios)


def apo_down_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float) -> torch.Tensor:
    """APO-down (D'Oosterlinck et al., 2024, Eq. 8): lower both, the rejected more::

        ℓ = σ(βρ_w) + 1 − σ(β(ρ_w − ρ_l))

    Example:
        >>> apo_down_loss(torch.tensor([0.0]), torch.tensor([0.0]), 1.0)
        tensor([1.])
    """
    return torch.sigmoid(beta * chosen_logratios) + 1 - torch.sigmoid(beta * (chosen_logratios - rejected_logratios))


def discopop_loss(delta: torch.Tensor, beta: float, tau: float = 0.05) -> torch.Tensor:
    """DiscoPOP (Chris Lu et al., 2024, Eq. 5), the log-ratio modulated loss::

        x = βΔ,  m = σ(x/τ)
        ℓ = (1 − m)·(−log σ(x)) + m·exp(−x)

    Example:
        >>> round(discopop_loss(torch.tensor([0.0]), 1.0).item(), 4)  # ½·log 2 + ½
        0.8466
    """
    x = beta * delta
    m = torch.sigmoid(x / tau)
    return -F.logsigmoid(x) * (1 - m) + torch.exp(-x) * m


def sigmoid_norm_loss(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor, chosen_n_tokens: torch.Tensor,
                      rejected_n_tokens: torch.Tensor, beta: float) -> torch.Tensor:
    """Length-normalised DPO, TRL ``loss_type="sigmoid_norm"``::

        ℓ = −log σ(β·(s_w/n_w − s_l/n_l))          (n clamped to ≥ 1)

    Example:
        >>> round(sigmoid_norm_loss(torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([2.0]),
        ...                         torch.tensor([1.0]), 1.0).item(), 4)
        0.3133
    """
    delta = chosen_scores / chosen_n_tokens.clamp(min=1.0) - rejected_scores / rejected_n_tokens.clamp(min=1.0)
    return -F.logsigmoid(beta * delta)


# ---- the registry: one entry per loss; the trainer derives everything from it ---------------------------------------


class RowKind(enum.IntEnum):
    """The kinds of training rows (their code is the ``row_kind`` column of a prepared dataset)."""

    DEMONSTRATION = 0  #: ``prompt``, ``completion``
    PREFERENCE = 1  #: ``prompt``, ``chosen``, ``rejected``
    GRADED = 2  #: ``prompt``, ``completion``, ``reward`` and/or ``label``

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class LossParams:
    """Hyper-parameters the losses read (the trainer fills them from its config)."""

    beta: float = 0.1
    label_smoothing: float = 0.0
    discopop_tau: float = 0.05
    f_divergence_type: str = "reverse_kl"
    f_alpha_divergence_coef: float = 0.5
    simpo_beta: float = 2.0
    simpo_gamma: float = 0.5
    orpo_lambda: float = 0.1
    rwr_temperature: float = 1.0
    normalization: str = "token"


@dataclass
class LossBatch:
    """Per-sequence statistics of one batch, by kind, that every loss consumes (``P`` pairs, ``D`` demonstrations,
    ``G`` graded rows).

    ``chosen_logps``/``rejected_logps`` are the pair losses' sequence log-probs (LD-weighted under ``ld_alpha``);
    ``chosen_nll_logps`` the plain sums of the chosen completions (for ``sft``). ``pair_weights`` are WPO's
    (``None`` without ``use_weighting``). For :attr:`LossSpec.denominator` only the token counts and
    ``graded_accepted`` need to be real.
    """

    params: LossParams
    chosen_logps: torch.Tensor
    rejected_logps: torch.Tensor
    chosen_nll_logps: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor
    demo_logps: torch.Tensor
    demo_tokens: torch.Tensor
    graded_logps: torch.Tensor
    graded_tokens: torch.Tensor
    graded_rewards: torch.Tensor
    graded_accepted: torch.Tensor
    ref_chosen_logps: torch.Tensor | None = None
    ref_rejected_logps: torch.Tensor | None = None
    pair_weights: torch.Tensor | None = None

    @property
    def n_pairs(self) -> int:
        return self.chosen_logps.numel()

    def logratios(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ρ_w, ρ_l)``."""
        if self.ref_chosen_logps is None:
            raise ValueError("LossBatch: this loss needs reference log-probs and the batch has none")
        return self.chosen_logps - self.ref_chosen_logps, self.rejected_logps - self.ref_rejected_logps

    def scores(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(s_w, s_l)``: the log-ratios through the f-divergence of :attr:`params`."""
        p = self.params
        return tuple(f_divergence_scores(r, p.f_divergence_type, p.f_alpha_divergence_coef) for r in self.logratios())


@dataclass(frozen=True)
class LossSpec:
    """One loss of the bank.

    Attributes:
        name: the ``loss_type`` string.
        kinds: the row kinds it applies to.
        needs_reference: whether it reads reference log-probs.
        loss: ``LossBatch → (R,)`` per-row losses over the rows it applies to (WPO weights included).
        denominator: ``LossBatch → (R,)`` per-row normalisers ``d_i``; the term is ``Σ ℓ_i / Σ d_i`` (summed over
            the gradient-accumulation step and the processes). Reads only token counts, so it is known before the
            forward.
        reference: the paper.
        f_divergence: whether a non-default ``f_divergence_type`` is defined for it (built on ``s_w − s_l``).
        sorts_pairs: whether its k-th loss belongs to a quantile rather than to pair k (then WPO is undefined).
        rewards: optional ``LossBatch → (r_w, r_l)`` implicit rewards to log when no reference is loaded.
    """

    name: str
    kinds: frozenset
    needs_reference: bool
    loss: Callable[[LossBatch], torch.Tensor]
    denominator: Callable[[LossBatch], torch.Tensor]
    reference: str
    f_divergence: bool = False
    sorts_pairs: bool = False
    rewards: Callable[[LossBatch], tuple[torch.Tensor, torch.Tensor]] | None = None


def _per_pair(b: LossBatch) -> torch.Tensor:
    return torch.ones_like(b.chosen_tokens)


def _wpo(b: LossBatch, losses: torch.Tensor) -> torch.Tensor:
    return losses if b.pair_weights is None else losses * b.pair_weights.to(losses.dtype)


def _pair_spec(name: str, fn: Callable[[LossBatch], torch.Tensor], reference: str, needs_reference: bool = True,
               **kw) -> LossSpec:
    def loss(b: LossBatch) -> torch.Tensor:
        if b.n_pairs == 0:
            return b.chosen_logps
        return _wpo(b, fn(b))

    return LossSpec(name, frozenset({RowKind.PREFERENCE}), needs_reference, loss, _per_pair, reference, **kw)


def _delta(b: LossBatch) -> torch.Tensor:
    s_w, s_l = b.scores()
    return s_w - s_l


def _sft_parts(b: LossBatch, logps: bool) -> tuple[torch.Tensor, torch.Tensor]:
    zeros = torch.zeros_like
    demo = sft_loss(b.demo_logps if logps else zeros(b.demo_tokens), b.demo_tokens, b.params.normalization)
    chosen = sft_loss(b.chosen_nll_logps if logps else zeros(b.chosen_tokens), b.chosen_tokens,
                      b.params.normalization)
    return demo, chosen


def _sft(b: LossBatch) -> torch.Tensor:
    """``sft``: NLL of the demonstrations and of the chosen completions of the pairs, as one token mean. Under WPO
    the chosen part is scaled by the mean pair weight (what DPOTrainer's ``sft`` term gets)."""
    (demo, _), (chosen, _) = _sft_parts(b, logps=True)
    if b.pair_weights is not None and b.n_pairs:
        chosen = chosen * b.pair_weights.to(chosen.dtype).mean()
    return torch.cat([demo, chosen])


def _sft_den(b: LossBatch) -> torch.Tensor:
    (_, d_demo), (_, d_chosen) = _sft_parts(b, logps=False)
    return torch.cat([d_demo, d_chosen])


def _rwr(b: LossBatch) -> torch.Tensor:
    return rwr_loss(b.graded_logps, b.graded_tokens, rewards=b.graded_rewards.to(b.graded_logps.dtype),
                    temperature=b.params.rwr_temperature, normalization=b.params.normalization)[0]


def _rwr_den(b: LossBatch) -> torch.Tensor:
    n = b.graded_tokens
    return rwr_loss(torch.zeros_like(n), n, weights=torch.ones_like(n), normalization=b.params.normalization)[1]


def _rft(b: LossBatch) -> torch.Tensor:
    return rft_loss(b.graded_logps, b.graded_tokens, b.graded_accepted, b.params.normalization)[0]


def _rft_den(b: LossBatch) -> torch.Tensor:
    n = b.graded_tokens
    return rft_loss(torch.zeros_like(n), n, b.graded_accepted, b.params.normalization)[1]


def _zero_ref(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


def _simpo(b: LossBatch) -> torch.Tensor:
    p = b.params
    return simpo_loss(b.chosen_logps, b.rejected_logps, b.chosen_tokens, b.rejected_tokens, p.simpo_beta,
                      p.simpo_gamma, p.label_smoothing)[0]


def _simpo_rewards(b: LossBatch) -> tuple[torch.Tensor, torch.Tensor]:
    p = b.params
    return simpo_loss(b.chosen_logps, b.rejected_logps, b.chosen_tokens, b.rejected_tokens, p.simpo_beta,
                      p.simpo_gamma, p.label_smoothing)[1:]


def _orpo(b: LossBatch) -> torch.Tensor:
    return orpo_loss(b.chosen_logps, b.rejected_logps, b.chosen_tokens, b.rejected_tokens, b.params.orpo_lambda)[0]


def _orpo_rewards(b: LossBatch) -> tuple[torch.Tensor, torch.Tensor]:
    return orpo_loss(b.chosen_logps, b.rejected_logps, b.chosen_tokens, b.rejected_tokens, b.params.orpo_lambda)[1:]


def _on_scores(fn, *args_from_params):
    """A reference loss written on ``(S_w, S_l, S_ref_w, S_ref_l)`` evaluated on the f-DPO scores (``s_w, s_l`` in
    place of the log-ratios, reference 0): identical to ``fn`` for the reverse KL."""
    def loss(b: LossBatch) -> torch.Tensor:
        s_w, s_l = b.scores()
        return fn(s_w, s_l, _zero_ref(s_w), _zero_ref(s_l), b.params.beta,
                  *(getattr(b.params, a) for a in args_from_params))[0]
    return loss


def _ipo(b: LossBatch) -> torch.Tensor:
    s_w, s_l = b.scores()
    return ipo_loss(s_w, s_l, _zero_ref(s_w), _zero_ref(s_l), b.chosen_tokens, b.rejected_tokens, b.params.beta)[0]


def _on_logratios(fn):
    def loss(b: LossBatch) -> torch.Tensor:
        return fn(*b.logratios(), b.params.beta)
    return loss


def _on_logratios_smoothed(fn):
    def loss(b: LossBatch) -> torch.Tensor:
        return fn(*b.logratios(), b.params.beta, b.params.label_smoothing)
    return loss


_DEMO_AND_CHOSEN = frozenset({RowKind.DEMONSTRATION, RowKind.PREFERENCE})

#: The loss bank, by ``loss_type``: row kinds, reference, function, denominator, paper. Adding a loss is one entry.
LOSSES: dict[str, LossSpec] = {spec.name: spec for spec in [
    LossSpec("sft", _DEMO_AND_CHOSEN, False, _sft, _sft_den,
             "NLL of demonstrations and of the chosen side of pairs (SFTTrainer's completion-only loss; "
             "DPOTrainer's `sft`)", f_divergence=True),
    _pair_spec("sigmoid", _on_scores(dpo_sigmoid_loss), "DPO, Rafailov et al. 2023 (arXiv 2305.18290)",
               f_divergence=True),
    _pair_spec("hinge", _on_scores(hinge_loss), "SLiC, Zhao et al. 2023 (arXiv 2305.10425)", f_divergence=True),
    _pair_spec("ipo", _ipo, "IPO, Azar et al. 2023 (arXiv 2310.12036)", f_divergence=True),
    _pair_spec("exo_pair", lambda b: exo_pair_loss(_delta(b), b.params.beta, b.params.label_smoothing),
               "EXO, Ji et al. 2024 (arXiv 2402.00856)", f_divergence=True),
    _pair_spec("nca_pair", _on_logratios(nca_pair_loss), "NCA, Chen et al. 2024 (arXiv 2402.05369)"),
    _pair_spec("robust", _on_scores(robust_loss, "label_smoothing"),
               "Robust DPO, Chowdhury et al. 2024 (arXiv 2403.00409)", f_divergence=True),
    _pair_spec("bco_pair", _on_logratios(bco_pair_loss), "BCO, Jung et al. 2024 (arXiv 2404.04656)"),
    _pair_spec("sppo_hard", _on_logratios(sppo_hard_loss), "SPPO, Wu et al. 2024 (arXiv 2405.00675)"),
    _pair_spec("aot", lambda b: aot_loss(b.chosen_logps, b.rejected_logps, b.ref_chosen_logps, b.ref_rejected_logps,
                                         b.params.beta, b.params.label_smoothing),
               "AOT, Melnyk et al. 2024 (arXiv 2406.05882)", sorts_pairs=True),
    _pair_spec("aot_unpaired", _on_logratios_smoothed(aot_unpaired_loss),
               "AOT unpaired, Melnyk et al. 2024 (arXiv 2406.05882)", sorts_pairs=True),
    _pair_spec("apo_zero", _on_logratios(apo_zero_loss), "APO, D'Oosterlinck et al. 2024 (arXiv 2408.06266)"),
    _pair_spec("apo_down", _on_logratios(apo_down_loss), "APO, D'Oosterlinck et al. 2024 (arXiv 2408.06266)"),
    _pair_spec("discopop", lambda b: discopop_loss(_delta(b), b.params.beta, b.params.discopop_tau),
               "DiscoPOP, Lu et al. 2024 (arXiv 2406.08414)", f_divergence=True),
    _pair_spec("sigmoid_norm", lambda b: sigmoid_norm_loss(*b.scores(), b.chosen_tokens, b.rejected_tokens,
                                                           b.params.beta),
               "length-normalised DPO (TRL `sigmoid_norm`)", f_divergence=True),
    _pair_spec("simpo", _simpo, "SimPO, Meng et al. 2024 (arXiv 2405.14734)", needs_reference=False,
               rewards=_simpo_rewards),
    _pair_spec("orpo", _orpo, "ORPO, Hong et al. 2024 (arXiv 2403.07691)", needs_reference=False,
               rewards=_orpo_rewards),
    LossSpec("rwr", frozenset({RowKind.GRADED}), False, _rwr, _rwr_den,
             "reward-weighted regression, Peters & Schaal 2007"),
    LossSpec("rft", frozenset({RowKind.GRADED}), False, _rft, _rft_den,
             "rejection-sampling fine-tuning (RAFT, Dong et al. 2023, arXiv 2304.06767)"),
]}

#: Every loss type of the bank.
LIKELIHOOD_LOSS_TYPES = tuple(LOSSES)
#: Loss types that apply to preference pairs only.
PAIR_LOSS_TYPES = tuple(n for n, s in LOSSES.items() if s.kinds == {RowKind.PREFERENCE})
#: Loss types that need reference log-probs (the others load no reference model).
REFERENCE_LOSS_TYPES = tuple(n for n, s in LOSSES.items() if s.needs_reference)
