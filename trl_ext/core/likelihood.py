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

import math

import torch
import torch.nn.functional as F

__all__ = [
    "LIKELIHOOD_LOSS_TYPES",
    "NLL_NORMALIZATIONS",
    "PAIR_LOSS_TYPES",
    "REFERENCE_LOSS_TYPES",
    "dpo_sigmoid_loss",
    "hinge_loss",
    "ipo_loss",
    "log1mexp",
    "orpo_loss",
    "reduce_loss",
    "rft_loss",
    "robust_loss",
    "rwr_loss",
    "rwr_weights",
    "sequence_logps",
    "sft_loss",
    "simpo_loss",
]

#: Every loss type of the bank.
LIKELIHOOD_LOSS_TYPES = ("sft", "sigmoid", "ipo", "hinge", "robust", "simpo", "orpo", "rwr", "rft")
#: Loss types that apply to preference pairs.
PAIR_LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust", "simpo", "orpo")
#: Loss types that need reference log-probs (the others load no reference model).
REFERENCE_LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust")
#: Normalisations of the NLL losses.
NLL_NORMALIZATIONS = ("token", "sequence")


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
