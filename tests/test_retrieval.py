"""Distributional retrieval scores against independent computations, fusion, and the faiss path."""
import math

import pytest
import torch
from torch.distributions import kl_divergence

from mmkit.core.distributions import VonMisesFisher, vmf_log_normalizer
from mmkit.retrieval.index import GalleryIndex
from mmkit.retrieval.scores import elk_scores, kl_scores, score, ssw_scores
from mmkit.retrieval.tasks import evaluate_tasks
from mmkit.vocab import parse_task
from mmkit.core.special import bessel_iv_ratio
from mmkit.core.ssw import random_stiefel_projections, sliced_wasserstein_sphere


def vmfs(n, d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    loc = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1)
    kappa = torch.exp(torch.empty(n, dtype=dtype).uniform_(0.0, 5.0, generator=g))
    return loc, kappa


def test_kl_scores_match_registered_kl():
    (ql, qk), (gl, gk) = vmfs(3, 7, 0), vmfs(4, 7, 1)
    s = kl_scores(ql, qk, gl, gk)
    for i in range(3):
        for j in range(4):
            ref = kl_divergence(VonMisesFisher(ql[i], qk[i]), VonMisesFisher(gl[j], gk[j]))
            assert math.isclose(-s[i, j].item(), ref.item(), rel_tol=1e-10, abs_tol=1e-12)


def test_elk_matches_numerical_integral_on_s2():
    (ql, qk), (gl, gk) = vmfs(1, 3, 2), vmfs(1, 3, 3)
    theta = torch.linspace(0, math.pi, 1201, dtype=torch.float64)
    phi = torch.linspace(0, 2 * math.pi, 1201, dtype=torch.float64)[:-1]
    th, ph = torch.meshgrid(theta, phi, indexing="ij")
    pts = torch.stack([th.sin() * ph.cos(), th.sin() * ph.sin(), th.cos()], -1)
    f = (VonMisesFisher(ql[0], qk[0]).log_prob(pts) + VonMisesFisher(gl[0], gk[0]).log_prob(pts)).exp() * th.sin()
    integral = torch.trapezoid(f, theta, dim=0).sum() * (2 * math.pi / 1200)
    assert math.isclose(elk_scores(ql, qk, gl, gk).item(), math.log(integral.item()), rel_tol=1e-6)


def test_ssw_scores_match_a_brute_force_loop():
    g = torch.Generator().manual_seed(4)
    qs = torch.nn.functional.normalize(torch.randn(3, 6, 5, generator=g, dtype=torch.float64), dim=-1)
    gs = torch.nn.functional.normalize(torch.randn(7, 6, 5, generator=g, dtype=torch.float64), dim=-1)
    proj = random_stiefel_projections(5, 12, generator=g, dtype=torch.float64)
    got = ssw_scores(qs, gs, proj)
    for i in range(3):
        for j in range(7):
            assert math.isclose(-got[i, j].item(), sliced_wasserstein_sphere(qs[i], gs[j], projections=proj).item(),
                                abs_tol=1e-14)


@pytest.mark.parametrize("distance", ["ssw", "kl", "elk", "cosine"])
def test_score_is_deterministic_and_ranks_true_items_first(distance):
    loc, _ = vmfs(30, 16, 5, dtype=torch.float32)
    kappa = torch.full((30,), 200.0)
    s1 = score([(loc, kappa)], (loc, kappa), distance=distance, n_samples=16, n_projections=30, seed=3)
    s2 = score([(loc, kappa)], (loc, kappa), distance=distance, n_samples=16, n_projections=30, seed=3)
    assert torch.equal(s1, s2)
    assert (s1.argmax(1) == torch.arange(30)).all()


def test_pooled_fusion_and_errors():
    loc, _ = vmfs(10, 8, 6, dtype=torch.float32)
    kappa = torch.full((10,), 100.0)
    s = score([(loc, kappa), (loc, kappa)], (loc, kappa), distance="ssw", fusion="pooled", n_samples=16)
    assert s.shape == (10, 10) and (s.argmax(1) == torch.arange(10)).all()
    with pytest.raises(ValueError, match="pooled"):
        score([(loc, kappa)], (loc, kappa), distance="kl", fusion="pooled")
    with pytest.raises(ValueError, match="distance"):
        score([(loc, kappa)], (loc, kappa), distance="l2")
    with pytest.raises(ValueError, match="same items"):
        score([(loc, kappa), (loc[:5], kappa[:5])], (loc, kappa))
    assert parse_task("A&T->I") == (("audio", "text"), "image")
    with pytest.raises(ValueError, match="form"):
        parse_task("A->X")


def test_faiss_prefilter_against_exhaustive_search():
    loc, kappa = vmfs(2000, 16, 7, dtype=torch.float32)
    q_loc, q_kappa = loc[:20] + 0.1 * torch.randn(20, 16), kappa[:20]
    q_loc = torch.nn.functional.normalize(q_loc, dim=-1)
    exhaustive = score([(q_loc, q_kappa)], (loc, kappa), distance="kl").topk(10).indices
    flat = GalleryIndex(loc, kappa, index="flat")
    ids, _ = flat.search([(q_loc, q_kappa)], k=10, shortlist=2000, distance="kl")
    assert torch.equal(ids.sort(1).values, exhaustive.sort(1).values)  # full shortlist: exact
    hnsw = GalleryIndex(loc, kappa, index="hnsw")
    ids, _ = hnsw.search([(q_loc, q_kappa)], k=10, shortlist=400, distance="kl")
    overlap = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ids, exhaustive)) / (20 * 10)
    assert overlap >= 0.95


def clustered_vmfs(n, d, seed, n_clusters=40):
    """float32 unit mu around random centres and kappa log-uniform in [1, 1000] (KL ranking != cosine ranking)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(n_clusters, d, generator=g), dim=-1)
    which = torch.randint(0, n_clusters, (n,), generator=g)
    loc = torch.nn.functional.normalize(centres[which] + 0.3 * torch.randn(n, d, generator=g), dim=-1)
    kappa = torch.exp(torch.empty(n).uniform_(0.0, math.log(1000.0), generator=g))
    q = min(n, 40)
    q_loc = torch.nn.functional.normalize(loc[:q] + 0.2 * torch.randn(q, d, generator=g), dim=-1)
    return loc, kappa, q_loc, kappa[:q].flip(0)


@pytest.mark.parametrize("d", [7, 130])  # Bessel order below and above the Debye threshold
def test_kl_augmented_inner_product_is_minus_kl_plus_a_constant(d):
    (ql, qk), (gl, gk) = vmfs(5, d, 10), vmfs(300, d, 11)
    gk = gk * 20.0
    ip = GalleryIndex.kl_query_vectors(ql, qk) @ GalleryIndex.kl_gallery_vectors(gl, gk).T
    neg_kl = kl_scores(ql, qk, gl, gk)
    const = ip - neg_kl  # (5, 300): must not depend on the gallery item
    assert (const - const[:, :1]).abs().max() < 1e-9 * (1 + neg_kl.abs().max())
    a_q = torch.tensor([bessel_iv_ratio(0.5 * d - 1, k[None]).item() for k in qk], dtype=torch.float64)
    assert torch.allclose(const[:, 0], vmf_log_normalizer(d, qk) + qk * a_q, rtol=1e-10, atol=1e-9)
    assert torch.equal(ip.argsort(1), neg_kl.argsort(1))


def test_gallery_index_flat_returns_the_exhaustive_top_k():
    loc, kappa, q_loc, q_kappa = clustered_vmfs(3000, 16, 12)
    gallery64, query64 = (loc.double(), kappa.double()), [(q_loc.double(), q_kappa.double())]
    index = GalleryIndex(loc, kappa, index="flat")
    for distance, shortlist in (("kl", 30), ("cosine", 30), ("elk", 3000)):
        ref = score(query64, gallery64, distance=distance).topk(10)
        ids, scores = index.search([(q_loc, q_kappa)], k=10, shortlist=shortlist, distance=distance)
        assert torch.equal(ids, ref.indices), distance
        assert torch.allclose(scores, ref.values, rtol=1e-12, atol=1e-12), distance
    # the KL top-10 is not a cosine top-30: a mu-cosine shortlist of that size would miss items
    cos_top = score(query64, gallery64, distance="cosine").topk(30).indices
    kl_top = score(query64, gallery64, distance="kl").topk(10).indices
    assert any(not set(a.tolist()) <= set(b.tolist()) for a, b in zip(kl_top, cos_top))


def test_gallery_index_ivf_and_hnsw_agree_with_exhaustive_search():
    loc, kappa, q_loc, q_kappa = clustered_vmfs(6000, 16, 13)

    def overlap(ids, distance):
        exact = score([(q_loc.double(), q_kappa.double())], (loc.double(), kappa.double()), distance=distance)
        return sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ids, exact.topk(10).indices)) / ids.numel()

    # a quarter of the 40 x 4 KL cells, half of the 40 mu-cells
    ivf = GalleryIndex(loc, kappa, index="ivf", distances=("kl", "cosine", "elk"), n_lists=40, n_kappa_bins=4,
                       kl_probe=40, n_probe=20)
    ids, scores = ivf.search([(q_loc, q_kappa)], k=10, shortlist=50)
    assert overlap(ids, "kl") >= 0.95
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    for distance in ("cosine", "elk"):
        assert overlap(ivf.search([(q_loc, q_kappa)], k=10, shortlist=300, distance=distance)[0], distance) >= 0.95
    hnsw = GalleryIndex(loc, kappa, index="hnsw", distances=("kl",))
    assert overlap(hnsw.search([(q_loc, q_kappa)], k=10, shortlist=200)[0], "kl") >= 0.95


def test_gallery_index_pads_when_the_gallery_is_smaller_than_k():
    loc, kappa, q_loc, q_kappa = clustered_vmfs(6, 8, 14, n_clusters=2)
    ids, scores = GalleryIndex(loc, kappa, index="flat").search([(q_loc[:3], q_kappa[:3])], k=8, shortlist=8)
    assert (ids[:, 6:] == -1).all() and torch.isinf(scores[:, 6:]).all()
    assert torch.equal(ids[:, :6].sort(1).values, torch.arange(6).expand(3, 6))


def test_gallery_index_rejects_bad_inputs():
    loc, kappa, q_loc, q_kappa = clustered_vmfs(200, 8, 15, n_clusters=4)
    nan_loc = loc.clone()
    nan_loc[3, 0] = float("nan")
    for bad_loc, bad_kappa, match in ((nan_loc, kappa, "non-finite.*row 3"), (loc * 2, kappa, "unit"),
                                      (loc, kappa.clone().index_fill_(0, torch.tensor([5]), 0.0), "kappa.*> 0.*row 5"),
                                      (loc, kappa.clone().index_fill_(0, torch.tensor([5]), float("nan")), "kappa"),
                                      (loc, kappa[:-1], "kappa \\(N,\\)"), (loc[:, :1], kappa, "d >= 2")):
        with pytest.raises(ValueError, match=match):
            GalleryIndex(bad_loc, bad_kappa, index="flat")
    with pytest.raises(TypeError, match="floating"):
        GalleryIndex(loc, torch.ones(200, dtype=torch.int64), index="flat")
    with pytest.raises(ValueError, match="index must be"):
        GalleryIndex(loc, kappa, index="lsh")
    with pytest.raises(ValueError, match="distances"):
        GalleryIndex(loc, kappa, index="flat", distances=("l2",))
    with pytest.raises(ValueError, match="n_lists"):
        GalleryIndex(loc, kappa, index="ivf", n_lists=201)
    index = GalleryIndex(loc, kappa, index="flat", distances=("kl",))
    with pytest.raises(ValueError, match="not prepared"):
        index.search([(q_loc, q_kappa)], distance="cosine")
    with pytest.raises(ValueError, match="shortlist"):
        index.search([(q_loc, q_kappa)], k=20, shortlist=10)
    with pytest.raises(ValueError, match="dimension 7, the gallery has 8"):
        index.search([(torch.nn.functional.normalize(q_loc[:, :7], dim=-1), q_kappa)])
    with pytest.raises(ValueError, match="query modality 1.*kappa"):
        index.search([(q_loc, q_kappa), (q_loc, -q_kappa)])
    with pytest.raises(ValueError, match="same items"):
        index.search([(q_loc, q_kappa), (q_loc[:5], q_kappa[:5])])


def test_evaluate_tasks_with_distributional_distance():
    loc, _ = vmfs(25, 12, 8, dtype=torch.float32)
    params = {m: (loc, torch.full((25,), 300.0)) for m in ("audio", "image", "text")}
    present = {m: torch.ones(25, dtype=torch.bool) for m in params}
    out = evaluate_tasks(params, present, distance="ssw", n_samples=8, n_projections=20, return_ranks=True)
    assert len(out) == 9 and all(v["R@1"] == 100.0 for v in out.values())
    assert out["A&T->I"]["ranks"].shape == (25,)


def test_as_published_ranking_is_ssw_with_the_reference_defects_only():
    """score(as_published=True) (the study's E8, descriptive): the reference sampler and circle W_1,
    reproducible for a seed, different from the correct SSW ranking; other distances refuse it."""
    from mmkit.core.published import PublishedVonMisesFisher
    from mmkit.core.ssw import random_stiefel_projections
    from mmkit.retrieval.scores import score, ssw_scores

    g = torch.Generator().manual_seed(3)
    loc = torch.nn.functional.normalize(torch.randn(6, 16, generator=g, dtype=torch.float64), dim=-1)
    kappa = torch.full((6,), 60.0, dtype=torch.float64)
    got = score([(loc, kappa)], (loc, kappa), distance="ssw", n_samples=8, n_projections=10, seed=4, as_published=True)
    draws = []
    for seed in (5, 105):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            draws.append(PublishedVonMisesFisher(loc, kappa).sample((8,)).transpose(0, 1))
    proj = random_stiefel_projections(16, 10, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    # (the single-modality "fusion" renormalises loc: equal to rounding)
    torch.testing.assert_close(got, ssw_scores(*draws, proj, as_published=True), rtol=0, atol=1e-12)
    assert not torch.allclose(got, score([(loc, kappa)], (loc, kappa), distance="ssw", n_samples=8, n_projections=10,
                                         seed=4))
    with pytest.raises(ValueError, match="distance='ssw'"):
        score([(loc, kappa)], (loc, kappa), distance="kl", as_published=True)
