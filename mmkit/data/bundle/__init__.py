"""The bundle: mmkit's on-disk data format (one ``.npz`` per split plus ``manifest.json``), its
validating loader and writer (:mod:`~mmkit.data.bundle.format`), and the dataset card written
beside every bundle (:mod:`~mmkit.data.bundle.card`). This package owns the format; the builders
(:mod:`mmkit.data.embedded`, :mod:`mmkit.data.user`) only call it.
"""
from mmkit.data.bundle.format import (FORMAT_NAME, FORMAT_VERSION, BundleError, FeatureSplit, load_bundle,
                                      make_synthetic_bundle, save_bundle, truth_to_csr, Views)

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "BundleError", "FeatureSplit", "load_bundle", "save_bundle",
           "make_synthetic_bundle", "truth_to_csr", "Views"]
