"""Circle W_p and spherical sliced-Wasserstein against POT's exact solver ot.emd2 (geodesic cost
matrix) and POT's sliced_wasserstein_sphere with the same projections, plus invariances."""
import math

import numpy as np
import ot
import pytest
import torch

from mmkit.core.ssw import (_gram_schmidt_2, _wp_bisection, circle_coordinates, random_stiefel_projections, sliced_w1_matrix, sliced_wasserstein_sphere, wasserstein_circle)

P_VALUES = [1.0, 1.5, 2.0, 3.0]


def emd_circle(u, v, p, a=None, b=None):
    """Exact W_p^p by linear programming with the geodesic cost on [0, 1)."""
    u, v = np.asarray(u, dtype=float), np.asarray(v, dtype=float)
    a = np.full(len(u), 1 / len(u)) if a is None else np.asarray(a, dtype=float)
    b = np.full(len(v), 1 / len(v)) if b is None else np.asarray(b, dtype=float)
    gap = np.abs(u[:, None] - v[None, :])
    return ot.emd2(a, b, np.minimum(gap, 1 - gap) ** p)


def t64(x):
    return torch.as_tensor(np.asarray(x, dtype=float), dtype=torch.float64)


def unit(*shape, dtype=torch.float64, generator=None):
    x = torch.randn(*shape, dtype=dtype, generator=generator)
    return x / x.norm(dim=-1, keepdim=True)


# ------------------------------------------------------------------------------------------
# wasserstein_circle
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", P_VALUES)
def test_delta_03_vs_06(p):
    assert math.isclose(wasserstein_circle(t64([0.3]), t64([0.6]), p=p).item(), 0.3**p, rel_tol=1e-12)
    # across 0: the short way round is 0.2
    assert math.isclose(wasserstein_circle(t64([0.1]), t64([0.9]), p=p).item(), 0.2**p, rel_tol=1e-12)


def _cases(rng):
    yield "random", rng.random(7), rng.random(7)
    yield "n != m", rng.random(3), rng.random(11)
    yield "single atoms", rng.random(1), rng.random(4)
    yield "atoms at 0", np.r_[0.0, rng.random(5)], np.r_[0.0, 0.0, rng.random(2)]
    yield "duplicated atoms", np.repeat(rng.random(3), 3), np.repeat(rng.random(2), [4, 1])
    yield "wrap-around", np.r_[0.95, 0.97, 0.99], np.r_[0.01, 0.02, 0.04, 0.5]
    yield "identical", np.r_[0.2, 0.4], np.r_[0.4, 0.2]
    for _ in range(40):
        n, m = rng.integers(1, 14, size=2)
        yield "fuzz", rng.random(n), rng.random(m)


@pytest.mark.parametrize("p", P_VALUES)
def test_matches_emd2_with_geodesic_cost(p):
    rng = np.random.default_rng(1)
    for name, u, v in _cases(rng):
        ref = emd_circle(u, v, p)
        got = wasserstein_circle(t64(u), t64(v), p=p).item()
        assert abs(got - ref) < 1e-12, (name, got, ref)


def test_pairwise_kernel_matches_emd2_on_every_case():
    rng = np.random.default_rng(5)
    for name, u, v in _cases(rng):
        got = sliced_w1_matrix(t64(u)[None, None], t64(v)[None, None]).item()
        assert abs(got - emd_circle(u, v, 1.0)) < 1e-12, name


@pytest.mark.parametrize("n, m", [(8, 8), (6, 9), (1, 3)])
def test_pairwise_kernel_equals_the_batched_loop(n, m):
    g = torch.Generator().manual_seed(n * m)
    u, v = torch.rand(4, 5, n, generator=g, dtype=torch.float64), torch.rand(3, 5, m, generator=g, dtype=torch.float64)
    v[0, 0, 0] = u[1, 0, 0]  # a tie across the two sides
    want = torch.stack([torch.stack([wasserstein_circle(u[i], v[j]).mean() for j in range(3)]) for i in range(4)])
    torch.testing.assert_close(sliced_w1_matrix(u, v), want, rtol=0, atol=1e-13)
    assert sliced_w1_matrix(u.float(), v.float()).dtype == torch.float32
    with pytest.raises(ValueError, match="same T"):
        sliced_w1_matrix(u, v[:, :4])
    with pytest.raises(ValueError, match=r"u must hold circle coordinates in \[0, 1\)"):
        sliced_w1_matrix(u + 1, v)


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_weighted_matches_emd2(p):
    rng = np.random.default_rng(2)
    for _ in range(20):
        n, m = rng.integers(1, 9, size=2)
        u, v, a, b = rng.random(n), rng.random(m), rng.random(n) + 0.01, rng.random(m) + 0.01
        ref = emd_circle(u, v, p, a / a.sum(), b / b.sum())
        got = wasserstein_circle(t64(u), t64(v), p=p, u_weights=t64(a), v_weights=t64(b)).item()
        assert abs(got - ref) < 1e-12


def test_general_p_search_at_p1_equals_level_median():
    rng = np.random.default_rng(3)
    u, v = t64(rng.random((50, 9))), t64(rng.random((50, 6)))
    a, b = torch.full_like(u, 1 / 9), torch.full_like(v, 1 / 6)
    assert torch.allclose(_wp_bisection(u, v, a, b, 1.0), wasserstein_circle(u, v, p=1.0), atol=1e-13)


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_batched_equals_loop_and_broadcasts(p):
    rng = np.random.default_rng(4)
    u, v = t64(rng.random((3, 4, 8))), t64(rng.random((4, 5)))
    got = wasserstein_circle(u, v, p=p)
    assert got.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            assert math.isclose(got[i, j].item(), wasserstein_circle(u[i, j], v[j], p=p).item(), abs_tol=1e-14)


@pytest.mark.parametrize("p", P_VALUES)
def test_invariant_under_rotation_and_reflection_of_the_circle(p):
    rng = np.random.default_rng(5)
    u, v = rng.random(9), rng.random(6)
    base = wasserstein_circle(t64(u), t64(v), p=p).item()
    for shift in (0.1, 0.5, 0.77):
        rot = wasserstein_circle(t64((u + shift) % 1), t64((v + shift) % 1), p=p).item()
        assert abs(rot - base) < 1e-12
    refl = wasserstein_circle(t64((1 - u) % 1), t64((1 - v) % 1), p=p).item()
    assert abs(refl - base) < 1e-12
    assert abs(wasserstein_circle(t64(v), t64(u), p=p).item() - base) < 1e-12  # symmetry


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_gradcheck_circle(p):
    rng = np.random.default_rng(6)
    u = t64(rng.random((2, 5)) * 0.9 + 0.05).requires_grad_()
    v = t64(rng.random((2, 4)) * 0.9 + 0.05).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: wasserstein_circle(a, b, p=p), (u, v), eps=1e-7, atol=1e-6)


@pytest.mark.parametrize("bad", [[-0.1, 0.2], [0.2, 1.0], [float("nan"), 0.1], [float("inf"), 0.1]])
def test_rejects_coordinates_outside_unit_interval(bad):
    with pytest.raises(ValueError, match=r"u must hold circle coordinates in \[0, 1\)"):
        wasserstein_circle(t64(bad), t64([0.5]))


def test_rejects_bad_p_empty_sets_weights_and_dtypes():
    with pytest.raises(ValueError, match="p must be"):
        wasserstein_circle(t64([0.1]), t64([0.2]), p=0.5)
    with pytest.raises(ValueError, match="n >= 1"):
        wasserstein_circle(torch.zeros(0, dtype=torch.float64), t64([0.2]))
    with pytest.raises(ValueError, match="u_weights"):
        wasserstein_circle(t64([0.1, 0.3]), t64([0.2]), u_weights=t64([1.0, -1.0]))
    with pytest.raises(ValueError, match="do not broadcast"):
        wasserstein_circle(t64(np.zeros((3, 2))), t64(np.zeros((4, 2))))
    with pytest.raises(TypeError, match="floating"):
        wasserstein_circle(torch.tensor([0, 0]), t64([0.2]))


# mutation test -----------------------------------------------------------------------------
def _w1_from_smallest_sample(u, v):
    """The widely copied W_1 (Bonet's emd1D_circle, POT's wasserstein1_circle): the level median
    of F_u - F_v is taken over [min sample, 1) only, skipping the arc [0, min), while the median
    threshold still assumes a full circle of length 1."""
    z, order = torch.sort(torch.cat([u, v], -1), -1)
    signed = torch.cat([torch.full_like(u, 1 / u.shape[-1]), torch.full_like(v, -1 / v.shape[-1])], -1)
    level = torch.cumsum(signed.gather(-1, order), -1)  # last entry: level 0 on [max, 1)
    lengths = torch.cat([z[..., 1:] - z[..., :-1], 1 - z[..., -1:]], -1)
    level_sorted, lo = torch.sort(level, -1)
    cum = torch.cumsum(lengths.gather(-1, lo), -1)
    idx = torch.searchsorted(cum, torch.full_like(cum[..., :1], 0.5)).clamp_max(cum.shape[-1] - 1)
    alpha = level_sorted.gather(-1, idx)
    return (lengths * (level - alpha).abs()).sum(-1)


def test_mutant_w1_skipping_first_arc_is_rejected():
    wrong = _w1_from_smallest_sample(t64([0.3]), t64([0.6])).item()
    assert math.isclose(wrong, 0.4)  # METHOD.md: the usual code gives 0.4 where the truth is 0.3
    assert abs(wrong - emd_circle([0.3], [0.6], 1)) > 0.05
    rng = np.random.default_rng(7)
    errors = [abs(_w1_from_smallest_sample(t64(u), t64(v)).item() - emd_circle(u, v, 1))
              for u, v in (rng.random((2, 6)) for _ in range(50))]
    assert max(errors) > 1e-2  # the emd2 oracle test (tolerance 1e-12) rejects it


def test_as_published_flag_reproduces_the_defect_everywhere():
    """The study's E8 flag computes exactly the defective W_1 above: in wasserstein_circle, in the
    batched SSW of training (through circle_coordinates) and in the ranking kernel; p > 1 is refused."""
    rng = np.random.default_rng(11)
    u, v = t64(rng.random((40, 7))), t64(rng.random((40, 5)))
    torch.testing.assert_close(wasserstein_circle(u, v, as_published=True), _w1_from_smallest_sample(u, v),
                               rtol=0, atol=1e-14)
    assert wasserstein_circle(t64([0.3]), t64([0.6]), as_published=True).item() == pytest.approx(0.4, abs=1e-15)
    g = torch.Generator().manual_seed(12)
    x, y = unit(4, 9, 5, generator=g), unit(3, 6, 5, generator=g)
    proj = random_stiefel_projections(5, 7, generator=g, dtype=torch.float64)
    cu, cv = circle_coordinates(x, proj), circle_coordinates(y, proj)  # (4, 7, 9), (3, 7, 6)
    per_pair = _w1_from_smallest_sample(cu[:, None].expand(4, 3, 7, 9), cv[None].expand(4, 3, 7, 6)).mean(-1)  # (4, 3)
    torch.testing.assert_close(sliced_w1_matrix(cu, cv, as_published=True), per_pair, rtol=0, atol=1e-14)
    torch.testing.assert_close(sliced_wasserstein_sphere(x[:, None], y[None], projections=proj, as_published=True),
                               per_pair, rtol=0, atol=1e-14)
    assert not torch.allclose(sliced_w1_matrix(cu, cv), per_pair)  # the default is the correct one
    with pytest.raises(ValueError, match="p = 1"):
        wasserstein_circle(u, v, p=2.0, as_published=True)
    with pytest.raises(ValueError, match="bool"):
        sliced_w1_matrix(cu, cv, as_published="yes")


# ------------------------------------------------------------------------------------------
# sliced_wasserstein_sphere
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [1.0, 2.0])
@pytest.mark.parametrize("d", [3, 16])
def test_ssw_matches_pot_with_same_projections(p, d):
    g = torch.Generator().manual_seed(8)
    x, y = unit(20, d, generator=g), unit(13, d, generator=g)
    proj = random_stiefel_projections(d, 25, generator=g, dtype=torch.float64)
    ref = ot.sliced_wasserstein_sphere(x, y, n_projections=proj.shape[0], p=p, projections=proj)
    got = sliced_wasserstein_sphere(x, y, p=p, projections=proj)
    # POT bisects the circle problem to eps = 1e-6
    assert abs(got.item() - ref.item()) < 1e-7


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_ssw_in_d2_is_the_circle_distance(p):
    g = torch.Generator().manual_seed(9)
    x, y = unit(7, 2, generator=g), unit(5, 2, generator=g)
    angle = lambda a: torch.remainder(torch.atan2(a[:, 1], a[:, 0]) / (2 * math.pi), 1.0)  # noqa: E731
    exact = wasserstein_circle(angle(x), angle(y), p=p) ** (1 / p)
    got = sliced_wasserstein_sphere(x, y, n_projections=10, p=p, generator=g)
    assert abs(got.item() - exact.item()) < 1e-12


def test_ssw_orthogonal_invariance_zero_and_symmetry():
    g = torch.Generator().manual_seed(10)
    d = 12
    x, y = unit(9, d, generator=g), unit(9, d, generator=g)
    proj = random_stiefel_projections(d, 40, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=g))
    base = sliced_wasserstein_sphere(x, y, projections=proj)
    moved = sliced_wasserstein_sphere(x @ q.T, y @ q.T, projections=q @ proj)
    assert abs(base.item() - moved.item()) < 1e-12
    assert sliced_wasserstein_sphere(x, x, projections=proj).item() == 0.0
    assert abs(sliced_wasserstein_sphere(y, x, projections=proj).item() - base.item()) < 1e-14


def test_ssw_batch_of_pairs_equals_per_pair_loop():
    g = torch.Generator().manual_seed(11)
    x, y = unit(6, 8, 5, generator=g), unit(6, 8, 5, generator=g)
    proj = random_stiefel_projections(5, 30, generator=g, dtype=torch.float64)
    got = sliced_wasserstein_sphere(x, y, projections=proj)
    assert got.shape == (6,)
    for i in range(6):
        assert abs(got[i].item() - sliced_wasserstein_sphere(x[i], y[i], projections=proj).item()) < 1e-14


def test_ssw_gradcheck_and_generator_reproducibility():
    g = torch.Generator().manual_seed(12)
    x = unit(2, 6, 4, generator=g).requires_grad_()
    y = unit(2, 5, 4, generator=g)
    proj = random_stiefel_projections(4, 8, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda a: sliced_wasserstein_sphere(a / a.norm(dim=-1, keepdim=True), y, projections=proj), (x,), atol=1e-6)
    r1 = sliced_wasserstein_sphere(x, y, generator=torch.Generator().manual_seed(3))
    r2 = sliced_wasserstein_sphere(x, y, generator=torch.Generator().manual_seed(3))
    assert torch.equal(r1, r2)


def test_stiefel_projections_are_orthonormal_and_isotropic():
    proj = random_stiefel_projections(6, 20_000, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    gram = proj.transpose(-1, -2) @ proj
    assert torch.allclose(gram, torch.eye(2, dtype=torch.float64).expand_as(gram), atol=1e-12)
    # Haar: E[U U^T] = (2/d) I
    second = torch.einsum("tdk,tek->de", proj, proj) / proj.shape[0]
    assert torch.allclose(second, torch.eye(6, dtype=torch.float64) * 2 / 6, atol=0.02)


def test_closed_form_gram_schmidt_equals_sign_fixed_qr():
    """The GPU route of random_stiefel_projections gives the CPU route's matrices."""
    e = torch.randn(200, 64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    q, r = torch.linalg.qr(e)
    signs = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    assert torch.allclose(_gram_schmidt_2(e), q * signs.unsqueeze(-2), rtol=0, atol=1e-14)


def test_circle_coordinates_in_unit_interval():
    x = torch.tensor([[1.0, 0.0], [-1.0, -0.0], [-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    t = circle_coordinates(x, torch.eye(2, dtype=torch.float64)[None])
    assert ((t >= 0) & (t < 1)).all()


def test_ssw_bad_input():
    x = unit(4, 3)
    with pytest.raises(ValueError, match="x must hold finite unit vectors"):
        sliced_wasserstein_sphere(2 * x, x)
    with pytest.raises(ValueError, match="same dimension"):
        sliced_wasserstein_sphere(x, unit(4, 5))
    with pytest.raises(ValueError, match=r"projections must have shape \(T, 3, 2\)"):
        sliced_wasserstein_sphere(x, x, projections=torch.zeros(5, 4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="orthonormal"):
        sliced_wasserstein_sphere(x, x, projections=torch.ones(5, 3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="n >= 1"):
        sliced_wasserstein_sphere(x[:0], x)
    with pytest.raises(ValueError, match="p must be"):
        sliced_wasserstein_sphere(x, x, p=0)
