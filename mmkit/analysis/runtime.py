"""Training runtime per triplet, Baseline vs Proposed (the analogue of the paper's Table 1).

Both methods run the same model and L_C; Proposed adds L_S (the paper's settings: L = 32 samples,
T = 100 projections). Two encoder settings:

* ``heads`` — heads over cached features (mmkit's default: small MLP heads; L_S dominates the step);
* ``backbones`` — backbones over raw inputs (the paper's setting): the model ``TrainConfig(encoder=
  "backbones")`` trains, VGG-style CNNs over a log-mel spectrogram (64 mels x 128 frames) and a score
  image (64 x 256 pixels), a token CNN over 96 caption tokens (:data:`mmkit.data.raw.RAW_SHAPES`),
  then the heads.

Inputs are random tensors of the shapes training reads (the cost of a step depends on shapes, not
values): cached-feature sizes of the embedded data for ``heads``, raw-input shapes for ``backbones``. A
step is forward + backward + AdamW update of one batch; seconds per triplet = step time / batch
size, one value per repeat, Baseline and Proposed interleaved so that drift of a shared machine
hits both alike. Set the thread count before timing (``torch.set_num_threads``) and report it.
"""
from __future__ import annotations

import statistics
import time

import torch

from mmkit.core.distributions import VonMisesFisher
from mmkit.data.datasets import batch_to_device
from mmkit.data.features import AUDIO_FEATURE_DIM, IMAGE_FEATURE_DIM
from mmkit.data.raw import RAW_SHAPES, VOCAB_SIZE
from mmkit.model.config import TrainConfig
from mmkit.model.factory import build_model
from mmkit.model.losses import ssw_loss
from mmkit.vocab import MODALITIES

__all__ = ["SETTINGS", "time_methods", "time_ls", "runtime_rows"]

SETTINGS = ("heads", "backbones")
_IN_DIMS = {"audio": AUDIO_FEATURE_DIM, "image": IMAGE_FEATURE_DIM, "text": 384}


def _batch(setting: str, batch: int) -> dict:
    present = {m: torch.ones(batch, dtype=torch.bool) for m in MODALITIES}
    if setting == "heads":
        return {m: torch.randn(batch, n) for m, n in _IN_DIMS.items()} | {"present": present}
    return {"audio": torch.randn(batch, *RAW_SHAPES["audio"]), "image": torch.rand(batch, *RAW_SHAPES["image"]),
            "text": torch.randint(1, VOCAB_SIZE, (batch, *RAW_SHAPES["text"])).float(), "present": present}


def _step(setting: str, method: str, batch: int, seed: int, dim: int, device: torch.device):
    """A closure running one training step (forward, backward, AdamW) of ``method`` on ``device``."""
    config = TrainConfig(method=method, n_samples=32, n_projections=100, dim=dim,
                         encoder="heads" if setting == "heads" else "backbones")
    torch.manual_seed(seed)
    model, objective = build_model(config, _IN_DIMS)
    model.to(device), objective.to(device)
    opt = torch.optim.AdamW(list(model.parameters()) + list(objective.parameters()), lr=1e-3)
    data = batch_to_device(_batch(setting, batch), device)
    gen = torch.Generator(device=device).manual_seed(seed)

    def step():
        opt.zero_grad(set_to_none=True)
        objective(model(data), data["present"], generator=gen)["loss"].backward()
        opt.step()

    step()  # warm-up
    return step


def _synchronizer(device: torch.device):
    """A call that waits for ``device``'s queued work (a no-op on the CPU), for timing."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def time_methods(setting: str, batch: int = 64, steps: int = 2, repeats: int = 5, seed: int = 0,
                 dim: int = 64, device: str = "cpu") -> dict[str, list[float]]:
    """Seconds per training triplet of Baseline and Proposed, one value per repeat.

    Parameters
    ----------
    setting : "heads" | "backbones"
    batch : triplets per step; steps : steps per timed repeat; repeats : timed repeats (>= 2)
    device : "cpu" or "cuda" (timed with a device synchronisation before and after each repeat)
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    for name, value, low in (("batch", batch, 2), ("steps", steps, 1), ("repeats", repeats, 2)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    device = torch.device(device)
    sync = _synchronizer(device)
    runs = {m: _step(setting, m, batch, seed, dim, device) for m in ("baseline", "proposed")}
    out: dict[str, list[float]] = {m: [] for m in runs}
    for _ in range(repeats):
        for method, step in runs.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            sync()
            out[method].append((time.perf_counter() - t0) / (steps * batch))
    return out


def time_ls(batch: int = 64, repeats: int = 5, dim: int = 64, device: str = "cpu") -> float:
    """Median milliseconds of L_S alone per step (sampling + SSW, forward + backward; L = 32, T = 100)."""
    device = torch.device(device)
    sync = _synchronizer(device)
    mu = {m: torch.nn.functional.normalize(torch.randn(batch, dim, device=device), dim=-1).requires_grad_()
          for m in MODALITIES}
    kappa = torch.full((batch,), 50.0, device=device, requires_grad=True)
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        samples = {m: VonMisesFisher(v, kappa).rsample((32,)).transpose(0, 1) for m, v in mu.items()}
        ssw_loss(samples, n_projections=100).backward()
        sync()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def runtime_rows(times: dict[str, dict[str, list[float]]], dataset: str = "synthetic-shapes") -> list[dict]:
    """Long-format rows (metric ``sec_per_triplet``, task ``train:<setting>``, ``n_seeds`` = repeats).

    ``times`` maps a setting to :func:`time_methods`'s output.
    """
    rows = []
    for setting, per_method in times.items():
        for method, values in per_method.items():
            rows.append({"dataset": dataset, "method": method, "task": f"train:{setting}", "metric": "sec_per_triplet",
                         "lambda_s": "0" if method == "baseline" else "1", "distance": "",
                         "mean": statistics.mean(values), "std": statistics.stdev(values), "n_seeds": len(values)})
    return rows
