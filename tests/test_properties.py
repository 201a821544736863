"""Property-based tests (hypothesis) of the vMF and circle/sphere OT invariants."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmkit.core.distributions import VonMisesFisher
from mmkit.core.ssw import random_stiefel_projections, sliced_wasserstein_sphere, wasserstein_circle

pytestmark = pytest.mark.reliability

coords = st.lists(st.floats(0.0, 1.0, exclude_max=True, allow_nan=False), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(u=coords, v=coords, shift=st.floats(0.0, 1.0, exclude_max=True), p=st.sampled_from([1.0, 2.0]))
def test_circle_distance_is_symmetric_rotation_invariant_and_bounded(u, v, shift, p):
    tu, tv = torch.tensor(u, dtype=torch.float64), torch.tensor(v, dtype=torch.float64)
    w = wasserstein_circle(tu, tv, p=p).item()
    assert 0.0 <= w <= 0.5**p + 1e-12
    assert math.isclose(w, wasserstein_circle(tv, tu, p=p).item(), abs_tol=1e-12)
    rot = wasserstein_circle(torch.remainder(tu + shift, 1.0), torch.remainder(tv + shift, 1.0), p=p).item()
    assert math.isclose(w, rot, abs_tol=1e-9)
    assert wasserstein_circle(tu, tu, p=p).item() < 1e-12


@settings(max_examples=30, deadline=None)
@given(d=st.integers(2, 64), log_kappa=st.floats(-3.0, 5.0), seed=st.integers(0, 2**16))
def test_vmf_samples_are_unit_vectors_with_finite_densities(d, log_kappa, seed):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    loc = torch.nn.functional.normalize(torch.randn(3, d, generator=g, dtype=torch.float64), dim=-1)
    dist = VonMisesFisher(loc, torch.full((3,), 10.0**log_kappa, dtype=torch.float64))
    z = dist.rsample((5,))
    assert ((z.norm(dim=-1) - 1).abs() < 1e-12).all()
    assert torch.isfinite(dist.log_prob(z)).all() and torch.isfinite(dist.entropy()).all()


@settings(max_examples=25, deadline=None)
@given(d=st.integers(2, 12), n=st.integers(1, 8), m=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_ssw_is_symmetric_and_invariant_under_orthogonal_maps(d, n, m, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(m, d, generator=g, dtype=torch.float64), dim=-1)
    proj = random_stiefel_projections(d, 10, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    base = sliced_wasserstein_sphere(x, y, projections=proj).item()
    assert math.isclose(base, sliced_wasserstein_sphere(y, x, projections=proj).item(), abs_tol=1e-12)
    moved = sliced_wasserstein_sphere(x @ q.T, y @ q.T, projections=q @ proj).item()
    assert math.isclose(base, moved, abs_tol=1e-9)
