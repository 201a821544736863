"""Loss values on hand-made cases and against brute-force loops; gradients finite in float32."""
import itertools
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from mmkit.core.distributions import VonMisesFisher
from mmkit.vocab import MODALITY_PAIRS
from mmkit.model.losses import (gaussian_kl_to_standard, match_log_probabilities, product_of_gaussians, sampled_infonce_loss, soft_contrastive_loss, ssw_loss)
from mmkit.core.ssw import random_stiefel_projections, sliced_wasserstein_sphere


def unit(*shape, dtype=torch.float64):
    x = torch.randn(*shape, dtype=dtype)
    return x / x.norm(dim=-1, keepdim=True)


def vmf_samples(mu, kappa, n):
    """(B, d), (B,) -> (B, n, d)."""
    return VonMisesFisher(mu, kappa).rsample((n,)).transpose(0, 1)


def test_ssw_loss_zero_for_identical_samples_and_positive_otherwise(seeded):
    z = vmf_samples(unit(8, 16), torch.full((8,), 30.0, dtype=torch.float64), 16)
    assert ssw_loss({"audio": z, "image": z, "text": z}).item() == 0.0
    other = vmf_samples(unit(8, 16), torch.full((8,), 30.0, dtype=torch.float64), 16)
    assert ssw_loss({"audio": z, "image": other, "text": z}).item() > 0.05


def test_ssw_loss_is_the_mean_of_the_three_pair_distances(seeded):
    b, n, d = 5, 6, 8
    s = {m: vmf_samples(unit(b, d), torch.full((b,), 5.0, dtype=torch.float64), n) for m in ("audio", "image", "text")}
    proj = random_stiefel_projections(d, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = sum(sliced_wasserstein_sphere(s[a], s[c], projections=proj).mean()
                   for a, c in (("audio", "image"), ("image", "text"), ("text", "audio"))) / 3
    assert torch.allclose(ssw_loss(s, projections=proj), expected)


def test_ssw_loss_masks_missing_modalities(seeded):
    b, n, d = 6, 4, 5
    s = {m: vmf_samples(unit(b, d), torch.full((b,), 5.0, dtype=torch.float64), n) for m in ("audio", "image", "text")}
    present = {"audio": torch.tensor([1, 1, 0, 1, 1, 1], dtype=torch.bool),
               "image": torch.ones(b, dtype=torch.bool), "text": torch.zeros(b, dtype=torch.bool)}
    proj = random_stiefel_projections(d, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    keep = present["audio"].nonzero().squeeze(-1)
    got = ssw_loss(s, present=present, projections=proj, reduction="pairs")
    assert list(got) == [("audio", "image")]  # pairs with text have no complete item
    ref = sliced_wasserstein_sphere(s["audio"][keep], s["image"][keep], projections=proj).mean()
    assert torch.allclose(got[("audio", "image")], ref)


def test_debiased_ssw_removes_the_noise_floor(seeded):
    """Two independent sample sets of the same vMF: plain L_S has a positive floor; the debiased
    estimate averages to ~0 (within 5 SE over items)."""
    b, n, d = 400, 32, 32
    mu, kappa = unit(b, d), torch.full((b,), 30.0, dtype=torch.float64)
    x, y = vmf_samples(mu, kappa, n), vmf_samples(mu, kappa, n)
    proj = random_stiefel_projections(d, 50, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    plain = sliced_wasserstein_sphere(x[:, :16], y[:, :16], projections=proj)
    assert plain.mean().item() > 0.03  # METHOD.md: ~0.066 at kappa = 30, d = 32
    per_item = (sliced_wasserstein_sphere(x[:, :16], y[:, :16], projections=proj)
                - 0.5 * (sliced_wasserstein_sphere(x[:, :16], x[:, 16:], projections=proj)
                         + sliced_wasserstein_sphere(y[:, :16], y[:, 16:], projections=proj)))
    total = ssw_loss({"audio": x, "image": y}, projections=proj, debiased=True)
    assert torch.allclose(total, per_item.mean())
    assert abs(per_item.mean().item()) < 5 * per_item.std().item() / math.sqrt(b)
    with pytest.raises(ValueError, match="even"):
        ssw_loss({"audio": x[:, :3], "image": y[:, :3]}, debiased=True)


def test_match_probability_against_loop():
    x, y = torch.randn(3, 2, 4, dtype=torch.float64), torch.randn(2, 3, 4, dtype=torch.float64)
    a, b = torch.tensor(2.0, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    log_p, log_not = match_log_probabilities(x, y, a, b)
    for i, j in itertools.product(range(3), range(2)):
        p = sum(torch.sigmoid(-a * (x[i, k] - y[j, l]).norm() + b) for k in range(2) for l in range(3)) / 6
        assert math.isclose(log_p[i, j].exp().item(), p.item(), rel_tol=1e-12)
        assert math.isclose(log_not[i, j].exp().item(), 1 - p.item(), rel_tol=1e-12)


def test_soft_contrastive_against_loop_and_swapped_pairs_raise_it(seeded):
    b, j, d = 6, 3, 8
    mu = unit(b, d)
    x = vmf_samples(mu, torch.full((b,), 50.0, dtype=torch.float64), j)
    y = vmf_samples(mu, torch.full((b,), 50.0, dtype=torch.float64), j)
    a, s = torch.tensor(5.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)
    loss = soft_contrastive_loss(x, y, a, s)
    log_p, log_not = match_log_probabilities(x, y, a, s)
    ref = -sum((log_p[i, k] if i == k else log_not[i, k]) for i in range(b) for k in range(b)) / b**2
    assert math.isclose(loss.item(), ref.item(), rel_tol=1e-12)
    swapped = soft_contrastive_loss(x, y.roll(1, 0), a, s)
    assert swapped.item() > loss.item() + 0.5


def test_sampled_infonce_against_loop_and_swapped_pairs_raise_it(seeded):
    b, j, d = 5, 4, 8
    mu = unit(b, d)
    x = vmf_samples(mu, torch.full((b,), 40.0, dtype=torch.float64), j)
    y = vmf_samples(mu, torch.full((b,), 40.0, dtype=torch.float64), j)
    tau = torch.tensor(10.0, dtype=torch.float64)
    loss = sampled_infonce_loss(x, y, tau)
    ref = 0.0
    for k in range(j):
        logits = tau * x[:, k] @ y[:, k].T
        ref += 0.5 * (torch.nn.functional.cross_entropy(logits, torch.arange(b))
                      + torch.nn.functional.cross_entropy(logits.T, torch.arange(b))) / j
    assert math.isclose(loss.item(), ref.item(), rel_tol=1e-12)
    assert sampled_infonce_loss(x, y.roll(2, 0), tau).item() > loss.item() + 1.0


@pytest.mark.parametrize("kind", ["ssw", "pcme", "infonce"])
def test_gradients_finite_float32_over_kappa_range(kind, seeded):
    b, d = 17, 32
    kappa = torch.logspace(-3, 5, b, dtype=torch.float32).requires_grad_()
    locs = {m: unit(b, d, dtype=torch.float32).requires_grad_() for m in ("audio", "image", "text")}
    s = {m: VonMisesFisher(locs[m], kappa).rsample((8,)).transpose(0, 1) for m in locs}
    if kind == "ssw":
        loss = ssw_loss(s, n_projections=20)
    elif kind == "pcme":
        loss = sum(soft_contrastive_loss(s[a], s[c], torch.tensor(5.0), torch.tensor(1.0)) for a, c in MODALITY_PAIRS)
    else:
        loss = sum(sampled_infonce_loss(s[a], s[c], torch.tensor(20.0)) for a, c in MODALITY_PAIRS)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(kappa.grad).all() and all(torch.isfinite(v.grad).all() for v in locs.values())


def test_gaussian_helpers_against_closed_forms():
    mean, log_var = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    ref = kl_divergence(Normal(mean, (0.5 * log_var).exp()), Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(gaussian_kl_to_standard(mean, log_var), ref)
    m1, m2 = torch.tensor([[1.0]]), torch.tensor([[3.0]])
    lv1, lv2 = torch.tensor([[math.log(1.0)]]), torch.tensor([[math.log(3.0)]])
    m, lv = product_of_gaussians([m1, m2], [lv1, lv2])
    # precisions 1 and 1/3: mean (1 + 1) / (4/3) = 1.5, variance 3/4
    assert math.isclose(m.item(), 1.5, rel_tol=1e-6) and math.isclose(lv.exp().item(), 0.75, rel_tol=1e-6)


def test_loss_bad_shapes():
    with pytest.raises(ValueError, match=r"\(B, J, d\)"):
        soft_contrastive_loss(torch.zeros(3, 4), torch.zeros(3, 1, 4), torch.tensor(1.0), torch.tensor(0.0))
    with pytest.raises(ValueError, match="same items"):
        soft_contrastive_loss(torch.zeros(3, 1, 4), torch.zeros(2, 1, 4), torch.tensor(1.0), torch.tensor(0.0))
    with pytest.raises(ValueError, match="embedding dimension"):
        sampled_infonce_loss(torch.zeros(3, 1, 4), torch.zeros(3, 1, 5), torch.tensor(1.0))
