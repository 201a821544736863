"""The vMF sampler **as published**: the reference code's defects, reproduced on purpose.

For one experiment only: E8 of the study (``docs/study.md``) asks whether the paper's gain could
come from the defects of the code the authors built on, the widely copied s-vae-pytorch sampler
(Davidson et al. 2018 [1]_) and Bonet's circle ``W_1`` (Bonet et al. 2023 [2]_). Nothing else in
mmkit uses this module; the correct sampler is :class:`mmkit.core.distributions.VonMisesFisher`
and the correct circle ``W_1`` is :func:`mmkit.core.ssw.wasserstein_circle`.

:class:`PublishedVonMisesFisher` samples like that code, from its description in ``METHOD.md``
§2 and Ulrich's (1984) [3]_ form of Wood's (1994) [4]_ rejection sampler:

* the envelope parameter ``b`` blends in the first-order approximation ``(d-1) / (4 kappa)``
  between ``kappa = 10`` and ``11`` (:func:`taylor_envelope`); it is wrong for ``d >= 16,
  kappa > 10``, so the accepted ``w = mu^T z`` no longer follow the vMF marginal;
* the acceptance test ``(d-1) log t - t + c > log u``, ``t = 2 a b / (1 - (1-b) e)``, in the
  concentration's dtype (float32 in training), where two large numbers are subtracted;
* the gradient in ``kappa`` is the pathwise derivative of ``w(e; b(kappa))`` at the accepted
  proposals ``e``, without the rejection correction term of Naesseth et al. (2017) [5]_, so
  ``d/dkappa E[mu^T z]`` is biased.

The fourth defect of E8, the circle ``W_1`` integrated only from the smallest sample, is the
``as_published`` flag of :func:`mmkit.core.ssw.sliced_wasserstein_sphere`. The Householder
reflection and the tangent direction are mmkit's own (exact) ones: E8's protocol lists four
defects, and ``||z|| = 1`` is not among them.

References
----------
.. [1] T. R. Davidson, L. Falorsi, N. De Cao, T. Kipf, J. M. Tomczak, "Hyperspherical
       variational auto-encoders", UAI 2018.
.. [2] C. Bonet, P. Berg, N. Courty, F. Septier, L. Drumetz, M.-T. Pham, "Spherical
       sliced-Wasserstein", ICLR 2023.
.. [3] G. Ulrich, "Computer generation of distributions on the m-sphere", Applied Statistics
       33(2), 1984.
.. [4] A. T. A. Wood, "Simulation of the von Mises Fisher distribution", Communications in
       Statistics - Simulation and Computation 23(1), 1994.
.. [5] C. A. Naesseth, F. J. R. Ruiz, S. W. Linderman, D. M. Blei, "Reparameterization gradients
       through acceptance-rejection sampling algorithms", AISTATS 2017.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Beta

from mmkit.core.distributions import VonMisesFisher, householder_rotate, uniform_tangent

__all__ = ["taylor_envelope", "published_marginal", "PublishedVonMisesFisher"]


def taylor_envelope(d: int, kappa: Tensor) -> Tensor:
    """s-vae-pytorch's envelope parameter ``b``: ``(-2 kappa + sqrt(4 kappa^2 + (d-1)^2)) / (d-1)``
    blended linearly into ``(d-1) / (4 kappa)`` for ``kappa`` from 10 to 11 (wrong on purpose).

    Examples
    --------
    >>> import torch
    >>> from mmkit.core.published import taylor_envelope
    >>> from mmkit.core.distributions import wood_envelope
    >>> k = torch.tensor([5.0, 100.0], dtype=torch.float64)
    >>> taylor_envelope(256, k) / wood_envelope(256, k)  # exact below kappa = 10, 31 % too large at 100
    tensor([1.0000, 1.3102], dtype=torch.float64)
    """
    m1 = float(d - 1)
    exact = (-2.0 * kappa + torch.sqrt(4.0 * kappa * kappa + m1 * m1)) / m1
    blend = (kappa - 10.0).clamp(0.0, 1.0)
    return blend * (m1 / (4.0 * kappa)) + (1.0 - blend) * exact


def published_marginal(d: int, kappa: Tensor, max_rounds: int = 1000) -> Tensor:
    """``w = mu^T z`` for every entry of ``kappa`` (any shape), drawn as the reference code does.

    Ulrich's acceptance test with s-vae-pytorch's envelope (:func:`taylor_envelope`), in the dtype
    of ``kappa``; differentiable in ``kappa`` by the pathwise derivative at the accepted proposals,
    without the rejection correction (see the module docstring: three defects, on purpose).

    Parameters
    ----------
    d : int
        Ambient dimension, ``d >= 2``.
    kappa : Tensor, shape (...)
        Concentrations ``> 0``.

    Returns
    -------
    Tensor, shape (...), dtype of ``kappa``.
    """
    if not bool((torch.isfinite(kappa) & (kappa > 0)).all()):
        raise FloatingPointError(f"as-published vMF sampler: concentration must be finite and > 0 (d={d})")
    m1 = float(d - 1)
    b = taylor_envelope(d, kappa)
    with torch.no_grad():
        root = torch.sqrt(4.0 * kappa * kappa + m1 * m1)
        bb = b.detach()
        a = (m1 + 2.0 * kappa + root) / 4.0
        c = 4.0 * a * bb / (1.0 + bb) - m1 * math.log(m1)
        conc = torch.full((), 0.5 * m1, dtype=kappa.dtype, device=kappa.device)
        beta = Beta(conc, conc)
        e = torch.empty_like(kappa)
        pending = torch.ones_like(kappa, dtype=torch.bool)
        for _ in range(max_rounds):
            if not bool(pending.any()):
                break
            proposal = beta.sample(kappa.shape)
            u = torch.rand(kappa.shape, dtype=kappa.dtype, device=kappa.device)
            t = 2.0 * a * bb / (1.0 - (1.0 - bb) * proposal)
            accept = pending & (m1 * torch.log(t) - t + c > torch.log(u))
            e = torch.where(accept, proposal, e)
            pending = pending & ~accept
        else:
            if bool(pending.any()):
                raise RuntimeError(f"as-published vMF sampler did not finish in {max_rounds} rounds (d={d})")
    return (1.0 - (1.0 + b) * e) / (1.0 - (1.0 - b) * e)


class PublishedVonMisesFisher(VonMisesFisher):
    """:class:`~mmkit.core.distributions.VonMisesFisher` whose ``rsample`` is the reference code's
    (:func:`published_marginal`); densities, moments and KL are the correct ones. For the study's
    E8 only (``TrainConfig(as_published=True)``)."""

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        """Samples as published, shape ``sample_shape + batch_shape + (d,)``."""
        shape = self._extended_shape(sample_shape)
        kappa = self.concentration.expand(shape[:-1])
        w = published_marginal(self.dim, kappa).to(self.loc.dtype)
        with torch.no_grad():
            direction = uniform_tangent(shape[:-1], self.dim - 1, self.loc.dtype, self.loc.device)
        tangent = torch.sqrt(((1.0 - w) * (1.0 + w)).clamp_min(0.0)).unsqueeze(-1) * direction
        return householder_rotate(self.loc, w, tangent)

    def __repr__(self) -> str:
        return f"PublishedVonMisesFisher(dim: {self.dim}, batch_shape: {tuple(self.batch_shape)})"
