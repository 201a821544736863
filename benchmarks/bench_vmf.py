"""vMF rsample + backward: mmkit (exact, unbiased implicit gradient) vs the rejection-free
``power-spherical`` package, and a sampler-accuracy table.

Workload (issue 3): B = 256 distributions, L = 32 samples each, d = 256, float32,
kappa in {1, 10, 100, 1000}; the loss is a fixed linear functional of the samples, backward to
loc and kappa. The accuracy table gives |mean(mu^T z) - A_d(kappa)| in standard errors.

Ends with one line ``ratio_vs_power_spherical=<x>`` (the worst kappa).
"""
from __future__ import annotations

import math

import torch
from power_spherical import PowerSpherical as ReferencePowerSpherical

from _common import parser, setup, timeit
from mmkit.core.distributions import VonMisesFisher, _wood_sample_s
from mmkit.core.special import bessel_iv_ratio


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--accuracy-draws", type=int, default=1_000_000)
    args = p.parse_args()
    setup(args)
    B, L, d = args.batch, args.samples, args.dim
    loc0 = torch.nn.functional.normalize(torch.randn(B, d), dim=-1)
    weights = torch.randn(L, B, d)
    print(f"workload: B={B}, L={L}, d={d}, float32, rsample + backward to (loc, kappa)")
    print(f"{'kappa':>8}{'mmkit s':>12}{'power-sph s':>14}{'ratio':>8}")
    ratios = []
    for kappa in (1.0, 10.0, 100.0, 1000.0):
        def step(cls):
            loc = loc0.clone().requires_grad_()
            k = torch.full((B,), kappa).requires_grad_()
            (cls(loc, k).rsample((L,)) * weights).sum().backward()

        t_mm, _ = timeit(lambda: step(VonMisesFisher), args.repeats)
        t_ps, _ = timeit(lambda: step(ReferencePowerSpherical), args.repeats)
        ratios.append(t_mm / t_ps)
        print(f"{kappa:>8g}{t_mm:>12.4f}{t_ps:>14.4f}{t_mm / t_ps:>8.2f}")

    n = args.accuracy_draws
    print(f"\nsampler accuracy: |mean(mu^T z) - A_d(kappa)| / SE, {n:,} draws each (float64)")
    kappas = (1e-3, 1.0, 10.0, 100.0, 1e3, 1e5)
    print(f"{'d':>6}" + "".join(f"{k:>9g}" for k in kappas))
    for dim in (3, 16, 256, 1024):
        row = []
        for kappa in kappas:
            w = 1.0 - _wood_sample_s(dim, torch.full((n,), kappa, dtype=torch.float64))
            a = bessel_iv_ratio(dim / 2 - 1, torch.tensor(kappa, dtype=torch.float64)).item()
            row.append(abs(w.mean().item() - a) / (w.std().item() / math.sqrt(n)))
        print(f"{dim:>6}" + "".join(f"{z:>9.2f}" for z in row))
    print(f"ratio_vs_power_spherical={max(ratios):.2f}")


if __name__ == "__main__":
    main()
