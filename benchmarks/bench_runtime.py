"""Training runtime per triplet, Baseline vs Proposed (the analogue of the paper's Table 1).

Both methods run the same model and L_C (sampled InfoNCE); Proposed adds L_S with L = 32 samples
and T = 100 projections. Two encoder settings:

* heads over cached features (mmkit's default: small MLP heads; L_S dominates the step);
* backbones over raw inputs (the paper's setting): VGG-style CNNs over a log-mel spectrogram
  (64 mels x 128 frames) and a score image (64 x 256 pixels), a token CNN over 32 caption tokens,
  then the heads.

Inputs are random tensors of those shapes (the cost of a step depends on shapes, not values).
Each step is forward + backward + AdamW update of one batch; seconds per triplet = step time /
batch size, mean ± std over repeats in the same run. Also prints the L_S milliseconds per step on
their own. Ends with one line ``proposed_over_baseline=<ratio>`` for the backbone setting.
"""
from __future__ import annotations

import statistics
import time

import torch

from _common import parser, setup
from mmkit.losses import ssw_loss
from mmkit.distributions import VonMisesFisher
from mmkit.models import ConvBackbone, MultimodalEncoder, TokenCNN
from mmkit.train import TrainConfig, build_model


def make_batch(setting: str, batch: int) -> dict:
    present = {m: torch.ones(batch, dtype=torch.bool) for m in ("audio", "image", "text")}
    if setting == "heads":
        return {"audio": torch.randn(batch, 128), "image": torch.randn(batch, 512), "text": torch.randn(batch, 384),
                "present": present}
    return {"audio": torch.randn(batch, 64, 128), "image": torch.randn(batch, 64, 256),
            "text": torch.randint(1, 1000, (batch, 32)), "present": present}


def make_model(setting: str, config: TrainConfig):
    in_dims = {"audio": 128, "image": 512, "text": 384}
    model, objective = build_model(config, in_dims)
    if setting == "backbones":
        backbones = {"audio": ConvBackbone(), "image": ConvBackbone(), "text": TokenCNN(1000)}
        model = MultimodalEncoder(in_dims, config.dim, hidden=config.hidden, backbones=backbones)
    return model, objective


def make_step(setting: str, method: str, batch: int, seed: int):
    """A closure running one training step (forward, backward, AdamW) of ``method``."""
    config = TrainConfig(method=method, n_samples=32, n_projections=100, dim=64)
    torch.manual_seed(seed)
    model, objective = make_model(setting, config)
    opt = torch.optim.AdamW(list(model.parameters()) + list(objective.parameters()), lr=1e-3)
    data = make_batch(setting, batch)
    gen = torch.Generator().manual_seed(seed)

    def step():
        opt.zero_grad(set_to_none=True)
        objective(model(data), data["present"], generator=gen)["loss"].backward()
        opt.step()

    step()  # warm-up
    return step


def time_methods(setting: str, batch: int, steps: int, repeats: int, seed: int) -> dict[str, list[float]]:
    """Seconds per triplet per repeat; Baseline and Proposed alternate so drift hits both alike."""
    runs = {m: make_step(setting, m, batch, seed) for m in ("baseline", "proposed")}
    out: dict[str, list[float]] = {m: [] for m in runs}
    for _ in range(repeats):
        for method, step in runs.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            out[method].append((time.perf_counter() - t0) / (steps * batch))
    return out


def time_ls(batch: int, repeats: int) -> float:
    mu = {m: torch.nn.functional.normalize(torch.randn(batch, 64), dim=-1).requires_grad_() for m in "ait"}
    kappa = torch.full((batch,), 50.0, requires_grad=True)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        s = {m: VonMisesFisher(v, kappa).rsample((32,)).transpose(0, 1) for m, v in zip(("audio", "image", "text"), mu.values())}
        ssw_loss(s, n_projections=100).backward()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--backbone-batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=2)
    args = p.parse_args()
    setup(args)
    print(f"batch {args.batch} (heads) / {args.backbone_batch} (backbones) triplets, L = 32, T = 100, d = 64, "
          f"{args.repeats} repeats x {args.steps} steps, methods interleaved")
    print(f"{'setting':<12}{'method':<10}{'s/triplet':>14}{'± sd':>12}")
    ratios = {}
    for setting, batch in (("heads", args.batch), ("backbones", args.backbone_batch)):
        times = time_methods(setting, batch, args.steps, args.repeats, args.seed)
        for method, t in times.items():
            print(f"{setting:<12}{method:<10}{statistics.mean(t):>14.6f}{statistics.stdev(t):>12.6f}")
        ratios[setting] = statistics.mean(times["proposed"]) / statistics.mean(times["baseline"])
    print(f"L_S alone (sampling + SSW, forward + backward): {time_ls(args.batch, args.repeats):.1f} ms per step")
    print(f"heads-only ratio proposed/baseline = {ratios['heads']:.2f}")
    print(f"proposed_over_baseline={ratios['backbones']:.3f}")


if __name__ == "__main__":
    main()
