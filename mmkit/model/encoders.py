"""Encoders mapping each modality's input features to a distribution on (or around) S^{d-1}.

* :class:`VMFHead` — features -> ``(mu, kappa)``: an MLP trunk, a unit-normalised ``mu`` head
  and a positive ``kappa`` head, either ``softplus(.) + kappa_floor`` (the paper's vMF embedding,
  the default) or a log-linear head ``log kappa = log kappa_init + s * g(h)`` clamped to
  ``[kappa_floor, kappa_max]`` (:data:`KAPPA_HEADS`).
* :class:`GaussianHead` — features -> ``(mean, log_var)`` diagonal Gaussian embeddings in R^d
  (PCME, Chun et al. 2021; MPC, Neculai et al. 2022). The mean is L2-normalised as in PCME.
* :class:`MultimodalEncoder` — one head per modality over cached frozen features (the default:
  small heads, so a run on the ``small`` preset takes about a minute on 2 cores). Frame-level
  inputs ``(B, T, D)`` are mean-pooled over their valid frames first. Optional backbones over raw
  inputs (:class:`ConvBackbone` for log-mel spectrograms and score images, :class:`TokenCNN`
  for caption tokens) sit under the heads for the ``paper`` setting.

Shapes: features ``(B, D_m)`` or ``(B, T, D_m)`` -> ``loc (B, d)``, ``concentration (B,)``.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmkit.core.distributions import VonMisesFisher

__all__ = ["KAPPA_HEADS", "mlp", "masked_mean_pool", "ConvBackbone", "TokenCNN", "VMFHead", "GaussianHead",
           "MultimodalEncoder"]

#: Parameterisations of the vMF concentration (:class:`VMFHead`).
KAPPA_HEADS = ("softplus", "log")


def mlp(in_dim: int, hidden: int, layers: int, dropout: float) -> nn.Sequential:
    """``layers`` x (Linear -> LayerNorm -> GELU -> Dropout), the shared trunk of every head."""
    blocks: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers):
        blocks += [nn.Linear(dim, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout)]
        dim = hidden
    return nn.Sequential(*blocks)


def masked_mean_pool(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Mean over the first ``lengths[b]`` frames: ``(B, T, D), (B,) -> (B, D)``; ``(B, D)`` passes through."""
    if x.dim() == 2:
        return x
    if lengths is None:
        return x.mean(1)
    steps = torch.arange(x.shape[1], device=x.device)
    mask = (steps[None, :] < lengths[:, None]).to(x.dtype).unsqueeze(-1)
    return (x * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class ConvBackbone(nn.Module):
    """2-D CNN over a one-channel input ``(B, H, W)`` or ``(B, 1, H, W)`` -> ``(B, width * 2^(blocks-1))``.

    ``blocks`` x (3x3 conv -> BatchNorm -> ReLU -> 2x2 max-pool), then global average pooling:
    a VGG-style encoder as commonly used for log-mel spectrograms (audio) and score images.
    """

    def __init__(self, blocks: int = 4, width: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for i in range(blocks):
            c_out = width * 2**i
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                       nn.MaxPool2d(2)]
            c_in = c_out
        self.net = nn.Sequential(*layers)
        self.out_dim = c_in

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        return self.net(x).mean(dim=(-2, -1))


class TokenCNN(nn.Module):
    """Token ids ``(B, S)`` (0 = padding) -> ``(B, width)``: embedding, 1-D convolutions, masked max-pool."""

    def __init__(self, vocab_size: int, width: int = 256, embed: int = 128):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed, padding_idx=0)
        self.conv = nn.Sequential(nn.Conv1d(embed, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv1d(width, width, 3, padding=1), nn.ReLU())
        self.out_dim = width

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.conv(self.embed(tokens.long()).transpose(1, 2))
        mask = (tokens != 0).unsqueeze(1)
        return h.masked_fill(~mask, float("-inf")).amax(-1).nan_to_num(0.0, neginf=0.0)


class VMFHead(nn.Module):
    """Features ``(B, D)`` -> ``loc (B, d)`` unit vectors and ``concentration (B,)`` >= ``kappa_floor``.

    Parameters
    ----------
    in_dim, dim : input feature dimension D and embedding dimension d
    hidden, layers, dropout : trunk shape (:func:`mlp`)
    kappa_floor, kappa_init : lower bound of kappa and every item's kappa (``"softplus"``) or the
        centre of the items' kappas (``"log"``) at initialisation; ``kappa_init > kappa_floor > 0``
    kappa_head : ``"softplus"`` (default) or ``"log"``, see below
    kappa_max : upper bound of kappa (``"log"`` only), ``> kappa_init``
    kappa_scale : the scale ``s`` of the ``"log"`` head, ``> 0``

    Notes
    -----
    ``"softplus"``: ``kappa = softplus(w . h + b) + kappa_floor`` with ``w = 0`` and ``b`` chosen so
    that every item starts at ``kappa_init``. Adam moves each weight by about the learning rate per
    step, so kappa changes additively by a bounded amount per step: on the study's data every item's
    kappa rose by about 1 per epoch and the items stayed within 0.5 % of each other (issue 23).

    ``"log"``: ``log kappa = log kappa_init + s * g(h)``, ``g(h) = w . h + b`` a linear map of the
    trunk features with ``w ~ N(0, 0.1^2 / width)`` and ``b = 0`` (not zero, so the items differ
    mildly from the start and the kappa head sends gradients into the trunk at once: ``g(h)`` has a
    standard deviation of about 0.1 times the trunk features' root mean square), then clamped to
    ``[kappa_floor, kappa_max]`` (no gradient beyond the bounds). A weight step changes kappa by a
    factor, not an amount, and ``s`` multiplies both the initial spread and the rate of change.
    Predicting the logarithm of a scale is the usual parameterisation of heteroscedastic outputs
    (Kendall and Gal, "What uncertainties do we need in Bayesian deep learning for computer
    vision?", NeurIPS 2017, who regress log sigma^2).
    """

    def __init__(self, in_dim: int, dim: int, hidden: int = 256, layers: int = 2, dropout: float = 0.1,
                 kappa_floor: float = 1.0, kappa_init: float = 100.0, kappa_head: str = "softplus",
                 kappa_max: float = 1e4, kappa_scale: float = 1.0):
        super().__init__()
        if not kappa_init > kappa_floor > 0:
            raise ValueError(f"VMFHead: need kappa_init > kappa_floor > 0, got kappa_init={kappa_init!r}, "
                             f"kappa_floor={kappa_floor!r}")
        if kappa_head not in KAPPA_HEADS:
            raise ValueError(f"VMFHead: kappa_head must be one of {KAPPA_HEADS}, got {kappa_head!r}")
        if kappa_head == "log" and not (kappa_max > kappa_init and 0 < kappa_scale < math.inf):
            raise ValueError(f"VMFHead: the log head needs kappa_max > kappa_init and a finite kappa_scale > 0, got "
                             f"kappa_max={kappa_max!r}, kappa_init={kappa_init!r}, kappa_scale={kappa_scale!r}")
        self.trunk = mlp(in_dim, hidden, layers, dropout)
        width = hidden if layers else in_dim  # layers = 0: linear heads straight from the input
        self.loc = nn.Linear(width, dim)
        self.kappa = nn.Linear(width, 1)
        self.kappa_head, self.kappa_floor = kappa_head, float(kappa_floor)
        if kappa_head == "log":
            self.kappa_max, self.kappa_scale = float(kappa_max), float(kappa_scale)
            self.log_kappa_init = math.log(kappa_init)
            nn.init.normal_(self.kappa.weight, std=0.1 / math.sqrt(width))
            nn.init.zeros_(self.kappa.bias)
            return
        nn.init.zeros_(self.kappa.weight)
        # softplus^{-1}(y) = y + log(1 - exp(-y)) with y = kappa_init - floor: every item starts at
        # kappa_init (the textbook log(expm1(y)) overflows float32 to inf for y > 88)
        y = torch.tensor(kappa_init - kappa_floor, dtype=torch.float64)
        nn.init.constant_(self.kappa.bias, float(y + torch.log(-torch.expm1(-y))))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.trunk(x)
        loc = F.normalize(self.loc(h), dim=-1)
        g = self.kappa(h).squeeze(-1)
        if self.kappa_head == "log":
            log_kappa = self.log_kappa_init + self.kappa_scale * g
            # clamp in log space (a finite exp, hence finite gradients), then exactly onto the bounds
            kappa = log_kappa.clamp(math.log(self.kappa_floor), math.log(self.kappa_max)).exp()
            return loc, kappa.clamp(self.kappa_floor, self.kappa_max)
        return loc, F.softplus(g) + self.kappa_floor


class GaussianHead(nn.Module):
    """Features ``(B, D)`` -> ``mean (B, d)`` (L2-normalised) and ``log_var (B, d)``."""

    def __init__(self, in_dim: int, dim: int, hidden: int = 256, layers: int = 2, dropout: float = 0.1,
                 log_var_init: float = -5.0):
        super().__init__()
        self.trunk = mlp(in_dim, hidden, layers, dropout)
        width = hidden if layers else in_dim
        self.mean = nn.Linear(width, dim)
        self.log_var = nn.Linear(width, dim)
        nn.init.zeros_(self.log_var.weight)
        nn.init.constant_(self.log_var.bias, log_var_init)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.trunk(x)
        return F.normalize(self.mean(h), dim=-1), self.log_var(h)


class MultimodalEncoder(nn.Module):
    """One head per modality; ``forward(batch)`` -> ``{m: (param1 (B, d), param2)}``.

    Parameters
    ----------
    in_dims : mapping modality -> input feature dimension D_m
    dim : int, embedding dimension d (the sphere is S^{d-1})
    family : "vmf" | "gaussian"
    hidden, layers, dropout : trunk shape
    kappa_floor : float, lower bound of kappa (vMF family)
    kappa_init : float > kappa_floor, every item's kappa at initialisation (vMF family)
    kappa_head, kappa_max, kappa_scale : the concentration's parameterisation (vMF family, :class:`VMFHead`)
    backbones : mapping modality -> nn.Module with ``out_dim``, optional
        Raw-input encoders placed under the heads (their ``out_dim`` replaces ``in_dims[m]``).
    """

    def __init__(self, in_dims: Mapping[str, int], dim: int, family: str = "vmf", hidden: int = 256,
                 layers: int = 2, dropout: float = 0.1, kappa_floor: float = 1.0, kappa_init: float = 100.0,
                 backbones: Mapping[str, nn.Module] | None = None, kappa_head: str = "softplus",
                 kappa_max: float = 1e4, kappa_scale: float = 1.0):
        super().__init__()
        if family not in ("vmf", "gaussian"):
            raise ValueError(f"family must be 'vmf' or 'gaussian', got {family!r}")
        self.family, self.dim = family, dim
        self.backbones = nn.ModuleDict(dict(backbones or {}))
        in_dims = {m: (self.backbones[m].out_dim if m in self.backbones else d) for m, d in in_dims.items()}
        if family == "vmf":
            heads = {m: VMFHead(d_in, dim, hidden, layers, dropout, kappa_floor, kappa_init, kappa_head, kappa_max,
                                kappa_scale) for m, d_in in in_dims.items()}
        else:
            heads = {m: GaussianHead(d_in, dim, hidden, layers, dropout) for m, d_in in in_dims.items()}
        self.heads = nn.ModuleDict(heads)
        # Per-feature standardisation of the (pooled) input features, fitted on the training split
        # by :meth:`fit_input_normalization`; identity until then. Stored in the state dict.
        for m, d_in in in_dims.items():
            if m not in self.backbones:
                self.register_buffer(f"input_mean_{m}", torch.zeros(d_in))
                self.register_buffer(f"input_std_{m}", torch.ones(d_in))

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.heads.keys())

    def concentration_parameters(self) -> list[nn.Parameter]:
        """The parameters of every head's concentration output (the vMF ``kappa`` layer, the
        Gaussian ``log_var`` layer), the group ``TrainConfig.kappa_lr_scale`` trains at its own rate."""
        return [p for head in self.heads.values()
                for p in (head.kappa if isinstance(head, VMFHead) else head.log_var).parameters()]

    @torch.no_grad()
    def fit_input_normalization(self, features: Mapping[str, Tensor], eps: float = 1e-6) -> None:
        """Set each modality's input standardisation to the mean and standard deviation of ``features``.

        features : modality -> (N, D_m) pooled training features (items that have the modality).
        Cached frozen features carry large common offsets (the mean vector's norm exceeds the spread
        of the items for the audio and text features of the embedded data); without centring and
        scaling, every item starts at nearly the same embedding and training stalls — measured on
        `small`: validation MRR 0.18 without, 0.35 with (docs/hyperparameters.md).
        """
        for m, x in features.items():
            mean = getattr(self, f"input_mean_{m}", None)
            if mean is None:
                raise ValueError(f"no standardisation for modality {m!r} (unknown, or it has a backbone)")
            x = torch.as_tensor(x, dtype=torch.float32)
            if x.dim() != 2 or x.shape[1] != mean.shape[0] or x.shape[0] < 2:
                raise ValueError(f"features[{m!r}] must have shape (N >= 2, {mean.shape[0]}), got {tuple(x.shape)}")
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"features[{m!r}] holds non-finite values")
            mean.copy_(x.mean(0))
            getattr(self, f"input_std_{m}").copy_(x.std(0) + eps)

    def forward(self, batch: Mapping) -> dict[str, tuple[Tensor, Tensor]]:
        lengths = batch.get("lengths", {})
        out = {}
        for m, head in self.heads.items():
            if m in batch:
                if m in self.backbones:
                    x = self.backbones[m](batch[m])
                else:
                    x = masked_mean_pool(batch[m], lengths.get(m))
                    x = (x - getattr(self, f"input_mean_{m}")) / getattr(self, f"input_std_{m}")
                out[m] = head(x)
        return out

    def distributions(self, batch: Mapping) -> dict[str, VonMisesFisher]:
        """The vMF of every modality in ``batch`` (vMF family only)."""
        if self.family != "vmf":
            raise ValueError("distributions() is defined for the vMF family")
        return {m: VonMisesFisher(loc, kappa, validate_args=False) for m, (loc, kappa) in self(batch).items()}
