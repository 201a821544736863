"""PCME++ (Chun, ICLR 2024): the closed-form sampled distance against Monte Carlo, the loss against a
direct NumPy re-computation, pseudo-positives on a hand-made case, gradients to the variances,
CSD ranking with composed queries, and a short training run evaluated on all nine tasks."""
import itertools
import math

import numpy as np
import pytest
import torch

from mmkit.analysis.evaluate import evaluate_run
from mmkit.data import load_bundle, make_synthetic_bundle
from mmkit.model.config import ConfigError, TrainConfig
from mmkit.model.losses import (TrainingObjective, closed_form_sampled_distance, gaussian_kl_to_standard, pcmepp_loss,
                                pseudo_positive_targets)
from mmkit.retrieval.scores import score
from mmkit.training.loop import fit
from mmkit.vocab import (GAUSSIAN_METHODS, METHOD_LABELS, METHODS, PAPER_TASKS, family, ranking_distance, task_name,
                         tasks_for_method)


def test_csd_is_the_expected_squared_distance_between_samples(seeded):
    """CSD = E||z_x - z_y||^2 for independent draws: a Monte-Carlo mean of 200,000 pairs per item
    pair agrees within 4 standard errors, for unequal, anisotropic variances."""
    n, m, d, draws = 3, 2, 5, 200_000
    mx, my = torch.randn(n, d, dtype=torch.float64), torch.randn(m, d, dtype=torch.float64)
    lx, ly = torch.randn(n, d, dtype=torch.float64), torch.randn(m, d, dtype=torch.float64)
    csd = closed_form_sampled_distance(mx, lx, my, ly)
    assert csd.shape == (n, m)
    for i, j in itertools.product(range(n), range(m)):
        zx = mx[i] + (0.5 * lx[i]).exp() * torch.randn(draws, d, dtype=torch.float64)
        zy = my[j] + (0.5 * ly[j]).exp() * torch.randn(draws, d, dtype=torch.float64)
        sq = ((zx - zy) ** 2).sum(-1)
        se = sq.std().item() / math.sqrt(draws)
        assert abs(sq.mean().item() - csd[i, j].item()) < 4 * se, (i, j, sq.mean().item(), csd[i, j].item(), se)
    # chunking over rows changes nothing
    assert torch.allclose(closed_form_sampled_distance(mx, lx, my, ly, chunk=1), csd, rtol=0, atol=1e-12)


def _numpy_pcmepp(mx, lx, my, ly, a, b, alpha):
    """The PCME++ matching loss written out with loops (float64)."""
    bsz = len(mx)
    dist = np.array([[np.sum((mx[i] - my[j]) ** 2) + np.sum(np.exp(lx[i])) + np.sum(np.exp(ly[j]))
                      for j in range(bsz)] for i in range(bsz)])

    def bce(logits, targets):
        p = 1.0 / (1.0 + np.exp(-logits))
        return -np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p))

    total = 0.0
    for dmat in (dist, dist.T):  # x -> y, then y -> x
        logits = -a * dmat + b
        eye = np.eye(bsz)
        pp = np.array([[1.0 if dmat[i, j] <= dmat[i, i] else 0.0 for j in range(bsz)] for i in range(bsz)])
        total += bce(logits, eye) + alpha * bce(logits, pp)
    return total


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.7])
def test_pcmepp_loss_against_numpy_loops(alpha):
    g = torch.Generator().manual_seed(3)
    bsz, d = 5, 3
    mx, my = torch.randn(bsz, d, generator=g, dtype=torch.float64), torch.randn(bsz, d, generator=g, dtype=torch.float64)
    lx, ly = (torch.randn(bsz, d, generator=g, dtype=torch.float64) - 2 for _ in range(2))
    a, b = 1.7, 3.0
    got = pcmepp_loss(mx, lx, my, ly, torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), alpha)
    ref = _numpy_pcmepp(mx.numpy(), lx.numpy(), my.numpy(), ly.numpy(), a, b, alpha)
    assert math.isclose(got.item(), ref, rel_tol=1e-12)
    if alpha:  # this batch has pseudo-positives, so the term is not the plain loss rescaled
        plain = _numpy_pcmepp(mx.numpy(), lx.numpy(), my.numpy(), ly.numpy(), a, b, 0.0)
        assert not math.isclose(got.item(), plain * (1 + alpha), rel_tol=1e-6)


def test_pseudo_positives_on_a_hand_made_batch():
    """x: (0,0), (5,0), (0,5); y: (1,0), (5,0), (0.5,0); equal variances. Row 0's positive y0 is 1
    away, y2 only 0.25: a pseudo-positive. Column 2 (query y2 = (0.5, 0)): its positive x2 is at
    25.25, x0 at 0.25 and x1 at 20.25: both pseudo-positives."""
    mx = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]], dtype=torch.float64)
    my = torch.tensor([[1.0, 0.0], [5.0, 0.0], [0.5, 0.0]], dtype=torch.float64)
    lv = torch.full((3, 2), math.log(0.01), dtype=torch.float64)
    dist = closed_form_sampled_distance(mx, lv, my, lv)
    rows = torch.tensor([[1, 0, 1], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
    cols = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 1]], dtype=torch.float64)
    assert torch.equal(pseudo_positive_targets(dist), rows)
    assert torch.equal(pseudo_positive_targets(dist.T), cols)
    # a wide y2 (variance 0.5 per dimension: CSD + 1) is no longer closer to x0 than y0 is
    wide = lv.clone()
    wide[2] = math.log(0.5)
    assert pseudo_positive_targets(closed_form_sampled_distance(mx, lv, my, wide))[0].tolist() == [1, 0, 0]
    with pytest.raises(ValueError, match="square"):
        pseudo_positive_targets(dist[:2])


def test_gradients_reach_the_variances_and_are_finite_in_float32(seeded):
    bsz, d = 16, 32
    means = [torch.nn.functional.normalize(torch.randn(bsz, d), dim=-1).requires_grad_() for _ in range(2)]
    log_vars = [torch.linspace(-12, 3, bsz)[:, None].repeat(1, d).requires_grad_() for _ in range(2)]
    loss = pcmepp_loss(means[0], log_vars[0], means[1], log_vars[1], torch.tensor(5.0), torch.tensor(5.0), 0.1)
    loss.backward()
    assert torch.isfinite(loss)
    for t in (*means, *log_vars):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    # float64 gradcheck (away from ties of the pseudo-positive selection)
    g = torch.Generator().manual_seed(1)
    args = [torch.randn(4, 3, generator=g, dtype=torch.float64).requires_grad_() for _ in range(4)]
    assert torch.autograd.gradcheck(
        lambda *t: pcmepp_loss(*t, torch.tensor(2.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)),
        args)


def test_objective_combines_pairs_and_vib(seeded):
    bsz, d = 6, 4
    outputs = {m: (torch.randn(bsz, d, dtype=torch.float64), torch.randn(bsz, d, dtype=torch.float64) - 1)
               for m in ("audio", "image", "text")}
    present = {"audio": torch.tensor([1, 1, 1, 0, 1, 1], dtype=torch.bool), "image": torch.ones(bsz, dtype=torch.bool),
               "text": torch.ones(bsz, dtype=torch.bool)}
    objective = TrainingObjective("pcmepp", vib_weight=0.01, pseudo_positive_weight=0.2).double()
    terms = objective(outputs, present)
    a, b = torch.tensor(5.0, dtype=torch.float64), torch.tensor(5.0, dtype=torch.float64)  # the initial a, b
    pairs = []
    for x, y in (("audio", "image"), ("image", "text"), ("text", "audio")):
        rows = present[x] & present[y]
        pairs.append(pcmepp_loss(outputs[x][0][rows], outputs[x][1][rows], outputs[y][0][rows], outputs[y][1][rows],
                                 a, b, 0.2))
    l_c = sum(pairs) / 3
    vib = sum(gaussian_kl_to_standard(*outputs[m])[present[m]].mean() for m in outputs) / 3
    assert torch.allclose(terms["L_C"], l_c) and torch.allclose(terms["VIB"], vib)
    assert torch.allclose(terms["loss"], l_c + 0.01 * vib)
    with pytest.raises(ValueError, match="pseudo_positive_weight"):
        TrainingObjective("pcmepp", pseudo_positive_weight=-0.1)
    with pytest.raises(ConfigError, match="pseudo_positive_weight"):
        TrainConfig(method="pcmepp", pseudo_positive_weight=math.inf)


def test_vocabulary_and_csd_ranking_with_a_composed_query():
    assert "pcmepp" in METHODS and "pcmepp" in GAUSSIAN_METHODS and METHOD_LABELS["pcmepp"] == "PCME++"
    assert family("pcmepp") == "gaussian" and tasks_for_method("pcmepp") == PAPER_TASKS
    assert [ranking_distance(m, "ssw") for m in ("pcmepp", "pcme", "mpc", "proposed")] == ["csd", "cosine", "cosine",
                                                                                          "ssw"]
    with pytest.raises(ValueError, match="distance"):
        ranking_distance("proposed", "csd")
    g = torch.Generator().manual_seed(4)
    q1, q2, gal = ((torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g,
                                                                                    dtype=torch.float64))
                   for _ in range(3))
    got = score([q1, q2], gal, distance="csd")
    # the product of the two query Gaussians, per dimension, then -E||z_q - z_g||^2 by loops
    p1, p2 = (-q1[1]).exp(), (-q2[1]).exp()
    fused_mean, fused_var = (p1 * q1[0] + p2 * q2[0]) / (p1 + p2), 1.0 / (p1 + p2)
    for i, j in itertools.product(range(3), range(3)):
        ref = ((fused_mean[i] - gal[0][j]) ** 2).sum() + fused_var[i].sum() + gal[1][j].exp().sum()
        assert math.isclose(got[i, j].item(), -ref.item(), rel_tol=1e-12)
    with pytest.raises(ValueError, match="pooled"):
        score([q1, q2], gal, distance="csd", fusion="pooled")
    with pytest.raises(ValueError, match="same shape"):
        score([(q1[0], q1[1][:, 0])], gal, distance="csd")
    with pytest.raises(ValueError, match="distance must be one of"):
        score([q1], gal, distance="wasserstein")


def test_pcmepp_trains_and_is_evaluated_on_all_nine_tasks(tmp_path):
    """Three short epochs (the settings of tests/test_train.py); ranked by CSD on the validation
    split, the pair and composed tasks are found at 2.5 x chance R@10 or better (measured 36-44 %)."""
    bundle = make_synthetic_bundle(tmp_path / "b", n_items=(384, 96, 96), dims={"audio": 32, "image": 48, "text": 24},
                                   seed=3)
    config = TrainConfig(method="pcmepp", seed=1, epochs=3, batch_size=64, hidden=64, dim=16)
    summary = fit(config, load_bundle(bundle), tmp_path / "run", progress=False, data_spec=str(bundle))
    hist = summary["history"]
    assert hist[-1]["loss"] < hist[0]["loss"]
    result = evaluate_run(tmp_path / "run", split="val", store=False)
    assert result["method"] == "pcmepp" and result["distance"] == "csd"
    assert list(result["tasks"]) == [task_name(q, t) for q, t in PAPER_TASKS]
    for name in ("T->I", "I->T", "A&T->I"):
        assert result["tasks"][name]["R@10"] >= 2.5 * result["tasks"][name]["chance"]["R@10"], result["tasks"][name]
