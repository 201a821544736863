"""Data: the embedded music21 dataset and user feature bundles, both as :class:`FeatureSplit`s.

``bundle`` defines the on-disk format (one ``.npz`` per split) with its validating loader and a
synthetic generator; ``datasets`` turns splits into torch ``Dataset`` / ``DataLoader`` batches.
"""
from mmkit.data.bundle import BundleError, FeatureSplit, load_bundle, make_synthetic_bundle, save_bundle
from mmkit.data.datasets import TripletDataset, collate_triplets
from mmkit.data.cache import default_cache_dir
from mmkit.data.resolve import PRESETS, resolve_data

__all__ = [
    "BundleError",
    "FeatureSplit",
    "load_bundle",
    "save_bundle",
    "make_synthetic_bundle",
    "TripletDataset",
    "collate_triplets",
    "PRESETS",
    "default_cache_dir",
    "resolve_data",
]
