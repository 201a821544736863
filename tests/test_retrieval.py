"""Distributional retrieval scores against independent computations, fusion, and the faiss path."""
import math

import pytest
import torch
from torch.distributions import kl_divergence

from mmkit.distributions import VonMisesFisher
from mmkit.retrieval import (
    GalleryIndex,
    elk_scores,
    evaluate_tasks,
    kl_scores,
    parse_task,
    score,
    ssw_scores,
)
from mmkit.ssw import random_stiefel_projections, sliced_wasserstein_sphere


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


def test_evaluate_tasks_with_distributional_distance():
    loc, _ = vmfs(25, 12, 8, dtype=torch.float32)
    params = {m: (loc, torch.full((25,), 300.0)) for m in ("audio", "image", "text")}
    present = {m: torch.ones(25, dtype=torch.bool) for m in params}
    out = evaluate_tasks(params, present, distance="ssw", n_samples=8, n_projections=20, return_ranks=True)
    assert len(out) == 9 and all(v["R@1"] == 100.0 for v in out.values())
    assert out["A&T->I"]["ranks"].shape == (25,)
