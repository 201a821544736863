"""Retrieval with probabilistic embeddings: query fusion, scores, and the paper's tasks.

This first version ranks by mu-cosine (the deterministic reference) and fuses multimodal queries
by the product of vMFs; the distributional distances (SSW, KL, expected-likelihood kernel) and
large-gallery search extend it.

Product of vMF densities (a **reconstruction** of the paper's fusion):
``prod_k vMF(mu_k, kappa_k) ∝ vMF(mu*, kappa*)`` with ``kappa* mu* = sum_k kappa_k mu_k``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .metrics import ranks_from_scores, summarize_ranks

__all__ = ["PAPER_TASKS", "task_name", "fuse_vmf_product", "cosine_scores", "evaluate_tasks"]

_ABBREV = {"audio": "A", "image": "I", "text": "T"}

#: The nine tasks of the paper: (query modalities, target modality).
PAPER_TASKS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("audio",), "image"), (("text",), "image"), (("audio", "text"), "image"),
    (("audio",), "text"), (("image",), "text"), (("audio", "image"), "text"),
    (("image",), "audio"), (("text",), "audio"), (("image", "text"), "audio"),
)


def task_name(query: Sequence[str], target: str) -> str:
    """``("audio", "text"), "image"`` -> ``"A&T->I"``."""
    return "&".join(_ABBREV[m] for m in query) + "->" + _ABBREV[target]


def fuse_vmf_product(locs: Sequence[Tensor], kappas: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Product of vMFs: ``kappa* mu* = sum_k kappa_k mu_k``; each loc (N, d), kappa (N,) -> (N, d), (N,)."""
    if not locs or len(locs) != len(kappas):
        raise ValueError("fuse_vmf_product needs as many locs as kappas (at least one)")
    total = torch.stack([k.unsqueeze(-1) * m for m, k in zip(locs, kappas)]).sum(0)
    kappa = total.norm(dim=-1)
    return F.normalize(total, dim=-1), kappa


def cosine_scores(query_loc: Tensor, gallery_loc: Tensor) -> Tensor:
    """mu-cosine similarity, (Q, d) x (G, d) -> (Q, G)."""
    return query_loc @ gallery_loc.T


def evaluate_tasks(params: Mapping[str, tuple[Tensor, Tensor]], present: Mapping[str, Tensor],
                   tasks=PAPER_TASKS) -> dict[str, dict[str, float]]:
    """Metrics per task for paired items (item i of the query side matches item i of the target).

    Parameters
    ----------
    params : modality -> (loc (N, d), kappa (N,))
    present : modality -> bool (N,); a task uses the items that have all its modalities

    Returns
    -------
    ``{task_name: {"R@1": ..., "MRR": ..., "MR": ..., "n": ...}}`` (tasks whose modalities are
    missing are left out).
    """
    out = {}
    for query, target in tasks:
        if any(m not in params for m in (*query, target)):
            continue
        keep = present[target].clone()
        for m in query:
            keep &= present[m]
        idx = keep.nonzero().squeeze(-1)
        if idx.numel() < 2:
            continue
        q_loc, _ = fuse_vmf_product([params[m][0][idx] for m in query], [params[m][1][idx] for m in query])
        ranks = ranks_from_scores(cosine_scores(q_loc, params[target][0][idx]))
        out[task_name(query, target)] = {**summarize_ranks(ranks), "n": int(idx.numel())}
    return out
