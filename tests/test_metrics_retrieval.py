"""Metrics on hand-computed rankings (with ties) and the product-of-vMF fusion."""
import math

import pytest
import torch

from mmkit.core.distributions import VonMisesFisher
from mmkit.core.metrics import ranks_from_scores, summarize_ranks
from mmkit.vocab import PAPER_TASKS, task_name
from mmkit.retrieval.tasks import evaluate_tasks
from mmkit.retrieval.scores import fuse_vmf_product


def test_ranks_with_the_average_tie_rule():
    scores = torch.tensor([[0.9, 0.1, 0.5],    # true 0 best -> 1
                           [0.7, 0.2, 0.7],    # true 1 worst -> 3
                           [0.4, 0.4, 0.4]])   # all tied: 1 + 2/2 = 2
    assert ranks_from_scores(scores).tolist() == [1.0, 3.0, 2.0]
    ranks = ranks_from_scores(torch.tensor([[0.5, 0.5, 0.1], [0.2, 0.9, 0.9]]), targets=torch.tensor([1, 2]))
    assert ranks.tolist() == [1.5, 1.5]


def test_summary_values():
    s = summarize_ranks(torch.tensor([1.0, 2.0, 6.0, 20.0], dtype=torch.float64))
    assert s["R@1"] == 25.0 and s["R@5"] == 50.0 and s["R@10"] == 75.0 and s["R@15"] == 75.0
    assert math.isclose(s["MRR"], (1 + 0.5 + 1 / 6 + 1 / 20) / 4)
    assert s["MR"] == 4.0


def test_metric_input_errors():
    with pytest.raises(ValueError, match=r"\(Q, G\)"):
        ranks_from_scores(torch.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        ranks_from_scores(torch.tensor([[float("nan"), 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="targets"):
        ranks_from_scores(torch.zeros(2, 2), targets=torch.tensor([0, 5]))


def test_product_of_vmfs_matches_the_density_product():
    d = 5
    g = torch.Generator().manual_seed(0)
    mus = [torch.nn.functional.normalize(torch.randn(1, d, generator=g, dtype=torch.float64), dim=-1) for _ in range(2)]
    kappas = [torch.tensor([3.0], dtype=torch.float64), torch.tensor([7.0], dtype=torch.float64)]
    loc, kappa = fuse_vmf_product(mus, kappas)
    assert torch.allclose(kappa * loc, 3.0 * mus[0] + 7.0 * mus[1])
    # log f1 + log f2 - log f* is constant over the sphere
    z = torch.nn.functional.normalize(torch.randn(6, d, generator=g, dtype=torch.float64), dim=-1)
    logs = sum(VonMisesFisher(m, k).log_prob(z) for m, k in zip(mus, kappas)) - VonMisesFisher(loc, kappa).log_prob(z)
    assert torch.allclose(logs, logs[0].expand_as(logs))


def test_task_names_and_perfect_retrieval():
    assert [task_name(q, t) for q, t in PAPER_TASKS] == ["A->I", "T->I", "A&T->I", "A->T", "I->T", "A&I->T",
                                                         "I->A", "T->A", "I&T->A"]
    loc = torch.nn.functional.normalize(torch.randn(20, 8), dim=-1)
    params = {m: (loc, torch.full((20,), 5.0)) for m in ("audio", "image", "text")}
    present = {m: torch.ones(20, dtype=torch.bool) for m in params}
    present["audio"][:5] = False
    out = evaluate_tasks(params, present)
    assert out["A->I"]["n"] == 15 and out["T->I"]["n"] == 20
    assert all(v["R@1"] == 100.0 for v in out.values())
