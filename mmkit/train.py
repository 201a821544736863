"""Training: a validated config, ``fit()``, run directories, atomic checkpoints and exact resume.

Run directory (the unit every later step reads)::

    run/
      config.json        the TrainConfig (resuming with a different config is refused)
      manifest.json      git commit, package versions, seed, data hash, start/end time, status
      log.csv            one row per epoch: loss terms, validation metrics, kappa, seconds
      tensorboard/       the same scalars as TensorBoard event files (only with ``tensorboard=True``)
      checkpoint.json    pointer {file, sha256, epoch} to the last good checkpoint (atomic)
      ckpt-epochNNNN.pt  full training state (the last two are kept)
      best.pt            model weights of the epoch with the best validation score
      metrics.json       validation metrics of the best epoch, SHA-256 of best.pt

Determinism: every epoch reseeds torch from ``(seed, epoch)`` and draws its batch order from a
generator with the same key, so a run interrupted at any point and resumed with the same command
produces bit-identical results to an uninterrupted one (on the same machine and thread count).
Checkpoints are written atomically with a SHA-256 recorded in ``checkpoint.json`` and loaded with
``torch.load(weights_only=True)``; ``best.pt`` is checked against the SHA-256 recorded in
``metrics.json``. A resumed run first deletes the temporary files a killed write left behind.
The fault-injection hook :func:`mmkit.faults.after_step` is consulted after every optimizer step.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import platform
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from . import faults
from .data.bundle import FeatureSplit
from .data.datasets import TripletDataset
from .distributed import DistributedContext, init_distributed
from .io import atomic_write_bytes, atomic_write_json, atomic_write_text, remove_stale_temporaries, sha256_bytes
from .losses import GAUSSIAN_METHODS, VMF_METHODS, TrainingObjective
from .data.raw import VOCAB_SIZE, raw_split
from .models import ConvBackbone, MultimodalEncoder, TokenCNN, masked_mean_pool
from .retrieval import evaluate_tasks

__all__ = ["TrainConfig", "ConfigError", "CheckpointError", "NonFiniteLossError", "fit", "load_run_model",
           "encode_split", "model_inputs", "build_backbones", "data_fingerprint"]

METHODS = VMF_METHODS + GAUSSIAN_METHODS


class ConfigError(ValueError):
    """A configuration key or value is invalid."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt, or belongs to another configuration."""


class NonFiniteLossError(FloatingPointError):
    """The loss (or a gradient) became NaN/inf; the message names the epoch, step and item indices
    of the batch."""


@dataclass(frozen=True)
class TrainConfig:
    """Every training setting, validated on construction and stored with the run.

    Defaults and how they were chosen are documented in ``docs/hyperparameters.md``.
    """

    method: str = "proposed"
    lambda_s: float = 1.0
    contrastive: str = "infonce"
    dim: int = 32
    n_samples: int = 16
    n_projections: int = 50
    match_samples: int = 7
    vib_weight: float = 1e-4
    debiased_ssw: bool = False
    encoder: str = "heads"
    backbone_width: int = 32
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.1
    kappa_floor: float = 1.0
    kappa_init: float = 100.0
    batch_size: int = 128
    epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 1
    device: str = "auto"
    keep_checkpoints: int = 2

    def __post_init__(self):
        def fail(name, expected):
            raise ConfigError(f"TrainConfig.{name}: expected {expected}, got {getattr(self, name)!r}")

        def number(name) -> bool:  # a real number (bools are ints in Python, not settings)
            value = getattr(self, name)
            return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)

        if self.method not in METHODS:
            fail("method", f"one of {METHODS}")
        if self.contrastive not in ("infonce", "pcme"):
            fail("contrastive", "'infonce' or 'pcme'")
        if not (number("lambda_s") and self.lambda_s >= 0):
            fail("lambda_s", "a number >= 0 (inf means L_S only)")
        if self.encoder not in ("heads", "backbones"):
            fail("encoder", "'heads' (over cached features) or 'backbones' (CNNs over raw inputs)")
        for name, low in (("dim", 2), ("n_samples", 1), ("n_projections", 1), ("match_samples", 1), ("hidden", 1),
                          ("layers", 0), ("batch_size", 2), ("epochs", 1), ("threads", 1), ("keep_checkpoints", 1),
                          ("backbone_width", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                fail(name, f"an int >= {low}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            fail("seed", "an int >= 0")
        for name in ("vib_weight", "weight_decay"):
            if not (number(name) and 0 <= getattr(self, name) < math.inf):
                fail(name, "a finite number >= 0")
        for name in ("lr", "kappa_floor", "kappa_init"):
            if not (number(name) and 0 < getattr(self, name) < math.inf):
                fail(name, "a finite number > 0")
        if self.kappa_init <= self.kappa_floor:
            fail("kappa_init", f"a number above kappa_floor = {self.kappa_floor!r} (every kappa starts there)")
        if not (number("dropout") and 0 <= self.dropout < 1):
            fail("dropout", "a number in [0, 1)")
        if not isinstance(self.debiased_ssw, bool):
            fail("debiased_ssw", "a bool")
        if self.debiased_ssw and self.n_samples % 2:
            fail("n_samples", "an even number when debiased_ssw is set")
        if self.device not in ("auto", "cpu", "cuda"):
            fail("device", "'auto', 'cpu' or 'cuda'")
        if self.method == "ls_only" and self.lambda_s != math.inf:
            object.__setattr__(self, "lambda_s", math.inf)
        if self.method == "proposed" and self.lambda_s == math.inf:
            object.__setattr__(self, "method", "ls_only")
        if self.method == "baseline" and self.lambda_s != 0:
            object.__setattr__(self, "lambda_s", 0.0)

    @classmethod
    def from_dict(cls, values: Mapping) -> "TrainConfig":
        """Build from a mapping, refusing unknown keys (with the list of valid ones)."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"TrainConfig.from_dict: expected a mapping of setting -> value, got {type(values).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown TrainConfig key(s) {unknown}; valid keys: {sorted(names)}")
        return cls(**dict(values))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["lambda_s"] == math.inf:
            d["lambda_s"] = "inf"
        return d

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"TrainConfig.from_json: not valid JSON ({exc})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"TrainConfig.from_json: expected a JSON object, got {type(d).__name__}")
        if d.get("lambda_s") == "inf":
            d["lambda_s"] = math.inf
        return cls.from_dict(d)

    @property
    def family(self) -> str:
        return "vmf" if self.method in VMF_METHODS else "gaussian"


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


def data_fingerprint(splits: Mapping[str, FeatureSplit]) -> str:
    """SHA-256 over ids, features and masks of every split (identifies the data of a run)."""
    parts = []
    for name in sorted(splits):
        s = splits[name]
        parts.append(name.encode())
        parts.append("\n".join(map(str, s.ids)).encode())
        for m in s.modalities:
            parts += [m.encode(), np.ascontiguousarray(s.features[m]).tobytes(), s.present[m].tobytes()]
    return sha256_bytes(b"\0".join(parts))


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "numpy", "mmkit"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**63)


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("TrainConfig.device: 'cuda' requested but CUDA is not available")
    return torch.device(name)


def _to_device(batch: dict, device: torch.device) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, dict):
            out[k] = {kk: vv.to(device) for kk, vv in v.items()}
        elif isinstance(v, torch.Tensor):
            out[k] = v.to(device)
        else:
            out[k] = v
    return out


def build_backbones(modalities, width: int) -> dict[str, torch.nn.Module]:
    """CNN backbones over the raw inputs of :mod:`mmkit.data.raw`: a VGG-style
    :class:`~mmkit.models.ConvBackbone` (4 blocks, ``width`` .. 8 x ``width`` channels) for the
    log-mel spectrogram and for the score image, a :class:`~mmkit.models.TokenCNN` (8 x ``width``
    channels) over caption tokens."""
    make = {"audio": lambda: ConvBackbone(4, width), "image": lambda: ConvBackbone(4, width),
            "text": lambda: TokenCNN(VOCAB_SIZE, width=8 * width)}
    return {m: make[m]() for m in modalities}


def build_model(config: TrainConfig, in_dims: Mapping[str, int]) -> tuple[MultimodalEncoder, TrainingObjective]:
    """The encoder and objective for ``config`` (parameters initialised from the global RNG).

    ``in_dims`` : modality -> cached feature dimension (ignored for modalities with a backbone).
    """
    backbones = build_backbones(in_dims, config.backbone_width) if config.encoder == "backbones" else None
    model = MultimodalEncoder(in_dims, config.dim, family=config.family, hidden=config.hidden,
                              layers=config.layers, dropout=config.dropout, kappa_floor=config.kappa_floor,
                              kappa_init=config.kappa_init, backbones=backbones)
    objective = TrainingObjective(config.method, config.lambda_s, config.contrastive, config.n_samples,
                                  config.n_projections, config.match_samples, config.vib_weight, config.debiased_ssw)
    return model, objective


def model_inputs(model: MultimodalEncoder, split: FeatureSplit, progress: bool = False) -> FeatureSplit:
    """What ``model`` reads: ``split`` itself for heads over cached features; for a model with
    backbones, ``split`` with raw inputs (:func:`mmkit.data.raw.raw_split`) for those modalities."""
    missing = tuple(m for m in model.backbones if m not in split.raw)
    return raw_split(split, missing, progress=progress) if missing else split


@torch.no_grad()
def encode_split(model: MultimodalEncoder, split: FeatureSplit, batch_size: int = 512,
                 device: torch.device | str = "cpu") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Encode every row of ``split``: modality -> (loc (N, d), kappa-or-log_var) on CPU.

    For Gaussian models the second entry is the mean precision ``exp(-log_var).mean(-1)`` (N,),
    so that fusion and metrics can treat both families alike (a documented approximation).
    A model with backbones reads raw inputs (:func:`model_inputs` converts ``split`` if needed).
    """
    model.eval()
    ds = TripletDataset(model_inputs(model, split))
    chunks: dict[str, list] = {m: [] for m in ds.modalities}
    for start in range(0, len(ds), batch_size):
        batch = _to_device(ds.batch(range(start, min(start + batch_size, len(ds)))), torch.device(device))
        for m, (a, b) in model(batch).items():
            if model.family == "gaussian":
                b = torch.exp(-b).mean(-1)
            chunks[m].append((a.cpu(), b.cpu()))
    return {m: (torch.cat([c[0] for c in v]), torch.cat([c[1] for c in v])) for m, v in chunks.items() if v}


def _validation(model, split, device) -> tuple[float, dict, dict]:
    """Selection score (mean MRR over the available tasks, mu-cosine ranking), tasks, encodings."""
    params = encode_split(model, split, device=device)
    present = {m: torch.from_numpy(split.present[m].copy()) for m in params}
    tasks = evaluate_tasks(params, present)
    score = float(np.mean([t["MRR"] for t in tasks.values()])) if tasks else float("nan")
    return score, tasks, params


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------
_CHECKPOINT_NAME = re.compile(r"ckpt-epoch\d{4,}\.pt")
_CHECKPOINT_KEYS = ("model", "objective", "optimizer", "epoch", "best_score", "best_epoch", "history")


def _save_checkpoint(run: Path, state: dict, keep: int) -> None:
    """Write the checkpoint, commit it in ``checkpoint.json``, then prune: the ``keep`` newest up
    to this one stay; later-numbered files (left by an abandoned earlier history) go."""
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    name = f"ckpt-epoch{state['epoch']:04d}.pt"
    atomic_write_bytes(run / name, data)
    atomic_write_json(run / "checkpoint.json", {"file": name, "sha256": sha256_bytes(data), "epoch": state["epoch"]})
    files = sorted(run.glob("ckpt-epoch*.pt"))
    current = files.index(run / name)
    for old in files[:max(0, current + 1 - keep)] + files[current + 1:]:
        old.unlink()


def _read_json(path: Path, what: str):
    """Parsed JSON of a run file; a missing or corrupt file is a :class:`CheckpointError`."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt {what}, not valid JSON ({exc})") from None


def _read_config(path: Path) -> TrainConfig:
    try:
        return TrainConfig.from_json(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing run config") from None
    except (ConfigError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt run config ({exc})") from None


def _load_checkpoint(run: Path) -> dict | None:
    pointer = run / "checkpoint.json"
    if not pointer.exists():
        return None
    meta = _read_json(pointer, "checkpoint pointer")
    if not (isinstance(meta, dict) and isinstance(meta.get("file"), str) and _CHECKPOINT_NAME.fullmatch(meta["file"])
            and isinstance(meta.get("sha256"), str) and isinstance(meta.get("epoch"), int)):
        raise CheckpointError(f"{pointer}: expected {{'file': 'ckpt-epochNNNN.pt', 'sha256': <hex>, 'epoch': <int>}}, "
                              f"got {meta!r}; delete the run directory to start over")
    path = run / meta["file"]
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint named in {pointer.name} is missing")
    data = path.read_bytes()
    if sha256_bytes(data) != meta["sha256"]:
        raise CheckpointError(f"{path}: checksum mismatch (truncated or corrupt checkpoint: {len(data)} bytes, "
                              f"SHA-256 {sha256_bytes(data)[:12]}..., expected {meta['sha256'][:12]}...); "
                              "delete it and checkpoint.json to restart from scratch")
    try:
        state = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a corrupt checkpoint
        raise CheckpointError(f"{path}: cannot be loaded with weights_only=True ({exc})") from None
    missing = [k for k in _CHECKPOINT_KEYS if not (isinstance(state, dict) and k in state)]
    if missing or state["epoch"] != meta["epoch"]:
        raise CheckpointError(f"{path}: not a training checkpoint of epoch {meta['epoch']} "
                              f"(missing {missing}, epoch {state.get('epoch') if isinstance(state, dict) else None})")
    return state


def load_run_model(run: str | Path, which: str = "best") -> tuple[TrainConfig, MultimodalEncoder]:
    """Load a trained encoder from a run directory (``which`` = "best" or "last")."""
    run = Path(run)
    config = _read_config(run / "config.json")
    manifest = _read_json(run / "manifest.json", "run manifest")
    model, _ = build_model(config, manifest["in_dims"])
    if which == "best":
        path = run / "best.pt"
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (has the run finished an epoch?)")
        data = path.read_bytes()
        expected = _read_json(run / "metrics.json", "metrics of the best epoch").get("best_sha256")
        if expected is not None and sha256_bytes(data) != expected:  # runs written before the checksum have none
            raise CheckpointError(f"{path}: checksum mismatch with metrics.json (corrupt, or the run was killed while "
                                  "saving it: re-run the training command to resume)")
        try:
            state = torch.load(io.BytesIO(data), weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{path}: cannot be loaded with weights_only=True ({exc})") from None
        model.load_state_dict(state["model"])
    else:
        state = _load_checkpoint(run)
        if state is None:
            raise CheckpointError(f"{run}: no checkpoint yet")
        model.load_state_dict(state["model"])
    model.eval()
    return config, model


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
    local = _to_device(dataset.batch(ctx.shard(indices)), device)
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


LOG_FIELDS = ["epoch", "loss", "L_C", "L_S", "VIB", "val_score", "val_R@1_mean", "kappa_audio", "kappa_image",
              "kappa_text", "seconds"]


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
    stays resumable. Returns the summary written to ``metrics.json``.
    """
    if "train" not in data or "val" not in data:
        raise ValueError(f"data must hold 'train' and 'val' splits, got {sorted(data)}")
    if tensorboard:
        _require_tensorboard()
    device = _resolve_device(config.device)
    ctx = init_distributed(device)
    main = ctx.is_main
    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    if main:
        remove_stale_temporaries(run)
    cfg_path = run / "config.json"
    if cfg_path.exists():
        previous = _read_config(cfg_path)
        if previous != config:
            diff = {k: (v, getattr(config, k)) for k, v in previous.to_dict().items() if config.to_dict()[k] != v}
            raise CheckpointError(f"{run}: holds a run with another config {diff}; use a new --out directory")
    elif main:
        atomic_write_json(cfg_path, config.to_dict())
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
    params = list(model.parameters()) + list(objective.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    state = _load_checkpoint(run)
    history: list[dict] = []
    start_epoch, best_score, best_epoch = 0, -math.inf, -1
    if state is not None:
        model.load_state_dict(state["model"])
        objective.load_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best_score, best_epoch = state["epoch"] + 1, state["best_score"], state["best_epoch"]
        history = list(state["history"])
    manifest_path = run / "manifest.json"
    manifest = _read_json(manifest_path, "run manifest") if manifest_path.exists() else {
        "git_commit": _git_commit(), "versions": _versions(), "seed": config.seed,
        "data_sha256": data_fingerprint(data), "in_dims": in_dims, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "threads": config.threads, "device": str(device), "resumes": 0, "data": data_spec}
    if state is not None:
        manifest["resumes"] = manifest.get("resumes", 0) + 1
        if manifest.get("data_sha256") != data_fingerprint(data):
            raise CheckpointError(f"{run}: the data differ from those the run started with")
    manifest["status"] = "running"
    manifest["world_size"] = ctx.world_size
    if main:
        atomic_write_json(manifest_path, manifest)
        if state is not None:  # the committed history is authoritative (a kill may have cut the log short)
            _write_log(run / "log.csv", history)
    ctx.barrier()

    board = _board(run, start_epoch) if tensorboard and main else None
    dataset = TripletDataset(train_split)
    n = len(dataset)
    steps_per_epoch = max(1, n // config.batch_size)  # drop the last incomplete batch
    bar = tqdm(total=config.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch, disable=not (progress and main),
               desc=f"{config.method} seed {config.seed}", unit="step", dynamic_ncols=True)
    steps_done = 0
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        epoch_seed = _epoch_seed(config.seed, epoch)
        torch.manual_seed(epoch_seed)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed))
        proj_gen = torch.Generator(device=device).manual_seed(epoch_seed + 1)
        model.train()
        sums: dict[str, float] = {}
        for step in range(steps_per_epoch):
            idx = order[step * config.batch_size:(step + 1) * config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            try:
                terms = train_step(model, objective, dataset, idx, ctx, device, proj_gen)
            except NonFiniteLossError as exc:
                message = f"epoch {epoch}, step {step}: {exc}"
                if main:
                    atomic_write_json(manifest_path, {**manifest, "status": "failed", "error": message})
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
        score, tasks, enc = _validation(model, val_split, device)
        row = {"epoch": epoch,
               **{k: sums[k] / steps_per_epoch if k in sums else None for k in ("loss", "L_C", "L_S", "VIB")},
               "val_score": score, "val_R@1_mean": float(np.mean([t["R@1"] for t in tasks.values()])) if tasks else None,
               **{f"kappa_{m}": float(enc[m][1].mean()) if m in enc else None for m in ("audio", "image", "text")},
               "seconds": time.perf_counter() - t0}
        history.append(row)
        improved = score > best_score
        if improved:
            best_score, best_epoch = score, epoch
        if main:
            if improved:
                buf = io.BytesIO()
                torch.save({"model": model.state_dict(), "epoch": epoch}, buf)
                atomic_write_bytes(run / "best.pt", buf.getvalue())
                atomic_write_json(run / "metrics.json", {"best_epoch": epoch, "val_score": score, "val_tasks": tasks,
                                                         "best_sha256": sha256_bytes(buf.getvalue())})
            _save_checkpoint(run, {"model": model.state_dict(), "objective": objective.state_dict(),
                                   "optimizer": optimizer.state_dict(), "epoch": epoch, "best_score": best_score,
                                   "best_epoch": best_epoch, "history": history}, config.keep_checkpoints)
            _write_log(run / "log.csv", history)
            if board is not None:
                for key in LOG_FIELDS[1:]:
                    if row.get(key) is not None:
                        board.add_scalar(key, row[key], epoch)
                board.flush()
        ctx.barrier()
    bar.close()
    if board is not None:
        board.close()
    if main:
        manifest.update(status="finished", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        atomic_write_json(manifest_path, manifest)
    ctx.barrier()
    summary = _read_json(run / "metrics.json", "metrics of the best epoch")
    summary["history"] = history
    return summary


def _require_tensorboard() -> None:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ImportError("tensorboard=True needs the tensorboard package: pip install tensorboard") from None


def _board(run: Path, start_epoch: int):
    """A TensorBoard writer on ``run/tensorboard`` hiding events from ``start_epoch`` on (repeated work)."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run / "tensorboard"), purge_step=start_epoch if start_epoch else None)


def _write_log(path: Path, history: list[dict]) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=LOG_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, out.getvalue())
