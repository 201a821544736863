"""Independent high-precision oracles (mpmath at 50 digits) for the vMF closed forms."""
from __future__ import annotations

import math

import mpmath


def log_iv(v: float, x: float) -> float:
    return float(mpmath.log(mpmath.besseli(v, x)))


def mean_resultant(d: int, kappa: float) -> float:
    """A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa)."""
    v = mpmath.mpf(d) / 2 - 1
    return float(mpmath.besseli(v + 1, kappa) / mpmath.besseli(v, kappa))


def mean_resultant_derivative(d: int, kappa: float) -> float:
    """dA/dkappa = 1 - A^2 - (d-1) A / kappa, evaluated at 50 digits (float64 cancels at large kappa)."""
    v = mpmath.mpf(d) / 2 - 1
    k = mpmath.mpf(kappa)
    a = mpmath.besseli(v + 1, k) / mpmath.besseli(v, k)
    return float(1 - a * a - (d - 1) * a / k)


def log_normalizer(d: int, kappa: float) -> float:
    """log C_d(kappa) = (d/2-1) log kappa - (d/2) log(2 pi) - log I_{d/2-1}(kappa)."""
    v = mpmath.mpf(d) / 2 - 1
    k = mpmath.mpf(kappa)
    return float(v * mpmath.log(k) - mpmath.mpf(d) / 2 * mpmath.log(2 * mpmath.pi) - mpmath.log(mpmath.besseli(v, k)))


def entropy(d: int, kappa: float) -> float:
    v = mpmath.mpf(d) / 2 - 1
    k = mpmath.mpf(kappa)
    a = mpmath.besseli(v + 1, k) / mpmath.besseli(v, k)
    log_c = v * mpmath.log(k) - mpmath.mpf(d) / 2 * mpmath.log(2 * mpmath.pi) - mpmath.log(mpmath.besseli(v, k))
    return float(-log_c - k * a)


def log_sphere_area(d: int) -> float:
    return math.log(2.0) + 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d)


def marginal_ds_dkappa(d: int, kappa: float, s: float) -> float:
    """Implicit gradient ds/dkappa of s = 1 - mu^T z from the marginal of w = mu^T z.

    With q(t) = exp(kappa (t - w)) (1 - t^2)^((d-3)/2) (unnormalised; the normaliser cancels),
    dF(w)/dkappa = ∫_{-1}^w (t - A) p(t) dt, so ds/dkappa = -dw/dkappa = ∫_{-1}^w (t - A) q(t) dt / q(w).
    The quadrature is split around the mode and the sample so tanh-sinh sees smooth pieces."""
    nu = mpmath.mpf(d - 3) / 2
    k = mpmath.mpf(kappa)
    w = 1 - mpmath.mpf(s)
    a = mean_resultant_mp(d, k)
    mode = 2 * k / ((d - 3) + mpmath.sqrt((d - 3) ** 2 + 4 * k * k)) if d > 3 else mpmath.mpf(1)
    width = 1 / mpmath.sqrt(k + d)
    points = sorted({-1, w, *[mode + j * width for j in (-30, -10, -3, 0, 3, 10, 30)]})
    points = [p for p in points if -1 <= p <= w]
    q = lambda t: (t - a) * mpmath.exp(k * (t - w)) * ((1 - t * t) / (1 - w * w)) ** nu  # noqa: E731
    return float(mpmath.quad(q, points))


def mean_resultant_mp(d: int, kappa) -> mpmath.mpf:
    v = mpmath.mpf(d) / 2 - 1
    return mpmath.besseli(v + 1, kappa) / mpmath.besseli(v, kappa)
