"""mmkit — probabilistic multimodal music information retrieval on the hypersphere.

Layers, one folder each, every one importing only from those listed before it (checked by the
import-linter contracts in ``pyproject.toml``; ``docs/architecture.md`` explains them):
``core`` (numerics, safe files) → ``vocab`` (names) → ``data`` → ``model`` (encoders, losses, the
run directory) → ``retrieval`` → ``analysis`` → ``viz`` → ``training`` | ``app`` → ``pipeline`` and
the CLI (``python -m mmkit``).
"""
from mmkit.core.distributions import HypersphericalUniform, PowerSpherical, VonMisesFisher
from mmkit.core.ssw import random_stiefel_projections, sliced_wasserstein_sphere, wasserstein_circle

__version__ = "0.1.0"

__all__ = [
    "VonMisesFisher",
    "HypersphericalUniform",
    "PowerSpherical",
    "wasserstein_circle",
    "sliced_wasserstein_sphere",
    "random_stiefel_projections",
]
