"""Training runtime per triplet, Baseline vs Proposed (the analogue of the paper's Table 1).

The measurement lives in :mod:`mmkit.analysis.runtime` (settings, shapes, protocol); this script prints
the table for both encoder settings, the L_S milliseconds per step on their own, and ends with
one line ``proposed_over_baseline=<ratio>`` for the backbone setting.
"""
from __future__ import annotations

import statistics

from _common import parser, setup
from mmkit.analysis.runtime import time_ls, time_methods


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--backbone-batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda (a GPU: the paper's setting)")
    args = p.parse_args()
    setup(args)
    print(f"batch {args.batch} (heads) / {args.backbone_batch} (backbones) triplets, L = 32, T = 100, d = 64, "
          f"{args.repeats} repeats x {args.steps} steps, methods interleaved, device {args.device}")
    print(f"{'setting':<12}{'method':<10}{'s/triplet':>14}{'± sd':>12}")
    ratios = {}
    for setting, batch in (("heads", args.batch), ("backbones", args.backbone_batch)):
        times = time_methods(setting, batch, args.steps, args.repeats, args.seed, device=args.device)
        for method, t in times.items():
            print(f"{setting:<12}{method:<10}{statistics.mean(t):>14.6f}{statistics.stdev(t):>12.6f}")
        ratios[setting] = statistics.mean(times["proposed"]) / statistics.mean(times["baseline"])
    print(f"L_S alone (sampling + SSW, forward + backward): {time_ls(args.batch, args.repeats, device=args.device):.1f} ms per step")
    print(f"heads-only ratio proposed/baseline = {ratios['heads']:.2f}")
    print(f"proposed_over_baseline={ratios['backbones']:.3f}")


if __name__ == "__main__":
    main()
