"""mmkit — probabilistic multimodal music information retrieval on the hypersphere.

Layers (lower never import higher): :mod:`mmkit.special` (log-Bessel) →
:mod:`mmkit.distributions` (vMF, uniform, Power Spherical) and :mod:`mmkit.ssw`
(circle OT, spherical sliced-Wasserstein).
"""
from .distributions import HypersphericalUniform, PowerSpherical, VonMisesFisher
from .ssw import random_stiefel_projections, sliced_wasserstein_sphere, wasserstein_circle

__version__ = "0.1.0"

__all__ = [
    "VonMisesFisher",
    "HypersphericalUniform",
    "PowerSpherical",
    "wasserstein_circle",
    "sliced_wasserstein_sphere",
    "random_stiefel_projections",
]
