"""Torch ``Dataset`` / ``DataLoader`` glue over :class:`~mmkit.data.bundle.FeatureSplit`.

An item is a dict ``{"index": int, "<m>": Tensor (D,) or (T, D), "<m>_present": bool,
"<m>_length": int (frame-level only)}``; :func:`collate_triplets` stacks a list of items into a
batch ``{"index": (B,), "<m>": (B, D) or (B, T, D), "present": {m: (B,) bool}, "lengths": {m: (B,)}}``.
Items may lack a modality: the mask says so, the features of such rows are zeros.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch.utils.data import Dataset

from mmkit.data.bundle import FeatureSplit
from mmkit.vocab import MODALITIES

__all__ = ["TripletDataset", "collate_triplets", "batch_to_device", "draw_views"]


class TripletDataset(Dataset):
    """Rows of a :class:`FeatureSplit` as tensors (float32), missing modalities zero-filled."""

    def __init__(self, split: FeatureSplit):
        self.split = split
        self.modalities = split.modalities
        self._features = {}
        for m in self.modalities:
            x = split.features[m].copy()
            x[~split.present[m]] = 0.0
            self._features[m] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        self._present = {m: torch.from_numpy(split.present[m].copy()) for m in self.modalities}
        self._lengths = {m: torch.from_numpy(v.copy()) for m, v in split.lengths.items()}

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict:
        item = {"index": index}
        for m in self.modalities:
            item[m] = self._features[m][index]
            item[f"{m}_present"] = bool(self._present[m][index])
            if m in self._lengths:
                item[f"{m}_length"] = int(self._lengths[m][index])
        return item

    def batch(self, indices) -> dict:
        """The batch for ``indices`` directly (no per-item round trip); same layout as the collate."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        out = {"index": idx, "present": {}, "lengths": {}}
        for m in self.modalities:
            out[m] = self._features[m][idx]
            out["present"][m] = self._present[m][idx]
            if m in self._lengths:
                out["lengths"][m] = self._lengths[m][idx]
        return out


def draw_views(split: FeatureSplit, seed: int) -> FeatureSplit:
    """``split`` with one view per item and modality drawn uniformly (the views of a ``-real`` preset) in
    its main features: what training sees in one epoch. Modalities without views, or converted to raw
    backbone inputs (``split.raw``), keep their features; a split without views is returned as is.

    Draws come from ``numpy.random.default_rng(seed)``, one ``(N,)`` draw per modality in
    :data:`~mmkit.vocab.MODALITIES` order, so an epoch's views are the same on resume.
    """
    if split.views is None:
        return split
    rng = np.random.default_rng(seed)
    rows = np.arange(len(split))
    features = dict(split.features)
    for m in MODALITIES:
        if m in split.views.features and m not in split.raw:
            features[m] = split.views.features[m][rows, rng.integers(split.views.n_views(m), size=len(split))]
    return dataclasses.replace(split, features=features)


def batch_to_device(batch: dict, device: torch.device) -> dict:
    """The batch dict of :meth:`TripletDataset.batch` with every tensor (also the nested
    ``present`` and ``lengths`` ones) moved to ``device``."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, dict):
            out[k] = {kk: vv.to(device) for kk, vv in v.items()}
        elif isinstance(v, torch.Tensor):
            out[k] = v.to(device)
        else:
            out[k] = v
    return out


def collate_triplets(items: list[dict]) -> dict:
    """Stack items of :class:`TripletDataset` into a batch dict (see the module docstring)."""
    if not items:
        raise ValueError("collate_triplets: empty list of items")
    mods = [k for k in items[0] if k in MODALITIES]
    out = {"index": torch.tensor([it["index"] for it in items]), "present": {}, "lengths": {}}
    for m in mods:
        out[m] = torch.stack([it[m] for it in items])
        out["present"][m] = torch.tensor([it[f"{m}_present"] for it in items])
        if f"{m}_length" in items[0]:
            out["lengths"][m] = torch.tensor([it[f"{m}_length"] for it in items])
    return out
