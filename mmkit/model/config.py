"""Training configuration: one frozen dataclass, validated on construction, stored with every run.

Defaults and how they were chosen are documented in ``docs/hyperparameters.md``. The run
directory (:class:`mmkit.model.run.Run`) keeps it as ``config.json``, so every result can be traced
to its settings.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Mapping

from mmkit.model.encoders import KAPPA_HEADS
from mmkit.vocab import CONTRASTIVE_READINGS, METHODS, family

__all__ = ["ConfigError", "TrainConfig"]


class ConfigError(ValueError):
    """A configuration key or value is invalid."""


@dataclass(frozen=True)
class TrainConfig:
    """Every training setting, validated on construction and stored with the run.

    Defaults and how they were chosen are documented in ``docs/hyperparameters.md``.
    ``steps_per_epoch`` (default None: one pass over the training items per epoch) fixes the
    optimizer steps between two validations, so that training sets of different sizes get the
    same number of steps (the few-pairs experiment of ``docs/study.md``). ``as_published`` (default
    False) trains **with the reference code's defects on purpose**: its vMF sampler and circle
    ``W_1`` (:mod:`mmkit.core.published`; the study's "as published" experiment E8 only).

    The concentration (vMF methods): ``kappa_head`` ``"softplus"`` (the default, every run before
    issue 23) or ``"log"`` with ``kappa_scale`` and the bounds ``[kappa_floor, kappa_max]``
    (:class:`mmkit.model.encoders.VMFHead`; ``kappa_max`` and ``kappa_scale`` act on the log head
    only); ``kappa_lr_scale`` multiplies the learning rate of the heads' concentration layers
    (their own optimizer parameter group; at 1.0 a single group, as before). ``patience`` (default
    None: every one of ``epochs``) stops training once the validation score has not improved for
    that many epochs; ``epochs`` is then the most trained. ``train_views`` (data with views, the
    ``-real`` presets): ``"sample"`` (default) trains each epoch on one view per item drawn at random
    (:func:`mmkit.data.datasets.draw_views`), ``"eval"`` on the evaluation view only; data without views
    train as before either way. Settings added later default to the earlier behaviour, so an old
    ``config.json`` without them loads and trains as it did.
    """

    method: str = "proposed"
    lambda_s: float = 1.0
    contrastive: str = "infonce"
    dim: int = 32
    n_samples: int = 16
    n_projections: int = 50
    match_samples: int = 7
    vib_weight: float = 1e-4
    pseudo_positive_weight: float = 0.1  # PCME++'s alpha, the weight of its pseudo-positives (pcmepp only)
    debiased_ssw: bool = False
    as_published: bool = False
    encoder: str = "heads"
    backbone_width: int = 32
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.1
    kappa_floor: float = 1.0
    kappa_init: float = 100.0
    kappa_head: str = "softplus"
    kappa_max: float = 1e4
    kappa_scale: float = 1.0
    kappa_lr_scale: float = 1.0
    batch_size: int = 128
    epochs: int = 20
    patience: int | None = None
    train_views: str = "sample"
    steps_per_epoch: int | None = None
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
        if self.contrastive not in CONTRASTIVE_READINGS:
            fail("contrastive", f"one of {CONTRASTIVE_READINGS}")
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
        if self.steps_per_epoch is not None and (not isinstance(self.steps_per_epoch, int)
                                                 or isinstance(self.steps_per_epoch, bool) or self.steps_per_epoch < 1):
            fail("steps_per_epoch", "None (one pass over the training items) or an int >= 1")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            fail("seed", "an int >= 0")
        for name in ("vib_weight", "weight_decay", "pseudo_positive_weight"):
            if not (number(name) and 0 <= getattr(self, name) < math.inf):
                fail(name, "a finite number >= 0")
        for name in ("lr", "kappa_floor", "kappa_init"):
            if not (number(name) and 0 < getattr(self, name) < math.inf):
                fail(name, "a finite number > 0")
        if self.kappa_init <= self.kappa_floor:
            fail("kappa_init", f"a number above kappa_floor = {self.kappa_floor!r} (every kappa starts there)")
        if self.kappa_head not in KAPPA_HEADS:
            fail("kappa_head", f"one of {KAPPA_HEADS}")
        for name in ("kappa_max", "kappa_scale", "kappa_lr_scale"):
            if not (number(name) and 0 < getattr(self, name) < math.inf):
                fail(name, "a finite number > 0")
        if self.kappa_max <= self.kappa_init:
            fail("kappa_max", f"a number above kappa_init = {self.kappa_init!r}")
        if self.kappa_head != "softplus" and self.family != "vmf":
            fail("kappa_head", "'softplus' for the Gaussian methods (it parameterises the vMF concentration)")
        if self.patience is not None and (not isinstance(self.patience, int) or isinstance(self.patience, bool)
                                          or self.patience < 1):
            fail("patience", "None (train every epoch) or an int >= 1 (epochs without a better validation score)")
        if not (number("dropout") and 0 <= self.dropout < 1):
            fail("dropout", "a number in [0, 1)")
        for name in ("debiased_ssw", "as_published"):
            if not isinstance(getattr(self, name), bool):
                fail(name, "a bool")
        if self.as_published and self.family != "vmf":
            fail("as_published", "False for the Gaussian methods (it changes the vMF sampler and L_S)")
        if self.train_views not in ("sample", "eval"):
            fail("train_views", "'sample' (one view per item per epoch, for data with views) or 'eval' (the "
                                "evaluation view only)")
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
        """``"vmf"`` or ``"gaussian"`` (:func:`mmkit.vocab.family` of the method)."""
        return family(self.method)
