"""Precomputed embeddings -> a bundle: ``python -m mmkit import-features``.

For a user whose audio, score and text vectors come from their own encoders (CLAP, MERT, a
CLIP-style image model, ...). Each modality is one source, ``FILE`` or ``FILE:KEY``:

``.npy``      an (N, D) array, or (N, T, D) frame-level (every frame valid)
``.npz``      the array under KEY (default: the modality's name), with optional ``KEY_lengths`` (N,)
              for frame-level data and ``KEY_present`` (N,) bool for rows lacking the modality
``.parquet``  the column KEY (default: the modality's name): one list of numbers per row (a
              vector), or a list of lists (frames; the row's length is its number of frames); a
              null cell is a row lacking the modality. Needs ``pyarrow`` (``pip install 'mmkit[parquet]'``).

Ids (required) come from ``--ids`` (``.txt`` one per line, ``.npy``, ``.npz:KEY``,
``.parquet:COLUMN``, ``.csv:COLUMN``; default key ``id`` or ``ids``), row-aligned with the arrays,
or from the ``id`` column of ``--items``. Optional: ``--captions``, ``--splits``, ``--groups``
(the same kinds of source, default keys ``caption``, ``split``, ``group``), or ``--items``, an
items CSV as for ``build-data --from`` (:mod:`mmkit.data.user.items`) joined by id, whose media are
normalised as in :mod:`mmkit.data.user.media` so that the retrieval widget plays and shows them and
``--encoder backbones`` can read them. ``--text captions`` embeds the captions with MiniLM, as
the embedded dataset does.

Bad rows (an empty or duplicate id, a NaN vector, a vector of another size, a caption without
words, an unknown split, an items-CSV id the arrays lack, and every media problem) are named by
file and row; with ``skip_bad`` they are left out and listed in the card. A file whose row count
differs from the ids' is always an error.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np

from mmkit.data.user.items import InputError, Problem, read_items, sort_problems
from mmkit.data.user.media import (caption_vectors, check_output_dir, entry_features, prepare_media, split_items,
                              summary_fields, write_user_bundle)
from mmkit.vocab import MODALITIES, SPLITS

__all__ = ["PARQUET_HINT", "read_vectors", "read_strings", "import_features"]

PARQUET_HINT = "reading Parquet needs pyarrow: pip install 'mmkit[parquet]' (or pip install pyarrow)"


def _fatal(source: str, kind: str, reason: str) -> InputError:
    return InputError([Problem(source, "file", None, kind, reason)], hint=False)


def _locate(spec: str | os.PathLike) -> tuple[Path, str | None]:
    """``FILE`` or ``FILE:KEY`` -> (path, key or None)."""
    spec = str(spec)
    path, key = Path(spec), None
    if not path.exists() and ":" in spec:
        head, key = spec.rsplit(":", 1)
        path = Path(head)
    if not path.is_file():
        raise _fatal(spec, "missing-file", f"{path} not found")
    return path, key or None


def _parquet(path: Path, key: str, defaults: tuple[str, ...]) -> tuple[str, list]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(f"{path}: {PARQUET_HINT}") from None
    try:
        names = pq.read_schema(path).names
    except Exception as exc:  # noqa: BLE001 - not a Parquet file
        raise _fatal(path.name, "unreadable-file", f"not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    column = key or next((k for k in defaults if k in names), None)
    if column not in names:
        raise _fatal(path.name, "unreadable-file", f"no column {key or defaults[0]!r}; it has {names}")
    return column, pq.read_table(path, columns=[column]).column(column).to_pylist()


def _npz(path: Path, key: str | None, defaults: tuple[str, ...]) -> tuple[str, dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as exc:  # noqa: BLE001 - corrupt zip, pickled objects
        raise _fatal(path.name, "unreadable-file", f"not a readable .npz without pickle ({type(exc).__name__}: {exc})") from None
    name = key or next((k for k in defaults if k in arrays), None)
    if name not in arrays:
        raise _fatal(path.name, "unreadable-file", f"no array {key or defaults[0]!r}; it has {sorted(arrays)}")
    return name, arrays


def read_strings(spec: str | os.PathLike, defaults: tuple[str, ...]) -> tuple[str, list[str]]:
    """``(label, values)`` of a column of strings (ids, captions, splits, groups); None -> ""."""
    path, key = _locate(spec)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        values = path.read_text(encoding="utf-8-sig").splitlines()
        while values and not values[-1].strip():
            values.pop()
        return path.name, [v.strip() for v in values]
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip().lower() for f in reader.fieldnames or []]
            column = (key or next((k for k in defaults if k in fields), defaults[0])).lower()
            if column not in fields:
                raise _fatal(path.name, "unreadable-file", f"no column {column!r}; it has {reader.fieldnames}")
            raw = reader.fieldnames[fields.index(column)]
            return f"{path.name}:{column}", [(r.get(raw) or "").strip() for r in reader]
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001
            raise _fatal(path.name, "unreadable-file", f"not a readable .npy without pickle ({exc})") from None
        values = arr
        label = path.name
    elif suffix == ".npz":
        name, arrays = _npz(path, key, defaults)
        values, label = arrays[name], f"{path.name}:{name}"
    elif suffix == ".parquet":
        column, values = _parquet(path, key, defaults)
        label = f"{path.name}:{column}"
    else:
        raise _fatal(path.name, "unsupported-format", "expected .txt, .csv, .npy, .npz or .parquet")
    if isinstance(values, np.ndarray) and values.ndim != 1:
        raise _fatal(label, "dimension-mismatch", f"expected one value per row, got shape {values.shape}")
    return label, ["" if v is None else str(v).strip() for v in list(values)]


def _to_float(x: np.ndarray, label: str) -> np.ndarray:
    if x.dtype.kind not in "fiu":
        raise _fatal(label, "unreadable-file", f"expected numbers, got dtype {x.dtype}")
    return x.astype(np.float32)


def read_vectors(spec: str | os.PathLike, modality: str) -> dict:
    """One modality's vectors: ``{"label", "x" (N, D) or (N, T, D) float32, "present" (N,) bool,
    "lengths" (N,) int64 or None, "problems": [(row, kind, reason)]}``."""
    path, key = _locate(spec)
    suffix = path.suffix.lower()
    defaults = (modality,)
    lengths = present = None
    problems: list[tuple[int, str, str]] = []
    if suffix == ".npy":
        try:
            x = np.load(path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001
            raise _fatal(path.name, "unreadable-file", f"not a readable .npy without pickle ({exc})") from None
        label = path.name
        x = _to_float(x, label)
    elif suffix == ".npz":
        name, arrays = _npz(path, key, defaults)
        label = f"{path.name}:{name}"
        x = _to_float(arrays[name], label)
        lengths = arrays.get(f"{name}_lengths")
        present = arrays.get(f"{name}_present")
    elif suffix == ".parquet":
        column, cells = _parquet(path, key, defaults)
        label = f"{path.name}:{column}"
        x, present, lengths, problems = _from_cells(cells, label)
    else:
        raise _fatal(path.name, "unsupported-format", "embeddings must be .npy, .npz or .parquet")
    if x.ndim not in (2, 3) or x.shape[-1] == 0:
        raise _fatal(label, "dimension-mismatch", f"expected (N, D) or (N, T, D), got shape {x.shape}")
    n = len(x)
    if present is None:
        present = np.ones(n, dtype=bool)
    elif present.shape != (n,) or present.dtype != np.bool_:
        raise _fatal(label, "dimension-mismatch", f"'_present' must be bool of shape ({n},), got {present.dtype} {present.shape}")
    if x.ndim == 3:
        if lengths is None:
            lengths = np.full(n, x.shape[1], dtype=np.int64)
        lengths = np.asarray(lengths)
        if lengths.shape != (n,) or lengths.dtype.kind not in "iu":
            raise _fatal(label, "dimension-mismatch", f"'_lengths' must be ints of shape ({n},), got {lengths.shape}")
        for row in np.flatnonzero(present & ((lengths < 1) | (lengths > x.shape[1]))):
            problems.append((int(row), "dimension-mismatch", f"{lengths[row]} frames, outside [1, {x.shape[1]}]"))
        lengths = np.clip(lengths, 1, x.shape[1]).astype(np.int64)
        valid = np.arange(x.shape[1])[None, :] < lengths[:, None]
        finite = np.where(valid, np.isfinite(x).all(-1), True).all(-1)
    else:
        finite = np.isfinite(x).all(-1)
    bad_rows = {r for r, _, _ in problems}
    for row in np.flatnonzero(present & ~finite):
        if int(row) not in bad_rows:
            problems.append((int(row), "nan-vector", f"{modality} vector holds NaN or infinite values"))
    return {"label": label, "x": x, "present": present, "lengths": lengths, "problems": problems}


def _from_cells(cells: list, label: str):
    """Parquet cells (None, a list of numbers, or a list of lists) -> dense arrays and row problems."""
    problems = []
    frame_level = any(isinstance(c, list) and c and isinstance(c[0], list) for c in cells if c is not None)
    sizes = Counter()
    for c in cells:
        if c is not None and len(c):
            sizes[len(c[0]) if frame_level and isinstance(c[0], list) else len(c)] += 1
    if not sizes:
        raise _fatal(label, "dimension-mismatch", "no row holds a vector")
    dim = sizes.most_common(1)[0][0]
    n = len(cells)
    present = np.array([c is not None for c in cells], dtype=bool)
    if frame_level:
        t = max((len(c) for c in cells if c is not None), default=1)
        x = np.zeros((n, t, dim), dtype=np.float32)
        lengths = np.ones(n, dtype=np.int64)
    else:
        x = np.zeros((n, dim), dtype=np.float32)
        lengths = None
    for row, c in enumerate(cells):
        if c is None:
            continue
        try:
            if frame_level:
                if not c or any(not isinstance(f, list) or len(f) != dim for f in c):
                    sizes_here = sorted({len(f) if isinstance(f, list) else 1 for f in c}) if c else [0]
                    problems.append((row, "dimension-mismatch", f"frames of size {sizes_here}, expected {dim}"))
                    continue
                x[row, :len(c)] = np.array(c, dtype=np.float32)
                lengths[row] = len(c)
            else:
                if len(c) != dim or any(isinstance(v, list) for v in c):
                    problems.append((row, "dimension-mismatch", f"a vector of {len(c)} values, the others have {dim}"))
                    continue
                x[row] = np.array([np.nan if v is None else v for v in c], dtype=np.float32)
        except (TypeError, ValueError) as exc:
            problems.append((row, "unreadable-file", f"not numbers ({exc})"))
    return x, present, lengths, problems


def import_features(out: str | os.PathLike, vectors: dict[str, str | os.PathLike], ids: str | os.PathLike | None = None,
                    captions: str | os.PathLike | None = None, splits: str | os.PathLike | None = None,
                    groups: str | os.PathLike | None = None, items: str | os.PathLike | None = None,
                    cache: str | os.PathLike | None = None, workers: int | None = None, skip_bad: bool = False,
                    seed: int = 0, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), name: str | None = None,
                    progress: bool = True, card: bool = True) -> dict:
    """Write a bundle from precomputed embeddings (see the module docstring); returns a summary.

    ``vectors``: modality -> source (``"text": "captions"`` embeds the captions with MiniLM).
    Raises :class:`~mmkit.data.user.items.InputError` for bad rows (unless ``skip_bad``) and for files
    that cannot be used at all.
    """
    from mmkit.data.cache import default_cache_dir

    t0 = time.perf_counter()
    out = Path(out)
    unknown = sorted(set(vectors) - set(MODALITIES))
    if unknown or not vectors:
        raise ValueError(f"vectors: give at least one of {MODALITIES} (--audio, --image, --text), got {sorted(vectors)}")
    if items is not None and (captions or splits or groups):
        raise ValueError("give captions, splits and groups either in the items CSV or as separate sources, not both")
    if vectors.get("text") == "captions" and captions is None and items is None:
        raise ValueError("--text captions needs captions (--captions or the caption column of --items)")
    check_output_dir(out, [Path(str(v)) for v in vectors.values() if v != "captions"])
    cache = Path(cache) if cache is not None else default_cache_dir()
    problems: list[Problem] = []
    rows = []
    if items is not None:
        rows, problems, _ = read_items(items)
    if ids is not None:
        id_label, id_values = read_strings(ids, ("id", "ids"))
    elif items is not None:
        id_label, id_values = Path(items).name + ":id", [r.id for r in rows]
    else:
        raise ValueError("ids are required: --ids (or the id column of --items)")
    n = len(id_values)
    arrays = {m: read_vectors(spec, m) for m, spec in vectors.items() if spec != "captions"}
    extra = {}
    for what, spec, keys in (("caption", captions, ("caption", "captions")), ("split", splits, ("split",)),
                             ("group", groups, ("group",))):
        if spec is not None:
            extra[what] = read_strings(spec, keys)
    for label, length in [(a["label"], len(a["x"])) for a in arrays.values()] + [(v[0], len(v[1])) for v in extra.values()]:
        if length != n:
            raise _fatal(label, "dimension-mismatch", f"{length} rows, but {n} ids in {id_label}")
    bad: dict[int, Problem] = {}

    def flag(row: int, label: str, kind: str, reason: str) -> None:
        bad.setdefault(row, Problem(label, f"row {row}", id_values[row] or None, kind, reason))

    first: dict[str, int] = {}
    for row, item in enumerate(id_values):
        if not item:
            flag(row, id_label, "empty-id", "the id is empty")
        elif item in first:
            flag(row, id_label, "duplicate-id", f"id {item!r} is already used by row {first[item]}")
        else:
            first[item] = row
    for m, a in arrays.items():
        for row, kind, reason in a["problems"]:
            flag(row, a["label"], kind, reason)
    if "caption" in extra:
        label, values = extra["caption"]
        for row, c in enumerate(values):
            if c and not any(ch.isalnum() for ch in c):
                flag(row, label, "empty-caption", f"caption {c!r} holds no words")
    if "split" in extra:
        label, values = extra["split"]
        for row, s in enumerate(values):
            if s and s.lower() not in SPLITS:
                flag(row, label, "bad-split", f"split {s!r} is not one of {SPLITS}")
    by_id = {}
    for r in rows:
        if r.id not in first:
            problems.append(Problem(Path(items).name, f"line {r.line}", r.id, "unknown-id",
                                    f"id {r.id!r} is not among the {n} ids of {id_label}"))
        else:
            by_id[r.id] = r
    media, media_problems, _ = prepare_media(list(by_id.values()), Path(items).name if items else "", cache,
                                             workers or os.cpu_count() or 1, False, progress) if by_id else ({}, [], {})
    problems += media_problems
    failed_media = {p.item for p in media_problems}
    problems += list(bad.values())
    if problems and not skip_bad:
        raise InputError(problems)
    kept = []
    for row, item in enumerate(id_values):
        if row in bad or item in failed_media:
            continue
        r = by_id.get(item)
        caption = r.caption if r is not None else (extra["caption"][1][row] or None if "caption" in extra else None)
        given = r.split if r is not None else ((extra["split"][1][row].lower() or None) if "split" in extra else None)
        group = r.group if r is not None else ((extra["group"][1][row] or item) if "group" in extra else item)
        rec = {"id": item, "where": f"row {row}", "group": group, "split": given, "caption": caption}
        for m in MODALITIES:
            rec[m] = None
            if m in arrays and arrays[m]["present"][row]:
                a = arrays[m]
                rec[m] = a["x"][row]
                if a["lengths"] is not None:
                    rec[f"{m}_length"] = int(a["lengths"][row])
        e = media.get(item)
        rec["media_audio"] = f"media/{e.audio.name}.wav" if e is not None and e.audio else ""
        rec["media_image"] = f"media/{e.image.name}.png" if e is not None and e.image else ""
        rec["source_audio"] = r.audio_source if r is not None else ""
        rec["source_image"] = r.score_source if r is not None else ""
        rec["_entries"] = e
        kept.append(rec)
    kept = split_items(kept, problems, id_label, seed, fractions, skip_bad, "no rows")
    if vectors.get("text") == "captions":
        with_caption = [r for r in kept if r["caption"]]
        for r, v in zip(with_caption, caption_vectors([r["caption"] for r in with_caption], cache)):
            r["text"] = v
    modalities = [m for m in MODALITIES if any(r[m] is not None for r in kept)]
    media_files = {}
    for r in kept:
        e = r["_entries"]
        if e is not None and e.audio is not None:
            media_files[r["media_audio"]] = e.audio / "audio.wav"
            entry_features(e.audio)  # verifies the entry can be read
        if e is not None and e.image is not None:
            media_files[r["media_image"]] = e.image / "image.png"
    h = hashlib.sha256(b"imported v1")
    for r in kept:
        h.update(json.dumps([r["id"], r["split"], r["group"], r["caption"], r["media_audio"], r["media_image"],
                             r["source_audio"], r["source_image"]] + [r.get(f"{m}_length") for m in MODALITIES]).encode())
        for m in modalities:
            h.update(b"-" if r[m] is None else np.ascontiguousarray(r[m]).tobytes())
    name = name or out.resolve().name
    reused = write_user_bundle(out, kept, name, modalities, h.hexdigest(), media_files)
    sources = {m: {"source": arrays[m]["label"] if m in arrays else "captions (MiniLM)",
                   "shape": list(arrays[m]["x"].shape[1:]) if m in arrays else [384]} for m in modalities}
    summary = {"kind": "embeddings", "name": name, "source": ", ".join(str(v) for v in vectors.values()),
               "bundle": str(out), "bundle_reused": reused, **summary_fields(kept, modalities),
               "modalities": modalities, "sources": sources, "skipped": [p.to_dict() for p in sort_problems(problems)],
               "ignored_columns": [], "seconds": round(time.perf_counter() - t0, 1)}
    if card:
        from mmkit.data.bundle.card import write_dataset_card

        write_dataset_card(out / "card.md", summary)
        summary["card"] = str(out / "card.md")
    return summary
