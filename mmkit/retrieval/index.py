"""Large galleries: an approximate-nearest-neighbour prefilter (faiss) on μ with exact
distributional re-ranking of a shortlist, for galleries of 10^5–10^6 items.

For KL the prefilter searches augmented vectors whose inner product is ``-KL`` up to a per-query
constant (KL between vMFs is a Bregman divergence, so ranking by it is a maximum-inner-product search).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mmkit.core.distributions import vmf_log_normalizer
from mmkit.core.special import bessel_iv_ratio
from mmkit.retrieval.scores import check_vmf_rows, fuse_vmf_product, score
from mmkit.vocab import DISTANCES

__all__ = ["GalleryIndex"]

_INDEX_KINDS = ("flat", "hnsw", "ivf")
_KAPPA_GRID = 8  # concentrations per kappa-bin at which a cell's best KL score is evaluated
_ROW_CHUNK = 65536  # gallery rows per step when filling the faiss indexes (bounds temporary memory)
_QUERY_CHUNK = 16  # queries per step when ranking the cells of the KL index
_MIN_SCAN = 16384  # the default probes of an IVF scan at least about this many items
_RERANK_STEP = {"ssw": 1, "elk": 8, "kl": 64, "cosine": 64}  # queries re-ranked together (see _rerank)


class GalleryIndex:
    r"""Search a large vMF gallery: a faiss prefilter, then exact re-ranking of a shortlist with :func:`score`.

    **KL ranking is a maximum-inner-product search.** For ``vMF_d(mu, kappa)`` with density
    ``C_d(kappa) exp(kappa mu^T x)`` the mean is ``E[x] = A_d(kappa) mu`` with
    ``A_d = I_{d/2} / I_{d/2-1}``, so

    ``KL(q || g) = E_q[log f_q - log f_g] = log C_d(k_q) - log C_d(k_g) + A_d(k_q) (k_q - k_g mu_g^T mu_q)``

    and, as a function of the gallery item ``g``,

    ``-KL(q || g) = <x_g, y_q> - [log C_d(k_q) + k_q A_d(k_q)]``,
    ``x_g = [k_g mu_g ; log C_d(k_g)]``, ``y_q = [A_d(k_q) mu_q ; 1]`` (both in R^{d+1}).

    (The Bregman form of KL within an exponential family: natural parameter ``theta = kappa mu``,
    log-partition ``-log C_d(||theta||)``, whose gradient is the mean; Banerjee et al. 2005,
    "Clustering with Bregman divergences".) The KL ranking of a query is therefore exactly the
    inner-product ranking of ``x_g`` against ``y_q``: :meth:`kl_gallery_vectors` and
    :meth:`kl_query_vectors` build them in float64 with mmkit's log-normaliser and Bessel ratio.
    The faiss indexes store ``x_g`` in float32 with ``max_g log C_d(k_g)`` subtracted from the last
    coordinate (a shift of every score by one constant): at ``d = 256``, ``log C_d(1) ~ 344``, whose
    float32 spacing (3e-5) exceeds the KL gaps between the best items of a broad query.

    **Why the IVF index does not search the MIPS->NN reduction.** Appending ``sqrt(M^2 - ||x_g||^2)``
    to every ``x_g`` (``M = max ||x_g||``) and 0 to ``y_q`` turns the inner product into Euclidean
    distance (Bachrach et al. 2014, "Speeding up the Xbox recommender system using a Euclidean
    transformation for inner-product spaces"), so any L2 index applies; ``index="hnsw"`` does that.
    But ``||x_g||`` spans ``|log C_d|`` to ``kappa_max`` (40 to 1000 at d = 64), and the cells of an
    L2 index on the reduced vectors follow the norm (kappa), not the level sets of the score. On the
    benchmark's gallery (measured while designing this, 2026-11-25) an IVF on the reduced vectors
    reached top-10 agreement 0.90 with exhaustive KL while scanning 47 % of 10^6 items (d = 64), and
    an HNSW on them 0.905 at 10^5 items with efSearch 512 (top-10 of the graph, before re-ranking).
    The IVF index below partitions by norm range instead (as in Yan et al. 2018, "Norm-ranging LSH for
    maximum inner product search"), norm being a function of kappa here.

    **KL index (``index="ivf"``).** Cells are (kappa-bin ``b``, mu-cell ``j``): ``n_lists`` spherical
    k-means cells of ``mu`` (centroids ``nu_j``, trained on ``64 n_lists`` random items, 10 iterations)
    times ``n_kappa_bins`` equal-count bins of ``log kappa``. The inverted lists hold ``x_g``, so
    scanning a cell gives ``-KL`` (up to float32 rounding) for every one of its items; the best
    ``shortlist`` are re-ranked exactly. Per query, every cell gets an estimate of its best score

    ``est_bj = max_{kappa in K_b} [log C_d(kappa) + A_d(k_q) kappa c_bj]``,
    ``c_bj = rho_bj c_j + sqrt((1 - rho_bj^2)(1 - c_j^2)) sqrt(2 ln n_bj / (d - 1))``,

    with ``c_j = mu_q^T nu_j``, ``rho_bj`` the mean cosine of the cell's items to ``nu_j``, ``n_bj``
    their number and ``K_b`` a grid of 8 concentrations spanning the bin (the bracket is concave in
    kappa). ``c_bj`` is the expected largest cosine between the query and ``n_bj`` items that deviate
    isotropically from the centroid (``mu_g = rho nu + sqrt(1 - rho^2) w``, ``w^T u ~ N(0, 1/(d-1))``
    for a unit ``u`` orthogonal to ``nu``, and ``E max`` of ``n`` standard normals ``~ sqrt(2 ln n)``).
    The ``kl_probe`` cells of largest estimate are scanned: for a broad query (small
    ``A_d(k_q)``) these are the low-kappa bins of many directions, for a concentrated one the cells
    around its direction. Near-duplicates of the query beat the isotropic model (a query drawn from a
    gallery item has cosine 0.95 to it), so the ``kl_near`` mu-cells closest to the query are always
    scanned, in every kappa-bin (they count towards ``kl_probe``).

    **Cosine, ELK and SSW** use an IVF on ``mu`` over the same k-means cells (``n_probe`` cells of
    largest centroid cosine) that stores ``mu`` as 8-bit codes (faiss scalar quantiser, a quarter of
    the memory and, at 10^6 items and d = 256, half the scan time of float32 for the same agreement);
    its ``shortlist`` items of largest approximate ``mu``-cosine are re-ranked exactly.
    The ELK ``log int f_q f_g = log C_d(k_q) + log C_d(k_g) - log C_d(||k_q mu_q + k_g mu_g||)`` has no
    inner-product form: its last term couples query and item through the norm of their sum inside a
    non-linear function. For fixed concentrations both ELK and (in expectation) SSW increase with
    ``mu_q^T mu_g``, which is what makes a cosine shortlist a sensible prefilter for them. SSW samples
    are drawn for the shortlist only.

    Parameters
    ----------
    loc : Tensor (G, d), kappa : Tensor (G,)
        The gallery: finite unit rows and finite concentrations > 0. Stored on the CPU in float32
        (no copy if already so); re-ranking of closed-form scores is done in float64 from them.
    index : "ivf" | "flat" | "hnsw"
        ``flat``: exhaustive inner products, so the KL shortlist is exact up to float32 rounding
        and its re-ranked top-k the exhaustive one. ``ivf``: as above, the one for 10^5-10^6 items.
        ``hnsw``: graph indexes (Malkov & Yashunin 2018), inner product on ``mu`` and L2 on the
        reduction of ``x_g`` above (queries scaled to norm ``M``); slow to build at 10^6 on few cores.
    distances : the distances to prepare: ``"kl"`` builds the KL index, any other the ``mu`` index.
    n_lists : k-means cells of ``mu`` (default ``round(sqrt(G))``).
    n_kappa_bins : kappa-bins of the KL index (default 8).
    n_probe : mu-cells scanned for cosine / ELK / SSW (default 40 % of ``n_lists``).
    kl_probe : cells of the KL index scanned (default 20 % of its ``n_lists * n_kappa_bins``; on the
        benchmark, 10^6 items, d = 64: top-10 agreement 0.979 / 0.994 / 0.997 / 0.998 at 6 / 12.5 /
        19 / 25 %; cosine, 10^6, d = 64: 0.991 / 0.998 / 1.000 with 25 / 37.5 / 50 % of mu-cells).
        Both defaults rise to the share of cells that holds about 16,384 items on small galleries
        (all of a 10^4 gallery), whose cells are small and their statistics noisy; below ~10^5
        items exhaustive search is about as fast anyway. Both are attributes of the built index.
    kl_near : mu-cells nearest the query scanned in every kappa-bin (default 4).
    hnsw_m, ef_search : HNSW graph degree and search breadth (``ef_search`` is raised to the shortlist).
    seed : seeds the k-means subsample.

    Memory: the float32 gallery plus what the indexes store: ``G (d + 1)`` float32 for KL and, for
    ``mu``, ``G d`` bytes (ivf) or float32 (flat, hnsw): 2.3 GB for 10^6 items at d = 256 with both
    ivf indexes. Indexes are filled in chunks of 65,536 rows, so no full-size temporary is made.
    """

    def __init__(self, loc: Tensor, kappa: Tensor, index: str = "ivf", distances: Sequence[str] = DISTANCES,
                 n_lists: int | None = None, n_kappa_bins: int = 8, n_probe: int | None = None,
                 kl_probe: int | None = None, kl_near: int = 4, hnsw_m: int = 32, ef_search: int = 128, seed: int = 0):
        import faiss  # optional dependency for large galleries

        check_vmf_rows(loc, kappa, "GalleryIndex gallery")
        if index not in _INDEX_KINDS:
            raise ValueError(f"index must be one of {_INDEX_KINDS}, got {index!r}")
        distances = tuple(distances)
        if not distances or not set(distances) <= set(DISTANCES):
            raise ValueError(f"distances must be a non-empty subset of {DISTANCES}, got {distances}")
        self.loc = loc.detach().to("cpu", torch.float32).contiguous()
        self.kappa = kappa.detach().to("cpu", torch.float32).contiguous()
        self.kind, self.distances = index, distances
        self.ef_search = ef_search
        size, d = self.loc.shape
        log_c = vmf_log_normalizer(d, self.kappa.double())
        self._log_c_shift = float(log_c.max())
        need_mu, need_kl = any(x != "kl" for x in distances), "kl" in distances
        if index == "ivf":
            self.mu_index = self.kl_index = None
            self._build_ivf(faiss, log_c, n_lists, n_kappa_bins, n_probe, kl_probe, kl_near, seed, need_mu, need_kl)
            return
        if index == "flat":
            self.mu_index = faiss.IndexFlatIP(d) if need_mu else None
            self.kl_index = faiss.IndexFlatIP(d + 1) if need_kl else None
        else:
            self.mu_index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT) if need_mu else None
            if need_kl:  # an L2 graph on the MIPS -> NN reduction: every stored row gets the norm M
                self._kl_radius = max(float((self._kl_rows(slice(s, s + _ROW_CHUNK), log_c) ** 2).sum(1).max())
                                      for s in range(0, size, _ROW_CHUNK)) ** 0.5
                self.kl_index = faiss.IndexHNSWFlat(d + 2, hnsw_m)
        for s in range(0, size, _ROW_CHUNK):
            rows = slice(s, s + _ROW_CHUNK)
            if need_mu:
                self.mu_index.add(self.loc[rows].numpy())
            if need_kl:
                self.kl_index.add(self._stored_kl_rows(rows, log_c))

    @staticmethod
    def kl_gallery_vectors(loc: Tensor, kappa: Tensor) -> Tensor:
        """``x_g = [kappa mu ; log C_d(kappa)]`` in float64: (G, d), (G,) -> (G, d + 1)."""
        loc, kappa = loc.double(), kappa.double()
        return torch.cat([kappa[:, None] * loc, vmf_log_normalizer(loc.shape[1], kappa)[:, None]], 1)

    @staticmethod
    def kl_query_vectors(loc: Tensor, kappa: Tensor) -> Tensor:
        """``y_q = [A_d(kappa) mu ; 1]`` in float64: (Q, d), (Q,) -> (Q, d + 1).

        ``<x_g, y_q> = -KL(q || g) + log C_d(kappa_q) + kappa_q A_d(kappa_q)`` (class docstring).
        """
        loc, kappa = loc.double(), kappa.double()
        mean = bessel_iv_ratio(0.5 * loc.shape[1] - 1.0, kappa)[:, None] * loc
        return torch.cat([mean, torch.ones_like(kappa)[:, None]], 1)

    def _kl_rows(self, rows: slice, log_c: Tensor) -> Tensor:
        """``x_g`` of the gallery ``rows`` with the last coordinate shifted, float64 (n, d + 1)."""
        return torch.cat([self.kappa[rows, None].double() * self.loc[rows].double(),
                          (log_c[rows] - self._log_c_shift)[:, None]], 1)

    def _stored_kl_rows(self, rows: slice, log_c: Tensor):
        """The rows as faiss stores them, float32 numpy (n, d + 1); for HNSW with ``sqrt(M^2 - ||x_g||^2)`` appended."""
        x = self._kl_rows(rows, log_c)
        if self.kind == "hnsw":
            x = torch.cat([x, (self._kl_radius ** 2 - (x * x).sum(1)).clamp_min(0).sqrt()[:, None]], 1)
        return x.float().numpy()

    def _build_ivf(self, faiss, log_c: Tensor, n_lists, n_bins: int, n_probe, kl_probe, kl_near: int, seed: int,
                   need_mu: bool, need_kl: bool) -> None:
        size, d = self.loc.shape
        n_lists = int(n_lists or max(1, round(size ** 0.5)))
        if not 1 <= n_lists <= size:
            raise ValueError(f"n_lists must be in [1, {size}] (the gallery size), got {n_lists}")
        if n_bins < 1 or kl_near < 0:
            raise ValueError(f"n_kappa_bins must be >= 1 and kl_near >= 0, got {n_bins} and {kl_near}")
        g = torch.Generator().manual_seed(seed)
        train = self.loc[torch.randperm(size, generator=g)[: min(size, 64 * n_lists)]]
        kmeans = faiss.Kmeans(d, n_lists, niter=10, seed=seed, spherical=True, max_points_per_centroid=64)
        kmeans.train(train.numpy())
        self._quantizer = faiss.IndexFlatIP(d)
        self._quantizer.add(kmeans.centroids)
        self._centroids = torch.from_numpy(kmeans.centroids).double()
        cell = torch.empty(size, dtype=torch.int64)
        rho = torch.empty(size, dtype=torch.float64)
        for s in range(0, size, _ROW_CHUNK):
            rows = slice(s, s + _ROW_CHUNK)
            cell[rows] = torch.from_numpy(self._quantizer.search(self.loc[rows].numpy(), 1)[1][:, 0])
            rho[rows] = (self.loc[rows].double() * self._centroids[cell[rows]]).sum(1)
        self.n_lists, self.n_kappa_bins, self.kl_near = n_lists, n_bins, kl_near
        share = min(1.0, _MIN_SCAN / size)  # small galleries have small cells, whose statistics are noisier
        self.n_probe = n_probe or math.ceil(n_lists * max(0.4, share))
        self.kl_probe = kl_probe or math.ceil(n_lists * n_bins * max(0.2, share))
        if need_mu:  # 8-bit codes of mu (per-dimension ranges from the k-means sample; the quantizer is trained)
            self.mu_index = faiss.IndexIVFScalarQuantizer(self._quantizer, d, n_lists, faiss.ScalarQuantizer.QT_8bit,
                                                          faiss.METRIC_INNER_PRODUCT, False)
            self.mu_index.train(train.numpy())
            for s in range(0, size, _ROW_CHUNK):
                x, a = self.loc[s:s + _ROW_CHUNK].numpy(), cell[s:s + _ROW_CHUNK].numpy()
                self.mu_index.add_core(len(x), faiss.swig_ptr(x), None, faiss.swig_ptr(a))
        if not need_kl:
            return
        # kappa-bins of equal count; cell (b, j) has list number b * n_lists + j
        log_k = self.kappa.double().log()
        sorted_k = log_k.sort().values
        kbin = torch.bucketize(log_k, sorted_k[torch.arange(1, n_bins) * size // n_bins], right=True)
        lists = kbin * n_lists + cell
        counts = torch.bincount(lists, minlength=n_bins * n_lists).double()
        self._kl_empty = (counts == 0).view(n_bins, n_lists)
        self._kl_rho = (torch.zeros(n_bins * n_lists, dtype=torch.float64).index_add_(0, lists, rho)
                        / counts.clamp_min(1)).view(n_bins, n_lists)
        self._kl_spread = ((1 - self._kl_rho ** 2).clamp_min(0) * 2 * counts.clamp_min(1).log().view(n_bins, n_lists)
                           / (d - 1)).sqrt()
        lo = torch.full((n_bins,), math.inf, dtype=torch.float64).scatter_reduce(0, kbin, log_k, "amin")
        hi = torch.full((n_bins,), -math.inf, dtype=torch.float64).scatter_reduce(0, kbin, log_k, "amax")
        lo, hi = torch.where(torch.isfinite(lo), lo, 0.0), torch.where(torch.isfinite(hi), hi, 0.0)  # empty bins
        steps = torch.linspace(0, 1, _KAPPA_GRID, dtype=torch.float64)
        self._kl_grid = (lo[:, None] + (hi - lo)[:, None] * steps).exp()  # (B, _KAPPA_GRID)
        self._kl_grid_log_c = vmf_log_normalizer(d, self._kl_grid) - self._log_c_shift
        # the lists are probed by the cell ranking above (search_preassigned): the quantizer stays empty
        self.kl_index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d + 1), d + 1, n_bins * n_lists,
                                           faiss.METRIC_INNER_PRODUCT)
        self.kl_index.is_trained = True
        for s in range(0, size, _ROW_CHUNK):
            x, a = self._stored_kl_rows(slice(s, s + _ROW_CHUNK), log_c), lists[s:s + _ROW_CHUNK].numpy()
            self.kl_index.add_core(len(x), faiss.swig_ptr(x), None, faiss.swig_ptr(a))

    def __len__(self) -> int:
        return self.loc.shape[0]

    def _kl_cells(self, q_loc: Tensor, mean_length: Tensor) -> Tensor:
        """Lists of the KL index to scan, (Q, kl_probe) int64, from the cell estimates of the class docstring."""
        n_cells = self.n_kappa_bins * self.n_lists
        out = []
        for s in range(0, len(q_loc), _QUERY_CHUNK):
            c = (q_loc[s:s + _QUERY_CHUNK] @ self._centroids.T).clamp(-1, 1)  # (q, L)
            cos = (self._kl_rho[None] * c[:, None] + self._kl_spread[None] * (1 - c ** 2).sqrt()[:, None]).clamp(-1, 1)
            slope = mean_length[s:s + _QUERY_CHUNK, None, None, None] * self._kl_grid[None, :, None, :]
            est = (self._kl_grid_log_c[None, :, None, :] + slope * cos[..., None]).amax(-1)  # (q, B, L)
            near = c.topk(min(self.kl_near, self.n_lists), dim=1).indices
            est.scatter_(2, near[:, None, :].expand(-1, self.n_kappa_bins, -1), math.inf)
            est[:, self._kl_empty] = -math.inf
            out.append(est.flatten(1).topk(min(self.kl_probe, n_cells), dim=1).indices)
        return torch.cat(out)

    def _candidates(self, q_loc: Tensor, q_kappa: Tensor, shortlist: int, distance: str) -> Tensor:
        """Prefilter: candidate gallery indices (Q, shortlist), -1 where fewer were found."""
        if distance == "kl":
            y = self.kl_query_vectors(q_loc, q_kappa)
            if self.kind == "ivf":
                cells = self._kl_cells(q_loc, y[:, :-1].norm(dim=1))
                self.kl_index.nprobe = cells.shape[1]
                _, ids = self.kl_index.search_preassigned(y.float().numpy(), shortlist, cells.numpy(),
                                                          torch.zeros(cells.shape).numpy())
                return torch.from_numpy(ids)
            if self.kind == "hnsw":  # the query [y; 0] on the sphere of radius M: L2 order = inner-product order
                y = F.pad(y, (0, 1)) * (self._kl_radius / y.norm(dim=1, keepdim=True))
            y, index = y.float().numpy(), self.kl_index
        else:
            y = q_loc.float().numpy()
            index = self.mu_index
            if self.kind == "ivf":
                index.nprobe = self.n_probe
        if self.kind == "hnsw":
            index.hnsw.efSearch = max(self.ef_search, shortlist)
        return torch.from_numpy(index.search(y, shortlist)[1])

    def search(self, query: Sequence[tuple[Tensor, Tensor]], k: int = 10, shortlist: int = 200,
               distance: str = "kl", **score_kwargs) -> tuple[Tensor, Tensor]:
        """Top-``k`` gallery indices (Q, k) int64 and their scores (Q, k) float64 for each fused query.

        query : list of (loc (Q, d), kappa (Q,)), one per modality, fused by :func:`fuse_vmf_product`.
        shortlist : candidates taken from the prefilter and re-ranked exactly by :func:`score`
        (in float64 for the closed forms); ``score_kwargs`` go to :func:`score` (SSW settings).
        Where fewer than ``k`` candidates were found the rows end with index -1 and score -inf.
        """
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        if distance not in self.distances:
            raise ValueError(f"distance {distance!r} was not prepared: this index was built for {self.distances}")
        if not 1 <= k <= shortlist:
            raise ValueError(f"need 1 <= k <= shortlist, got k={k} and shortlist={shortlist}")
        if not query:
            raise ValueError("a query needs at least one modality")
        for i, (q_loc, q_kappa) in enumerate(query):
            check_vmf_rows(q_loc, q_kappa, f"GalleryIndex.search query modality {i}", d=self.loc.shape[1])
        if len({int(q[0].shape[0]) for q in query}) != 1:
            raise ValueError("every query modality must hold the same items, got row counts "
                             f"{[len(q[0]) for q in query]}")
        q_loc, q_kappa = fuse_vmf_product([q[0].detach().cpu().double() for q in query],
                                          [q[1].detach().cpu().double() for q in query])
        cand = self._candidates(q_loc, q_kappa, min(shortlist, len(self)), distance)
        return self._rerank(q_loc, q_kappa, cand, k, distance, score_kwargs)

    def _rerank(self, q_loc: Tensor, q_kappa: Tensor, cand: Tensor, k: int, distance: str,
                score_kwargs: dict) -> tuple[Tensor, Tensor]:
        """Exact top-k of each query's candidates (Q, S) (-1 = none) with :func:`score`.

        Closed forms are scored in float64 against the union of the candidates of a few queries
        at a time, so the Bessel functions are evaluated once per step, not once per query
        (``mmkit.core.special`` has a fixed cost per call); ELK evaluates one per pair, hence smaller
        steps. SSW goes query by query on its own shortlist (samples drawn for the shortlist only).
        """
        top_ids = torch.full((len(q_loc), k), -1, dtype=torch.int64)
        top_scores = torch.full((len(q_loc), k), -math.inf, dtype=torch.float64)
        step = _RERANK_STEP[distance]
        dtype = torch.float32 if distance == "ssw" else torch.float64
        for s in range(0, len(q_loc), step):
            c = cand[s:s + step]
            union, where = torch.unique(c.clamp_min(0), return_inverse=True)
            scores = score([(q_loc[s:s + step].to(dtype), q_kappa[s:s + step].to(dtype))],
                           (self.loc[union].to(dtype), self.kappa[union].to(dtype)), distance=distance, **score_kwargs)
            scores = scores.double().gather(1, where).masked_fill(c < 0, -math.inf)
            best = scores.topk(min(k, c.shape[1]), dim=1)
            found = best.values > -math.inf
            top_ids[s:s + step, :best.indices.shape[1]] = torch.where(found, c.gather(1, best.indices), -1)
            top_scores[s:s + step, :best.indices.shape[1]] = best.values
        return top_ids, top_scores
