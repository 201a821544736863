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
           "RECALL_KS", "chance_level", "aggregate_over_seeds", "paired_bootstrap"]

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
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
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


def chance_level(gallery_size: int, ks=RECALL_KS) -> dict[str, float]:
    """Expected metrics of a random ranking over ``gallery_size`` items (R@k in %, MRR, MR)."""
    n = gallery_size
    out = {f"R@{k}": 100.0 * min(k, n) / n for k in ks}
    out["MRR"] = sum(1.0 / r for r in range(1, n + 1)) / n
    out["MR"] = (n + 1) / 2.0
    return out


def aggregate_over_seeds(values: list[float]) -> tuple[float, float, int]:
    """(mean, sample standard deviation (ddof = 1; 0 for one seed), number of seeds)."""
    t = torch.tensor(values, dtype=torch.float64)
    std = float(t.std(unbiased=True)) if len(values) > 1 else 0.0
    return float(t.mean()), std, len(values)


def paired_bootstrap(ranks_a: Tensor, ranks_b: Tensor, metric: str = "MRR", n_resamples: int = 10_000,
                     seed: int = 0) -> dict[str, float]:
    """Paired bootstrap of the difference ``metric(a) - metric(b)`` on the same queries.

    Queries are resampled with replacement (Efron & Tibshirani 1993); returns the observed
    difference, a 95 % percentile interval and a two-sided p-value (twice the smaller tail share
    of resampled differences on the other side of zero).

    Parameters
    ----------
    ranks_a, ranks_b : Tensor (Q,) ranks of the same queries under two methods
    metric : "MRR" or "R@k"
    """
    if ranks_a.shape != ranks_b.shape or ranks_a.dim() != 1:
        raise ValueError(f"ranks must be two (Q,) tensors of the same queries, got {tuple(ranks_a.shape)} "
                         f"and {tuple(ranks_b.shape)}")
    if metric == "MRR":
        per_query_a, per_query_b = 1.0 / ranks_a, 1.0 / ranks_b
    elif metric.startswith("R@"):
        k = int(metric[2:])
        per_query_a, per_query_b = 100.0 * (ranks_a <= k).double(), 100.0 * (ranks_b <= k).double()
    else:
        raise ValueError(f"metric must be 'MRR' or 'R@k', got {metric!r}")
    diff = (per_query_a - per_query_b).double()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(diff), (n_resamples, len(diff)), generator=g)
    boot = diff[idx].mean(1)
    observed = float(diff.mean())
    p = 2.0 * min(float((boot <= 0).double().mean()), float((boot >= 0).double().mean()))
    lo, hi = torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {"difference": observed, "ci_low": lo, "ci_high": hi, "p_value": min(1.0, p)}
