"""Turn a data specification (a preset name or a bundle directory) into loaded splits."""
from __future__ import annotations

import os
from pathlib import Path

from mmkit.data.bundle import FeatureSplit, load_bundle, make_synthetic_bundle
from mmkit.data.cache import default_cache_dir

__all__ = ["PRESETS", "resolve_data"]

#: Embedded-dataset presets built from the music21 corpus (the ``-real`` ones with views, nuisance
#: and many-to-many truth, :mod:`mmkit.data.embedded.real`), plus the synthetic demo bundle.
PRESETS = ("tiny", "small", "full", "tiny-real", "small-real", "synthetic")


def resolve_data(spec: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                 progress: bool = True) -> dict[str, FeatureSplit]:
    """Load the splits named by ``spec``.

    ``spec`` is a bundle directory (see :mod:`mmkit.data.bundle`), ``"synthetic"`` (a generated
    demo bundle, cached), or an embedded-dataset preset (``tiny``, ``small``, ``full``).
    """
    path = Path(spec)
    if path.is_dir():
        return load_bundle(path)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if str(spec) == "synthetic":
        root = cache / "bundles" / "synthetic-seed0"
        if not (root / "manifest.json").exists():
            make_synthetic_bundle(root, seed=0)
        return load_bundle(root)
    if str(spec) in ("tiny", "small", "full"):
        from mmkit.data.embedded.build import build_dataset

        summary = build_dataset(str(spec), cache=cache, progress=progress)
        return load_bundle(summary["bundle"])
    if str(spec) in ("tiny-real", "small-real"):
        from mmkit.data.embedded.real import build_real_dataset

        return load_bundle(build_real_dataset(str(spec), cache=cache, progress=progress)["bundle"])
    raise ValueError(f"data {str(spec)!r} is neither a bundle directory nor one of the presets {PRESETS}")
