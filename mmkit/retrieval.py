"""Retrieval with probabilistic embeddings: query fusion, distributional scores, tasks, big galleries.

Every item of a modality is a vMF ``(loc, kappa)``. A query is a non-empty set of modalities of
one item; it is ranked against every gallery item of the target modality.

Fusion of a multimodal query (a **reconstruction**; the paper does not spell it out):

* ``"product"`` (default) — the normalised product of the query densities,
  ``prod_k vMF(mu_k, kappa_k) ∝ vMF(mu*, kappa*)`` with ``kappa* mu* = sum_k kappa_k mu_k``;
* ``"pooled"`` — the union of the samples of each query distribution (SSW only).

Scores (higher = more relevant):

* ``"ssw"`` — ``-SSW_1`` between L samples of the query and of the item (the paper's
  "distributional distance"; Bonet et al. 2023), with shared projections and fixed seeds;
* ``"kl"`` — ``-KL(query || item)`` in closed form;
* ``"elk"`` — the log expected-likelihood kernel ``log ∫ f g = log C(k1) + log C(k2) - log C(||k1 mu1 + k2 mu2||)``;
* ``"cosine"`` — ``mu_q^T mu_g``, the deterministic reference.

All pairwise computations are chunked over queries so memory stays bounded for any gallery.
:class:`GalleryIndex` adds an approximate-nearest-neighbour prefilter on ``mu`` (faiss) with
exact distributional re-ranking of a shortlist, for galleries of 10^5–10^6 items.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .distributions import VonMisesFisher, vmf_log_normalizer
from .metrics import ranks_from_scores, summarize_ranks
from .special import bessel_iv_ratio
from .ssw import circle_coordinates, random_stiefel_projections, sliced_w1_matrix

__all__ = ["PAPER_TASKS", "DISTANCES", "FUSIONS", "task_name", "parse_task", "complete_items", "fuse_vmf_product", "cosine_scores",
           "kl_scores", "elk_scores", "ssw_scores", "score", "evaluate_tasks", "GalleryIndex"]

_ABBREV = {"audio": "A", "image": "I", "text": "T"}
_FULL = {v: k for k, v in _ABBREV.items()}
DISTANCES = ("ssw", "kl", "elk", "cosine")
FUSIONS = ("product", "pooled")

#: The nine tasks of the paper: (query modalities, target modality).
PAPER_TASKS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("audio",), "image"), (("text",), "image"), (("audio", "text"), "image"),
    (("audio",), "text"), (("image",), "text"), (("audio", "image"), "text"),
    (("image",), "audio"), (("text",), "audio"), (("image", "text"), "audio"),
)


def task_name(query: Sequence[str], target: str) -> str:
    """``("audio", "text"), "image"`` -> ``"A&T->I"``."""
    return "&".join(_ABBREV[m] for m in query) + "->" + _ABBREV[target]


def complete_items(present: Mapping[str, Tensor], modalities: Sequence[str]) -> Tensor:
    """Indices of the items that have every one of ``modalities`` (present masks (N,) -> (n,))."""
    keep = present[modalities[0]].clone().to(torch.bool)
    for m in modalities[1:]:
        keep &= present[m].to(torch.bool)
    return keep.nonzero().squeeze(-1)


def parse_task(name: str) -> tuple[tuple[str, ...], str]:
    """``"A&T->I"`` -> ``(("audio", "text"), "image")``."""
    try:
        left, right = name.split("->")
        return tuple(_FULL[x] for x in left.split("&")), _FULL[right]
    except (ValueError, KeyError):
        raise ValueError(f"task {name!r} is not of the form 'A&T->I' over A, I, T") from None


# ----------------------------------------------------------------------------------------------
# fusion and pairwise scores
# ----------------------------------------------------------------------------------------------
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


def kl_scores(q_loc: Tensor, q_kappa: Tensor, g_loc: Tensor, g_kappa: Tensor) -> Tensor:
    """``-KL(vMF_q || vMF_g)`` for every pair: (Q, d), (Q,), (G, d), (G,) -> (Q, G)."""
    d = q_loc.shape[-1]
    a_q = bessel_iv_ratio(0.5 * d - 1.0, q_kappa)
    kl = (vmf_log_normalizer(d, q_kappa)[:, None] - vmf_log_normalizer(d, g_kappa)[None, :]
          + a_q[:, None] * (q_kappa[:, None] - g_kappa[None, :] * (q_loc @ g_loc.T)))
    return -kl


def elk_scores(q_loc: Tensor, q_kappa: Tensor, g_loc: Tensor, g_kappa: Tensor, chunk: int = 4096) -> Tensor:
    """Log expected-likelihood kernel ``log ∫ f_q f_g`` for every pair -> (Q, G) (chunked over queries)."""
    d = q_loc.shape[-1]
    log_cq, log_cg = vmf_log_normalizer(d, q_kappa), vmf_log_normalizer(d, g_kappa)
    rows = []
    for s in range(0, len(q_loc), chunk):
        kq = q_kappa[s:s + chunk, None]
        cos = q_loc[s:s + chunk] @ g_loc.T
        k = torch.sqrt((kq * kq + g_kappa[None] ** 2 + 2 * kq * g_kappa[None] * cos).clamp_min(1e-16)).clamp_min(1e-8)
        rows.append(log_cq[s:s + chunk, None] + log_cg[None] - vmf_log_normalizer(d, k))
    return torch.cat(rows)


def _draw(loc: Tensor, kappa: Tensor, n: int, seed: int) -> Tensor:
    """(N, d), (N,) -> (N, n, d) samples, reproducible for ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VonMisesFisher(loc, kappa.clamp_min(1e-6), validate_args=False).sample((n,)).transpose(0, 1)


def ssw_scores(q_samples: Tensor, g_samples: Tensor, projections: Tensor) -> Tensor:
    """``-SSW_1`` between every query sample set and every gallery sample set.

    q_samples (Q, L, d), g_samples (G, L', d), projections (T, d, 2) -> (Q, G). Circle coordinates
    are computed once per side (memory ``O((Q + G) T L)``); the ``Q·G·T`` circle problems are
    solved by the compiled merge-walk kernel :func:`mmkit.ssw.sliced_w1_matrix`.
    """
    return -sliced_w1_matrix(circle_coordinates(q_samples, projections), circle_coordinates(g_samples, projections))


def score(query: Sequence[tuple[Tensor, Tensor]], gallery: tuple[Tensor, Tensor], distance: str = "ssw",
          fusion: str = "product", n_samples: int = 32, n_projections: int = 50, seed: int = 0) -> Tensor:
    """Scores (Q, G) of fused queries against a gallery; higher = more relevant.

    Parameters
    ----------
    query : list of (loc (Q, d), kappa (Q,)), one entry per query modality (row q of every entry
        belongs to the same query item)
    gallery : (loc (G, d), kappa (G,))
    distance : "ssw" | "kl" | "elk" | "cosine"
    fusion : "product" | "pooled" ("pooled" needs distance "ssw")
    n_samples, n_projections, seed : SSW settings (deterministic for a given seed)
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    if not query:
        raise ValueError("a query needs at least one modality")
    q_count = {int(q[0].shape[0]) for q in query}
    if len(q_count) != 1:
        raise ValueError(f"every query modality must hold the same items, got row counts {sorted(q_count)}")
    g_loc, g_kappa = gallery
    if fusion == "pooled" and distance != "ssw":
        raise ValueError("fusion='pooled' pools samples and is defined for distance='ssw' only")
    if distance == "ssw":
        proj = random_stiefel_projections(g_loc.shape[-1], n_projections, generator=torch.Generator().manual_seed(seed),
                                          dtype=g_loc.dtype, device=g_loc.device)
        if fusion == "pooled":
            per = max(1, n_samples // len(query))
            qs = torch.cat([_draw(l, k, per, seed + 1 + i) for i, (l, k) in enumerate(query)], dim=1)
        else:
            qs = _draw(*fuse_vmf_product([q[0] for q in query], [q[1] for q in query]), n_samples, seed + 1)
        gs = _draw(g_loc, g_kappa, n_samples, seed + 101)
        return ssw_scores(qs, gs, proj)
    q_loc, q_kappa = fuse_vmf_product([q[0] for q in query], [q[1] for q in query])
    if distance == "cosine":
        return cosine_scores(q_loc, g_loc)
    if distance == "kl":
        return kl_scores(q_loc, q_kappa, g_loc, g_kappa)
    return elk_scores(q_loc, q_kappa, g_loc, g_kappa)


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


# ----------------------------------------------------------------------------------------------
# large galleries
# ----------------------------------------------------------------------------------------------
class GalleryIndex:
    """Approximate-nearest-neighbour prefilter on ``mu`` (faiss, inner product) + exact re-ranking.

    Parameters
    ----------
    loc : Tensor (G, d), kappa : Tensor (G,)
        The gallery's vMF parameters (kept on CPU).
    index : "flat" | "hnsw" | "ivf"
        ``flat`` is exhaustive inner product (exact prefilter); ``hnsw`` a graph index
        (Malkov & Yashunin 2018); ``ivf`` an inverted file over k-means cells (Jégou et al. 2011),
        the fastest to build for 10^5–10^6 items.
    hnsw_m, ef_search : HNSW graph degree and search breadth.
    n_lists, n_probe : IVF cells (default ``4 sqrt(G)``) and cells visited per query.

    ``search`` takes the ``shortlist`` items of largest ``mu``-cosine and re-ranks them exactly by
    the chosen distributional score (SSW samples are drawn for the shortlist only).
    """

    def __init__(self, loc: Tensor, kappa: Tensor, index: str = "hnsw", hnsw_m: int = 32, ef_search: int = 128,
                 n_lists: int | None = None, n_probe: int = 32, seed: int = 0):
        import faiss  # optional dependency for large galleries

        if loc.dim() != 2 or kappa.shape != loc.shape[:1]:
            raise ValueError(f"loc must be (G, d) and kappa (G,), got {tuple(loc.shape)} and {tuple(kappa.shape)}")
        self.loc = loc.detach().to("cpu", torch.float32).contiguous()
        self.kappa = kappa.detach().to("cpu", torch.float32).contiguous()
        d = self.loc.shape[1]
        if index == "flat":
            self.index = faiss.IndexFlatIP(d)
        elif index == "hnsw":
            self.index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efSearch = ef_search
        elif index == "ivf":
            lists = n_lists or max(1, int(4 * self.loc.shape[0] ** 0.5))
            self.index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
            g = torch.Generator().manual_seed(seed)
            sample = self.loc[torch.randperm(self.loc.shape[0], generator=g)[: min(self.loc.shape[0], 64 * lists)]]
            self.index.train(sample.numpy())
            self.index.nprobe = n_probe
        else:
            raise ValueError(f"index must be 'flat', 'hnsw' or 'ivf', got {index!r}")
        self.index.add(self.loc.numpy())

    def __len__(self) -> int:
        return self.loc.shape[0]

    def search(self, query: Sequence[tuple[Tensor, Tensor]], k: int = 10, shortlist: int = 200,
               distance: str = "kl", **score_kwargs) -> tuple[Tensor, Tensor]:
        """Top-``k`` gallery indices (Q, k) and their scores (Q, k) for each fused query."""
        if shortlist < k:
            raise ValueError(f"shortlist ({shortlist}) must be >= k ({k})")
        q_loc, q_kappa = fuse_vmf_product([q[0].float() for q in query], [q[1].float() for q in query])
        _, cand = self.index.search(q_loc.detach().cpu().contiguous().numpy(), min(shortlist, len(self)))
        cand = torch.from_numpy(cand).clamp_min(0)
        top_ids, top_scores = [], []
        for qi in range(q_loc.shape[0]):
            ids = cand[qi]
            s = score([(q_loc[qi:qi + 1], q_kappa[qi:qi + 1])], (self.loc[ids], self.kappa[ids]), distance=distance,
                      **score_kwargs)[0]
            best = torch.topk(s, min(k, len(ids)))
            top_ids.append(ids[best.indices])
            top_scores.append(best.values)
        return torch.stack(top_ids), torch.stack(top_scores)
