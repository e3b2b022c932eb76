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


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the masked elements of ``x``: ``Σ m·(x − μ)² / (n − 1)`` (``/ n`` when not ``unbiased``).

    ``μ`` is :func:`masked_mean`, ``n = Σ m``. Returns 0 when ``n < 2`` (unbiased) or ``n = 0``.

    Example:
        >>> masked_var(torch.tensor([1.0, 3.0, 50.0]), torch.tensor([1, 1, 0]))
        tensor(2.)
    """
    mean = masked_mean(x, mask)
    n = mask.to(x.dtype).expand_as(x).sum()
    sq = masked_sum((x - mean) ** 2, mask)
    denom = n - 1 if unbiased else n
    if denom <= 0:
        return torch.zeros((), dtype=x.dtype, device=x.device)
    return sq / denom


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Whiten over the valid elements: ``x̂ = (x − μ) / sqrt(σ² + eps)`` (``+ μ`` back when not ``shift_mean``).

    ``μ`` and ``σ²`` are the masked mean and unbiased variance over all valid elements of the batch. Padding
    positions are set to 0.

    Example:
        >>> whiten(torch.tensor([[1.0, 3.0, 7.0]]), torch.tensor([[1, 1, 0]]))
        tensor([[-0.7071,  0.7071,  0.0000]])
    """
    mean = masked_mean(x, mask)
    var = masked_var(x, mask, unbiased=True)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(mask.bool().expand_as(x), out, torch.zeros_like(out))
