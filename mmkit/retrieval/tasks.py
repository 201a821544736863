"""The paper's retrieval tasks on paired items: rank every target item for each query item.

Item i of the query modalities matches item i of the target modality; a task uses the items that
have every one of its modalities. Scores come from :func:`mmkit.retrieval.scores.score`, ranks and
metrics from :mod:`mmkit.core.metrics`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from mmkit.core.metrics import ranks_from_scores, summarize_ranks
from mmkit.retrieval.scores import score
from mmkit.vocab import PAPER_TASKS, task_name

__all__ = ["complete_items", "evaluate_tasks"]


def complete_items(present: Mapping[str, Tensor], modalities: Sequence[str]) -> Tensor:
    """Indices of the items that have every one of ``modalities`` (present masks (N,) -> (n,))."""
    keep = present[modalities[0]].clone().to(torch.bool)
    for m in modalities[1:]:
        keep &= present[m].to(torch.bool)
    return keep.nonzero().squeeze(-1)


def evaluate_tasks(params: Mapping[str, tuple[Tensor, Tensor]], present: Mapping[str, Tensor],
                   tasks=PAPER_TASKS, distance: str = "cosine", fusion: str = "product", return_ranks: bool = False,
                   **score_kwargs) -> dict[str, dict]:
    """Metrics per task for paired items (item i of the query side matches item i of the target).

    Parameters
    ----------
    params : modality -> (loc (N, d), kappa (N,))
    present : modality -> bool (N,); a task uses the items that have all its modalities
    tasks : iterable of (query modalities, target)
    distance, fusion, score_kwargs : passed to :func:`score`
    return_ranks : also return each task's per-query ranks (float64, (n,)) under key "ranks"

    Returns
    -------
    ``{task_name: {"R@1", "R@5", "R@10", "R@15", "MRR", "MR", "n"}}``; tasks whose modalities are
    missing (or with fewer than 2 complete items) are left out.
    """
    for m, (loc, _) in params.items():
        if m in present and tuple(present[m].shape) != (loc.shape[0],):
            raise ValueError(f"present[{m!r}] must be a ({loc.shape[0]},) mask like params[{m!r}], got shape "
                             f"{tuple(present[m].shape)}")
    out = {}
    for query, target in tasks:
        if any(m not in params for m in (*query, target)):
            continue
        idx = complete_items(present, (target, *query))
        if idx.numel() < 2:
            continue
        scores = score([(params[m][0][idx], params[m][1][idx]) for m in query],
                       (params[target][0][idx], params[target][1][idx]), distance=distance, fusion=fusion,
                       **score_kwargs)
        ranks = ranks_from_scores(scores)
        out[task_name(query, target)] = {**summarize_ranks(ranks), "n": int(idx.numel())}
        if return_ranks:
            out[task_name(query, target)]["ranks"] = ranks
    return out
