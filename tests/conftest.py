"""Shared test settings: one intra-op thread (the machines are shared; small ops slow down
with two), float64 oracles via mpmath at 50 digits."""
import mpmath
import pytest
import torch

torch.set_num_threads(1)
mpmath.mp.dps = 50


@pytest.fixture
def seeded():
    """Seed torch's global RNG (the vMF sampler draws from it, as torch.distributions do)."""
    torch.manual_seed(20240517)
    return 20240517
