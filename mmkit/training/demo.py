"""A small Proposed / Baseline pair for demonstrations (the retrieval demo and the start-here notebook)."""
from __future__ import annotations

import os
from pathlib import Path

from mmkit.model.config import TrainConfig
from mmkit.training.loop import fit

__all__ = ["train_demo_runs"]


def train_demo_runs(datasets, out: str | os.PathLike, epochs: int = 20, seed: int = 0, data_spec: str | None = None,
                    progress: bool = True) -> dict[str, str]:
    """Train a small Proposed (λ_S = 1) and Baseline (λ_S = 0) pair for the demo; ``{name: run dir}``.

    Settings: batch 16, hidden 64, one layer, everything else as :class:`mmkit.model.config.TrainConfig`.
    Re-running with the same ``out`` resumes (a finished run is just reloaded).
    """
    runs = {}
    for name, method in (("Proposed", "proposed"), ("Baseline", "baseline")):
        config = TrainConfig(method=method, lambda_s=1.0, epochs=epochs, batch_size=16, hidden=64, layers=1, seed=seed)
        runs[name] = str(Path(out) / method)
        fit(config, datasets, runs[name], progress=progress, data_spec=data_spec)
    return runs
