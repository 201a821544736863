"""User feature bundles: a documented on-disk format, a validating loader and a synthetic generator.

Format (a directory; see ``docs/data_format.md``)::

    bundle/
      manifest.json          {"format": "mmkit-bundle", "version": 1, "name": ..., "modalities": [...],
                              "quantized": {"audio": [-2.0, 2.0], ...}   # optional, per modality
                              "sha256": {"train.npz": <hex>, ...}}       # optional, save_bundle writes it
      train.npz  val.npz  test.npz

Each ``<split>.npz`` holds, row-aligned with ``ids``:

``ids``                 (N,) unicode strings, unique across all splits
``<m>``                 features of modality ``m`` in {audio, image, text}: (N, D) video-level
                        vectors or (N, T, D) frame-level sequences; float16/32/64, or uint8 when the
                        manifest lists the modality under ``quantized`` (YT8M style, dequantised
                        linearly to ``[lo, hi]``)
``<m>_lengths``         (N,) int, valid frames per row (frame-level only; default: all T)
``<m>_present``         (N,) bool, optional: rows whose modality is missing (their features ignored)
``<m>_ids``             (N,) optional: must equal ``ids`` row by row (a check for misaligned exports)
``captions``            (N,) unicode, optional: text shown by the widgets
``media_<m>``           (N,) unicode, optional: raw-media paths relative to the bundle directory
``collection``, ``group`` (N,) unicode, optional: corpus collection and near-duplicate group
``attributes``          (N,) unicode JSON objects, optional: each item's metadata (composer, key, ...)
``caption_attributes``  (N,) unicode JSON objects, optional: what the row's caption asserts
``truth_indptr``, ``truth_indices``  optional many-to-many ground truth in CSR form (int64): the
                        caption of row ``i`` truly describes the items ``truth_indices[truth_indptr[i]:
                        truth_indptr[i + 1]]`` (row numbers of this split; row ``i`` itself among them)

Optional views (several renderings of each item, the ``-real`` presets; ``K_m`` views of modality ``m``;
the manifest's ``eval_view`` names which view the ``<m>`` field above holds)::

``views_<m>``           (N, K_m, D) float: the features of every view
``views_<m>_severity``  (N, K_m) float in [0, 1]: how strongly the view departs from a clean rendering
``views_<m>_factors``   (N, K_m) unicode JSON objects: the nuisance factors the view was made with
``views_text_captions`` (N, K_text) unicode: the caption of each text view
``views_text_truth_indptr``, ``views_text_truth_indices``: CSR truth of the caption views, caption
                        ``(i, k)`` at CSR row ``i * K_text + k``

``np.load(..., allow_pickle=False)`` is used throughout: no code is executed from data. When the
manifest records the files' SHA-256 (every bundle written by :func:`save_bundle`), a split file
whose bytes differ is refused: a flipped byte in a zip directory can otherwise drop an optional
field such as ``<m>_present`` without any zip error.
Every problem raises :class:`BundleError` naming the file, the field and the first bad row; the
loader validates everything before returning, so nothing is half-loaded.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmkit.core.io import atomic_write, atomic_write_json, sha256_file
from mmkit.vocab import MODALITIES, SPLITS

__all__ = ["BundleError", "FeatureSplit", "Views", "load_bundle", "save_bundle", "truth_to_csr",
           "make_synthetic_bundle"]

FORMAT_NAME = "mmkit-bundle"
FORMAT_VERSION = 1
#: Optional per-item string fields of a split file, loaded into :attr:`FeatureSplit.meta`
#: (``attributes`` and ``caption_attributes`` hold one JSON object per row).
ITEM_META = ("collection", "group", "attributes", "caption_attributes")
#: Largest split whose many-to-many truth is held as a dense (N, N) matrix in memory.
MAX_TRUTH_ROWS = 20_000


@dataclass
class Views:
    """Several renderings ("views") of each item of a split, with what made them differ.

    Attributes
    ----------
    features : dict modality -> float32 array (N, K_m, D)
    severity : dict modality -> float32 array (N, K_m), in [0, 1] (0: a clean rendering)
    factors : dict modality -> array (N, K_m) str, one JSON object per view (its nuisance factors)
    captions : array (N, K_text) str or None, the caption of each text view
    text_truth : bool array (N, K_text, N) or None: ``text_truth[i, k, j]`` = caption view ``(i, k)``
        truly describes item ``j`` of the split
    eval_view : dict modality -> int, the view held in the split's main ``features[m]``
    """

    features: dict[str, np.ndarray]
    severity: dict[str, np.ndarray]
    factors: dict[str, np.ndarray]
    captions: np.ndarray | None = None
    text_truth: np.ndarray | None = None
    eval_view: dict[str, int] = field(default_factory=dict)

    def n_views(self, modality: str) -> int:
        return int(self.features[modality].shape[1])

    def take(self, rows: np.ndarray) -> "Views":
        """The views of items ``rows`` (truth restricted to those items, re-indexed)."""
        return Views(features={m: x[rows] for m, x in self.features.items()},
                     severity={m: x[rows] for m, x in self.severity.items()},
                     factors={m: x[rows] for m, x in self.factors.items()},
                     captions=None if self.captions is None else self.captions[rows],
                     text_truth=None if self.text_truth is None else self.text_truth[rows][:, :, rows],
                     eval_view=dict(self.eval_view))


class BundleError(ValueError):
    """A user bundle violates the format; the message names file, field and row."""


@dataclass
class FeatureSplit:
    """One split of pre-extracted features, row-aligned with ``ids``.

    Attributes
    ----------
    ids : np.ndarray, (N,) str
    features : dict modality -> float32 array (N, D) or (N, T, D)
    lengths : dict modality -> int64 array (N,), frame-level modalities only
    present : dict modality -> bool array (N,)
    captions : np.ndarray (N,) str or None
    media : dict modality -> np.ndarray (N,) str of paths relative to ``root`` (may be empty)
    root : Path or None, the bundle directory (for media paths)
    raw : tuple of the modalities whose ``features`` hold raw backbone inputs instead of cached
        features (set by :func:`mmkit.data.raw.raw_split`; empty for a loaded bundle)
    meta : dict name -> np.ndarray (N,) str, optional per-item labels stored with the bundle
        (:data:`ITEM_META`: the embedded dataset records each item's corpus ``collection`` and its
        near-duplicate ``group``)
    relevant : bool array (N, N) or None, many-to-many ground truth: ``relevant[i, j]`` = the
        caption of row ``i`` truly describes item ``j`` (diagonal True). None: one-to-one only.
    views : :class:`Views` or None, several renderings of each item (the ``-real`` presets)
    """

    ids: np.ndarray
    features: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    lengths: dict[str, np.ndarray] = field(default_factory=dict)
    captions: np.ndarray | None = None
    media: dict[str, np.ndarray] = field(default_factory=dict)
    root: Path | None = None
    raw: tuple[str, ...] = ()
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    relevant: np.ndarray | None = None
    views: Views | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m in self.features)

    def feature_dim(self, modality: str) -> int:
        return int(self.features[modality].shape[-1])

    def text_relevance(self) -> np.ndarray | None:
        """``(N, N)`` bool many-to-many truth of the split's captions (None without it)."""
        return self.relevant

    def generality(self) -> np.ndarray | None:
        """``(N,)`` int: how many items of the split each row's caption truly describes (None without truth)."""
        return None if self.relevant is None else self.relevant.sum(axis=1)

    def media_path(self, modality: str, row: int) -> Path | None:
        """Absolute path of a raw-media file, refusing paths that escape the bundle root."""
        if modality not in self.media or self.root is None:
            return None
        rel = str(self.media[modality][row])
        if not rel:
            return None
        return _inside_root(self.root, rel, f"media_{modality}", row)


def _inside_root(root: Path, rel: str, field_name: str, row: int) -> Path:
    root, rel = root.resolve(), str(rel)
    if "\0" in rel:
        raise BundleError(f"{field_name} row {row}: path {rel!r} contains a NUL byte")
    path = (root / rel).resolve()  # follows symbolic links: a link pointing outside escapes too
    if os.path.isabs(rel) or (path != root and root not in path.parents):
        raise BundleError(f"{field_name} row {row}: path {rel!r} escapes the bundle directory {root}")
    return path


# ----------------------------------------------------------------------------------------------
# many-to-many truth: CSR on disk, dense in memory
# ----------------------------------------------------------------------------------------------
def truth_to_csr(relevant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(R, N)`` bool -> ``(indptr (R + 1,), indices (nnz,))`` int64 (row-major, sorted indices)."""
    relevant = np.asarray(relevant, dtype=bool)
    rows, cols = np.nonzero(relevant)
    indptr = np.zeros(relevant.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=relevant.shape[0]), out=indptr[1:])
    return indptr, cols.astype(np.int64)


def _truth_from_csr(path: Path, prefix: str, indptr: np.ndarray, indices: np.ndarray, n_rows: int,
                    n_items: int) -> np.ndarray:
    where = f"{path}: fields '{prefix}_indptr'/'{prefix}_indices'"
    if n_items > MAX_TRUTH_ROWS:
        raise BundleError(f"{where}: {n_items} items exceed the {MAX_TRUTH_ROWS} whose truth is held in memory")
    if indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu" or indptr.shape != (n_rows + 1,) \
            or indices.ndim != 1:
        raise BundleError(f"{where} must be int arrays of shapes ({n_rows + 1},) and (nnz,), "
                          f"got {indptr.dtype} {indptr.shape} and {indices.dtype} {indices.shape}")
    if indptr[0] != 0 or indptr[-1] != len(indices) or (np.diff(indptr) < 0).any():
        raise BundleError(f"{where}: indptr must start at 0, never decrease and end at len(indices) = {len(indices)}")
    if len(indices) and (indices.min() < 0 or indices.max() >= n_items):
        raise BundleError(f"{where}: indices must be item rows in [0, {n_items})")
    out = np.zeros((n_rows, n_items), dtype=bool)
    out[np.repeat(np.arange(n_rows), np.diff(indptr)), indices] = True
    if int(out.sum()) != len(indices):
        raise BundleError(f"{where}: a row lists the same item twice")
    return out


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------
def _read_manifest(root: Path) -> dict:
    path = root / "manifest.json"
    if not path.is_file():
        raise BundleError(f"{path}: missing manifest.json (expected keys: format, version, modalities)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid UTF-8 JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"{path}: field 'format' must be {FORMAT_NAME!r}")
    if manifest.get("version") != FORMAT_VERSION:
        raise BundleError(f"{path}: field 'version' must be {FORMAT_VERSION}, got {manifest.get('version')!r}")
    mods = manifest.get("modalities")
    if not isinstance(mods, list) or not mods or any(m not in MODALITIES for m in mods):
        raise BundleError(f"{path}: field 'modalities' must be a non-empty list drawn from {MODALITIES}, got {mods!r}")
    quant = manifest.get("quantized", {})
    if not isinstance(quant, dict):
        raise BundleError(f"{path}: field 'quantized' must map modality -> [lo, hi]")
    for m, rng in quant.items():
        numbers = isinstance(rng, list) and len(rng) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in rng)
        if m not in mods or not (numbers and rng[0] < rng[1]):
            raise BundleError(f"{path}: field 'quantized' entry {m!r} must be [lo, hi] (finite numbers, lo < hi) "
                              f"for a listed modality, got {rng!r}")
    sums = manifest.get("sha256", {})
    if not (isinstance(sums, dict) and all(isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) for v in sums.values())):
        raise BundleError(f"{path}: field 'sha256' must map file name -> 64 hex digits, got {sums!r}")
    return manifest


def _first_bad_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _load_split(root: Path, split: str, manifest: dict) -> FeatureSplit:
    path = root / f"{split}.npz"
    if not path.is_file():
        raise BundleError(f"{path}: missing split file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as exc:
        if "pickle" not in str(exc):  # a corrupt array header, not an object array
            raise BundleError(f"{path}: not a readable .npz (ValueError: {exc})") from None
        raise BundleError(f"{path}: cannot be read without pickle ({exc}); store strings as unicode arrays") from None
    except Exception as exc:  # truncated / corrupt zip
        raise BundleError(f"{path}: not a readable .npz ({type(exc).__name__}: {exc})") from None
    expected = manifest.get("sha256", {}).get(path.name)
    actual = sha256_file(path) if expected is not None else None
    if actual != expected:
        raise BundleError(f"{path}: SHA-256 {actual[:12]}... differs from {expected[:12]}... recorded in "
                          "manifest.json (a corrupt file, or one changed after save_bundle: save the bundle again)")

    def need(name: str) -> np.ndarray:
        if name not in arrays:
            raise BundleError(f"{path}: missing field {name!r}")
        return arrays[name]

    ids = need("ids")
    if ids.ndim != 1 or ids.dtype.kind != "U":
        raise BundleError(f"{path}: field 'ids' must be a 1-D unicode array, got dtype {ids.dtype} shape {ids.shape}")
    n = len(ids)
    if n == 0:
        raise BundleError(f"{path}: split {split!r} is empty (field 'ids' has no rows)")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = str(uniq[counts > 1][0])
        raise BundleError(f"{path}: field 'ids' row {_first_bad_row(ids == dup)}: duplicate id {dup!r}")
    features, present, lengths, media = {}, {}, {}, {}
    quant = manifest.get("quantized", {})
    for m in manifest["modalities"]:
        x = need(m)
        if x.ndim not in (2, 3) or x.shape[0] != n:
            raise BundleError(f"{path}: field {m!r} must have shape (N={n}, D) or (N={n}, T, D), got {x.shape}")
        if m in quant:
            if x.dtype != np.uint8:
                raise BundleError(f"{path}: field {m!r} is listed as quantized and must be uint8, got {x.dtype}")
            lo, hi = quant[m]
            x = x.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo)
        elif x.dtype.kind != "f":
            raise BundleError(f"{path}: field {m!r} must be floating point (or uint8 listed under 'quantized'), "
                              f"got dtype {x.dtype}")
        x = x.astype(np.float32, copy=False)
        mask = arrays.get(f"{m}_present", np.ones(n, dtype=bool))
        if mask.shape != (n,) or mask.dtype != np.bool_:
            raise BundleError(f"{path}: field '{m}_present' must be a bool array of shape ({n},), "
                              f"got {mask.dtype} {mask.shape}")
        finite = np.isfinite(x.reshape(n, -1)).all(axis=1)
        if (mask & ~finite).any():
            row = _first_bad_row(mask & ~finite)
            raise BundleError(f"{path}: field {m!r} row {row} (id {str(ids[row])!r}) holds NaN or inf")
        if f"{m}_ids" in arrays:
            mids = arrays[f"{m}_ids"]
            if mids.shape != ids.shape or (mids != ids).any():
                row = _first_bad_row(mids != ids) if mids.shape == ids.shape else 0
                raise BundleError(f"{path}: field '{m}_ids' row {row} does not match 'ids' "
                                  f"({str(mids[row]) if mids.shape == ids.shape else mids.shape!r} vs {str(ids[row])!r})")
        if x.ndim == 3:
            ln = arrays.get(f"{m}_lengths", np.full(n, x.shape[1], dtype=np.int64))
            if ln.shape != (n,) or ln.dtype.kind not in "iu" or (ln < 1).any() or (ln > x.shape[1]).any():
                raise BundleError(f"{path}: field '{m}_lengths' must be ints in [1, {x.shape[1]}] of shape ({n},)")
            lengths[m] = ln.astype(np.int64)
        if f"media_{m}" in arrays:
            media[m] = arrays[f"media_{m}"].astype(str)
            for row, rel in enumerate(media[m]):
                if rel:
                    _inside_root(root, rel, f"{path}: field 'media_{m}'", row)
        features[m], present[m] = x, mask
    if not any(present[m].any() for m in present):
        raise BundleError(f"{path}: no row has any modality present")
    captions = arrays.get("captions")
    if captions is not None and (captions.shape != (n,) or captions.dtype.kind != "U"):
        raise BundleError(f"{path}: field 'captions' must be a unicode array of shape ({n},)")
    meta = {}
    for name in ITEM_META:
        if name in arrays:
            if arrays[name].shape != (n,) or arrays[name].dtype.kind != "U":
                raise BundleError(f"{path}: field {name!r} must be a unicode array of shape ({n},)")
            meta[name] = arrays[name]
    relevant = None
    if "truth_indptr" in arrays or "truth_indices" in arrays:
        relevant = _truth_from_csr(path, "truth", need("truth_indptr"), need("truth_indices"), n, n)
        if not relevant[np.arange(n), np.arange(n)].all():
            row = _first_bad_row(~relevant[np.arange(n), np.arange(n)])
            raise BundleError(f"{path}: field 'truth_indices': the caption of row {row} does not describe its own item")
    views = _load_views(path, arrays, manifest, features, n)
    return FeatureSplit(ids=ids, features=features, present=present, lengths=lengths, captions=captions,
                        media=media, root=root, meta=meta, relevant=relevant, views=views)


def _load_views(path: Path, arrays: dict, manifest: dict, features: dict, n: int) -> Views | None:
    names = [m for m in MODALITIES if f"views_{m}" in arrays]
    if not names:
        return None
    eval_view = manifest.get("eval_view", {})
    feats, severity, factors = {}, {}, {}
    for m in names:
        x, sev, fac = arrays[f"views_{m}"], arrays.get(f"views_{m}_severity"), arrays.get(f"views_{m}_factors")
        if m not in features or x.ndim != 3 or x.shape[0] != n or x.shape[2] != features[m].shape[-1] \
                or x.dtype.kind != "f":
            raise BundleError(f"{path}: field 'views_{m}' must be float (N={n}, K, D) with the features' D, "
                              f"got {x.dtype} {x.shape}")
        k = x.shape[1]
        if sev is None or sev.shape != (n, k) or sev.dtype.kind != "f" or not np.isfinite(sev).all() \
                or (sev < 0).any() or (sev > 1).any():
            raise BundleError(f"{path}: field 'views_{m}_severity' must be floats in [0, 1] of shape ({n}, {k})")
        if fac is None or fac.shape != (n, k) or fac.dtype.kind != "U":
            raise BundleError(f"{path}: field 'views_{m}_factors' must be a unicode array of shape ({n}, {k})")
        if not np.isfinite(x).all():
            raise BundleError(f"{path}: field 'views_{m}' holds NaN or inf")
        view = eval_view.get(m)
        if not (isinstance(view, int) and 0 <= view < k):
            raise BundleError(f"{path}: manifest 'eval_view' must name the view (0..{k - 1}) of {m!r}, got {view!r}")
        feats[m], severity[m], factors[m] = x.astype(np.float32, copy=False), sev.astype(np.float32), fac
    captions = text_truth = None
    if "text" in names:
        k = feats["text"].shape[1]
        captions = arrays.get("views_text_captions")
        if captions is None or captions.shape != (n, k) or captions.dtype.kind != "U":
            raise BundleError(f"{path}: field 'views_text_captions' must be a unicode array of shape ({n}, {k})")
        if "views_text_truth_indptr" in arrays or "views_text_truth_indices" in arrays:
            flat = _truth_from_csr(path, "views_text_truth", arrays.get("views_text_truth_indptr", np.zeros(0, int)),
                                   arrays.get("views_text_truth_indices", np.zeros(0, int)), n * k, n)
            text_truth = flat.reshape(n, k, n)
    return Views(features=feats, severity=severity, factors=factors, captions=captions, text_truth=text_truth,
                 eval_view={m: int(eval_view[m]) for m in names})


def load_bundle(path: str | os.PathLike, splits: tuple[str, ...] = SPLITS) -> dict[str, FeatureSplit]:
    """Load and validate a bundle directory; returns ``{split: FeatureSplit}``.

    Raises
    ------
    BundleError
        Missing manifest, split or field; shape/dtype mismatch between splits or modalities;
        NaN/inf in a present row; duplicate ids (within or across splits); misaligned
        ``<m>_ids``; empty split; media paths escaping the bundle directory.
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle directory")
    manifest = _read_manifest(root)
    out = {s: _load_split(root, s, manifest) for s in splits}
    seen: dict[str, str] = {}
    for s, part in out.items():
        for m in part.modalities:
            dims = {p.features[m].shape[2:] if p.features[m].ndim == 3 else p.features[m].shape[1:] for p in out.values()}
            if len(dims) > 1:
                raise BundleError(f"{root}: field {m!r} has different feature shapes across splits: {sorted(dims)}")
        for row, i in enumerate(map(str, part.ids)):
            if i in seen:
                raise BundleError(f"{root / (s + '.npz')}: field 'ids' row {row}: id {i!r} also in split {seen[i]!r}")
            seen[i] = s
    return out


# ----------------------------------------------------------------------------------------------
# saving and the synthetic generator
# ----------------------------------------------------------------------------------------------
def save_bundle(path: str | os.PathLike, splits: dict[str, dict[str, np.ndarray]], name: str,
                quantized: dict[str, list[float]] | None = None, build_key: str | None = None,
                eval_view: dict[str, int] | None = None) -> Path:
    """Write a bundle (each file atomically: temp file + rename; the manifest, last, records each
    split file's SHA-256). ``splits[s]`` maps field -> array. ``build_key`` (optional) is stored in
    the manifest: a digest of what the bundle was made from, so that a builder can reuse it.
    ``eval_view`` (bundles with views) names the view of each modality held in its main field."""
    root = Path(path)
    mods = sorted({m for arrays in splits.values() for m in arrays if m in MODALITIES}, key=MODALITIES.index)
    sums = {}
    for split, arrays in splits.items():
        written = atomic_write(root / f"{split}.npz", lambda fh, a=arrays: np.savez(fh, **a))
        sums[written.name] = sha256_file(written)
    manifest = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "name": name, "modalities": mods, "sha256": sums}
    if quantized:
        manifest["quantized"] = quantized
    if build_key is not None:
        manifest["build_key"] = build_key
    if eval_view:
        manifest["eval_view"] = dict(eval_view)
    atomic_write_json(root / "manifest.json", manifest)
    return root


def make_synthetic_bundle(path: str | os.PathLike, n_items: tuple[int, int, int] = (600, 150, 150),
                          dims: dict[str, int] | None = None, latent_dim: int = 8, n_clusters: int = 12,
                          noise: float = 0.5, missing_rate: float = 0.0, quantize_audio: bool = False,
                          frames: int = 0, seed: int = 0, truth: bool = False, views: int = 0) -> Path:
    """Write a synthetic bundle with learnable cross-modal structure (for tests and docs).

    Each item has a latent vector (a cluster centre plus item-specific variation); every
    modality's features are a fixed random two-layer map of the latent plus Gaussian noise, so
    matching items across modalities is possible but not trivial. ``frames > 0`` writes
    frame-level audio (N, frames, D) with random valid lengths; ``quantize_audio`` stores audio as
    YT8M-style uint8 in [-2, 2]; ``missing_rate`` drops modalities at random (never all three).

    ``truth=True`` adds many-to-many ground truth with a known answer: half of the captions are
    generic ("an item of group c", text features made from the cluster centre alone), true of every
    item of cluster ``c`` in the split; the others are specific, true of their own item only.
    ``views=K`` (K >= 2) adds K views of every audio and image item, view ``k`` of severity
    ``s ~ U(0, 1)`` (view 0: s = 0, the evaluation view) holding the clean features plus
    ``3 * s * noise`` of fresh Gaussian noise, factors ``{"noise": s}``; with ``truth``, K text views too.
    """
    rng = np.random.default_rng(seed)
    dims = dims or {"audio": 128, "image": 256, "text": 64}
    centres = rng.normal(size=(n_clusters, latent_dim))
    maps = {m: (rng.normal(size=(latent_dim, 64)) / np.sqrt(latent_dim), rng.normal(size=(64, d)) / 8.0)
            for m, d in dims.items()}
    if views and (isinstance(views, bool) or not isinstance(views, int) or views < 2 or frames or quantize_audio):
        raise ValueError(f"views must be 0 or an int >= 2 (without frames or quantize_audio), got {views!r}")
    splits, start = {}, 0
    for split, n in zip(SPLITS, n_items):
        cluster = rng.integers(n_clusters, size=n)
        latent = centres[cluster] + 0.8 * rng.normal(size=(n, latent_dim))
        arrays: dict[str, np.ndarray] = {"ids": np.array([f"syn{start + i:06d}" for i in range(n)])}
        arrays["captions"] = np.array([f"synthetic item {start + i} of cluster-like group" for i in range(n)])
        text_latent = latent
        if truth:
            generic = rng.random(n) < 0.5
            text_latent = np.where(generic[:, None], centres[cluster], latent)
            arrays["captions"] = np.array([f"an item of group {c}" if g else f"synthetic item {start + i}"
                                           for i, (c, g) in enumerate(zip(cluster, generic))])
            relevant = np.where(generic[:, None], cluster[:, None] == cluster[None, :], np.eye(n, dtype=bool))
            arrays["truth_indptr"], arrays["truth_indices"] = truth_to_csr(relevant)
            arrays["attributes"] = np.array([json.dumps({"group": int(c)}) for c in cluster])
            arrays["caption_attributes"] = np.array([json.dumps({"group": int(c)} if g else {"item": int(start + i)})
                                                     for i, (c, g) in enumerate(zip(cluster, generic))])
        for m, (w1, w2) in maps.items():
            source = text_latent if m == "text" else latent
            clean = np.tanh(source @ w1) @ w2
            x = clean + noise * rng.normal(size=(n, w2.shape[1]))
            if views and (m != "text" or truth):
                sev = rng.random((n, views)).astype(np.float32)
                sev[:, 0] = 0.0
                arrays[f"views_{m}"] = (clean[:, None, :] + noise * (1 + 3 * sev[:, :, None])
                                        * rng.normal(size=(n, views, w2.shape[1]))).astype(np.float32)
                arrays[f"views_{m}_severity"] = sev
                arrays[f"views_{m}_factors"] = np.array([[json.dumps({"noise": round(float(v), 4)}) for v in row]
                                                         for row in sev])
                x = arrays[f"views_{m}"][:, 0]
                if m == "text":
                    arrays["views_text_captions"] = np.repeat(arrays["captions"][:, None], views, axis=1)
                    flat = np.repeat(relevant, views, axis=0)
                    arrays["views_text_truth_indptr"], arrays["views_text_truth_indices"] = truth_to_csr(flat)
            if m == "audio" and frames:
                x = x[:, None, :] + 0.3 * rng.normal(size=(n, frames, x.shape[1]))
                arrays["audio_lengths"] = rng.integers(max(1, frames // 2), frames + 1, size=n)
            if m == "audio" and quantize_audio:
                x = np.clip(np.round((x + 2.0) / 4.0 * 255.0), 0, 255).astype(np.uint8)
            else:
                x = x.astype(np.float32)
            arrays[m] = x
        if missing_rate:
            drop = rng.random((n, len(dims))) < missing_rate
            drop[drop.all(axis=1), 0] = False
            for j, m in enumerate(dims):
                arrays[f"{m}_present"] = ~drop[:, j]
        splits[split] = arrays
        start += n
    view_mods = [m for m in dims if views and (m != "text" or truth)]
    return save_bundle(path, splits, name=f"synthetic-seed{seed}",
                       quantized={"audio": [-2.0, 2.0]} if quantize_audio else None,
                       eval_view={m: 0 for m in view_mods} or None)
