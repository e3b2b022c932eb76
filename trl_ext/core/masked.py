"""Masked reductions over padded ``(B, T)`` tensors.

A mask is a bool or 0/1 tensor broadcastable to ``x``; positions where it is 0 are ignored. Reductions over an empty
mask return 0 rather than NaN, so a batch whose completions are all padding never poisons a loss.
"""

from __future__ import annotations

import torch


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """``Σ x·m`` over ``dim`` (all elements when ``dim`` is None).

    Example:
        >>> masked_sum(torch.tensor([[1.0, 2.0, 9.0]]), torch.tensor([[1, 1, 0]]))
        tensor(3.)
    """
    mask = mask.to(x.dtype)
    prod = torch.where(mask.bool(), x, torch.zeros_like(x)) * mask  # where() keeps NaN/inf in padding out
    return prod.sum() if dim is None else prod.sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """``Σ x·m / Σ m`` over ``dim``; 0 where ``Σ m = 0``.

    Example:
        >>> masked_mean(torch.tensor([[1.0, 3.0, 100.0]]), torch.tensor([[1, 1, 0]]))
        tensor(2.)
    """
    count = mask.to(x.dtype).expand_as(x)
    count = count.sum() if dim is None else count.sum(dim=dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True, dim: int | None = None) -> torch.Tensor:
    """Variance of the masked elements of ``x`` over ``dim``: ``Σ m·(x − μ)² / (n − 1)`` (``/ n`` when not
    ``unbiased``).

    ``μ`` is :func:`masked_mean`, ``n = Σ m`` (over ``dim``; all elements when ``dim`` is None). 0 where ``n < 2``
    (unbiased) or ``n = 0``. This is the one masked variance of trl_ext; :func:`moments_mean_var` gives the same
    statistic from moments summed over the parts of a batch split across processes.

    Example:
        >>> masked_var(torch.tensor([1.0, 3.0, 50.0]), torch.tensor([1, 1, 0]))
        tensor(2.)
        >>> masked_var(torch.tensor([[1.0, 3.0], [4.0, 9.0]]), torch.tensor([[1, 1], [1, 0]]), dim=1)
        tensor([2., 0.])
    """
    mean = masked_mean(x, mask, dim)
    if dim is not None:
        mean = mean.unsqueeze(dim)
    n = mask.to(x.dtype).expand_as(x)
    n = n.sum() if dim is None else n.sum(dim=dim)
    sq = masked_sum((x - mean) ** 2, mask, dim)
    return _var_from_squares(sq, n, unbiased)


def _var_from_squares(sq: torch.Tensor, n: torch.Tensor, unbiased: bool) -> torch.Tensor:
    """``sq / (n − 1)`` (``/ n`` when not ``unbiased``); 0 where that denominator is not positive."""
    denom = n - 1 if unbiased else n
    positive = denom > 0
    return torch.where(positive, sq / torch.where(positive, denom, torch.ones_like(denom)), torch.zeros_like(sq))


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Whiten over the valid elements: ``x̂ = (x − μ) / sqrt(σ² + eps)`` (``+ μ`` back when not ``shift_mean``).

    ``μ`` and ``σ²`` are the masked mean and unbiased variance over all valid elements of the batch. Padding
    positions are set to 0. For a batch split over processes, whiten with the global statistics instead:
    :func:`masked_moments` → all-reduce (sum) → :func:`moments_mean_var` → :func:`whiten_with_stats`.

    Example:
        >>> whiten(torch.tensor([[1.0, 3.0, 7.0]]), torch.tensor([[1, 1, 0]]))
        tensor([[-0.7071,  0.7071,  0.0000]])
    """
    return whiten_with_stats(x, mask, masked_mean(x, mask), masked_var(x, mask, unbiased=True), shift_mean, eps)


def whiten_with_stats(
    x: torch.Tensor,
    mask: torch.Tensor,
    mean: torch.Tensor | float,
    var: torch.Tensor | float,
    shift_mean: bool = True,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Whiten the valid elements with a given mean and variance: ``x̂ = (x − μ) / sqrt(σ² + eps)``.

    ``+ μ`` is added back when not ``shift_mean``; padding positions are set to 0. ``μ`` and ``σ²`` are cast to
    ``x.dtype``. Use it with statistics of a larger batch than ``x`` (e.g. all processes' batches, from
    :func:`moments_mean_var`); :func:`whiten` is this function with the statistics of ``x`` itself.

    Example:
        >>> whiten_with_stats(torch.tensor([[1.0, 3.0, 7.0]]), torch.tensor([[1, 1, 0]]), mean=2.0, var=4.0)
        tensor([[-0.5000,  0.5000,  0.0000]])
    """
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device)
    var = torch.as_tensor(var, dtype=x.dtype, device=x.device)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(mask.bool().expand_as(x), out, torch.zeros_like(out))


def masked_moments(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sufficient statistics of the masked elements of ``x``, in float64: ``[n, S₁, S₂]`` with::

        n = Σ m        S₁ = Σ m·x        S₂ = Σ m·x²

    Moments of disjoint parts add up, so the moments of a batch split over processes are the sum of the
    processes' moments (one all-reduce with SUM); :func:`moments_mean_var` turns them into a mean and a variance.
    Padding values (even NaN/inf) are ignored.

    Example:
        >>> masked_moments(torch.tensor([[1.0, 3.0, 9.0]]), torch.tensor([[1, 1, 0]]))
        tensor([ 2.,  4., 10.], dtype=torch.float64)
    """
    x64 = x.detach().to(torch.float64)
    m = mask.to(torch.float64).expand_as(x64)
    return torch.stack([m.sum(), masked_sum(x64, m), masked_sum(x64 * x64, m)])


def moments_mean_var(moments: torch.Tensor, unbiased: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance from :func:`masked_moments` ``[n, S₁, S₂]`` (summed over any number of parts)::

        μ  = S₁ / n
        σ² = (S₂ − n·μ²) / (n − 1)          (/ n when not ``unbiased``), clamped at ≥ 0

    As :func:`masked_mean` / :func:`masked_var`: ``μ = 0`` when ``n = 0``; ``σ² = 0`` when ``n < 2`` (unbiased) or
    ``n = 0``. Computed in the dtype of ``moments`` (float64 from :func:`masked_moments`). A variance within the
    rounding error of the one-pass formula, ``σ² ≤ 1e-12 · S₂/n`` (values equal to ~6 significant digits), is 0, so
    that constant values give exactly 0, as with :func:`masked_var`.

    Example:
        >>> mean, var = moments_mean_var(torch.tensor([2.0, 4.0, 10.0], dtype=torch.float64))
        >>> mean.item(), var.item()
        (2.0, 2.0)
    """
    n, s1, s2 = moments.unbind(-1)
    mean = s1 / n.clamp(min=1.0)
    var = _var_from_squares(s2 - n * mean * mean, n, unbiased)
    negligible = var <= 1e-12 * s2 / n.clamp(min=1.0)
    return mean, torch.where(negligible, torch.zeros_like(var), var)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fraction of the variance of the returns that the value predictions explain, over valid tokens::

        EV = 1 − Var(R − V) / Var(R)          (unbiased masked variances; NaN when Var(R) = 0)

    1 is a perfect critic, 0 predicts no better than a constant, < 0 is worse. For a batch split over processes use
    :func:`explained_variance_from_moments` on all-reduced moments. Returned in the dtype of ``returns``.

    Example:
        >>> explained_variance(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 3.0]]), torch.ones(1, 2))
        tensor(0.7500)
    """
    ev = explained_variance_from_moments(masked_moments(returns, mask), masked_moments(returns - values, mask))
    return ev.to(returns.dtype)


def explained_variance_from_moments(returns_moments: torch.Tensor, residual_moments: torch.Tensor) -> torch.Tensor:
    """:func:`explained_variance` from the :func:`masked_moments` of ``R`` and of ``R − V``.

    Moments add over the parts of a batch, so all-reduced (summed) moments give the EV of the global batch::

        EV = 1 − Var(R − V) / Var(R)          (variances from :func:`moments_mean_var`; NaN if Var(R) = 0)

    Example:
        >>> R, V, m = torch.tensor([1.0, 3.0]), torch.tensor([1.0, 2.0]), torch.ones(2)
        >>> explained_variance_from_moments(masked_moments(R, m), masked_moments(R - V, m))
        tensor(0.7500, dtype=torch.float64)
    """
    _, var_returns = moments_mean_var(returns_moments)
    _, var_residual = moments_mean_var(residual_moments)
    nan = torch.full_like(var_returns, float("nan"))
    return torch.where(var_returns > 0, 1.0 - var_residual / torch.where(var_returns > 0, var_returns, 1.0), nan)
