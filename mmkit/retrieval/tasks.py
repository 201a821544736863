"""The paper's retrieval tasks on paired items: rank every target item for each query item.

Item i of the query modalities matches item i of the target modality; a task uses the items that
have every one of its modalities. Scores come from :func:`mmkit.retrieval.scores.score`, ranks and
metrics from :mod:`mmkit.core.metrics`.

Many-to-many truth (a caption may truly describe several items, ``FeatureSplit.text_relevance()``)
adds R-Precision ("RP") and mAP@R beside R@k/MRR on every task with text on either side
(:func:`task_relevance`); R@k, MRR and MR stay one-to-one (item i's own match), as before.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from mmkit.core.metrics import map_at_r, r_precision, ranks_from_scores, summarize_ranks
from mmkit.retrieval.scores import score
from mmkit.vocab import PAPER_TASKS, task_name

__all__ = ["complete_items", "task_relevance", "evaluate_tasks", "MANY_TO_MANY_METRICS"]

#: The metrics of many-to-many truth by name: per-query functions of (scores, relevant), values in
#: [0, 1] (like MRR, not in %).
MANY_TO_MANY_METRICS = {"RP": r_precision, "mAP@R": map_at_r}


def complete_items(present: Mapping[str, Tensor], modalities: Sequence[str]) -> Tensor:
    """Indices of the items that have every one of ``modalities`` (present masks (N,) -> (n,))."""
    keep = present[modalities[0]].clone().to(torch.bool)
    for m in modalities[1:]:
        keep &= present[m].to(torch.bool)
    return keep.nonzero().squeeze(-1)


def task_relevance(text_relevance: Tensor | None, query: Sequence[str], target: str, idx: Tensor) -> Tensor | None:
    """Which gallery items truly match each query of a task, from the captions' many-to-many truth.

    Text as query (T->I, and the composed queries with text such as A&T->I): the items the query's
    caption describes, ``text_relevance[q, j]`` (for a composed query the caption's truth set is the
    relevant set: the other query modality narrows nothing down, since the truth is about captions).
    Text as gallery (I->T, A->T, A&I->T): the captions that describe the query's item,
    ``text_relevance[j, q]``. Tasks without text have no many-to-many truth.

    Parameters
    ----------
    text_relevance : Tensor of bool, shape (N, N), or None
        ``[i, j]``: the caption of row i truly describes item j (diagonal True).
    query, target : the task's query modalities and target modality
    idx : Tensor, shape (n,), the rows the task uses (:func:`complete_items`)

    Returns
    -------
    Tensor of bool, shape (n, n) (queries x gallery), or None when the task has no text or there is no truth.
    """
    if text_relevance is None or ("text" not in query and target != "text"):
        return None
    sub = text_relevance[idx][:, idx]
    return sub if "text" in query else sub.T


def evaluate_tasks(params: Mapping[str, tuple[Tensor, Tensor]], present: Mapping[str, Tensor],
                   tasks=PAPER_TASKS, distance: str = "cosine", fusion: str = "product", return_ranks: bool = False,
                   text_relevance: Tensor | None = None, **score_kwargs) -> dict[str, dict]:
    """Metrics per task for paired items (item i of the query side matches item i of the target).

    Parameters
    ----------
    params : modality -> (loc (N, d), kappa (N,))
    present : modality -> bool (N,); a task uses the items that have all its modalities
    tasks : iterable of (query modalities, target)
    distance, fusion, score_kwargs : passed to :func:`score`
    return_ranks : also return each task's per-query ranks (float64, (n,)) under key "ranks" and,
        with many-to-many truth, its per-query R-Precision and mAP@R under "RP_per_query" and
        "mAP@R_per_query"
    text_relevance : bool (N, N), optional
        Many-to-many truth of the captions (:func:`task_relevance`); adds "RP" and "mAP@R" (means
        over queries, in [0, 1]) to every task with text.

    Returns
    -------
    ``{task_name: {"R@1", "R@5", "R@10", "R@15", "MRR", "MR", "n"}}`` (plus "RP" and "mAP@R" on the
    tasks with text when ``text_relevance`` is given); tasks whose modalities are missing (or with
    fewer than 2 complete items) are left out.
    """
    for m, (loc, _) in params.items():
        if m in present and tuple(present[m].shape) != (loc.shape[0],):
            raise ValueError(f"present[{m!r}] must be a ({loc.shape[0]},) mask like params[{m!r}], got shape "
                             f"{tuple(present[m].shape)}")
    n_rows = next(iter(params.values()))[0].shape[0] if params else 0
    if text_relevance is not None and (tuple(text_relevance.shape) != (n_rows, n_rows)
                                       or text_relevance.dtype != torch.bool):
        raise ValueError(f"text_relevance must be a ({n_rows}, {n_rows}) bool tensor like the rows of params, got "
                         f"shape {tuple(text_relevance.shape)} and dtype {text_relevance.dtype}")
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
        metrics = out[task_name(query, target)] = {**summarize_ranks(ranks), "n": int(idx.numel())}
        if return_ranks:
            metrics["ranks"] = ranks
        relevant = task_relevance(text_relevance, query, target, idx)
        if relevant is not None:
            for name, fn in MANY_TO_MANY_METRICS.items():
                per_query = fn(scores, relevant.to(scores.device))
                metrics[name] = float(per_query.mean())
                if return_ranks:
                    metrics[f"{name}_per_query"] = per_query.cpu()
    return out
