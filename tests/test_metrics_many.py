"""R-Precision and mAP@R (many-to-many relevance): hand-computed galleries, a brute-force oracle over
every order of the tied items, numpy/torch agreement and input validation."""
import itertools
from fractions import Fraction

import numpy as np
import pytest
import torch

from mmkit.core.metrics import map_at_r, r_precision


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
