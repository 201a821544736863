"""Retrieval metrics: ranks with a documented tie rule, R@k, MRR, MR.

Tie rule (``average``): the rank of the true match is ``1 + #{strictly better} + #{tied others}/2``,
the expected rank under random tie-breaking. A collapsed model (all scores equal) therefore
scores at chance instead of at rank 1 (the optimistic rule) or rank N (the pessimistic rule).
Ranks are 1-based and may be half-integers when ties occur.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["ranks_from_scores", "recall_at_k", "mean_reciprocal_rank", "median_rank", "summarize_ranks",
           "RECALL_KS"]

RECALL_KS = (1, 5, 10, 15)


def ranks_from_scores(scores: Tensor, targets: Tensor | None = None) -> Tensor:
    """1-based rank of each query's true item; higher score = better.

    Parameters
    ----------
    scores : Tensor, shape (Q, G)
        Similarity of each query to each gallery item (use ``-distance`` for distances).
    targets : Tensor, shape (Q,), optional
        Gallery index of each query's true match (default: ``arange(Q)``, the paired layout).

    Returns
    -------
    Tensor, shape (Q,), float64 ranks in [1, G].
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must have shape (Q, G), got {tuple(scores.shape)}")
    q, g = scores.shape
    if targets is None:
        if q > g:
            raise ValueError(f"paired layout needs Q <= G, got scores of shape {tuple(scores.shape)}")
        targets = torch.arange(q, device=scores.device)
    if targets.shape != (q,) or (targets < 0).any() or (targets >= g).any():
        raise ValueError(f"targets must have shape ({q},) with values in [0, {g}), got {tuple(targets.shape)}")
    if not torch.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    true = scores.gather(1, targets[:, None])
    better = (scores > true).sum(1)
    tied_others = (scores == true).sum(1) - 1
    return (1 + better + 0.5 * tied_others).to(torch.float64)


def recall_at_k(ranks: Tensor, k: int) -> float:
    """Percentage of queries whose true item ranks within the top ``k``."""
    return 100.0 * (ranks <= k).to(torch.float64).mean().item()


def mean_reciprocal_rank(ranks: Tensor) -> float:
    return (1.0 / ranks).mean().item()


def median_rank(ranks: Tensor) -> float:
    """Median of the 1-based ranks (the mean of the two middle values for an even count)."""
    return float(torch.quantile(ranks.to(torch.float64), 0.5).item())


def summarize_ranks(ranks: Tensor, ks=RECALL_KS) -> dict[str, float]:
    """``{"R@1": ..., "R@5": ..., "MRR": ..., "MR": ...}`` for one task."""
    if ranks.numel() == 0:
        return {**{f"R@{k}": math.nan for k in ks}, "MRR": math.nan, "MR": math.nan}
    out = {f"R@{k}": recall_at_k(ranks, k) for k in ks}
    out["MRR"] = mean_reciprocal_rank(ranks)
    out["MR"] = median_rank(ranks)
    return out
