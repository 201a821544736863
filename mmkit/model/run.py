"""The run directory: one trained method and seed, and the only code that reads or writes it.

::

    run/
      config.json        the TrainConfig (resuming with a different config is refused)
      manifest.json      code version at start (code_version), package versions, seed, data hash and spec,
                         input dims, start/end, status, stopped_epoch
      log.csv            one row per epoch: loss terms, validation metrics, kappa statistics, seconds (LOG_FIELDS)
      tensorboard/       the same scalars as TensorBoard event files (only when training asked for them)
      checkpoint.json    pointer {file, sha256, epoch} to the last good checkpoint (atomic)
      ckpt-epochNNNN.pt  full training state (the newest ``keep_checkpoints`` are kept)
      best.pt            model weights of the epoch with the best validation score
      metrics.json       validation metrics of the best epoch, SHA-256 of best.pt
      eval/<key>.json    stored evaluations (mmkit.analysis.evaluate)

:class:`Run` is used by training (:mod:`mmkit.training`) to write these files and by everything
downstream (evaluation, figures, widgets) to load a model and encode data, without importing the
training loop. Every file is written atomically; checkpoints carry a SHA-256 and are loaded with
``torch.load(weights_only=True)``; a missing or corrupt file is a :class:`CheckpointError` that
names it.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import platform
import re
import subprocess
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from mmkit.core.io import (atomic_write_bytes, atomic_write_json, atomic_write_text, remove_stale_temporaries, sha256_bytes)
from mmkit.data.bundle import FeatureSplit
from mmkit.data.datasets import TripletDataset, batch_to_device
from mmkit.model.config import ConfigError, TrainConfig
from mmkit.model.encoders import MultimodalEncoder
from mmkit.model.encodings import Encodings
from mmkit.model.factory import build_model, model_inputs
from mmkit.vocab import MODALITIES

__all__ = ["CheckpointError", "Run", "LOG_FIELDS", "KAPPA_STATISTICS", "encode_split", "data_fingerprint",
           "kappa_statistics", "code_version", "provenance", "TRAINING_CODE"]

#: The spread statistics of :func:`kappa_statistics` besides the mean, in ``log.csv`` as ``kappa_<modality>_<name>``.
KAPPA_STATISTICS = ("sd", "cv", "q05", "q25", "q50", "q75", "q95")
#: Columns of ``log.csv``, one row per epoch (``kappa_<modality>`` is the mean of the validation items' kappa).
LOG_FIELDS = ["epoch", "loss", "L_C", "L_S", "VIB", "val_score", "val_R@1_mean"] + \
    [f"kappa_{m}" for m in MODALITIES] + [f"kappa_{m}_{s}" for m in MODALITIES for s in KAPPA_STATISTICS] + ["seconds"]
_CHECKPOINT_NAME = re.compile(r"ckpt-epoch\d{4,}\.pt")
_CHECKPOINT_KEYS = ("model", "objective", "optimizer", "epoch", "best_score", "best_epoch", "history")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt, or belongs to another configuration."""


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


def kappa_statistics(kappa: torch.Tensor) -> dict[str, float]:
    """Summary of concentrations ``kappa`` (N,), N >= 1: ``mean``, ``sd`` (with N - 1), ``cv`` = sd / mean
    (the per-item spread of issue 23), ``mean_log`` and the quantiles ``q05`` .. ``q95`` (linear interpolation)."""
    k = torch.as_tensor(kappa).detach().double().reshape(-1)
    if k.numel() == 0:
        raise ValueError("kappa_statistics: no kappa values")
    q = torch.quantile(k, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64)).tolist()
    mean, sd = float(k.mean()), float(k.std()) if k.numel() > 1 else 0.0
    return {"mean": mean, "sd": sd, "cv": sd / mean, "mean_log": float(k.log().mean()),
            "q05": q[0], "q25": q[1], "q50": q[2], "q75": q[3], "q95": q[4]}


def _git(root: Path, *args: str) -> str | None:
    """``git args`` run in ``root``: its stripped output, or None when git fails or is missing."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=root)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


#: The code that determines a trained model and its stored evaluation (paths relative to the package
#: directory; a folder ends with "/"): :func:`code_version`'s ``training_sha256`` hashes only these.
TRAINING_CODE = ("core/", "data/", "model/", "training/", "retrieval/", "vocab.py", "pipeline/study.py",
                 "analysis/evaluate.py")


def _sources_sha256(root: Path, keep=lambda rel: True) -> str:
    """SHA-256 over the ``*.py`` files under ``root`` whose relative POSIX path passes ``keep``, in the
    order of those paths, each contributing its path (UTF-8), a NUL byte, its size (8 bytes,
    big-endian) and its bytes."""
    digest = hashlib.sha256()
    for rel in sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py") if p.is_file()):
        if keep(rel):
            data = (root / rel).read_bytes()
            digest.update(rel.encode("utf-8") + b"\0" + len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def code_version(root: str | Path | None = None) -> dict:
    """The version of the code in use: ``{"commit", "dirty", "source_sha256", "training_sha256",
    "recorded": "start"}``.

    Parameters
    ----------
    root : the package directory (default: that of the imported ``mmkit``)

    Returns
    -------
    dict
        ``source_sha256``: SHA-256 over every ``*.py`` file under ``root`` in the order of their
        relative POSIX paths, each contributing its path (UTF-8), a NUL byte, its size (8 bytes,
        big-endian) and its bytes; it identifies the code whether or not it is in git.
        ``training_sha256``: the same over only the code that determines a trained model and its
        stored evaluation (:data:`TRAINING_CODE`): ``core/``, ``data/``, ``model/``, ``training/``,
        ``retrieval/``, ``vocab.py``, ``pipeline/study.py`` (the study's runner: perturbations,
        settings, what a run stores) and ``analysis/evaluate.py``; a change to the analysis of
        stored runs, figures, widgets, notebooks or the CLI leaves it unchanged (the study's
        analysis compares runs by it, issue 24).
        ``commit`` (HEAD) and ``dirty`` (uncommitted changes, staged or not, to tracked files
        under ``root``) come from git when ``root`` is tracked in a work tree, else both are None.
        ``recorded`` says when it was taken: training stores it in the manifest at the start of
        a run (:func:`provenance`).
    """
    root = Path(root) if root is not None else Path(__file__).resolve().parents[1]
    if not root.is_dir():
        raise ValueError(f"code_version: {root} is not a directory")
    commit = dirty = None
    if _git(root, "ls-files", "--error-unmatch", "--", ".") is not None:  # tracked files in a work tree
        commit = _git(root, "rev-parse", "HEAD") or None
        status = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".")
        dirty = None if status is None else bool(status)
    training = _sources_sha256(root, lambda rel: rel.startswith(TRAINING_CODE))
    return {"commit": commit, "dirty": dirty, "source_sha256": _sources_sha256(root), "training_sha256": training,
            "recorded": "start"}


def provenance() -> dict:
    """``{"git_commit", "versions", "code_version"}`` of this process, for a run's manifest
    (``git_commit`` is ``code_version()["commit"]``, kept for the manifests written before it)."""
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for pkg in ("torch", "numpy", "mmkit"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = "unknown"
    version = code_version()
    return {"git_commit": version["commit"], "versions": versions, "code_version": version}


@torch.no_grad()
def encode_split(model: MultimodalEncoder, split: FeatureSplit, batch_size: int = 512,
                 device: torch.device | str = "cpu") -> Encodings:
    """Encode every row of ``split`` with ``model`` (on CPU): typed :class:`Encodings`.

    A model with backbones reads raw inputs (:func:`~mmkit.model.factory.model_inputs` converts
    ``split`` if needed). Rows lacking a modality are encoded from zero features; use the split's
    ``present`` masks to leave them out.
    """
    model.eval()
    ds = TripletDataset(model_inputs(model, split))
    parts = []
    for start in range(0, len(ds), batch_size):
        batch = batch_to_device(ds.batch(range(start, min(start + batch_size, len(ds)))), torch.device(device))
        outputs = {m: (a.cpu(), b.cpu()) for m, (a, b) in model(batch).items()}
        parts.append(Encodings.from_outputs(outputs, model.family))
    return Encodings.concatenate(parts)


class Run:
    """A run directory (see the module docstring); nothing is read until asked for.

    Parameters
    ----------
    path : the directory (it need not exist yet for a run about to be trained)

    Examples
    --------
    >>> run = Run("reports/runs/quick/proposed-l1-s0")       # doctest: +SKIP
    >>> run.config.method, run.manifest["data"]              # doctest: +SKIP
    ('proposed', 'small')
    >>> enc = run.encode(run.load_data()["test"])            # doctest: +SKIP
    >>> enc["audio"].loc.shape, enc.family                   # doctest: +SKIP
    (torch.Size([209, 32]), 'vmf')
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------ reading
    def _read_json(self, name: str, what: str):
        path = self.path / name
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise CheckpointError(f"{path}: missing {what}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}: corrupt {what}, not valid JSON ({exc})") from None

    def is_run(self) -> bool:
        """Whether the directory holds a run's manifest."""
        return (self.path / "manifest.json").is_file()

    @property
    def config(self) -> TrainConfig:
        path = self.path / "config.json"
        try:
            return TrainConfig.from_json(path.read_text())
        except FileNotFoundError:
            raise CheckpointError(f"{path}: missing run config") from None
        except (ConfigError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}: corrupt run config ({exc})") from None

    @property
    def manifest(self) -> dict:
        manifest = self._read_json("manifest.json", "run manifest")
        if not isinstance(manifest, dict):
            raise CheckpointError(f"{self.path / 'manifest.json'}: corrupt run manifest, expected a JSON object")
        return manifest

    def _manifest_field(self, key: str):
        manifest = self.manifest
        if key not in manifest:
            raise CheckpointError(f"{self.path / 'manifest.json'}: the run manifest has no {key!r} "
                                  f"(fields: {sorted(manifest)})")
        return manifest[key]

    @property
    def in_dims(self) -> dict[str, int]:
        """Modality -> the input feature dimension the run was trained on."""
        return dict(self._manifest_field("in_dims"))

    @property
    def metrics(self) -> dict:
        """``metrics.json``: validation metrics of the best epoch."""
        return self._read_json("metrics.json", "metrics of the best epoch")

    @property
    def data_spec(self) -> str:
        """The data the run was trained on, valid from any directory: a preset name as recorded, else the
        bundle directory as an absolute path (a relative one is read relative to the run directory, then,
        for runs recorded relative to where they were trained, to the current directory)."""
        from mmkit.data.resolve import PRESETS

        spec = self.manifest.get("data")
        if not spec:
            raise CheckpointError(f"{self.path}: the manifest does not record its data; pass the data explicitly")
        if spec in PRESETS or Path(spec).is_absolute():
            return spec
        for base in (self.path, Path.cwd()):
            if (base / spec).is_dir():
                return str((base / spec).resolve())
        raise CheckpointError(f"{self.path}: its data {spec!r} is neither a preset {PRESETS} nor a bundle directory "
                              f"relative to the run ({self.path.resolve()}) or to the current directory ({Path.cwd()})")

    def load_data(self, cache_dir: str | Path | None = None, progress: bool = False) -> dict[str, FeatureSplit]:
        """The data the run was trained on (its manifest's spec), checked against the recorded hash."""
        from mmkit.data.resolve import resolve_data

        spec = self.data_spec
        data = resolve_data(spec, cache_dir=cache_dir, progress=progress)
        if data_fingerprint(data) != self._manifest_field("data_sha256"):
            raise CheckpointError(f"{self.path}: the data at {spec!r} differ from those the run was trained on")
        return data

    def load_model(self, which: str = "best") -> MultimodalEncoder:
        """The trained encoder in eval mode: ``which`` = "best" (``best.pt``) or "last" (the last checkpoint)."""
        if which not in ("best", "last"):
            raise ValueError(f"which must be 'best' or 'last', got {which!r}")
        model, _ = build_model(self.config, self.in_dims)
        if which == "best":
            path = self.path / "best.pt"
            if not path.is_file():
                raise CheckpointError(f"{path}: missing (has the run finished an epoch?)")
            data = path.read_bytes()
            expected = self.metrics.get("best_sha256")
            if expected is not None and sha256_bytes(data) != expected:  # runs written before the checksum have none
                raise CheckpointError(f"{path}: checksum mismatch with metrics.json (corrupt, or the run was killed "
                                      "while saving it: re-run the training command to resume)")
            state = _torch_load(path, data)
        else:
            state = self.load_checkpoint()
            if state is None:
                raise CheckpointError(f"{self.path}: no checkpoint yet")
        model.load_state_dict(state["model"])
        model.eval()
        return model

    def feature_mismatch(self, split: FeatureSplit) -> dict[str, tuple[int, int]]:
        """Modality -> (run's input dim, split's dim) where ``split``'s features differ from the training ones."""
        have = {m: split.feature_dim(m) for m in split.modalities}
        return {m: (d, have[m]) for m, d in self.in_dims.items() if have.get(m) not in (None, d)}

    def encode(self, split: FeatureSplit, which: str = "best", device: torch.device | str = "cpu") -> Encodings:
        """:func:`encode_split` of ``split`` with the run's model (``which`` as in :meth:`load_model`)."""
        return encode_split(self.load_model(which).to(device), split, device=device)

    def read_log(self) -> list[dict[str, float]]:
        """The rows of ``log.csv`` as floats (NaN where empty)."""
        path = self.path / "log.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no training log (is {self.path} a run directory written by mmkit train?)")
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            fields = reader.fieldnames or []
        missing = [c for c in ("epoch", "loss") if c not in fields]
        if missing or not rows:
            raise ValueError(f"{path}: expected a header with 'epoch' and 'loss' and at least one row; "
                             f"got columns {fields} and {len(rows)} row(s)")
        try:
            return [{c: float(r[c]) if r[c] not in ("", None) else float("nan") for c in fields} for r in rows]
        except ValueError as exc:
            raise ValueError(f"{path}: non-numeric entry ({exc})") from None

    def load_checkpoint(self) -> dict | None:
        """The full training state of the last good checkpoint, or None before the first."""
        pointer = self.path / "checkpoint.json"
        if not pointer.exists():
            return None
        meta = self._read_json("checkpoint.json", "checkpoint pointer")
        if not (isinstance(meta, dict) and isinstance(meta.get("file"), str) and _CHECKPOINT_NAME.fullmatch(meta["file"])
                and isinstance(meta.get("sha256"), str) and isinstance(meta.get("epoch"), int)):
            raise CheckpointError(f"{pointer}: expected {{'file': 'ckpt-epochNNNN.pt', 'sha256': <hex>, 'epoch': <int>}}, "
                                  f"got {meta!r}; delete the run directory to start over")
        path = self.path / meta["file"]
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint named in {pointer.name} is missing")
        data = path.read_bytes()
        if sha256_bytes(data) != meta["sha256"]:
            raise CheckpointError(f"{path}: checksum mismatch (truncated or corrupt checkpoint: {len(data)} bytes, "
                                  f"SHA-256 {sha256_bytes(data)[:12]}..., expected {meta['sha256'][:12]}...); "
                                  "delete it and checkpoint.json to restart from scratch")
        state = _torch_load(path, data)
        missing = [k for k in _CHECKPOINT_KEYS if not (isinstance(state, dict) and k in state)]
        if missing or state["epoch"] != meta["epoch"]:
            raise CheckpointError(f"{path}: not a training checkpoint of epoch {meta['epoch']} "
                                  f"(missing {missing}, epoch {state.get('epoch') if isinstance(state, dict) else None})")
        return state

    # ------------------------------------------------------------------ writing (training)
    def prepare(self, config: TrainConfig, write: bool = True) -> None:
        """Create the directory for ``config``: refuse one holding another config, remove the
        temporaries a killed write left behind, and store ``config.json`` (``write`` = main process)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if write:
            remove_stale_temporaries(self.path)
        if (self.path / "config.json").exists():
            previous = self.config
            if previous != config:
                diff = {k: (v, getattr(config, k)) for k, v in previous.to_dict().items() if config.to_dict()[k] != v}
                raise CheckpointError(f"{self.path}: holds a run with another config {diff}; use a new --out directory")
        elif write:
            atomic_write_json(self.path / "config.json", config.to_dict())

    def write_manifest(self, manifest: Mapping) -> None:
        atomic_write_json(self.path / "manifest.json", dict(manifest))

    def save_best(self, model_state: Mapping, epoch: int, score: float, tasks: Mapping) -> None:
        """``best.pt`` (weights of ``epoch``), then ``metrics.json`` recording its SHA-256."""
        buf = io.BytesIO()
        torch.save({"model": model_state, "epoch": epoch}, buf)
        atomic_write_bytes(self.path / "best.pt", buf.getvalue())
        atomic_write_json(self.path / "metrics.json", {"best_epoch": epoch, "val_score": score, "val_tasks": tasks,
                                                       "best_sha256": sha256_bytes(buf.getvalue())})

    def save_checkpoint(self, state: dict, keep: int) -> None:
        """Write the checkpoint, commit it in ``checkpoint.json``, then prune: the ``keep`` newest up
        to this one stay; later-numbered files (left by an abandoned earlier history) go."""
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
        name = f"ckpt-epoch{state['epoch']:04d}.pt"
        atomic_write_bytes(self.path / name, data)
        atomic_write_json(self.path / "checkpoint.json", {"file": name, "sha256": sha256_bytes(data), "epoch": state["epoch"]})
        files = sorted(self.path.glob("ckpt-epoch*.pt"))
        current = files.index(self.path / name)
        for old in files[:max(0, current + 1 - keep)] + files[current + 1:]:
            old.unlink()

    def write_log(self, history: list[dict]) -> None:
        """``log.csv`` from the epoch rows (columns :data:`LOG_FIELDS`)."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=LOG_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        atomic_write_text(self.path / "log.csv", out.getvalue())


def _torch_load(path: Path, data: bytes):
    try:
        return torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a corrupt checkpoint
        raise CheckpointError(f"{path}: cannot be loaded with weights_only=True ({exc})") from None
