"""Build the encoder and the training objective a :class:`~mmkit.model.config.TrainConfig` describes.

The one place that maps settings to modules: training, inference (:class:`mmkit.model.run.Run`)
and the runtime benchmark all build their models here.
"""
from __future__ import annotations

from typing import Mapping

import torch

from mmkit.data.bundle import FeatureSplit
from mmkit.data.raw import VOCAB_SIZE, raw_split
from mmkit.model.config import TrainConfig
from mmkit.model.encoders import ConvBackbone, MultimodalEncoder, TokenCNN
from mmkit.model.losses import TrainingObjective

__all__ = ["build_backbones", "build_model", "build_optimizer", "model_inputs"]


def build_backbones(modalities, width: int) -> dict[str, torch.nn.Module]:
    """CNN backbones over the raw inputs of :mod:`mmkit.data.raw`: a VGG-style
    :class:`~mmkit.model.encoders.ConvBackbone` (4 blocks, ``width`` .. 8 x ``width`` channels) for the
    log-mel spectrogram and for the score image, a :class:`~mmkit.model.encoders.TokenCNN` (8 x ``width``
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
                              kappa_init=config.kappa_init, backbones=backbones, kappa_head=config.kappa_head,
                              kappa_max=config.kappa_max, kappa_scale=config.kappa_scale)
    objective = TrainingObjective(config.method, config.lambda_s, config.contrastive, config.n_samples,
                                  config.n_projections, config.match_samples, config.vib_weight, config.debiased_ssw,
                                  as_published=config.as_published,
                                  pseudo_positive_weight=config.pseudo_positive_weight)
    return model, objective


def build_optimizer(config: TrainConfig, model: MultimodalEncoder, objective: TrainingObjective) -> torch.optim.AdamW:
    """AdamW over the model's and the objective's parameters (``config.lr``, ``config.weight_decay``).

    With ``config.kappa_lr_scale`` != 1 the heads' concentration layers
    (:meth:`~mmkit.model.encoders.MultimodalEncoder.concentration_parameters`) form a second
    parameter group at ``lr * kappa_lr_scale``; at 1 there is one group, in the parameter order
    of every run before the setting existed (so their checkpoints resume).
    """
    params = list(model.parameters()) + list(objective.parameters())
    if config.kappa_lr_scale == 1.0:
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    own = {id(p) for p in model.concentration_parameters()}
    groups = [{"params": [p for p in params if id(p) not in own]},
              {"params": model.concentration_parameters(), "lr": config.lr * config.kappa_lr_scale}]
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def model_inputs(model: MultimodalEncoder, split: FeatureSplit, progress: bool = False) -> FeatureSplit:
    """What ``model`` reads: ``split`` itself for heads over cached features; for a model with
    backbones, ``split`` with raw inputs (:func:`mmkit.data.raw.raw_split`) for those modalities."""
    missing = tuple(m for m in model.backbones if m not in split.raw)
    return raw_split(split, missing, progress=progress) if missing else split
