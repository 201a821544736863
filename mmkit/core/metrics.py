"""Retrieval metrics: ranks with a documented tie rule, R@k, MRR, MR; R-Precision and mAP@R for
many-to-many relevance.

Tie rule (``average``): the rank of the true match is ``1 + #{strictly better} + #{tied others}/2``,
the expected rank under random tie-breaking. A collapsed model (all scores equal) therefore
scores at chance instead of at rank 1 (the optimistic rule) or rank N (the pessimistic rule).
Ranks are 1-based and may be half-integers when ties occur. :func:`r_precision` and
:func:`map_at_r` follow the same rule: their value is the exact expectation over uniformly random
orders of the tied items.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["ranks_from_scores", "recall_at_k", "mean_reciprocal_rank", "median_rank", "summarize_ranks",
           "RECALL_KS", "chance_level", "aggregate_over_seeds", "paired_bootstrap", "bootstrap_difference",
           "r_precision", "map_at_r"]

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


def _checked_relevance(scores, relevant, name: str) -> tuple[Tensor, Tensor, bool]:
    """``scores`` as float64 and ``relevant`` as bool torch tensors after validation, and whether the
    inputs were numpy arrays."""
    kinds = {type(x) for x in (scores, relevant)}
    if not (kinds <= {np.ndarray} or all(isinstance(x, Tensor) for x in (scores, relevant))):
        raise TypeError(f"{name}: scores and relevant must both be numpy arrays or both torch tensors, got "
                        f"{type(scores).__name__} and {type(relevant).__name__}")
    as_numpy = isinstance(scores, np.ndarray)
    if as_numpy:
        scores, relevant = torch.from_numpy(np.ascontiguousarray(scores)), torch.from_numpy(np.ascontiguousarray(relevant))
    if scores.dim() != 2 or scores.shape[1] == 0:
        raise ValueError(f"{name}: scores must have shape (Q, G) with G >= 1, got {tuple(scores.shape)}")
    if relevant.shape != scores.shape:
        raise ValueError(f"{name}: relevant must have the shape of scores {tuple(scores.shape)}, got "
                         f"{tuple(relevant.shape)}")
    if relevant.dtype != torch.bool:
        raise ValueError(f"{name}: relevant must be boolean, got dtype {relevant.dtype}")
    if scores.dtype == torch.bool or scores.is_complex():
        raise ValueError(f"{name}: scores must be real numbers, got dtype {scores.dtype}")
    scores = scores.to(torch.float64)  # exact for float32 and float16: ties stay ties
    if not torch.isfinite(scores).all():
        raise ValueError(f"{name}: scores contain NaN or inf")
    empty = (~relevant.any(1)).nonzero().flatten()
    if empty.numel():
        raise ValueError(f"{name}: query {int(empty[0])} (and {empty.numel() - 1} more) has no relevant gallery item; "
                         "R = 0 leaves R-Precision and mAP@R undefined")
    return scores, relevant.to(scores.device), as_numpy


def _expected_hits(scores: Tensor, relevant: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per position of the ranking, its expected relevance and expected precision there if relevant.

    The gallery is sorted by descending score; the items of a tie group (equal scores, occupying
    positions ``a .. a + g - 1`` with ``c`` relevant items before it and ``r`` in it) take every
    order with equal probability. Position ``p = a + t`` then holds a relevant item with probability
    ``r / g``, and given that, the number of relevant items among the ``t`` group positions before it
    is hypergeometric with mean ``t (r - 1) / (g - 1)``.

    Returns
    -------
    p_relevant : Tensor, shape (Q, G), float64, probability that position p holds a relevant item
    hits_if_relevant : Tensor, shape (Q, G), float64, expected number of relevant items at
        positions 0 .. p given that position p holds one
    n_relevant : Tensor, shape (Q,), float64, R of each query
    """
    q, g = scores.shape
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    ascending = -scores.gather(1, order)  # searchsorted needs ascending rows
    rel = relevant.gather(1, order).to(torch.float64)
    start = torch.searchsorted(ascending, ascending, right=False)
    stop = torch.searchsorted(ascending, ascending, right=True)
    before = torch.cat([rel.new_zeros(q, 1), rel.cumsum(1)], dim=1)  # before[:, p] = relevant at positions < p
    above = before.gather(1, start)
    in_group = before.gather(1, stop) - above
    size = (stop - start).to(torch.float64)
    offset = torch.arange(g, device=scores.device)[None, :] - start
    share = torch.where(size > 1, offset * (in_group - 1) / (size - 1).clamp_min(1.0), torch.zeros_like(size))
    return in_group / size, above + 1.0 + share, rel.sum(1)


def _within_r(n_relevant: Tensor, g: int) -> Tensor:
    """(Q, G) float64 mask of the top-R positions of each query."""
    return (torch.arange(g, device=n_relevant.device)[None, :] < n_relevant[:, None]).to(torch.float64)


def r_precision(scores, relevant):
    """R-Precision of each query: the share of relevant items among its top R, R = its number of
    relevant items.

    With ``relevant`` the plausible matches of a query this is PMRP, the plausible-match R-Precision
    of PCME [1]_; with one relevant item (R = 1) it is the top-1 hit (R@1 / 100).

    Ties: scores that are equal are ordered uniformly at random and the value returned is the exact
    expectation over those orders (the module's ``average`` rule; relevant items are never favoured):
    a constant score row scores the chance level R / G. The expected number of relevant items in the
    top R is the sum over positions p < R of ``r / g``, the relevant share of the tie group holding p.

    Parameters
    ----------
    scores : np.ndarray or Tensor, shape (Q, G)
        Similarity of each query to each gallery item, higher is closer (use ``-distance``).
    relevant : np.ndarray or Tensor of bool, shape (Q, G)
        ``relevant[i, j]``: gallery item j is a true match of query i; the same library as ``scores``.

    Returns
    -------
    np.ndarray or Tensor, shape (Q,), float64 in [0, 1] (the library and device of ``scores``)

    Raises
    ------
    TypeError
        ``scores`` and ``relevant`` are not both numpy arrays or both torch tensors.
    ValueError
        Wrong shapes, a non-boolean ``relevant``, NaN or inf scores, or a query with no relevant
        item (R = 0, where the metric is undefined).

    References
    ----------
    .. [1] S. Chun, S. J. Oh, R. S. de Rezende, Y. Kalantidis, D. Larlus, "Probabilistic Embeddings
       for Cross-Modal Retrieval", CVPR 2021 (the PMRP metric).
    .. [2] K. Musgrave, S. Belongie, S.-N. Lim, "A Metric Learning Reality Check", ECCV 2020
       (R-Precision).

    Examples
    --------
    >>> import numpy as np
    >>> scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]])
    >>> relevant = np.array([[True, False, True, False, True]])
    >>> r_precision(scores, relevant)  # R = 3; the top 3 hold 2 relevant items
    array([0.66666667])
    >>> r_precision(np.zeros((1, 5)), relevant)  # all tied: chance, R / G
    array([0.6])
    """
    s, rel, as_numpy = _checked_relevance(scores, relevant, "r_precision")
    p_relevant, _, n_relevant = _expected_hits(s, rel)
    out = (p_relevant * _within_r(n_relevant, s.shape[1])).sum(1) / n_relevant
    return out.cpu().numpy() if as_numpy else out


def map_at_r(scores, relevant):
    """mAP@R of each query (Musgrave et al. [1]_): ``(1 / R) sum_{i=1..R} P(i)``, where P(i) is the
    precision among the top i when the i-th item is relevant and 0 otherwise, R = the query's
    number of relevant items.

    Unlike R-Precision it rewards putting the relevant items first within the top R; it is 1 only
    for a ranking that starts with all R relevant items. With R = 1 it is the top-1 hit, like
    R-Precision.

    Ties: as :func:`r_precision`, the exact expectation over uniformly random orders of tied items.
    Position i of a tie group of g items holding r relevant ones, c relevant items ranked above the
    group and t group items before position i, contributes ``(r / g) (c + 1 + t (r - 1) / (g - 1)) / i``.

    Parameters
    ----------
    scores : np.ndarray or Tensor, shape (Q, G)
        Higher is closer, as for :func:`r_precision`.
    relevant : np.ndarray or Tensor of bool, shape (Q, G)
        The true matches of each query, as for :func:`r_precision`.

    Returns
    -------
    np.ndarray or Tensor, shape (Q,)
        float64 in [0, 1], in the library and on the device of ``scores``; errors as :func:`r_precision`.

    References
    ----------
    .. [1] K. Musgrave, S. Belongie, S.-N. Lim, "A Metric Learning Reality Check", ECCV 2020
       (MAP@R).

    Examples
    --------
    >>> import torch
    >>> scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5]])
    >>> relevant = torch.tensor([[True, False, True, False, True]])
    >>> map_at_r(scores, relevant)  # (1/1 + 0 + 2/3) / 3
    tensor([0.5556], dtype=torch.float64)
    """
    s, rel, as_numpy = _checked_relevance(scores, relevant, "map_at_r")
    p_relevant, hits, n_relevant = _expected_hits(s, rel)
    position = torch.arange(1, s.shape[1] + 1, device=s.device, dtype=torch.float64)
    out = (p_relevant * hits / position * _within_r(n_relevant, s.shape[1])).sum(1) / n_relevant
    return out.cpu().numpy() if as_numpy else out


def aggregate_over_seeds(values: list[float]) -> tuple[float, float, int]:
    """(mean, sample standard deviation (ddof = 1; 0 for one seed), number of seeds)."""
    t = torch.tensor(values, dtype=torch.float64)
    std = float(t.std(unbiased=True)) if len(values) > 1 else 0.0
    return float(t.mean()), std, len(values)


def paired_bootstrap(ranks_a: Tensor, ranks_b: Tensor, metric: str = "MRR", n_resamples: int = 10_000,
                     seed: int = 0) -> dict[str, float]:
    """Paired bootstrap of the difference ``metric(a) - metric(b)`` on the same queries
    (:func:`bootstrap_difference` of the per-query values of ``metric``).

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
    return bootstrap_difference(per_query_a, per_query_b, n_resamples=n_resamples, seed=seed)


def bootstrap_difference(values_a: Tensor, values_b: Tensor, n_resamples: int = 10_000,
                         seed: int = 0) -> dict[str, float]:
    """Paired bootstrap of ``mean(values_a - values_b)``, per-query values of the same queries under
    two methods (e.g. R-Precision or mAP@R per query).

    Queries are resampled with replacement (Efron & Tibshirani 1993); returns the observed
    difference, a 95 % percentile interval and a two-sided p-value (twice the smaller tail share
    of resampled differences on the other side of zero).

    Parameters
    ----------
    values_a, values_b : Tensor, shape (Q,)
    """
    if values_a.shape != values_b.shape or values_a.dim() != 1:
        raise ValueError(f"values must be two (Q,) tensors of the same queries, got {tuple(values_a.shape)} "
                         f"and {tuple(values_b.shape)}")
    diff = (values_a - values_b).double()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(diff), (n_resamples, len(diff)), generator=g)
    boot = diff[idx].mean(1)
    observed = float(diff.mean())
    p = 2.0 * min(float((boot <= 0).double().mean()), float((boot >= 0).double().mean()))
    lo, hi = torch.quantile(boot, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {"difference": observed, "ci_low": lo, "ci_high": hi, "p_value": min(1.0, p)}
