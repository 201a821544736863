"""log I_v and I_{v+1}/I_v against mpmath (50 digits), and their analytic derivatives."""
import math

import mpmath
import pytest
import torch

from mmkit.core.special import bessel_iv_ratio, log_bessel_iv, log_bessel_iv_and_ratio
from oracles import log_iv

ORDERS = [0.0, 0.5, 1.0, 6.5, 31.0, 63.5, 64.0, 127.0, 511.0]
ARGS = [1e-3, 0.01, 1.0, 30.0, 67.0, 500.0, 1e4, 1e5]


@pytest.mark.parametrize("order", ORDERS)
def test_log_iv_matches_mpmath(order):
    x = torch.tensor(ARGS, dtype=torch.float64)
    got = log_bessel_iv(order, x)
    ref = torch.tensor([log_iv(order, a) for a in ARGS], dtype=torch.float64)
    assert torch.allclose(got, ref, rtol=1e-11, atol=1e-11), (got - ref).abs().max()


@pytest.mark.parametrize("order", ORDERS)
def test_ratio_matches_mpmath(order):
    x = torch.tensor(ARGS, dtype=torch.float64)
    got = bessel_iv_ratio(order, x)
    ref = torch.tensor([float(mpmath.besseli(order + 1, a) / mpmath.besseli(order, a)) for a in ARGS],
                       dtype=torch.float64)
    assert torch.allclose(got, ref, rtol=1e-9, atol=0), ((got - ref) / ref).abs().max()


def test_float32_is_finite_where_naive_float32_fails():
    # d = 256 (order 127) with kappa < 67: I_v underflows in float32, the log must not.
    x = torch.logspace(-3, 5, 200, dtype=torch.float32)
    for order in (127.0, 511.0):
        log_i, ratio = log_bessel_iv_and_ratio(order, x)
        assert torch.isfinite(log_i).all() and torch.isfinite(ratio).all()
        assert log_i.dtype == torch.float32
    naive = torch.special.i0(torch.tensor([200.0], dtype=torch.float32))
    assert not torch.isfinite(naive).all()  # shows the problem the log-space code avoids


@pytest.mark.parametrize("order", [0.0, 2.5, 63.0, 200.0])
def test_derivatives_by_gradcheck(order):
    x = torch.tensor([0.05, 1.3, 40.0, 900.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: log_bessel_iv_and_ratio(order, t), (x,))
    assert torch.autograd.gradgradcheck(lambda t: log_bessel_iv_and_ratio(order, t), (x,))


def test_derivative_matches_mpmath():
    order, x0 = 127.0, 37.0
    x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(log_bessel_iv(order, x), x)
    ref = float(mpmath.diff(lambda t: mpmath.log(mpmath.besseli(order, t)), x0))
    assert math.isclose(g.item(), ref, rel_tol=1e-10)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_order(bad):
    with pytest.raises(ValueError, match="order"):
        log_bessel_iv(bad, torch.ones(2))


def test_integer_tensor_rejected():
    with pytest.raises(TypeError, match="floating"):
        log_bessel_iv(1.0, torch.ones(2, dtype=torch.int64))
