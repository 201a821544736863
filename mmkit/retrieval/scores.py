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

Diagonal Gaussian encodings ``(mean, log_var)`` (PCME++) are ranked by

* ``"csd"`` — ``-CSD = -E||z_q - z_g||^2`` (Chun, ICLR 2024), a multimodal query fused by the
  normalised product of its Gaussians (precision-weighted mean, summed precisions).

All pairwise computations are chunked over queries so memory stays bounded for any gallery.
The tasks of the paper are ranked in :mod:`mmkit.retrieval.tasks`; galleries of 10^5–10^6 items
go through :class:`mmkit.retrieval.index.GalleryIndex`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mmkit.core.distributions import VonMisesFisher, vmf_log_normalizer
from mmkit.core.published import PublishedVonMisesFisher
from mmkit.core.special import bessel_iv_ratio
from mmkit.core.ssw import circle_coordinates, random_stiefel_projections, sliced_w1_matrix
from mmkit.model.losses import closed_form_sampled_distance, product_of_gaussians
from mmkit.vocab import DISTANCES, FUSIONS, GAUSSIAN_DISTANCES

__all__ = ["fuse_vmf_product", "cosine_scores", "kl_scores", "elk_scores", "ssw_scores", "csd_scores", "score",
           "check_vmf_rows", "check_gaussian_rows"]

_ROW_CHUNK = 65536  # gallery rows checked per step (bounds temporary memory)


# ----------------------------------------------------------------------------------------------
# fusion and pairwise scores
# ----------------------------------------------------------------------------------------------
def fuse_vmf_product(locs: Sequence[Tensor], kappas: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Product of vMFs: ``kappa* mu* = sum_k kappa_k mu_k``; each loc (N, d), kappa (N,) -> (N, d), (N,).

    Examples
    --------
    Two orthogonal directions with ``kappa = 3`` and ``4``: ``kappa* = 5``, ``mu* = (3, 4) / 5``:

    >>> import torch
    >>> from mmkit.retrieval.scores import fuse_vmf_product
    >>> fuse_vmf_product([torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])],
    ...                  [torch.tensor([3.0]), torch.tensor([4.0])])
    (tensor([[0.6000, 0.8000]]), tensor([5.]))
    """
    if not locs or len(locs) != len(kappas):
        raise ValueError("fuse_vmf_product needs as many locs as kappas (at least one)")
    total = torch.stack([k.unsqueeze(-1) * m for m, k in zip(locs, kappas)]).sum(0)
    kappa = total.norm(dim=-1)
    return F.normalize(total, dim=-1), kappa


def cosine_scores(query_loc: Tensor, gallery_loc: Tensor) -> Tensor:
    """mu-cosine similarity, (Q, d) x (G, d) -> (Q, G).

    Examples
    --------
    >>> import torch
    >>> from mmkit.retrieval.scores import cosine_scores
    >>> cosine_scores(torch.tensor([[1.0, 0.0, 0.0]]), torch.eye(3))  # orthogonal items score 0
    tensor([[1., 0., 0.]])
    """
    return query_loc @ gallery_loc.T


def kl_scores(q_loc: Tensor, q_kappa: Tensor, g_loc: Tensor, g_kappa: Tensor) -> Tensor:
    """``-KL(vMF_q || vMF_g)`` for every pair: (Q, d), (Q,), (G, d), (G,) -> (Q, G).

    Examples
    --------
    The query itself, then an orthogonal item of the same ``kappa``: ``KL = kappa A_d(kappa)``, with
    ``A_3(10) = coth 10 - 1/10 = 0.9``:

    >>> import torch
    >>> from mmkit.retrieval.scores import kl_scores
    >>> q, g = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    >>> -kl_scores(q, torch.tensor([10.0]), g, torch.tensor([10.0, 10.0]))
    tensor([[0., 9.]])
    """
    d = q_loc.shape[-1]
    a_q = bessel_iv_ratio(0.5 * d - 1.0, q_kappa)
    kl = (vmf_log_normalizer(d, q_kappa)[:, None] - vmf_log_normalizer(d, g_kappa)[None, :]
          + a_q[:, None] * (q_kappa[:, None] - g_kappa[None, :] * (q_loc @ g_loc.T)))
    return -kl


def elk_scores(q_loc: Tensor, q_kappa: Tensor, g_loc: Tensor, g_kappa: Tensor, chunk: int = 4096) -> Tensor:
    """Log expected-likelihood kernel ``log ∫ f_q f_g`` for every pair -> (Q, G) (chunked over queries).

    Examples
    --------
    A vMF with itself: ``log C(kappa)^2 / C(2 kappa)``; on ``S^2``, ``C(kappa) = kappa / (4π sinh kappa)``:

    >>> import math, torch
    >>> from mmkit.retrieval.scores import elk_scores
    >>> q = torch.tensor([[0.0, 0.0, 1.0]])
    >>> elk_scores(q, torch.tensor([1.0]), q, torch.tensor([1.0]))
    tensor([[-2.2587]])
    >>> c = lambda k: k / (4 * math.pi * math.sinh(k))
    >>> round(math.log(c(1.0) ** 2 / c(2.0)), 4)
    -2.2587
    """
    d = q_loc.shape[-1]
    log_cq, log_cg = vmf_log_normalizer(d, q_kappa), vmf_log_normalizer(d, g_kappa)
    rows = []
    for s in range(0, len(q_loc), chunk):
        kq = q_kappa[s:s + chunk, None]
        cos = q_loc[s:s + chunk] @ g_loc.T
        k = torch.sqrt((kq * kq + g_kappa[None] ** 2 + 2 * kq * g_kappa[None] * cos).clamp_min(1e-16)).clamp_min(1e-8)
        rows.append(log_cq[s:s + chunk, None] + log_cg[None] - vmf_log_normalizer(d, k))
    return torch.cat(rows)


def _draw(loc: Tensor, kappa: Tensor, n: int, seed: int, as_published: bool = False) -> Tensor:
    """(N, d), (N,) -> (N, n, d) samples, reproducible for ``seed`` without touching the global RNG
    (``as_published``: the reference code's sampler, :class:`mmkit.core.published.PublishedVonMisesFisher`)."""
    sampler = PublishedVonMisesFisher if as_published else VonMisesFisher
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return sampler(loc, kappa.clamp_min(1e-6), validate_args=False).sample((n,)).transpose(0, 1)


def ssw_scores(q_samples: Tensor, g_samples: Tensor, projections: Tensor, as_published: bool = False) -> Tensor:
    """``-SSW_1`` between every query sample set and every gallery sample set.

    q_samples (Q, L, d), g_samples (G, L', d), projections (T, d, 2) -> (Q, G). Circle coordinates
    are computed once per side (memory ``O((Q + G) T L)``); the ``Q·G·T`` circle problems are
    solved by the compiled merge-walk kernel :func:`mmkit.core.ssw.sliced_w1_matrix` (with
    ``as_published``, its reference-code circle ``W_1``: wrong on purpose, the study's E8 only).

    Examples
    --------
    >>> import torch
    >>> from mmkit.core.ssw import random_stiefel_projections
    >>> from mmkit.retrieval.scores import ssw_scores
    >>> gen = torch.Generator().manual_seed(0)
    >>> samples = torch.nn.functional.normalize(torch.randn(3, 8, 4, generator=gen), dim=-1)  # 3 sets of 8 on S^3
    >>> s = ssw_scores(samples, samples, random_stiefel_projections(4, 10, generator=torch.Generator().manual_seed(1)))
    >>> s.diagonal().abs().max().item(), bool((s <= 0).all())  # SSW(X, X) = 0; every score is -SSW <= 0
    (0.0, True)
    """
    return -sliced_w1_matrix(circle_coordinates(q_samples, projections), circle_coordinates(g_samples, projections),
                             as_published=as_published)


def csd_scores(q_mean: Tensor, q_log_var: Tensor, g_mean: Tensor, g_log_var: Tensor) -> Tensor:
    """``-CSD``, PCME++'s closed-form sampled distance (Chun, ICLR 2024), for every pair -> (Q, G).

    ``CSD = E||z_q - z_g||^2 = ||mu_q - mu_g||^2 + sum(sigma_q^2) + sum(sigma_g^2)`` for diagonal
    Gaussians ``(mean (N, d), log_var (N, d))`` (:func:`mmkit.model.losses.closed_form_sampled_distance`,
    chunked over queries).

    Examples
    --------
    Two unit-variance items in d = 2: the query's own item (CSD 4) ranks above one 1 away (CSD 5):

    >>> import torch
    >>> from mmkit.retrieval.scores import csd_scores
    >>> csd_scores(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([[0.0, 0.0], [1.0, 0.0]]), torch.zeros(2, 2))
    tensor([[-4., -5.]])
    """
    return -closed_form_sampled_distance(q_mean, q_log_var, g_mean, g_log_var)


def score(query: Sequence[tuple[Tensor, Tensor]], gallery: tuple[Tensor, Tensor], distance: str = "ssw",
          fusion: str = "product", n_samples: int = 32, n_projections: int = 50, seed: int = 0,
          as_published: bool = False) -> Tensor:
    """Scores (Q, G) of fused queries against a gallery; higher = more relevant.

    Parameters
    ----------
    query : list of (loc (Q, d), kappa (Q,)), one entry per query modality (row q of every entry
        belongs to the same query item); for ``"csd"``, (mean (Q, d), log_var (Q, d))
    gallery : (loc (G, d), kappa (G,)); for ``"csd"``, (mean (G, d), log_var (G, d))
    distance : "ssw" | "kl" | "elk" | "cosine" | "csd"
    fusion : "product" | "pooled" ("pooled" needs distance "ssw"; "csd" fuses by the product of Gaussians)
    n_samples, n_projections, seed : SSW settings (deterministic for a given seed)
    as_published : SSW with the reference code's sampler and circle ``W_1`` (**wrong on purpose**:
        the descriptive ranking of the study's E8, ``docs/study.md``; needs ``distance="ssw"``)

    Examples
    --------
    Three items at the axes of ``R^3`` with ``kappa = 50``; each ranks itself first under every distance:

    >>> import torch
    >>> from mmkit.retrieval.scores import score
    >>> loc, kappa = torch.eye(3), torch.full((3,), 50.0)
    >>> score([(loc, kappa)], (loc, kappa), distance="ssw", n_samples=16, n_projections=20).argmax(dim=1)
    tensor([0, 1, 2])
    >>> -score([(loc, kappa)], (loc, kappa), distance="kl")  # KL = kappa A_3(kappa) = 50 (coth 50 - 1/50)
    tensor([[ 0., 49., 49.],
            [49.,  0., 49.],
            [49., 49.,  0.]])
    >>> score([(loc[:1], kappa[:1]), (loc[1:2], kappa[1:2])], (loc, kappa), distance="cosine")  # fused query
    tensor([[0.7071, 0.7071, 0.0000]])
    """
    known = tuple(dict.fromkeys(DISTANCES + GAUSSIAN_DISTANCES))
    if distance not in known:
        raise ValueError(f"distance must be one of {known}, got {distance!r}")
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    if not query:
        raise ValueError("a query needs at least one modality")
    q_count = {int(q[0].shape[0]) for q in query}
    if len(q_count) != 1:
        raise ValueError(f"every query modality must hold the same items, got row counts {sorted(q_count)}")
    g_loc, g_kappa = gallery
    for name, value in (("n_samples", n_samples), ("n_projections", n_projections)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if distance == "cosine":  # locations only (Gaussian methods pass (mean, log_var) here)
        for what, loc in [("gallery", g_loc)] + [(f"query modality {i}", q[0]) for i, q in enumerate(query)]:
            if not isinstance(loc, Tensor) or loc.dim() != 2 or loc.shape[1] != g_loc.shape[-1]:
                raise ValueError(f"score: {what} loc must be (N, {g_loc.shape[-1]}) like the gallery's "
                                 f"{tuple(g_loc.shape)}, got {tuple(getattr(loc, 'shape', ()))}")
    elif distance == "csd":
        check_gaussian_rows(g_loc, g_kappa, "score: gallery")
        for i, (mean, log_var) in enumerate(query):
            check_gaussian_rows(mean, log_var, f"score: query modality {i}", d=g_loc.shape[1])
    else:
        check_vmf_rows(g_loc, g_kappa, "score: gallery")
        for i, (loc, kappa) in enumerate(query):
            check_vmf_rows(loc, kappa, f"score: query modality {i}", d=g_loc.shape[1])
    if as_published and distance != "ssw":
        raise ValueError(f"as_published reproduces the reference code's SSW; it needs distance='ssw', got {distance!r}")
    if fusion == "pooled" and distance != "ssw":
        raise ValueError("fusion='pooled' pools samples and is defined for distance='ssw' only")
    if distance == "csd":
        q_mean, q_log_var = product_of_gaussians([q[0] for q in query], [q[1] for q in query])
        return csd_scores(q_mean, q_log_var, g_loc, g_kappa)
    if distance == "ssw":
        proj = random_stiefel_projections(g_loc.shape[-1], n_projections, generator=torch.Generator().manual_seed(seed),
                                          dtype=g_loc.dtype, device=g_loc.device)
        if fusion == "pooled":
            per = max(1, n_samples // len(query))
            qs = torch.cat([_draw(l, k, per, seed + 1 + i, as_published) for i, (l, k) in enumerate(query)], dim=1)
        else:
            qs = _draw(*fuse_vmf_product([q[0] for q in query], [q[1] for q in query]), n_samples, seed + 1,
                       as_published)
        gs = _draw(g_loc, g_kappa, n_samples, seed + 101, as_published)
        return ssw_scores(qs, gs, proj, as_published)
    q_loc, q_kappa = fuse_vmf_product([q[0] for q in query], [q[1] for q in query])
    if distance == "cosine":
        return cosine_scores(q_loc, g_loc)
    if distance == "kl":
        return kl_scores(q_loc, q_kappa, g_loc, g_kappa)
    return elk_scores(q_loc, q_kappa, g_loc, g_kappa)


def check_gaussian_rows(mean: Tensor, log_var: Tensor, what: str, d: int | None = None) -> None:
    """Raise a clear error unless ``mean`` and ``log_var`` are finite floating (N, d) tensors, N >= 1.

    Examples
    --------
    >>> import torch
    >>> from mmkit.retrieval.scores import check_gaussian_rows
    >>> check_gaussian_rows(torch.zeros(2, 3), torch.zeros(2, 3), "demo")  # fine: returns None
    >>> check_gaussian_rows(torch.zeros(2, 3), torch.zeros(2), "demo")
    Traceback (most recent call last):
        ...
    ValueError: demo: expected mean and log_var of the same shape (N, d) with N >= 1, got (2, 3) and (2,)
    """
    if not isinstance(mean, Tensor) or not isinstance(log_var, Tensor):
        raise TypeError(f"{what}: mean and log_var must be torch tensors, got {type(mean).__name__} and "
                        f"{type(log_var).__name__}")
    if not (mean.is_floating_point() and log_var.is_floating_point()):
        raise TypeError(f"{what}: mean and log_var must be floating point, got {mean.dtype} and {log_var.dtype}")
    if mean.dim() != 2 or mean.shape[0] == 0 or log_var.shape != mean.shape:
        raise ValueError(f"{what}: expected mean and log_var of the same shape (N, d) with N >= 1, got "
                         f"{tuple(mean.shape)} and {tuple(log_var.shape)}")
    if d is not None and mean.shape[1] != d:
        raise ValueError(f"{what}: mean has dimension {mean.shape[1]}, the gallery has {d}")
    for name, t in (("mean", mean), ("log_var", log_var)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{what}: {name} has non-finite entries")


def check_vmf_rows(loc: Tensor, kappa: Tensor, what: str, d: int | None = None) -> None:
    """Raise a clear error unless ``loc`` is (N, d) finite unit rows and ``kappa`` (N,) finite and > 0.

    Examples
    --------
    >>> import torch
    >>> from mmkit.retrieval.scores import check_vmf_rows
    >>> check_vmf_rows(torch.tensor([[0.6, 0.8]]), torch.tensor([1.0]), "demo")  # fine: returns None
    >>> check_vmf_rows(torch.tensor([[2.0, 0.0]]), torch.tensor([1.0]), "demo")
    Traceback (most recent call last):
        ...
    ValueError: demo: loc rows must be unit vectors, got max |norm - 1| = 1 in rows 0 to 0
    """
    if not isinstance(loc, Tensor) or not isinstance(kappa, Tensor):
        raise TypeError(f"{what}: loc and kappa must be torch tensors, got {type(loc).__name__} and "
                        f"{type(kappa).__name__}")
    if not (loc.is_floating_point() and kappa.is_floating_point()):
        raise TypeError(f"{what}: loc and kappa must be floating point, got {loc.dtype} and {kappa.dtype}")
    if loc.dim() != 2 or loc.shape[0] == 0 or loc.shape[1] < 2 or kappa.shape != loc.shape[:1]:
        raise ValueError(f"{what}: expected loc (N, d) with N >= 1, d >= 2 and kappa (N,), got "
                         f"{tuple(loc.shape)} and {tuple(kappa.shape)}")
    if d is not None and loc.shape[1] != d:
        raise ValueError(f"{what}: loc has dimension {loc.shape[1]}, the gallery has {d}")
    for s in range(0, len(loc), _ROW_CHUNK):  # in chunks: no full-size temporary for a 10^6-item gallery
        block = loc[s:s + _ROW_CHUNK]
        bad = (~torch.isfinite(block).all(1)).nonzero()
        if len(bad):
            raise ValueError(f"{what}: loc has non-finite entries (first: row {s + int(bad[0])})")
        err = float((torch.linalg.vector_norm(block.double(), dim=1) - 1.0).abs().max())
        if err > 1e-4:
            raise ValueError(f"{what}: loc rows must be unit vectors, got max |norm - 1| = {err:.3g} "
                             f"in rows {s} to {s + len(block) - 1}")
    bad = (~(torch.isfinite(kappa) & (kappa > 0))).nonzero()
    if len(bad):
        raise ValueError(f"{what}: kappa must be finite and > 0, got {float(kappa[bad[0]])} at row {int(bad[0])} "
                         f"({len(bad)} bad values)")
