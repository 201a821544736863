"""Reliability suite (issue 9): bad input at every public boundary, ``kill -9`` at any moment,
truncated and byte-flipped files, full disks.

The session fixture ``ledger`` counts what the suite tried (bad inputs, corrupt files, faults
injected, runs resumed, data lost) and records every bad-input case with the error the user sees.
It writes them as JSON at the end of the session, to ``$MMKIT_RELIABILITY_SUMMARY`` when set, else
into pytest's temporary directory; ``benchmarks/reliability_report.py`` runs the suite and turns
that JSON into the tables of ``docs/reliability.md``.

Faults are injected through :mod:`mmkit.core.faults` (``MMKIT_FAULT``): a ``python -m mmkit train``
subprocess kills itself with SIGKILL half-way through a named file write, or stops itself after
step k and is then killed with SIGKILL from here. Re-running the same command must finish with
results identical to an uninterrupted run (weights, optimizer state, history, best model,
metrics, log). ``MMKIT_SOAK=1 pytest -m soak`` adds a long run with many random kills.
"""
from __future__ import annotations

import ast
import csv
import errno
import hashlib
import io
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmkit.core import faults
from mmkit.data import BundleError, load_bundle, make_synthetic_bundle, resolve_data, save_bundle
from mmkit.core.distributions import HypersphericalUniform, PowerSpherical, VonMisesFisher
from mmkit.core.io import atomic_write_json, atomic_write_text, remove_stale_temporaries
from mmkit.model.losses import (TrainingObjective, product_of_gaussians, sampled_infonce_loss, soft_contrastive_loss, ssw_loss)
from mmkit.core.metrics import paired_bootstrap, ranks_from_scores, recall_at_k
from mmkit.app.notebook import ParameterError, check_parameters, run_notebook
from mmkit.retrieval.tasks import evaluate_tasks
from mmkit.vocab import parse_task
from mmkit.retrieval.scores import score
from mmkit.core.ssw import (circle_coordinates, random_stiefel_projections, sliced_wasserstein_sphere, wasserstein_circle)
from mmkit.model.run import LOG_FIELDS, CheckpointError, Run
from mmkit.model.config import ConfigError, TrainConfig
from mmkit.training.loop import NonFiniteLossError, fit

pytestmark = pytest.mark.reliability

SUMMARY_ENV = "MMKIT_RELIABILITY_SUMMARY"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ledger(tmp_path_factory):
    """What the suite tried; written as JSON when the session ends (see the module docstring)."""
    book = {"bad_inputs": [], "corrupt_files": 0, "faults": [], "resumes": 0, "data_lost": 0}
    yield book
    atomic_write_json(os.environ.get(SUMMARY_ENV) or tmp_path_factory.getbasetemp() / "reliability_summary.json", book)


def unit(*shape, dtype=torch.float32):
    return F.normalize(torch.randn(*shape, dtype=dtype), dim=-1)


def _shown(message: str, tmp: Path) -> str:
    """The message as the docs show it: temporary paths replaced by ``<dir>``, one line."""
    return re.sub(r"\s+", " ", message.replace(str(tmp.resolve()), "<dir>").replace(str(tmp), "<dir>")).strip()


def _example(ledger: dict, case: str, error: BaseException, tmp: Path) -> None:
    """Record the first error of a kind of corrupt file for the docs' table."""
    if case not in {b["case"] for b in ledger["bad_inputs"]}:
        ledger["bad_inputs"].append({"case": case, "error": type(error).__name__, "message": _shown(str(error), tmp)})


# ----------------------------------------------------------------------------------------------
# bad input at the public boundaries: error type AND a message naming argument, expected, actual
# ----------------------------------------------------------------------------------------------
def _bundle(tmp: Path, **train_fields) -> Path:
    """A valid two-modality bundle of 4 items per split, with fields of the train split replaced."""
    splits = {}
    for split, offset in zip(("train", "val", "test"), (0, 10, 20)):
        arrays = {"ids": np.array([f"x{offset + i}" for i in range(4)]), "audio": np.zeros((4, 3), np.float32),
                  "text": np.ones((4, 2), np.float32)}
        splits[split] = {**arrays, **train_fields} if split == "train" else arrays
    return save_bundle(tmp / "bundle", splits, name="t")


def _media(tmp: Path, path: str) -> Path:
    return _bundle(tmp, media_audio=np.array([path, "", "", ""]))


def _symlink_escape(tmp: Path) -> Path:
    (tmp / "outside").mkdir()
    root = _media(tmp, "link/x.wav")
    (root / "link").symlink_to(tmp / "outside")
    return root


def _manifest(tmp: Path, **fields) -> Path:
    root = _bundle(tmp)
    manifest = {"format": "mmkit-bundle", "version": 1, "modalities": ["audio", "text"], **fields}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def _flipped_manifest(tmp: Path) -> Path:
    root = _bundle(tmp)
    raw = bytearray((root / "manifest.json").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (root / "manifest.json").write_bytes(bytes(raw))
    return root


def _notebook(tmp: Path) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    cell = nbformat.v4.new_code_cell("seed: int = 0\nmethod: str = 'proposed'")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nbformat.write(nb, str(tmp / "nb.ipynb"))
    return tmp / "nb.ipynb"


def _objective_outputs(b: int = 4, d: int = 3):
    return {m: (unit(b, d), torch.full((b,), 5.0)) for m in ("audio", "image")}


_Q = [(unit(3, 4), torch.ones(3))]
_G = (unit(5, 4), torch.ones(5))

# (case, call(tmp), error type, fragments the message must contain: argument, expected, actual)
BAD_INPUTS = [
    # retrieval (former open gaps, closed)
    ("score: query and gallery in different d", lambda t: score(_Q, (unit(5, 6), torch.ones(5)), distance="cosine"),
     ValueError, ["query modality 0", "(5, 6)", "(3, 4)"]),
    ("score: kappa rows differ from loc rows", lambda t: score([(unit(3, 4), torch.ones(2))], _G, distance="kl"),
     ValueError, ["query modality 0", "kappa (N,)", "(3, 4) and (2,)"]),
    ("score: negative kappa", lambda t: score([(unit(3, 4), -torch.ones(3))], _G, distance="kl"),
     ValueError, ["query modality 0", "kappa must be finite and > 0", "-1.0"]),
    ("score: n_samples = 0", lambda t: score(_Q, _G, n_samples=0), ValueError, ["n_samples must be an int >= 1", "0"]),
    ("evaluate_tasks: present mask of another length", lambda t: evaluate_tasks(
        {m: (unit(3, 4), torch.ones(3)) for m in ("audio", "image")},
        {"audio": torch.ones(2, dtype=torch.bool), "image": torch.ones(3, dtype=torch.bool)}),
     ValueError, ["present['audio']", "(3,)", "(2,)"]),
    # ssw (former open gaps, closed)
    ("sliced_wasserstein_sphere: different item counts", lambda t: sliced_wasserstein_sphere(unit(3, 5, 4), unit(2, 5, 4)),
     ValueError, ["x (3,)", "y (2,)", "do not broadcast"]),
    ("sliced_wasserstein_sphere: float32 x with float64 y",
     lambda t: sliced_wasserstein_sphere(unit(3, 5, 4), unit(3, 5, 4, dtype=torch.float64)),
     ValueError, ["same dtype", "torch.float32", "torch.float64"]),
    ("circle_coordinates: projections of another d",
     lambda t: circle_coordinates(unit(3, 4), random_stiefel_projections(3, 5)),
     ValueError, ["projections must have shape (T, 4, 2)", "(5, 3, 2)"]),
    # distributions
    ("VonMisesFisher: NaN in loc", lambda t: VonMisesFisher(torch.tensor([[math.nan, 1.0]]), torch.tensor([1.0])),
     ValueError, ["parameter loc", "UnitVector", "nan"]),
    ("VonMisesFisher: loc not of unit norm", lambda t: VonMisesFisher(torch.tensor([[2.0, 0.0]]), torch.tensor([1.0])),
     ValueError, ["parameter loc", "UnitVector", "2."]),
    ("VonMisesFisher: kappa = 0", lambda t: VonMisesFisher(unit(2, 3), torch.tensor([0.0, 1.0])),
     ValueError, ["parameter concentration", "FinitePositive", "0."]),
    ("VonMisesFisher: kappa < 0", lambda t: VonMisesFisher(unit(2, 3), -1.0),
     ValueError, ["parameter concentration", "FinitePositive", "-1."]),
    ("VonMisesFisher: kappa = inf", lambda t: VonMisesFisher(unit(2, 3), math.inf),
     ValueError, ["parameter concentration", "FinitePositive", "inf"]),
    ("VonMisesFisher: d = 1", lambda t: VonMisesFisher(torch.ones(2, 1), 1.0),
     ValueError, ["loc", "d >= 2", "(2, 1)"]),
    ("VonMisesFisher: integer loc", lambda t: VonMisesFisher(torch.tensor([[1, 0]]), 1.0),
     TypeError, ["loc", "floating-point", "torch.int64"]),
    ("VonMisesFisher: kappa of another batch shape", lambda t: VonMisesFisher(unit(4, 3), torch.ones(3)),
     ValueError, ["concentration", "(3,)", "(4,)"]),
    ("VonMisesFisher: kappa of shape (B, 1)", lambda t: VonMisesFisher(unit(4, 3), torch.ones(4, 1)),
     ValueError, ["concentration", "(4, 1)", "squeeze(-1)"]),
    ("VonMisesFisher: loc and kappa on different devices", lambda t: VonMisesFisher(unit(3, 3), torch.ones(3, device="meta")),
     ValueError, ["loc is on cpu", "concentration is on meta", "one device"]),
    ("VonMisesFisher.log_prob: value of another d", lambda t: VonMisesFisher(unit(2, 3), 1.0).log_prob(unit(2, 4)),
     ValueError, ["value", "[3]", "[2, 4]"]),
    ("VonMisesFisher.log_prob: value off the sphere", lambda t: VonMisesFisher(unit(2, 3), 1.0).log_prob(torch.ones(2, 3)),
     ValueError, ["value", "unit vectors", "max |norm - 1| = 0.732"]),
    ("HypersphericalUniform: dim = 1", lambda t: HypersphericalUniform(1), ValueError, ["dim", "int >= 2", "got 1"]),
    ("PowerSpherical: NaN in loc", lambda t: PowerSpherical(torch.tensor([[math.nan, 1.0]]), torch.tensor([1.0])),
     ValueError, ["parameter loc", "UnitVector", "nan"]),
    # spherical sliced Wasserstein
    ("sliced_wasserstein_sphere: x and y in different d", lambda t: sliced_wasserstein_sphere(unit(3, 5, 4), unit(3, 5, 6)),
     ValueError, ["x and y", "same dimension", "(3, 5, 6)"]),
    ("sliced_wasserstein_sphere: no samples", lambda t: sliced_wasserstein_sphere(unit(3, 0, 4), unit(3, 5, 4)),
     ValueError, ["x", "n >= 1", "(3, 0, 4)"]),
    ("sliced_wasserstein_sphere: samples off the sphere", lambda t: sliced_wasserstein_sphere(torch.ones(3, 5, 4), unit(3, 5, 4)),
     ValueError, ["x", "unit vectors", "max |norm - 1| = 1"]),
    ("sliced_wasserstein_sphere: NaN samples", lambda t: sliced_wasserstein_sphere(torch.full((3, 5, 4), math.nan), unit(3, 5, 4)),
     ValueError, ["x", "finite unit vectors", "nan"]),
    ("sliced_wasserstein_sphere: integer samples", lambda t: sliced_wasserstein_sphere(torch.ones(3, 5, 4, dtype=torch.int64), unit(3, 5, 4)),
     TypeError, ["x", "floating-point", "torch.int64"]),
    ("sliced_wasserstein_sphere: a list, not a tensor", lambda t: sliced_wasserstein_sphere([[1.0, 0.0]], unit(3, 5, 4)),
     TypeError, ["x", "torch.Tensor", "list"]),
    ("sliced_wasserstein_sphere: n_projections = 0", lambda t: sliced_wasserstein_sphere(unit(3, 5, 4), unit(3, 5, 4), n_projections=0),
     ValueError, ["n_projections", "int >= 1", "got 0"]),
    ("sliced_wasserstein_sphere: p < 1", lambda t: sliced_wasserstein_sphere(unit(3, 5, 4), unit(3, 5, 4), p=0.5),
     ValueError, ["p", ">= 1", "0.5"]),
    ("wasserstein_circle: coordinate outside [0, 1)", lambda t: wasserstein_circle(torch.tensor([1.5]), torch.tensor([0.2])),
     ValueError, ["u", "[0, 1)", "1.5"]),
    ("wasserstein_circle: empty sample", lambda t: wasserstein_circle(torch.zeros(0), torch.tensor([0.2])),
     ValueError, ["u", "n >= 1", "(0,)"]),
    ("wasserstein_circle: batch shapes that do not broadcast", lambda t: wasserstein_circle(torch.rand(3, 4), torch.rand(2, 4)),
     ValueError, ["u (3, 4)", "v (2, 4)", "broadcast"]),
    ("wasserstein_circle: negative weights", lambda t: wasserstein_circle(torch.rand(4), torch.rand(4), u_weights=-torch.ones(4)),
     ValueError, ["u_weights", "non-negative"]),
    ("random_stiefel_projections: d = 1", lambda t: random_stiefel_projections(1, 3), ValueError, ["d", "int >= 2", "got 1"]),
    # losses and the training objective
    ("ssw_loss: empty batch", lambda t: ssw_loss({"audio": torch.zeros(0, 4, 3), "image": torch.zeros(0, 4, 3)}),
     ValueError, ["samples['audio']", "at least one item", "(0, 4, 3)"]),
    ("ssw_loss: unknown modality", lambda t: ssw_loss({"audoi": unit(2, 4, 3), "image": unit(2, 4, 3)}),
     ValueError, ["samples", "('audio', 'image', 'text')", "'audoi'"]),
    ("ssw_loss: one modality", lambda t: ssw_loss({"audio": unit(2, 4, 3)}),
     ValueError, ["samples", "at least two", "['audio']"]),
    ("ssw_loss: modalities with different item counts", lambda t: ssw_loss({"audio": unit(2, 4, 3), "image": unit(3, 4, 3)}),
     ValueError, ["samples['image']", "same B items", "(3, 4, 3)"]),
    ("ssw_loss: debiased, second sample set of another size",
     lambda t: ssw_loss({"audio": unit(2, 3, 3), "image": unit(2, 3, 3)},
                        independent={"audio": unit(2, 3, 3), "image": unit(2, 2, 3)}),
     ValueError, ["debiased", "independent['image']", "(2, 2, 3)"]),
    ("ssw_loss: unknown reduction", lambda t: ssw_loss({"audio": unit(2, 4, 3), "image": unit(2, 4, 3)}, reduction="sum"),
     ValueError, ["reduction", "'mean' or 'pairs'", "'sum'"]),
    ("ssw_loss: present masks of another length",
     lambda t: ssw_loss({"audio": unit(2, 4, 3), "image": unit(2, 4, 3)},
                        present={"audio": torch.ones(3, dtype=torch.bool), "image": torch.ones(3, dtype=torch.bool)}),
     ValueError, ["present", "(2,)", "(3,)"]),
    ("sampled_infonce_loss: empty batch", lambda t: sampled_infonce_loss(torch.zeros(0, 2, 3), torch.zeros(0, 2, 3), torch.tensor(1.0)),
     ValueError, ["x", "at least one item", "(0, 2, 3)"]),
    ("soft_contrastive_loss: different item counts",
     lambda t: soft_contrastive_loss(unit(3, 1, 4), unit(2, 1, 4), torch.tensor(1.0), torch.tensor(0.0)),
     ValueError, ["x and y", "same items", "3 and 2"]),
    ("product_of_gaussians: shapes differ", lambda t: product_of_gaussians([torch.zeros(2, 3)], [torch.zeros(3, 3)]),
     ValueError, ["log-variance", "same shape", "(3, 3)"]),
    ("TrainingObjective: unknown method", lambda t: TrainingObjective("clip"), ValueError, ["method", "one of", "'clip'"]),
    ("TrainingObjective: no outputs", lambda t: TrainingObjective()({}, {}), ValueError, ["outputs", "at least two", "[]"]),
    ("TrainingObjective: a present mask missing",
     lambda t: TrainingObjective()(_objective_outputs(), {"audio": torch.ones(4, dtype=torch.bool)}),
     ValueError, ["present", "every modality", "['image']"]),
    ("TrainingObjective: empty batch", lambda t: TrainingObjective()(
        {m: (unit(0, 3), torch.ones(0)) for m in ("audio", "image")}, {m: torch.ones(0, dtype=torch.bool) for m in ("audio", "image")}),
     ValueError, ["no modality pair", "present"]),
    # training configuration
    ("TrainConfig: unknown key", lambda t: TrainConfig.from_dict({"lamda_s": 1.0}),
     ConfigError, ["['lamda_s']", "valid keys", "'lambda_s'"]),
    ("TrainConfig: dim as a string", lambda t: TrainConfig(dim="32"), ConfigError, ["TrainConfig.dim", "int >= 2", "'32'"]),
    ("TrainConfig: batch_size = 1", lambda t: TrainConfig(batch_size=1), ConfigError, ["batch_size", "int >= 2", "got 1"]),
    ("TrainConfig: lambda_s = NaN", lambda t: TrainConfig(lambda_s=math.nan), ConfigError, ["lambda_s", ">= 0", "nan"]),
    ("TrainConfig: lambda_s = True", lambda t: TrainConfig(lambda_s=True), ConfigError, ["lambda_s", "a number", "True"]),
    ("TrainConfig: weight_decay = inf", lambda t: TrainConfig(weight_decay=math.inf),
     ConfigError, ["weight_decay", "finite number >= 0", "inf"]),
    ("TrainConfig: lr = 0", lambda t: TrainConfig(lr=0.0), ConfigError, ["lr", "finite number > 0", "0.0"]),
    ("TrainConfig: kappa_floor = True", lambda t: TrainConfig(kappa_floor=True), ConfigError, ["kappa_floor", "> 0", "True"]),
    ("TrainConfig: dropout = 1", lambda t: TrainConfig(dropout=1.0), ConfigError, ["dropout", "[0, 1)", "1.0"]),
    ("TrainConfig: unknown method", lambda t: TrainConfig(method="clip"), ConfigError, ["method", "one of", "'clip'"]),
    ("TrainConfig: debiased_ssw not a bool", lambda t: TrainConfig(debiased_ssw="yes"),
     ConfigError, ["debiased_ssw", "a bool", "'yes'"]),
    ("TrainConfig: unknown device", lambda t: TrainConfig(device="tpu"), ConfigError, ["device", "'cpu'", "'tpu'"]),
    ("TrainConfig.from_dict: not a mapping", lambda t: TrainConfig.from_dict([("dim", 3)]),
     ConfigError, ["from_dict", "mapping", "list"]),
    ("TrainConfig.from_json: not JSON", lambda t: TrainConfig.from_json("{dim: 3}"),
     ConfigError, ["from_json", "valid JSON", "line 1 column 2"]),
    ("TrainConfig.from_json: a JSON list", lambda t: TrainConfig.from_json("[1]"),
     ConfigError, ["from_json", "JSON object", "list"]),
    ("fit: data without a validation split", lambda t: fit(TrainConfig(), {"train": None}, t / "run"),
     ValueError, ["data", "'train' and 'val'", "['train']"]),
    # notebook parameters
    ("check_parameters: parameter missing", lambda t: check_parameters({}, {"seed": "int"}),
     ParameterError, ["'seed'", "(int)", "not defined"]),
    ("check_parameters: wrong type", lambda t: check_parameters({"seed": "3"}, {"seed": "int"}),
     ParameterError, ["'seed'", "must be int", "str '3'"]),
    ("check_parameters: bool for an int", lambda t: check_parameters({"seed": True}, {"seed": "int"}),
     ParameterError, ["'seed'", "must be int", "bool True"]),
    ("run_notebook: unknown parameter", lambda t: run_notebook(_notebook(t), t / "out.ipynb", {"sede": 1}),
     ParameterError, ["'sede'", "declares", "'seed'"]),
    ("run_notebook: ill-typed parameter", lambda t: run_notebook(_notebook(t), t / "out.ipynb", {"seed": 1.5}),
     ParameterError, ["'seed'", "must be int", "float 1.5"]),
    # retrieval and metrics
    ("score: unknown distance", lambda t: score(_Q, _G, distance="l2"), ValueError, ["distance", "one of", "'l2'"]),
    ("score: unknown fusion", lambda t: score(_Q, _G, fusion="sum"), ValueError, ["fusion", "'product'", "'sum'"]),
    ("score: empty query", lambda t: score([], _G), ValueError, ["query", "at least one modality"]),
    ("score: pooled fusion with KL", lambda t: score(_Q + _Q, _G, distance="kl", fusion="pooled"),
     ValueError, ["fusion='pooled'", "distance='ssw'"]),
    ("score: query modalities of different item counts", lambda t: score(_Q + [(unit(4, 4), torch.ones(4))], _G),
     ValueError, ["query modality", "same items", "[3, 4]"]),
    ("parse_task: malformed task", lambda t: parse_task("A-->I"), ValueError, ["task", "'A&T->I'", "'A-->I'"]),
    ("ranks_from_scores: NaN scores", lambda t: ranks_from_scores(torch.tensor([[math.nan, 1.0]])),
     ValueError, ["scores", "NaN or inf"]),
    ("ranks_from_scores: 1-D scores", lambda t: ranks_from_scores(torch.ones(3)), ValueError, ["scores", "(Q, G)", "(3,)"]),
    ("recall_at_k: k = 0", lambda t: recall_at_k(torch.tensor([1.0, 2.0]), 0), ValueError, ["k", "int >= 1", "got 0"]),
    ("paired_bootstrap: different queries", lambda t: paired_bootstrap(torch.ones(3), torch.ones(4)),
     ValueError, ["ranks", "(Q,)", "(3,) and (4,)"]),
    # data
    ("resolve_data: neither a bundle nor a preset", lambda t: resolve_data("nonexistent-bundle", cache_dir=t),
     ValueError, ["'nonexistent-bundle'", "bundle directory", "presets"]),
    ("load_bundle: not a directory", lambda t: load_bundle(t / "nowhere"), BundleError, ["<dir>/nowhere", "not a bundle directory"]),
    ("load_bundle: media path with '..'", lambda t: load_bundle(_media(t, "../../etc/passwd")),
     BundleError, ["media_audio", "row 0", "'../../etc/passwd' escapes"]),
    ("load_bundle: absolute media path", lambda t: load_bundle(_media(t, "/etc/passwd")),
     BundleError, ["media_audio", "row 0", "'/etc/passwd' escapes"]),
    ("load_bundle: media path escaping through '..' inside", lambda t: load_bundle(_media(t, "a/../../x.wav")),
     BundleError, ["media_audio", "row 0", "'a/../../x.wav' escapes"]),
    ("load_bundle: media path through a symlink to outside", lambda t: load_bundle(_symlink_escape(t)),
     BundleError, ["media_audio", "row 0", "'link/x.wav' escapes"]),
    ("load_bundle: media path with a NUL byte", lambda t: load_bundle(_media(t, "a\0b.wav")),
     BundleError, ["media_audio", "row 0", "NUL byte"]),
    ("load_bundle: quantized range of strings", lambda t: load_bundle(_manifest(t, quantized={"audio": ["a", "b"]})),
     BundleError, ["'quantized'", "finite numbers, lo < hi", "['a', 'b']"]),
    ("load_bundle: manifest with a flipped byte", lambda t: load_bundle(_flipped_manifest(t)),
     BundleError, ["manifest.json", "UTF-8 JSON", "can't decode byte"]),
    ("load_bundle: NaN in a present row", lambda t: load_bundle(_bundle(t, text=np.array([[0, 1], [0, np.nan], [0, 0], [1, 1]], np.float32))),
     BundleError, ["train.npz", "field 'text' row 1", "NaN or inf"]),
]


@pytest.mark.parametrize("case,call,error,fragments", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gives_a_clear_error(case, call, error, fragments, tmp_path, ledger):
    with pytest.raises(Exception) as info:
        call(tmp_path)
    shown = _shown(str(info.value), tmp_path)
    assert type(info.value) is error, f"{case}: {type(info.value).__name__}: {shown}"
    missing = [f for f in fragments if f not in shown]
    assert not missing, f"{case}: message {shown!r} lacks {missing}"
    ledger["bad_inputs"].append({"case": case, "error": error.__name__, "message": shown})


# ----------------------------------------------------------------------------------------------
# numerical robustness (tests/test_losses.py covers each loss at d = 32; here the whole objective)
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [2, 1024])
@pytest.mark.parametrize("method,contrastive,debiased", [("proposed", "infonce", False), ("proposed", "pcme", False),
                                                         ("ls_only", "infonce", True)])
def test_float32_objective_is_finite_for_kappa_1e_3_to_1e5(d, method, contrastive, debiased):
    torch.manual_seed(d)
    b = 17
    kappa = torch.logspace(-3, 5, b, dtype=torch.float32).requires_grad_()
    raw = {m: torch.randn(b, d, requires_grad=True) for m in ("audio", "image", "text")}
    objective = TrainingObjective(method, 1.0, contrastive, n_samples=8, n_projections=20, match_samples=4,
                                  debiased_ssw=debiased)
    terms = objective({m: (F.normalize(x, dim=-1), kappa) for m, x in raw.items()},
                      {m: torch.ones(b, dtype=torch.bool) for m in raw}, generator=torch.Generator().manual_seed(0))
    terms["loss"].backward()
    assert all(torch.isfinite(v) for v in terms.values()), terms
    grads = [kappa.grad, *(x.grad for x in raw.values()), *(p.grad for p in objective.parameters() if p.grad is not None)]
    assert all(torch.isfinite(g).all() for g in grads)


def test_float32_training_at_d_1024_stays_finite(small_data, tmp_path):
    config = TrainConfig(dim=1024, hidden=16, n_samples=4, n_projections=8, match_samples=2, batch_size=16, epochs=1,
                         kappa_floor=1e-3)
    summary = fit(config, small_data, tmp_path / "run", progress=False)
    assert all(math.isfinite(summary["history"][0][k]) for k in ("loss", "L_C", "L_S", "kappa_audio"))


class _NaNGradient(torch.autograd.Function):
    """Identity forward, NaN gradient backward: a finite loss whose gradient is not."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * math.nan


def test_non_finite_gradient_is_reported_with_its_batch_before_any_update(small_data, tmp_path, monkeypatch):
    original = TrainingObjective.forward

    def poisoned(self, outputs, present, generator=None):
        terms = original(self, outputs, present, generator)
        return {**terms, "loss": _NaNGradient.apply(terms["loss"])}

    monkeypatch.setattr(TrainingObjective, "forward", poisoned)
    config = TrainConfig(hidden=16, dim=8, n_samples=4, n_projections=8, batch_size=16, epochs=1)
    with pytest.raises(NonFiniteLossError, match=r"epoch 0, step 0: non-finite gradient of (model|objective)\.\S+ "
                                                 r"\(loss [\d.]+\); batch item indices \[\d+(, \d+){15}\]"):
        fit(config, small_data, tmp_path / "run", progress=False)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "non-finite gradient" in manifest["error"]
    assert not (tmp_path / "run" / "checkpoint.json").exists()


# ----------------------------------------------------------------------------------------------
# corrupt run files: a clear CheckpointError, never a silent restart or a silently wrong model
# ----------------------------------------------------------------------------------------------
FAST = dict(hidden=16, dim=8, n_samples=4, n_projections=8, match_samples=2, batch_size=16, epochs=2, seed=3)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = make_synthetic_bundle(tmp_path_factory.mktemp("data") / "b", n_items=(96, 32, 32),
                                 dims={"audio": 12, "image": 16, "text": 8}, seed=1)
    return load_bundle(root)


@pytest.fixture(scope="module")
def finished_run(small_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("finished") / "run"
    fit(TrainConfig(**FAST), small_data, run, progress=False)
    return run


def _copy(run: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(run, tmp / "run"))


def _files(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir())}


def _positions(size: int, count: int = 24) -> list[int]:
    return sorted({round(i * (size - 1) / (count - 1)) for i in range(count)})


def test_truncated_checkpoint_is_a_clear_error_and_nothing_is_overwritten(finished_run, small_data, tmp_path, ledger):
    run = _copy(finished_run, tmp_path)
    ckpt = run / json.loads((run / "checkpoint.json").read_text())["file"]
    data = ckpt.read_bytes()
    for length in (0, 1, len(data) // 2, len(data) - 1):
        ckpt.write_bytes(data[:length])
        before = _files(run)
        message = rf"{ckpt.name}: checksum mismatch \(truncated or corrupt checkpoint: {length} bytes"
        with pytest.raises(CheckpointError, match=message) as info:
            fit(TrainConfig(**FAST), small_data, run, progress=False)
        with pytest.raises(CheckpointError, match=message):
            Run(run).load_model("last")
        assert _files(run) == before  # no silent restart: nothing rewritten
        ledger["corrupt_files"] += 1
        _example(ledger, "fit on a run: checkpoint truncated", info.value, tmp_path)


def test_byte_flips_in_checkpoints_and_best_model_are_detected(finished_run, tmp_path, ledger):
    run = _copy(finished_run, tmp_path)
    for name, which, message in (("ckpt", "last", "checksum mismatch"), ("best.pt", "best", "checksum mismatch with metrics")):
        path = run / (json.loads((run / "checkpoint.json").read_text())["file"] if name == "ckpt" else name)
        data = path.read_bytes()
        for pos in _positions(len(data)):
            raw = bytearray(data)
            raw[pos] ^= 0xFF
            path.write_bytes(bytes(raw))
            with pytest.raises(CheckpointError, match=message) as info:
                Run(run).load_model(which)
            ledger["corrupt_files"] += 1
            _example(ledger, f"load_run_model(run, {which!r}): a byte of {name} flipped", info.value, tmp_path)
        path.write_bytes(data)
    Run(run).load_model("best"), Run(run).load_model("last")  # intact again


def _pickle_bomb(marker: Path) -> bytes:
    """A checkpoint whose unpickling would create ``marker`` (code execution from data)."""

    class Bomb:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    buf = io.BytesIO()
    torch.save({"model": Bomb()}, buf)
    return buf.getvalue()


@pytest.mark.parametrize("case,corrupt,message", [
    ("checkpoint.json truncated", lambda r: (r / "checkpoint.json").write_text('{"file": "ckpt-ep'),
     r"checkpoint.json: corrupt checkpoint pointer, not valid JSON"),
    ("checkpoint.json pointing outside the run", lambda r: (r / "checkpoint.json").write_text(
        json.dumps({"file": "../other/ckpt-epoch0001.pt", "sha256": "0" * 64, "epoch": 1})),
     r"checkpoint.json: expected \{'file': 'ckpt-epochNNNN.pt'.*got \{'file': '../other/ckpt-epoch0001.pt'"),
    ("checkpoint named in checkpoint.json missing", lambda r: (r / "ckpt-epoch0001.pt").unlink(),
     r"ckpt-epoch0001.pt: checkpoint named in checkpoint.json is missing"),
    ("config.json byte-flipped", lambda r: (r / "config.json").write_bytes(b"\xff" + (r / "config.json").read_bytes()[1:]),
     r"config.json: corrupt run config"),
    ("manifest.json truncated", lambda r: (r / "manifest.json").write_text('{"seed": '), r"manifest.json: corrupt run manifest"),
])
def test_corrupt_run_files_are_clear_errors(case, corrupt, message, finished_run, small_data, tmp_path, ledger):
    run = _copy(finished_run, tmp_path)
    corrupt(run)
    before = _files(run)
    with pytest.raises(CheckpointError, match=message) as info:
        fit(TrainConfig(**FAST), small_data, run, progress=False)
    assert _files(run) == before
    ledger["corrupt_files"] += 1
    _example(ledger, f"fit on a run: {case}", info.value, tmp_path)


def test_checkpoints_that_would_run_code_or_lack_state_are_refused(finished_run, tmp_path, ledger):
    run = _copy(finished_run, tmp_path)
    marker = tmp_path / "pwned"
    for case, data, message in (
            ("checkpoint that would run code when unpickled", _pickle_bomb(marker), r"cannot be loaded with weights_only=True"),
            ("checkpoint without training state", _stateless_checkpoint(),
             r"not a training checkpoint of epoch 1 \(missing \['objective'")):
        (run / "ckpt-epoch0001.pt").write_bytes(data)
        atomic_write_json(run / "checkpoint.json", {"file": "ckpt-epoch0001.pt", "sha256": hashlib.sha256(data).hexdigest(),
                                                    "epoch": 1})
        with pytest.raises(CheckpointError, match=message) as info:
            Run(run).load_model("last")
        ledger["corrupt_files"] += 1
        _example(ledger, f"Run(run).load_model('last'): {case}", info.value, tmp_path)
    assert not marker.exists()


def _stateless_checkpoint() -> bytes:
    buf = io.BytesIO()
    torch.save({"model": {}, "epoch": 1}, buf)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# corrupt bundles: every byte flip is a BundleError or provably harmless, every truncation an error
# ----------------------------------------------------------------------------------------------
def _same_split(a, b) -> bool:
    return (np.array_equal(a.ids, b.ids) and a.modalities == b.modalities
            and all(np.array_equal(a.features[m], b.features[m]) and np.array_equal(a.present[m], b.present[m])
                    for m in a.modalities)
            and np.array_equal(a.captions, b.captions))


def test_every_byte_flip_and_truncation_of_a_bundle_file_is_caught(tmp_path, ledger):
    """Exhaustive over the bytes of a small split file (with optional ``<m>_present`` fields, which a
    flip in the zip directory can drop without any zip error: the manifest's SHA-256 catches it)
    and of the manifest."""
    root = make_synthetic_bundle(tmp_path / "b", n_items=(6, 4, 4), dims={"audio": 3, "text": 2}, missing_rate=0.3, seed=0)
    for name in ("val.npz", "manifest.json"):
        path = root / name
        data = path.read_bytes()
        for pos in range(len(data)):
            raw = bytearray(data)
            raw[pos] ^= 0xFF
            path.write_bytes(bytes(raw))
            with pytest.raises(BundleError, match=re.escape(name)) as info:
                load_bundle(root, splits=("val",))
            ledger["corrupt_files"] += 1
            if pos == len(data) // 2:
                _example(ledger, f"load_bundle: the middle byte of {name} flipped", info.value, tmp_path)
        for length in range(0, len(data.rstrip(b"\n")), 7):  # (the manifest's final newline is optional)
            path.write_bytes(data[:length])
            with pytest.raises(BundleError, match=re.escape(name)) as info:
                load_bundle(root, splits=("val",))
            ledger["corrupt_files"] += 1
            _example(ledger, f"load_bundle: {name} truncated to 0 bytes", info.value, tmp_path)
        path.write_bytes(data)
    load_bundle(root)  # intact again


def test_bundles_without_checksums_still_load(tmp_path):
    """User bundles written by other tools carry no ``sha256``; they load (zip CRCs still apply)."""
    root = make_synthetic_bundle(tmp_path / "b", n_items=(6, 4, 4), dims={"audio": 3, "text": 2}, seed=0)
    manifest = json.loads((root / "manifest.json").read_text())
    reference = load_bundle(root)
    del manifest["sha256"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    assert all(_same_split(load_bundle(root)[s], reference[s]) for s in reference)


# ----------------------------------------------------------------------------------------------
# results files are never half-written: a full disk or a kill mid-write leaves the old file
# ----------------------------------------------------------------------------------------------
ROWS = [{"dataset": "d", "method": "proposed", "task": "A->I", "metric": "MRR", "lambda_s": "1", "distance": "ssw",
         "mean": 0.5 + i / 1000, "std": 0.01, "n_seeds": 3} for i in range(200)]


@pytest.fixture
def fault(monkeypatch):
    """Set ``MMKIT_FAULT`` for this test, with fresh counters."""
    def set_fault(spec: str) -> None:
        monkeypatch.setenv(faults.ENV, spec)
        faults.reset()
    yield set_fault
    faults.reset()


def _results_writers():
    from mmkit.analysis.reports import write_rows_csv
    from mmkit.analysis.reports import write_table

    return [
        ("write_rows_csv", "table.csv", lambda out, rows: write_rows_csv(rows, out / "table.csv")),
        ("write_table (csv of md, tex, csv)", "t.csv",
         lambda out, rows: write_table(out, "t", rows, "title", lambda r: (r["method"],), lambda k: list(k), ["method"],
                                       [("A->I", "MRR")])),
        ("atomic_write_json", "summary.json", lambda out, rows: atomic_write_json(out / "summary.json", rows)),
        ("save_bundle (npz through zipfile)", "train.npz",
         lambda out, rows: save_bundle(out, {"train": {"ids": np.array([str(r["mean"]) for r in rows]),
                                                       "audio": np.full((len(rows), 2), len(rows), np.float32)}}, "t")),
    ]


@pytest.mark.parametrize("writer", range(4), ids=["write_rows_csv", "write_table", "atomic_write_json", "save_bundle"])
def test_a_full_disk_mid_write_leaves_the_previous_file_intact(writer, tmp_path, fault, ledger):
    label, name, write = _results_writers()[writer]
    write(tmp_path, ROWS[:3])
    before = (tmp_path / name).read_bytes()
    fault(f"write:file={name}:after-bytes=100:action=raise")
    with pytest.raises(OSError) as info:
        write(tmp_path, ROWS)
    assert info.value.errno == errno.ENOSPC and "injected fault" in str(info.value)
    assert (tmp_path / name).read_bytes() == before, label
    assert not list(tmp_path.glob(".*.tmp"))
    ledger["faults"].append({"scenario": f"{label}: disk full after 100 bytes", "fault": os.environ[faults.ENV],
                             "outcome": "previous file intact, no temporary left"})


def test_a_bundle_save_interrupted_before_its_manifest_is_refused(tmp_path, fault, ledger):
    """New split files under the old manifest would silently mix two versions of the data."""
    make_synthetic_bundle(tmp_path / "b", n_items=(6, 4, 4), dims={"audio": 3, "text": 2}, seed=0)
    spec = "write:file=manifest.json:after-bytes=10:action=raise"
    fault(spec)
    with pytest.raises(OSError, match="injected fault"):
        make_synthetic_bundle(tmp_path / "b", n_items=(6, 4, 4), dims={"audio": 3, "text": 2}, seed=1)
    with pytest.raises(BundleError, match=r"train\.npz: SHA-256 .* differs from .* recorded in manifest\.json") as info:
        load_bundle(tmp_path / "b")
    _example(ledger, "load_bundle: split files newer than the manifest (interrupted save)", info.value, tmp_path)
    ledger["faults"].append({"scenario": "save_bundle: disk full while writing the manifest (splits already replaced)",
                             "fault": spec, "outcome": "load_bundle refuses the mixed bundle (SHA-256 mismatch)"})


def test_a_kill_mid_write_leaves_the_previous_file_intact(tmp_path, ledger):
    target = tmp_path / "table.csv"
    atomic_write_text(target, "old,table\n")
    code = ("import sys; from mmkit.core.io import atomic_write_text; "
            "atomic_write_text(sys.argv[1], 'x' * 1_000_000)")
    spec = "write:file=table.csv:after-bytes=65536"
    done = subprocess.run([sys.executable, "-c", code, str(target)], env={**os.environ, faults.ENV: spec},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert target.read_text() == "old,table\n"
    (tmp,) = tmp_path.glob(".table.csv.*.tmp")
    assert tmp.stat().st_size == 65536  # the fault fired half-way, on disk
    assert remove_stale_temporaries(tmp_path) == [tmp] and sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]
    ledger["faults"].append({"scenario": "atomic_write_text: SIGKILL after 64 KiB of 1 MB", "fault": spec,
                             "outcome": "previous file intact; temporary removed by remove_stale_temporaries"})


def test_new_files_get_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    atomic_write_text(tmp_path / "report.md", "x")
    assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o666 & ~mask


#: Files the package opens for writing that are streams, not results (path, mode) -> why.
STREAMS = {("mmkit/app/browser.py", "wb"): "the JupyterLab server's log, written while it runs"}


def test_package_writes_files_only_through_mmkit_io():
    """Static check: no module but mmkit/io.py writes a file directly (write_text, write_bytes, open
    for writing; log streams listed in STREAMS aside), so every output of the package is atomic."""
    offenders = []
    for path in sorted((REPO / "mmkit").rglob("*.py")):
        if path.name == "io.py" and path.parent.name == "mmkit":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("write_text", "write_bytes"):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {name}")
            elif name == "open":
                mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
                if (isinstance(mode, ast.Constant) and isinstance(mode.value, str) and set(mode.value) & set("wax+")
                        and (str(path.relative_to(REPO)), mode.value) not in STREAMS):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} open(..., {mode.value!r})")
    assert not offenders, offenders


def test_faults_count_matching_writes_each(tmp_path, fault):
    fault("write:file=a*.txt:after-bytes=0:nth=2:action=raise; write:file=b.txt:after-bytes=2:action=raise;"
          "write:file=c.txt:after-bytes=100:action=raise")
    atomic_write_text(tmp_path / "a1.txt", "x")  # 1st a*.txt
    with pytest.raises(OSError, match="write of b.txt after 2 bytes"):
        atomic_write_text(tmp_path / "b.txt", "xyz")
    atomic_write_text(tmp_path / "c.txt", "x")  # shorter than 100 bytes: written whole
    with pytest.raises(OSError, match="write of a2.txt after 0 bytes"):
        atomic_write_text(tmp_path / "a2.txt", "x")  # 2nd a*.txt
    atomic_write_text(tmp_path / "a3.txt", "x")
    atomic_write_text(tmp_path / "b.txt", "xyz")  # b.txt's fault was its 1st write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a1.txt", "a3.txt", "b.txt", "c.txt"]


@pytest.mark.parametrize("spec,message", [
    ("crash:after=1", "point must be one of"),
    ("write:file=x.pt", r"needs keys \['after-bytes', 'file'\]"),
    ("step:after=0", "after must be an int >= 1, got '0'"),
    ("write:file=x:after-bytes=-3", "after-bytes must be an int >= 0"),
    ("step:after=2:action=explode", "action must be one of"),
])
def test_fault_specs_are_validated(spec, message):
    with pytest.raises(ValueError, match=rf"MMKIT_FAULT: fault .*{message}"):
        faults.parse(spec)


# ----------------------------------------------------------------------------------------------
# kill -9 a training process at any moment; re-running the command gives identical results
# ----------------------------------------------------------------------------------------------
TRAIN_CONFIG = {"method": "proposed", "hidden": 16, "dim": 8, "n_samples": 4, "n_projections": 8, "match_samples": 2,
                "batch_size": 16, "epochs": 3, "seed": 0, "threads": 1}  # 96 items: 6 steps per epoch, 18 in all


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """The bundle, the config file and the uninterrupted reference run of the CLI tests."""
    base = tmp_path_factory.mktemp("cli")
    bundle = make_synthetic_bundle(base / "bundle", n_items=(96, 32, 32), dims={"audio": 12, "image": 16, "text": 8},
                                   seed=1)
    config = base / "config.json"
    config.write_text(json.dumps(TRAIN_CONFIG))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(faults.ENV, None)
    fit(TrainConfig.from_dict(TRAIN_CONFIG), load_bundle(bundle), base / "reference", progress=False)  # uninterrupted
    return {"base": base, "bundle": bundle, "config": config, "env": env, "reference": _snapshot(base / "reference")}


def _train_cmd(setup: dict, out: Path) -> list[str]:
    return [sys.executable, "-m", "mmkit", "train", "--data", str(setup["bundle"]), "--config", str(setup["config"]),
            "--out", str(out), "--no-progress"]


def _snapshot(run: Path) -> dict:
    """Everything a finished run leaves, read independently of mmkit (timings dropped)."""
    pointer = json.loads((run / "checkpoint.json").read_text())
    data = (run / pointer["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == pointer["sha256"]
    state = torch.load(io.BytesIO(data), weights_only=True)
    state["history"] = [{k: v for k, v in row.items() if k != "seconds"} for row in state["history"]]
    with open(run / "log.csv", newline="") as fh:
        log = [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]
    manifest = json.loads((run / "manifest.json").read_text())
    return {"checkpoint": state, "best": torch.load(run / "best.pt", weights_only=True),
            "metrics": json.loads((run / "metrics.json").read_text()), "log": log, "status": manifest["status"],
            "checkpoints": sorted(p.name for p in run.glob("ckpt-epoch*.pt"))}


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _half_written(run: Path) -> list[str]:
    """Visible run files that are not whole (what a reader could see after the kill)."""
    bad = []
    for path in (run.iterdir() if run.exists() else ()):
        if path.name.startswith("."):
            continue
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".pt":
                torch.load(path, weights_only=True)
            elif path.name == "log.csv":
                with open(path, newline="") as fh:
                    rows = list(csv.reader(fh))
                assert rows[0] == LOG_FIELDS and all(len(r) == len(LOG_FIELDS) for r in rows)
        except Exception:  # noqa: BLE001 - any unreadable file counts
            bad.append(path.name)
    pointer = run / "checkpoint.json"
    if pointer.exists() and "checkpoint.json" not in bad:
        meta = json.loads(pointer.read_text())
        if hashlib.sha256((run / meta["file"]).read_bytes()).hexdigest() != meta["sha256"]:
            bad.append(meta["file"])
    return bad


def _launch(setup: dict, run: Path, spec: str | None = None, delay: float | None = None) -> int:
    """Run the training command into ``run`` under fault ``spec``; with ``action=stop`` (or after
    ``delay`` seconds) SIGKILL it from here. Returns the exit status (``-9``: killed)."""
    env = {**setup["env"], **({faults.ENV: spec} if spec else {})}
    proc = subprocess.Popen(_train_cmd(setup, run), env=env, cwd=setup["base"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    if spec and "action=stop" in spec:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            pid, status = os.waitpid(proc.pid, os.WNOHANG | os.WUNTRACED)
            if pid and os.WIFSTOPPED(status):
                proc.send_signal(signal.SIGKILL)
                break
            if pid:  # ended before its fault point (reaped here, so tell Popen)
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            time.sleep(0.02)
    elif delay is not None:
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    stderr = proc.communicate(timeout=600)[1].decode(errors="replace")
    assert proc.returncode in (0, -signal.SIGKILL), stderr[-3000:]
    return proc.returncode


def _record_kill(run: Path, spec: str, ledger: dict, scenario: str) -> None:
    """Count the fault and check that every visible run file is whole."""
    pointer = run / "checkpoint.json"
    committed = f"epoch {json.loads(pointer.read_text())['epoch']}" if pointer.exists() else "the start"
    half = _half_written(run)
    ledger["faults"].append({"scenario": scenario, "fault": spec, "outcome": f"resumed from {committed}"})
    ledger["data_lost"] += len(half)
    assert not half, f"{scenario}: half-written files visible after the kill: {half}"


def _assert_identical(setup: dict, run: Path, ledger: dict, scenario: str) -> None:
    got = _snapshot(run)
    differs = [k for k in setup["reference"] if not _same(got[k], setup["reference"][k])]
    ledger["data_lost"] += len(differs)
    assert not differs, f"{scenario}: resumed run differs from the uninterrupted one in {differs}"
    assert not list(run.glob(".*.tmp")), "stale temporary files left after the resume"


#: One run directory, killed again and again: (scenario, fault, epoch committed when it is killed).
KILLS = [
    ("mid-write of best.pt in epoch 0 (nothing committed yet)", "write:file=best.pt:after-bytes=1024", None),
    ("mid-write of the epoch-1 checkpoint", "write:file=ckpt-epoch*.pt:after-bytes=4096:nth=2", 0),
    ("mid-write of checkpoint.json (epoch-1 checkpoint on disk, not committed)",
     "write:file=checkpoint.json:after-bytes=16", 0),
    ("mid-epoch: SIGKILL from outside after step 4 of epoch 1", "step:after=4:action=stop", 0),
    ("mid-write of log.csv after epoch 2 (epoch 2 committed)", "write:file=log.csv:after-bytes=40:nth=3", 2),
    ("mid-write of the final manifest (all epochs done)", "write:file=manifest.json:after-bytes=10:nth=2", 2),
]


def test_killed_training_resumes_to_identical_results(cli, tmp_path, ledger):
    """``python -m mmkit train`` killed with SIGKILL at six moments in a row (each launch resumes
    the previous one); the last, unfaulted launch finishes with results identical to the
    uninterrupted run (that ran in this process: the CLI and ``fit`` agree bit for bit)."""
    run = tmp_path / "run"
    for n, (scenario, spec, committed) in enumerate(KILLS):
        assert _launch(cli, run, spec) == -signal.SIGKILL, f"{scenario}: the fault never fired"
        ledger["resumes"] += n > 0
        if "write:" in spec:
            assert list(run.glob(".*.tmp")), f"{scenario}: killed mid-write, its temporary file should be there"
        pointer = run / "checkpoint.json"
        assert (json.loads(pointer.read_text())["epoch"] if pointer.exists() else None) == committed, scenario
        _record_kill(run, spec, ledger, scenario)
    assert _launch(cli, run) == 0
    ledger["resumes"] += 1
    _assert_identical(cli, run, ledger, "after six kills")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["resumes"] == sum(c is not None for *_, c in KILLS)


@pytest.mark.soak
@pytest.mark.skipif(not os.environ.get("MMKIT_SOAK"), reason="soak test: set MMKIT_SOAK=1 (and run pytest -m soak)")
def test_soak_many_random_kills_and_resumes(cli, tmp_path, ledger):
    """``MMKIT_SOAK_KILLS`` (default 30) random faults: after a random step, in a random write of a
    random run file at a random byte, or SIGKILL after a random delay. A killed run is relaunched
    (often into another fault) until it finishes; every finished run must equal the reference."""
    rng = random.Random(int(os.environ.get("MMKIT_SOAK_SEED", "0")))
    sizes = {"ckpt-epoch*.pt": 60000, "checkpoint.json": 120, "best.pt": 20000, "metrics.json": 1500, "log.csv": 300,
             "manifest.json": 500, "config.json": 400}
    target, kills, runs, killed_before = int(os.environ.get("MMKIT_SOAK_KILLS", "30")), 0, 0, False
    while True:
        run = tmp_path / f"run{runs}"
        kind = "none" if kills >= target else rng.choice(["step", "write", "timer"] + ["none"] * killed_before)
        spec, delay = None, None
        if kind == "step":
            spec = f"step:after={rng.randint(1, 18)}:action={rng.choice(['kill', 'stop'])}"
        elif kind == "write":
            name = rng.choice(sorted(sizes))
            spec = f"write:file={name}:after-bytes={rng.randint(0, sizes[name])}:nth={rng.randint(1, 3)}"
        elif kind == "timer":
            delay = rng.uniform(1.0, 12.0)
        status = _launch(cli, run, spec, delay)
        ledger["resumes"] += killed_before
        if status == -signal.SIGKILL:
            _record_kill(run, spec or f"SIGKILL after {delay:.2f} s", ledger, f"soak run {runs}: {kind}")
            kills, killed_before = kills + 1, True
            continue
        _assert_identical(cli, run, ledger, f"soak run {runs}")
        runs, killed_before = runs + 1, False
        if kills >= target:
            break
    assert kills == target and runs >= 1
