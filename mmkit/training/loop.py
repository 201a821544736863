"""The training loop: ``fit()`` trains one :class:`~mmkit.model.config.TrainConfig` into a run
directory (:class:`~mmkit.model.run.Run`, which owns the files), with atomic checkpoints and exact resume.

Determinism: every epoch reseeds torch from ``(seed, epoch)`` and draws its batch order from a
generator with the same key, so a run interrupted at any point and resumed with the same command
produces bit-identical results to an uninterrupted one (on the same machine and thread count).
A resumed run first deletes the temporary files a killed write left behind. Under ``torchrun``
the process group lives for one ``fit`` call (:func:`~mmkit.training.distributed.distributed_session`).
The fault-injection hook :func:`mmkit.core.faults.after_step` is consulted after every optimizer step.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from mmkit.core import faults
from mmkit.data.bundle import FeatureSplit
from mmkit.data.datasets import TripletDataset, batch_to_device, draw_views
from mmkit.model.config import ConfigError, TrainConfig
from mmkit.model.encoders import MultimodalEncoder, masked_mean_pool
from mmkit.model.encodings import Encodings
from mmkit.model.factory import build_model, build_optimizer, model_inputs
from mmkit.model.losses import TrainingObjective
from mmkit.model.run import (KAPPA_STATISTICS, LOG_FIELDS, CheckpointError, Run, data_fingerprint, encode_split,
                             kappa_statistics, provenance)
from mmkit.retrieval.tasks import evaluate_tasks
from mmkit.training.distributed import DistributedContext, distributed_session
from mmkit.vocab import MODALITIES

__all__ = ["NonFiniteLossError", "fit", "train_step"]


class NonFiniteLossError(FloatingPointError):
    """The loss (or a gradient) became NaN/inf; the message names the epoch, step and item indices
    of the batch."""


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def pooled_features(split: FeatureSplit) -> dict[str, torch.Tensor]:
    """modality -> (N_m, D_m) cached features of the items that have the modality, frame-level ones
    mean-pooled (modalities holding raw backbone inputs are left out)."""
    out = {}
    for m in split.modalities:
        if m in split.raw:
            continue
        x = torch.from_numpy(np.ascontiguousarray(split.features[m], dtype=np.float32))
        lengths = torch.from_numpy(split.lengths[m]) if m in split.lengths else None
        out[m] = masked_mean_pool(x, lengths)[torch.from_numpy(split.present[m].astype(bool))]
    return out


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**63)


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("TrainConfig.device: 'cuda' requested but CUDA is not available")
    return torch.device(name)


def _validation(model, split, device) -> tuple[float, dict, dict]:
    """Selection score (mean MRR over the available tasks, mu-cosine ranking), tasks, kappa columns."""
    params = encode_split(model, split, device=device)
    present = {m: torch.from_numpy(split.present[m].copy()) for m in params}
    tasks = evaluate_tasks(params, present)
    score = float(np.mean([t["MRR"] for t in tasks.values()])) if tasks else float("nan")
    return score, tasks, kappa_columns(params, present)


def kappa_columns(enc: Encodings, present: Mapping[str, torch.Tensor]) -> dict[str, float | None]:
    """The kappa columns of a ``log.csv`` row: for every modality, :func:`~mmkit.model.run.kappa_statistics`
    of the concentrations of the items that have it, as ``kappa_<m>`` (the mean) and ``kappa_<m>_<statistic>``
    (:data:`~mmkit.model.run.KAPPA_STATISTICS`); None for a modality without items."""
    row: dict[str, float | None] = {}
    for m in MODALITIES:
        rows = present[m].bool() if m in enc else None
        stats = kappa_statistics(enc[m].concentration[rows]) if rows is not None and bool(rows.any()) else {}
        row[f"kappa_{m}"] = stats.get("mean")
        row.update({f"kappa_{m}_{s}": stats.get(s) for s in KAPPA_STATISTICS})
    return row


# ----------------------------------------------------------------------------------------------
# fit
# ----------------------------------------------------------------------------------------------
def train_step(model: MultimodalEncoder, objective: TrainingObjective, dataset: TripletDataset,
               indices: torch.Tensor, ctx: DistributedContext, device: torch.device,
               generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """Forward and backward of one global batch ``indices`` (gradients summed over ranks).

    Returns the loss terms (detached); raises :class:`NonFiniteLossError` before any backward
    when the loss is not finite, and before any optimizer step when a gradient is not.
    """
    local = batch_to_device(dataset.batch(ctx.shard(indices)), device)
    outputs = {m: (ctx.gather(a), ctx.gather(b)) for m, (a, b) in model(local).items()}
    present = {m: v.to(device) for m, v in dataset.batch(indices)["present"].items()}
    terms = objective(outputs, present, generator=generator)
    if not torch.isfinite(terms["loss"]):
        raise NonFiniteLossError(f"non-finite loss { {k: float(v.detach()) for k, v in terms.items()} }; "
                                 f"batch item indices {indices.tolist()}")
    (terms["loss"] / ctx.world_size).backward()
    named = [(f"model.{n}", p) for n, p in model.named_parameters()] + \
            [(f"objective.{n}", p) for n, p in objective.named_parameters()]
    ctx.all_reduce_gradients([p for _, p in named])
    grads = [(n, p.grad) for n, p in named if p.grad is not None]
    if grads and not bool(torch.stack([g.isfinite().all() for _, g in grads]).all()):  # one sync per step
        bad = next(n for n, g in grads if not bool(g.isfinite().all()))
        raise NonFiniteLossError(f"non-finite gradient of {bad} (loss {float(terms['loss'].detach()):.6g}); "
                                 f"batch item indices {indices.tolist()}")
    return {k: v.detach() for k, v in terms.items()}


def fit(config: TrainConfig, data: Mapping[str, FeatureSplit], out: str | Path, progress: bool = True,
        stop_after_steps: int | None = None, data_spec: str | None = None, tensorboard: bool = False) -> dict:
    """Train ``config`` on ``data["train"]``, select on ``data["val"]``, write the run directory ``out``.

    ``data_spec`` (a preset name or bundle path) is recorded in the manifest so that
    ``mmkit evaluate`` can reload the same data (checked against the stored data hash).
    ``tensorboard=True`` also writes each epoch's row of ``log.csv`` as TensorBoard scalars to
    ``out/tensorboard`` (needs the ``tensorboard`` package); a resumed run purges the events of
    the epochs it repeats, so the curves match the log.

    Re-running with the same ``out`` resumes from the last checkpoint (the config must match).
    ``stop_after_steps`` stops the process-level loop early (for interruption tests); the run
    stays resumable. Returns the summary written to ``metrics.json`` (the best epoch) with the
    ``history`` of epoch rows and ``stopped_epoch``, the last epoch trained (before
    ``config.epochs - 1`` when ``config.patience`` stopped it; also in the manifest).

    Provenance: the manifest, written before the first step, holds this process's
    :func:`~mmkit.model.run.code_version`; a resumed run keeps it and appends a resuming process's
    version to ``resumed_code_versions`` when its code differs.
    """
    if "train" not in data or "val" not in data:
        raise ValueError(f"data must hold 'train' and 'val' splits, got {sorted(data)}")
    if tensorboard:
        _require_tensorboard()
    device = _resolve_device(config.device)
    with distributed_session(device) as ctx:
        return _fit(config, data, Run(out), ctx, device, progress, stop_after_steps, data_spec, tensorboard)


def _fit(config: TrainConfig, data: Mapping[str, FeatureSplit], run: Run, ctx: DistributedContext,
         device: torch.device, progress: bool, stop_after_steps: int | None, data_spec: str | None,
         tensorboard: bool) -> dict:
    """The body of :func:`fit` inside its process group (torn down by the caller)."""
    main = ctx.is_main
    run.prepare(config, write=main)
    torch.set_num_threads(config.threads)
    train_split, val_split = data["train"], data["val"]
    in_dims = {m: train_split.feature_dim(m) for m in train_split.modalities}
    torch.manual_seed(config.seed)
    model, objective = build_model(config, in_dims)
    train_split = model_inputs(model, train_split, progress=progress and ctx.is_main)
    val_split = model_inputs(model, val_split, progress=progress and ctx.is_main)
    head_inputs = pooled_features(train_split)
    if head_inputs:
        model.fit_input_normalization(head_inputs)
    model.to(device), objective.to(device)
    optimizer = build_optimizer(config, model, objective)

    state = run.load_checkpoint()
    history: list[dict] = []
    start_epoch, best_score, best_epoch = 0, -math.inf, -1
    if state is not None:
        model.load_state_dict(state["model"])
        objective.load_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best_score, best_epoch = state["epoch"] + 1, state["best_score"], state["best_epoch"]
        history = list(state["history"])
    here = provenance()  # this process's code and package versions
    manifest = run.manifest if run.is_run() else {
        "seed": config.seed,
        "data_sha256": data_fingerprint(data), "in_dims": in_dims, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "threads": config.threads, "device": str(device), "resumes": 0, "data": data_spec}
    if state is not None:
        manifest["resumes"] = manifest.get("resumes", 0) + 1
        if manifest.get("data_sha256") != data_fingerprint(data):
            raise CheckpointError(f"{run.path}: the data differ from those the run started with")
        _record_resumed_code(manifest, here["code_version"])
    else:  # nothing trained yet (new, or killed before its first checkpoint): the code starts here
        manifest.update(here)
    manifest["status"] = "running"
    manifest["world_size"] = ctx.world_size
    if main:
        run.write_manifest(manifest)
        if state is not None:  # the committed history is authoritative (a kill may have cut the log short)
            run.write_log(history)
    ctx.barrier()

    board = _board(run, start_epoch) if tensorboard and main else None
    dataset = TripletDataset(train_split)
    n = len(dataset)
    # an epoch is one pass (the last incomplete batch dropped) or a fixed number of steps
    steps_per_epoch = config.steps_per_epoch or max(1, n // config.batch_size)
    bar = tqdm(total=config.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch, disable=not (progress and main),
               desc=f"{config.method} seed {config.seed}", unit="step", dynamic_ncols=True)
    steps_done = 0
    for epoch in range(start_epoch, config.epochs):
        if _plateaued(config, epoch - 1, best_epoch):  # a resumed run that had stopped early stays stopped
            break
        t0 = time.perf_counter()
        epoch_seed = _epoch_seed(config.seed, epoch)
        torch.manual_seed(epoch_seed)
        batches = _epoch_batches(n, config.batch_size, steps_per_epoch, config.steps_per_epoch is not None,
                                 torch.Generator().manual_seed(epoch_seed))
        if config.train_views == "sample" and train_split.views is not None:  # this epoch's view of every item
            dataset = TripletDataset(draw_views(train_split, epoch_seed))
        proj_gen = torch.Generator(device=device).manual_seed(epoch_seed + 1)
        model.train()
        sums: dict[str, float] = {}
        for step in range(steps_per_epoch):
            idx = batches[step]
            optimizer.zero_grad(set_to_none=True)
            try:
                terms = train_step(model, objective, dataset, idx, ctx, device, proj_gen)
            except NonFiniteLossError as exc:
                message = f"epoch {epoch}, step {step}: {exc}"
                if main:
                    run.write_manifest({**manifest, "status": "failed", "error": message})
                raise NonFiniteLossError(message) from None
            optimizer.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            bar.update(1)
            bar.set_postfix({k: f"{v / (step + 1):.4f}" for k, v in sums.items()}, refresh=False)
            steps_done += 1
            faults.after_step()
            if stop_after_steps is not None and steps_done >= stop_after_steps:
                bar.close()
                if board is not None:
                    board.close()
                return {"interrupted": True, "epoch": epoch, "step": step}
        score, tasks, kappa = _validation(model, val_split, device)
        row = {"epoch": epoch,
               **{k: sums[k] / steps_per_epoch if k in sums else None for k in ("loss", "L_C", "L_S", "VIB")},
               "val_score": score, "val_R@1_mean": float(np.mean([t["R@1"] for t in tasks.values()])) if tasks else None,
               **kappa, "seconds": time.perf_counter() - t0}
        history.append(row)
        improved = score > best_score
        if improved:
            best_score, best_epoch = score, epoch
        if main:
            if improved:
                run.save_best(model.state_dict(), epoch, score, tasks)
            run.save_checkpoint({"model": model.state_dict(), "objective": objective.state_dict(),
                                 "optimizer": optimizer.state_dict(), "epoch": epoch, "best_score": best_score,
                                 "best_epoch": best_epoch, "history": history}, config.keep_checkpoints)
            run.write_log(history)
            if board is not None:
                for key in LOG_FIELDS[1:]:
                    if row.get(key) is not None:
                        board.add_scalar(key, row[key], epoch)
                board.flush()
        ctx.barrier()
        if _plateaued(config, epoch, best_epoch):
            break
    bar.close()
    if board is not None:
        board.close()
    stopped_epoch = history[-1]["epoch"]
    if main:
        manifest.update(status="finished", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), stopped_epoch=stopped_epoch,
                        early_stopped=stopped_epoch < config.epochs - 1)
        run.write_manifest(manifest)
    ctx.barrier()
    summary = run.metrics
    summary.update(history=history, stopped_epoch=stopped_epoch)
    return summary


def _plateaued(config: TrainConfig, last_epoch: int, best_epoch: int) -> bool:
    """Early stopping: whether the ``config.patience`` epochs up to ``last_epoch`` all failed to
    improve on the best validation score (of ``best_epoch``); never without a patience."""
    return config.patience is not None and last_epoch - best_epoch >= config.patience


def _record_resumed_code(manifest: dict, version: Mapping) -> None:
    """Keep the run's start-time ``code_version``; append the resuming process's version to
    ``resumed_code_versions`` (with the resume's number) when it differs in commit, dirty flag or sources."""
    key = ("commit", "dirty", "source_sha256")
    start = manifest.get("code_version")
    if start is None or any(start.get(k) != version[k] for k in key):
        manifest.setdefault("resumed_code_versions", []).append(
            {**{k: version[k] for k in key}, "recorded": "resume", "resume": manifest["resumes"]})


def _epoch_batches(n: int, batch: int, steps: int, fixed_steps: bool, generator: torch.Generator) -> list[torch.Tensor]:
    """The item indices of an epoch's ``steps`` batches.

    One random permutation cut into batches of ``batch`` (the default: one pass, the last
    incomplete batch dropped); with ``fixed_steps`` (``TrainConfig.steps_per_epoch``) as many
    permutations as the steps need, each cut into its full batches, so that no batch repeats an
    item even when the training set is smaller than a batch times the steps.
    """
    order = torch.randperm(n, generator=generator)
    if not fixed_steps:
        return [order[step * batch:(step + 1) * batch] for step in range(steps)]
    per_pass = max(1, n // batch)
    batches = [order[i * batch:(i + 1) * batch] for i in range(per_pass)]
    while len(batches) < steps:
        order = torch.randperm(n, generator=generator)
        batches += [order[i * batch:(i + 1) * batch] for i in range(per_pass)]
    return batches[:steps]


def _require_tensorboard() -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ImportError("tensorboard=True needs the tensorboard package: pip install tensorboard") from None


def _board(run: Run, start_epoch: int):
    """A TensorBoard writer on ``run/tensorboard`` hiding events from ``start_epoch`` on (repeated work)."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run.path / "tensorboard"), purge_step=start_epoch if start_epoch else None)
