"""R-Precision and mAP@R (many-to-many relevance): hand-computed galleries, a brute-force oracle over
every order of the tied items, numpy/torch agreement and input validation."""
import itertools
from fractions import Fraction

import numpy as np
import pytest
import torch

from mmkit.core.metrics import bootstrap_difference, map_at_r, r_precision


def _orders(scores):
    """Every order of the gallery consistent with ``scores`` (descending; tied items in any order)."""
    for perm in itertools.permutations(range(len(scores))):
        if all(scores[a] >= scores[b] for a, b in zip(perm, perm[1:])):
            yield perm


def _brute_force(scores, relevant):
    """(R-Precision, mAP@R) of one query straight from the definitions, averaged exactly over all
    equally likely orders of its tied items."""
    R = sum(relevant)
    rp, ap, orders = Fraction(0), Fraction(0), 0
    for perm in _orders(scores):
        rel = [bool(relevant[j]) for j in perm[:R]]
        rp += Fraction(sum(rel), R)
        ap += sum(Fraction(sum(rel[:i + 1]), i + 1) for i in range(R) if rel[i]) / R
        orders += 1
    return float(rp / orders), float(ap / orders)


def test_known_answers_without_ties():
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5],
                       [0.9, 0.8, 0.7, 0.6, 0.5],
                       [0.1, 0.2, 0.3, 0.4, 0.5]])
    relevant = np.array([[True, False, True, False, True],    # R = 3: top 3 = T F T
                         [False, False, False, True, True],   # R = 2: top 2 = F F
                         [True, True, False, False, False]])  # R = 2: order 4 3 2 1 0: top 2 = F F
    # R-P: 2/3, 0, 0.  mAP@R: (1/1 + 0 + 2/3) / 3 = 5/9, 0, 0
    assert np.allclose(r_precision(scores, relevant), [2 / 3, 0.0, 0.0])
    assert np.allclose(map_at_r(scores, relevant), [5 / 9, 0.0, 0.0])
    # R = 3, top 3 = F T T: R-P 2/3, mAP@R (0 + 1/2 + 2/3) / 3 = 7/18
    s = np.array([[0.9, 0.8, 0.7, 0.6]])
    assert np.allclose(map_at_r(s, np.array([[False, True, True, True]])), [7 / 18])
    # R = 2, top 2 = F T: R-P 1/2, mAP@R (0 + 1/2) / 2 = 1/4
    assert np.allclose(map_at_r(s, np.array([[False, True, True, False]])), [1 / 4])
    # all R relevant first: both 1, whatever follows
    assert np.allclose(map_at_r(s, np.array([[True, True, False, False]])), [1.0])
    assert np.allclose(r_precision(s, np.array([[True, True, True, True]])), [1.0])


def test_ties_are_not_resolved_in_favour_of_relevant_items():
    # positions: 0.9 (F), then a tie {T, F} straddling the cut R = 2, then 0.1 (T)
    scores = np.array([[0.9, 0.5, 0.5, 0.1]])
    relevant = np.array([[False, True, False, True]])
    # expected relevant in the top 2: 0 + 1/2 -> R-P = 1/4 (optimistic 1/2, pessimistic 0)
    assert np.allclose(r_precision(scores, relevant), [0.25])
    # orders F T F T (P(2) = 1/2 -> AP 1/4) and F F T T (AP 0) equally likely -> 1/8
    assert np.allclose(map_at_r(scores, relevant), [0.125])
    # a collapsed model scores chance: R-P = R / G for every query, whichever items are relevant
    rel = np.eye(6, dtype=bool) | np.eye(6, k=1, dtype=bool)
    assert np.allclose(r_precision(np.zeros((6, 6)), rel), rel.sum(1) / 6)
    # the result does not depend on where the relevant items sit inside a tie
    assert np.allclose(map_at_r(np.zeros((6, 6)), rel), map_at_r(np.zeros((6, 6)), rel[:, ::-1]))


def test_oracle_over_every_tie_breaking_order():
    rng = np.random.default_rng(0)
    q, g = 60, 6
    scores = rng.integers(0, 3, size=(q, g)).astype(np.float32)  # many ties
    scores[:10] = rng.normal(size=(10, g))                        # and some rows without ties
    relevant = rng.random((q, g)) < 0.4
    relevant[np.arange(q), rng.integers(0, g, size=q)] = True     # R >= 1
    want = np.array([_brute_force(scores[i], relevant[i]) for i in range(q)])
    assert np.allclose(r_precision(scores, relevant), want[:, 0], atol=1e-12)
    assert np.allclose(map_at_r(scores, relevant), want[:, 1], atol=1e-12)


def test_numpy_and_torch_agree_and_keep_their_library():
    rng = np.random.default_rng(1)
    scores = np.round(rng.normal(size=(40, 30)), 1)
    relevant = rng.random((40, 30)) < 0.2
    relevant[:, 0] = True
    for fn in (r_precision, map_at_r):
        a = fn(scores, relevant)
        b = fn(torch.from_numpy(scores).float(), torch.from_numpy(relevant))
        assert isinstance(a, np.ndarray) and a.shape == (40,) and a.dtype == np.float64
        assert isinstance(b, torch.Tensor) and b.dtype == torch.float64
        assert np.allclose(a, b.numpy(), atol=1e-12)  # float32 rounding keeps the same ties here
        assert ((a >= 0) & (a <= 1)).all()


def test_one_relevant_item_reduces_to_the_top1_hit():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(50, 20))
    target = rng.integers(0, 20, size=50)
    relevant = np.zeros((50, 20), dtype=bool)
    relevant[np.arange(50), target] = True
    hit = (scores.argmax(1) == target).astype(float)
    assert np.array_equal(r_precision(scores, relevant), hit) and np.array_equal(map_at_r(scores, relevant), hit)
    assert 0 < hit.sum() < 50  # both outcomes occur
    # with ties (the module's average rule), R = 1 gives the share of the top tie group that is relevant
    assert np.allclose(map_at_r(np.array([[1.0, 1.0, 1.0, 0.0]]), np.array([[False, True, False, False]])), [1 / 3])


def test_input_validation():
    s, rel = np.zeros((2, 3)), np.ones((2, 3), dtype=bool)
    with pytest.raises(TypeError, match="both be numpy arrays or both torch tensors"):
        r_precision(torch.zeros(2, 3), rel)
    with pytest.raises(ValueError, match=r"shape \(Q, G\)"):
        map_at_r(np.zeros(3), np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="shape of scores"):
        r_precision(s, rel[:, :2])
    with pytest.raises(ValueError, match="boolean"):
        r_precision(s, rel.astype(int))
    with pytest.raises(ValueError, match="NaN or inf"):
        map_at_r(np.array([[np.nan, 0.0, 0.0], [0.0, 0.0, 0.0]]), rel)
    with pytest.raises(ValueError, match="query 1 .*no relevant gallery item"):
        r_precision(s, np.array([[True, False, False], [False, False, False]]))


def test_tasks_with_text_get_many_to_many_metrics_in_the_right_orientation():
    from mmkit.retrieval.tasks import evaluate_tasks

    # four items on the axes, every modality equal; caption 0 describes items 0 and 1
    loc = torch.eye(4)
    params = {m: (loc, torch.full((4,), 5.0)) for m in ("audio", "image", "text")}
    present = {m: torch.ones(4, dtype=torch.bool) for m in params}
    truth = torch.eye(4, dtype=torch.bool)
    truth[0, 1] = True
    out = evaluate_tasks(params, present, text_relevance=truth)
    # T->I, caption 0: item 0 first (relevant), then {1, 2, 3} tied with one relevant in one slot:
    # R-P = (1 + 1/3) / 2 = 2/3, mAP@R = (1 + (1/3)(1 + 1) / 2) / 2 = 2/3; the other queries 1 -> mean 11/12
    # I->T, item 1: its captions are 0 and 1, the same tie -> 2/3 as well
    for task in ("T->I", "I->T", "A&T->I", "T->A", "A->T"):
        assert out[task]["RP"] == pytest.approx(11 / 12) and out[task]["mAP@R"] == pytest.approx(11 / 12)
    assert "RP" not in out["A->I"] and "mAP@R" not in out["I->A"]
    plain = evaluate_tasks(params, present)
    assert all(set(v) == {"R@1", "R@5", "R@10", "R@15", "MRR", "MR", "n"} for v in plain.values())
    assert all(plain[t][k] == out[t][k] for t in plain for k in plain[t])  # one-to-one metrics unchanged

    # random embeddings and an asymmetric truth: text as query uses truth rows, text as gallery its columns
    g = torch.Generator().manual_seed(3)
    n = 30
    locs = {m: torch.nn.functional.normalize(torch.randn(n, 6, generator=g), dim=-1) for m in params}
    params = {m: (locs[m], torch.full((n,), 5.0)) for m in params}
    present = {m: torch.ones(n, dtype=torch.bool) for m in params}
    present["audio"][:4] = False
    truth = (torch.rand(n, n, generator=g) < 0.15) | torch.eye(n, dtype=torch.bool)
    out = evaluate_tasks(params, present, tasks=[(("text",), "image"), (("image",), "text"), (("audio",), "text")],
                         return_ranks=True, text_relevance=truth)
    t2i = locs["text"] @ locs["image"].T
    assert torch.allclose(out["T->I"]["RP_per_query"], r_precision(t2i, truth))
    assert torch.allclose(out["I->T"]["mAP@R_per_query"], map_at_r(t2i.T, truth.T))
    keep = torch.arange(4, n)
    a2t = locs["audio"][keep] @ locs["text"][keep].T
    assert torch.allclose(out["A->T"]["RP_per_query"], r_precision(a2t, truth[keep][:, keep].T))
    assert out["A->T"]["RP"] == pytest.approx(float(r_precision(a2t, truth[keep][:, keep].T).mean()))
    with pytest.raises(ValueError, match=r"text_relevance must be a \(30, 30\) bool"):
        evaluate_tasks(params, present, text_relevance=truth[:5, :5])


def test_bootstrap_difference_of_per_query_values():
    a = torch.tensor([0.5, 1.0, 0.25, 1.0] * 25, dtype=torch.float64)
    out = bootstrap_difference(a, a - 0.125, n_resamples=300)  # every resample differs by exactly 1/8
    assert out["difference"] == pytest.approx(0.125) and out["ci_low"] == pytest.approx(0.125)
    assert out["ci_high"] == pytest.approx(0.125) and out["p_value"] == 0.0
    same = bootstrap_difference(a, a, n_resamples=50)
    assert same["difference"] == 0.0 and same["p_value"] == 1.0
    with pytest.raises(ValueError, match="same queries"):
        bootstrap_difference(a, a[:3])
