"""SSW forward+backward on the L_S workload: mmkit vs POT's per-pair loop, and vs the floor.

Workload (issue 3): B = 256 positive pairs, L = 32 vMF samples per side, d = 256, T = 100
projections, p = 1; the same data and the same projections on every side.

* reference: ``ot.sliced_wasserstein_sphere(x[b], y[b], projections=U, p=1)`` looped over pairs
  (POT's API takes one pair at a time), torch backend, forward + backward. POT is timed on the
  first ``--pot-pairs`` pairs and scaled to B (the loop is linear in the number of pairs);
* floor: the projection matmul and atan2 alone (forward + backward), nothing else;
* mmkit: ``mmkit.core.ssw.sliced_wasserstein_sphere`` on the whole batch (forward + backward).

Ends with one line ``speedup_vs_pot=<x> floor_ratio=<y>``.
"""
from __future__ import annotations

import ot
import torch

from _common import parser, setup, timeit
from mmkit.core.distributions import VonMisesFisher
from mmkit.core.ssw import circle_coordinates, random_stiefel_projections, sliced_wasserstein_sphere


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=256)
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--projections", type=int, default=100)
    p.add_argument("--pot-pairs", type=int, default=16)
    args = p.parse_args()
    setup(args)
    B, L, d, T = args.pairs, args.samples, args.dim, args.projections
    mu = torch.nn.functional.normalize(torch.randn(2, B, d), dim=-1)
    kappa = torch.exp(torch.empty(2, B).uniform_(2.0, 6.0))
    x0, y0 = VonMisesFisher(mu, kappa).sample((L,)).permute(1, 2, 0, 3)  # (B, L, d) each
    proj = random_stiefel_projections(d, T, generator=torch.Generator().manual_seed(args.seed))

    def run_mmkit():
        x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
        loss = sliced_wasserstein_sphere(x, y, projections=proj)
        loss.sum().backward()
        return loss.detach()

    def run_floor():
        x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
        (circle_coordinates(x, proj).sum() + circle_coordinates(y, proj).sum()).backward()

    k = min(args.pot_pairs, B)

    def run_pot():
        x, y = x0[:k].clone().requires_grad_(), y0[:k].clone().requires_grad_()
        vals = [ot.sliced_wasserstein_sphere(x[b], y[b], n_projections=T, p=1, projections=proj) for b in range(k)]
        torch.stack(vals).sum().backward()
        return torch.stack(vals).detach()

    t_mm, s_mm = timeit(run_mmkit, args.repeats)
    t_floor, s_floor = timeit(run_floor, args.repeats)
    t_pot_k, s_pot_k = timeit(run_pot, max(1, args.repeats // 2))
    t_pot = t_pot_k * B / k
    max_diff = (run_mmkit()[:k] - run_pot()).abs().max().item()

    print(f"workload: B={B} pairs, L={L} samples, d={d}, T={T} projections, p=1, float32, forward+backward")
    print(f"{'method':<34}{'seconds':>10}{'± sd':>10}")
    print(f"{'mmkit (whole batch)':<34}{t_mm:>10.4f}{s_mm:>10.4f}")
    print(f"{'floor (matmul + atan2 only)':<34}{t_floor:>10.4f}{s_floor:>10.4f}")
    print(f"{f'POT loop ({k} pairs, scaled to {B})':<34}{t_pot:>10.4f}{s_pot_k * B / k:>10.4f}")
    print(f"max |mmkit - POT| over {k} pairs: {max_diff:.2e} (POT bisects W_1 to eps=1e-6)")
    print(f"speedup_vs_pot={t_pot / t_mm:.1f} floor_ratio={t_mm / t_floor:.2f}")


if __name__ == "__main__":
    main()
