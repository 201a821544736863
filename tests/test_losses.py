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


@pytest.mark.parametrize("kappa", [5.0, 30.0, 300.0])
def test_debiased_ssw_is_zero_in_expectation_for_equal_distributions(seeded, kappa):
    """Equal vMFs, independent full-size sample sets X, X' and Y, Y' (L = 16 each): the plain L_S
    has a positive floor (METHOD.md: ~0.066 at kappa = 30, d = 32); the debiased estimate
    SSW(X,Y) - SSW(X,X')/2 - SSW(Y,Y')/2 averages to 0 within 4 standard errors over 400 items."""
    b, n, d = 400, 16, 32
    mu, k = unit(b, d), torch.full((b,), kappa, dtype=torch.float64)
    x, x2, y, y2 = (vmf_samples(mu, k, n) for _ in range(4))
    proj = random_stiefel_projections(d, 50, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    plain = sliced_wasserstein_sphere(x, y, projections=proj)
    per_item = plain - 0.5 * (sliced_wasserstein_sphere(x, x2, projections=proj)
                              + sliced_wasserstein_sphere(y, y2, projections=proj))
    se_plain = plain.std().item() / math.sqrt(b)
    assert plain.mean().item() > 10 * se_plain  # the noise floor of the plain estimate
    assert abs(per_item.mean().item()) < 4 * per_item.std().item() / math.sqrt(b)
    total = ssw_loss({"audio": x, "image": y}, projections=proj, independent={"audio": x2, "image": y2})
    assert torch.allclose(total, per_item.mean())


def test_debiased_ssw_is_positive_and_grows_with_the_angle_between_means(seeded):
    """Two vMFs (kappa = 100, d = 16) whose means are theta apart: the debiased L_S is > 0 and
    increases with theta (means over 200 items, each step far beyond the Monte-Carlo error)."""
    b, n, d = 200, 16, 16
    k = torch.full((b,), 100.0, dtype=torch.float64)
    e1 = unit(b, d)
    ortho = torch.randn(b, d, dtype=torch.float64)
    ortho = torch.nn.functional.normalize(ortho - (ortho * e1).sum(-1, keepdim=True) * e1, dim=-1)  # ⟂ e1
    proj = random_stiefel_projections(d, 50, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    values = []
    for theta in (0.2, 0.5, 1.0, 2.0):
        mu2 = math.cos(theta) * e1 + math.sin(theta) * ortho
        x, x2, y, y2 = vmf_samples(e1, k, n), vmf_samples(e1, k, n), vmf_samples(mu2, k, n), vmf_samples(mu2, k, n)
        values.append(ssw_loss({"audio": x, "image": y}, projections=proj,
                               independent={"audio": x2, "image": y2}).item())
    assert values[0] > 0 and all(a < b for a, b in zip(values, values[1:])), values


def test_debiased_ssw_checks_its_second_sample_set(seeded):
    x = vmf_samples(unit(3, 4), torch.full((3,), 5.0, dtype=torch.float64), 6)
    with pytest.raises(ValueError, match=r"independent\['image'\] must be a second sample set"):
        ssw_loss({"audio": x, "image": x}, independent={"audio": x, "image": x[:, :3]})


def _step_and_its_draws(sampler, draws: int, **options):
    """One objective step on fixed vMF outputs (B = 8, d = 6, L = 4, T = 5; global seed 11,
    projection seed 1) and the same ``draws`` samples per vMF made directly with ``sampler``.
    Returns (objective, terms, drawn {m: (B, draws, d)}, projections, (outputs, present))."""
    from mmkit.model.losses import TrainingObjective

    b, d = 8, 6
    outputs = {m: (unit(b, d).float(), torch.full((b,), 20.0)) for m in ("audio", "image", "text")}
    present = {m: torch.ones(b, dtype=torch.bool) for m in outputs}
    objective = TrainingObjective("proposed", n_samples=4, n_projections=5, **options)
    torch.manual_seed(11)
    terms = objective(outputs, present, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(11)
    drawn = {m: sampler(loc, k, validate_args=False).rsample((draws,)).transpose(0, 1)
             for m, (loc, k) in outputs.items()}
    proj = random_stiefel_projections(d, 5, generator=torch.Generator().manual_seed(1))
    return objective, terms, drawn, proj, (outputs, present)


def test_debiased_objective_draws_a_second_full_size_set(seeded):
    """With debiased_ssw the objective draws 2L samples per vMF: L for L_C and the cross term, an
    independent L for the self-terms; without it the draws (and so the loss) are unchanged."""
    _, t_plain, _, _, _ = _step_and_its_draws(VonMisesFisher, 4)
    _, t_deb, drawn, proj, _ = _step_and_its_draws(VonMisesFisher, 8, debiased_ssw=True)
    expected = ssw_loss({m: x[:, :4] for m, x in drawn.items()}, projections=proj,
                        independent={m: x[:, 4:] for m, x in drawn.items()})
    assert torch.allclose(t_deb["L_S"], expected)
    assert not torch.allclose(t_plain["L_S"], t_deb["L_S"])


def test_as_published_objective_samples_and_measures_like_the_reference_code(seeded):
    """With as_published (the study's E8) the objective draws with the reference sampler and L_S
    uses the reference circle W_1: the same draws and projections give exactly that L_S, and L_C
    differs from the correct sampler's."""
    from mmkit.core.published import PublishedVonMisesFisher

    objective, terms, drawn, proj, _ = _step_and_its_draws(PublishedVonMisesFisher, 4, as_published=True)
    assert torch.equal(terms["L_S"], ssw_loss(drawn, projections=proj, as_published=True))
    assert not torch.allclose(terms["L_S"], ssw_loss(drawn, projections=proj))
    plain, t_plain, _, _, _ = _step_and_its_draws(VonMisesFisher, 4)
    assert torch.equal(plain.log_inverse_temperature, objective.log_inverse_temperature)  # same L_C parameters
    assert not torch.allclose(t_plain["L_C"], terms["L_C"])


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
