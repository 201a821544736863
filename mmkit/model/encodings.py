"""Typed encodings: what a trained encoder hands to retrieval, evaluation, figures and widgets.

An encoder's raw output differs by family: a vMF head gives ``(mu (N, d), kappa (N,))``, a Gaussian
head ``(mean (N, d), log_var (N, d))``. :class:`Encodings` holds one :class:`ModalityEncoding`
``(loc, concentration)`` per modality plus the family it came from, and converts the Gaussian
second slot **once**, here: ``concentration`` is κ for vMF and the mean precision
``exp(-log_var).mean(-1)`` for Gaussians (a documented approximation that lets fusion and the
κ-based analyses treat both families alike; the Gaussian ``log_var`` stays available).

Each :class:`ModalityEncoding` is a named tuple, so ``loc, kappa = encodings["audio"]`` works
wherever a ``(loc, kappa)`` pair is expected (the retrieval functions take any mapping of pairs).

Examples
--------
>>> import torch
>>> enc = Encodings.from_outputs({"audio": (torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 2.0]]))}, "gaussian")
>>> enc.family, enc["audio"].concentration
('gaussian', tensor([0.5677]))
>>> enc.log_var["audio"]
tensor([[0., 2.]])
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Mapping, NamedTuple

import torch
from torch import Tensor

from mmkit.core.distributions import VonMisesFisher
from mmkit.vocab import FAMILIES, VMF_METHODS

__all__ = ["ModalityEncoding", "Encodings", "gaussian_mean_precision"]


class ModalityEncoding(NamedTuple):
    """One modality's encodings of N items: ``loc`` (N, d) and ``concentration`` (N,)."""

    loc: Tensor
    concentration: Tensor


def gaussian_mean_precision(log_var: Tensor) -> Tensor:
    """``exp(-log_var).mean(-1)``: (..., d) -> (...), the mean precision of a diagonal Gaussian."""
    return torch.exp(-log_var).mean(-1)


@dataclass(frozen=True)
class Encodings(Mapping[str, ModalityEncoding]):
    """Modality -> :class:`ModalityEncoding` of the same N items, and the family they come from.

    Parameters
    ----------
    family : "vmf" | "gaussian"
    by_modality : modality -> ModalityEncoding(loc (N, d), concentration (N,))
    log_var : modality -> (N, d) log-variances (Gaussian family only)
    """

    family: str
    by_modality: Mapping[str, ModalityEncoding]
    log_var: Mapping[str, Tensor] = field(default_factory=dict)

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        rows = set()
        for m, enc in self.by_modality.items():
            if not isinstance(enc, ModalityEncoding):
                raise TypeError(f"{m}: expected a ModalityEncoding, got {type(enc).__name__}")
            if enc.loc.dim() != 2 or enc.concentration.shape != enc.loc.shape[:1]:
                raise ValueError(f"{m}: expected loc (N, d) and concentration (N,), got {tuple(enc.loc.shape)} "
                                 f"and {tuple(enc.concentration.shape)}")
            rows.add(enc.loc.shape[0])
        if len(rows) > 1:
            raise ValueError(f"every modality must encode the same items, got row counts {sorted(rows)}")

    @classmethod
    def from_outputs(cls, outputs: Mapping[str, tuple[Tensor, Tensor]], family: str) -> "Encodings":
        """From an encoder's raw ``{m: (loc, second)}``: κ (N,) for vMF, ``log_var`` (N, d) for Gaussians."""
        if family == "gaussian":
            return cls(family, {m: ModalityEncoding(a, gaussian_mean_precision(b)) for m, (a, b) in outputs.items()},
                       {m: b for m, (_, b) in outputs.items()})
        return cls(family, {m: ModalityEncoding(a, b) for m, (a, b) in outputs.items()})

    @classmethod
    def concatenate(cls, parts: list["Encodings"]) -> "Encodings":
        """Row-wise concatenation of encodings of consecutive chunks of items."""
        if not parts:
            raise ValueError("nothing to concatenate")
        first = parts[0]
        mods = list(first)
        return cls(first.family,
                   {m: ModalityEncoding(torch.cat([p[m].loc for p in parts]), torch.cat([p[m].concentration for p in parts]))
                    for m in mods},
                   {m: torch.cat([p.log_var[m] for p in parts]) for m in first.log_var})

    def __getitem__(self, modality: str) -> ModalityEncoding:
        return self.by_modality[modality]

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_modality)

    def __len__(self) -> int:
        return len(self.by_modality)

    @property
    def n_items(self) -> int:
        return next(iter(self.by_modality.values())).loc.shape[0] if self.by_modality else 0

    def require_vmf(self, what: str = "this") -> "Encodings":
        """``self``, or a ValueError when the encodings are Gaussian (they have no κ and no sphere)."""
        if self.family != "vmf":
            raise ValueError(f"{what}: needs vMF encodings (methods {VMF_METHODS}), got {self.family!r} ones")
        return self

    def distribution(self, modality: str) -> VonMisesFisher:
        """The batched :class:`~mmkit.core.distributions.VonMisesFisher` of one modality (vMF only)."""
        loc, kappa = self.require_vmf("distribution()")[modality]
        return VonMisesFisher(loc, kappa)

    def select(self, rows: Tensor) -> "Encodings":
        """The encodings of a subset of items (index tensor or boolean mask over the N rows)."""
        return Encodings(self.family, {m: ModalityEncoding(e.loc[rows], e.concentration[rows])
                                       for m, e in self.by_modality.items()},
                         {m: v[rows] for m, v in self.log_var.items()})
