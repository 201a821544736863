"""Your own media -> a bundle: ``python -m mmkit build-data --from items.csv --out DIR``.

Each item of the items CSV (:mod:`mmkit.data.user.items`) goes through the embedded dataset's code:

* audio — decoded by librosa (any format it reads), mono, resampled to
  :data:`~mmkit.data.render.SAMPLE_RATE`, the first :data:`~mmkit.data.render.AUDIO_SECONDS`
  seconds (zero-padded), peak-normalised to 0.9 and stored as 16-bit WAV like the embedded
  dataset's renderings (an embedded ``audio.wav`` passes through unchanged);
* score — a PNG/JPEG image is fitted into :data:`~mmkit.data.render.IMAGE_SHAPE` as
  :func:`~mmkit.data.render.rasterize` fits its engravings (height-fitted, shrunk if too wide,
  on white); a symbolic score is parsed by music21, cut to its first bars
  (:func:`~mmkit.data.embedded.corpus.cut_excerpt`) and engraved (:func:`~mmkit.data.render.engrave_svg`,
  :func:`~mmkit.data.render.rasterize`); with ``render_audio`` an item without a recording gets
  the score rendered to audio (:func:`~mmkit.data.render.midi_bytes`,
  :func:`~mmkit.data.render.synthesize`);
* features — :func:`~mmkit.data.features.audio_features` of the stored WAV and
  :func:`~mmkit.data.features.image_features` of the stored PNG, read back exactly as
  :func:`~mmkit.data.features.item_features` reads an embedded item; captions are embedded by
  MiniLM (:func:`~mmkit.data.text_embed.embed_texts`, one caption at a time so that a vector
  depends on its caption only).

The bundle's ``media_audio`` / ``media_image`` are these stored files, so the raw inputs of
``--encoder backbones`` (:mod:`mmkit.data.raw`) and the retrieval widget see what the features saw.

Caching is content-addressed, per media file: ``<cache>/user-media/<key>/`` where the key hashes
the file's bytes (and the media version); files are written atomically and ``ok.json`` with
their SHA-256 last, features are cached per feature version, caption vectors per caption
(``<cache>/user-text/``). An interrupted build resumes; an edited row rebuilds only its own
files. A file that failed (silent, unparseable, ...) is remembered with its reason.
"""
from __future__ import annotations

import hashlib
import io
import json
import contextlib
import multiprocessing as mp
import os
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmkit.core.io import (atomic_write, atomic_write_bytes, atomic_write_json, remove_stale_temporaries, sha256_bytes,
                           sha256_file)
from mmkit.data.bundle import save_bundle
from mmkit.data.cache import bundle_is_current, default_cache_dir, link_or_copy
from mmkit.data.user.items import (IMAGE_SUFFIXES, InputError, ItemRow, Problem, assign_splits, header_columns,
                                   read_items, sort_problems)
from mmkit.vocab import MODALITIES, SPLITS

__all__ = ["MEDIA_VERSION", "MediaError", "canonical_audio", "read_audio_file", "wav_bytes", "fit_score_image",
           "read_score_image", "score_excerpt", "engrave", "render_excerpt_audio", "audio_file_features",
           "image_file_features", "score_file_features", "caption_vectors", "prepare_media", "entry_features",
           "build_from_media"]

#: Bump when the way media are normalised changes: every cached entry is then rebuilt.
MEDIA_VERSION = "1"
#: Bump when the failure messages change: remembered failures are then tried again (and re-worded).
_FAILURE_VERSION = 2
_PEAK = 0.9
_SILENT_RMS = 1e-3   # as the embedded build: RMS after peak normalisation
_BLANK_INK = 0.002   # as the embedded build: share of pixels darker than 128


class MediaError(Exception):
    """A media file that cannot be used; ``kind`` is a key of :data:`mmkit.data.user.items.PROBLEM_KINDS`."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, reason


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling, the root cause first."""
    out: list[BaseException] = []
    while exc is not None and exc not in out and len(out) < 5:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out[::-1]


def _why(exc: BaseException, path: str | os.PathLike | None = None) -> str:
    """What went wrong, for the user: every exception of the chain (a decoder that gave up after
    another: soundfile's reason, then audioread's), an empty message replaced by the first sentence
    of the exception's docstring, the machine's folders cut from ``path`` (its file name stays)."""
    folders = {str(Path(path).parent), str(Path(path).resolve().parent)} if path else set()
    parts = []
    for e in _chain(exc):
        text = str(getattr(e, "error_string", "") or e).strip()
        if not text:
            text = " ".join((type(e).__doc__ or "").split()).split(". ")[0].rstrip(".")
        for folder in folders:
            text = text.replace(folder + os.sep, "")
        parts.append(f"{type(e).__name__}: {text}" if text else type(e).__name__)
    return "; then ".join(dict.fromkeys(parts))[:300]


@contextlib.contextmanager
def _quiet():
    """Decoders' warnings (librosa's "PySoundFile failed. Trying audioread instead.", audioread's
    deprecation, music21's parser notes) kept off the terminal: the outcome is what the user sees."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ----------------------------------------------------------------------------------------------
# one file -> the embedded dataset's media form
# ----------------------------------------------------------------------------------------------
def canonical_audio(audio: np.ndarray, normalise: bool = True) -> np.ndarray:
    """Mono float audio at the dataset rate -> 16-bit samples as the embedded build stores them:
    cut or zero-padded to ``AUDIO_SECONDS``, peak-normalised to 0.9 (``normalise=False`` for audio
    that :func:`~mmkit.data.render.synthesize` already normalised). Raises ``MediaError`` when silent."""
    from mmkit.data.render import AUDIO_SECONDS, SAMPLE_RATE

    n = int(SAMPLE_RATE * AUDIO_SECONDS)
    audio = np.asarray(audio, dtype=np.float32)[:n]
    audio = np.pad(audio, (0, n - len(audio)))
    if not np.isfinite(audio).all():
        raise MediaError("unreadable-file", "the decoded audio holds NaN or infinite samples")
    peak = float(np.abs(audio).max())
    if peak == 0.0:
        raise MediaError("silent-audio", f"the first {AUDIO_SECONDS:g} s are silent (all samples zero)")
    if normalise:
        audio = (audio * (_PEAK / peak)).astype(np.float32)
    rms = float(np.sqrt(np.mean(audio**2)))
    if rms < _SILENT_RMS:
        raise MediaError("silent-audio", f"the first {AUDIO_SECONDS:g} s are silent (RMS {rms:.1e} after "
                                         f"normalising the peak)")
    return (audio * 32767).astype(np.int16)


def read_audio_file(path: str | os.PathLike) -> np.ndarray:
    """16-bit samples (see :func:`canonical_audio`) of any file librosa reads."""
    import librosa

    from mmkit.data.render import AUDIO_SECONDS, SAMPLE_RATE

    try:
        with _quiet():
            audio, _ = librosa.load(str(path), sr=SAMPLE_RATE, mono=True, duration=AUDIO_SECONDS)
    except Exception as exc:  # noqa: BLE001 - every decoder error is the same problem for the user
        raise MediaError("unreadable-file", f"cannot decode audio ({_why(exc, path)})") from None
    if audio.size == 0:
        raise MediaError("unreadable-file", "the audio file holds no samples")
    return canonical_audio(audio)


def wav_bytes(pcm: np.ndarray) -> bytes:
    """A 16-bit WAV at the dataset rate, as the embedded build writes ``audio.wav``."""
    import soundfile

    from mmkit.data.render import SAMPLE_RATE

    buf = io.BytesIO()
    soundfile.write(buf, pcm, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def fit_score_image(img) -> np.ndarray:
    """A PIL image -> grayscale uint8 ``IMAGE_SHAPE``: transparency on white, height-fitted, shrunk
    if too wide, pasted left and centred vertically on white (how ``rasterize`` fits an engraving)."""
    from PIL import Image

    from mmkit.data.render import fit_image

    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return fit_image(img.convert("L"))


def _check_ink(image: np.ndarray) -> None:
    ink = float((image < 128).mean())
    if ink < _BLANK_INK:
        raise MediaError("blank-image", f"the score image is (almost) blank: {100 * ink:.2f} % ink")


def read_score_image(path: str | os.PathLike) -> np.ndarray:
    """A PNG/JPEG score image fitted to the dataset's shape (uint8); ``MediaError`` if unusable."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            image = fit_score_image(img)
    except Exception as exc:  # noqa: BLE001 - truncated, not an image, unsupported mode
        raise MediaError("unreadable-file", f"cannot read the image ({_why(exc, path)})") from None
    _check_ink(image)
    return image


def score_excerpt(path: str | os.PathLike):
    """The first bars of a symbolic score (music21 parses it; cleaned as the embedded excerpts)."""
    from music21 import converter

    from mmkit.data.embedded.corpus import cut_excerpt

    try:
        with _quiet():
            score = converter.parse(str(path), forceSource=True)
    except Exception as exc:  # noqa: BLE001 - music21 raises many types for bad input
        raise MediaError("unparseable-score", f"music21 cannot parse it ({_why(exc, path)})") from None
    try:
        with _quiet():
            return cut_excerpt(score)
    except Exception as exc:  # noqa: BLE001
        raise MediaError("unparseable-score", f"no usable excerpt ({_why(exc, path)})") from None


def engrave(excerpt) -> np.ndarray:
    """The excerpt engraved as in the embedded dataset (uint8 ``IMAGE_SHAPE``)."""
    from mmkit.data.render import engrave_svg, rasterize

    try:
        with _quiet():
            image = rasterize(engrave_svg(excerpt))
    except Exception as exc:  # noqa: BLE001 - verovio / cairosvg failures
        raise MediaError("unparseable-score", f"cannot engrave it ({_why(exc)})") from None
    _check_ink(image)
    return image


def render_excerpt_audio(excerpt) -> np.ndarray:
    """The excerpt rendered to audio as in the embedded dataset (16-bit samples)."""
    from mmkit.data.render import midi_bytes, synthesize

    try:
        with _quiet():
            audio = synthesize(midi_bytes(excerpt)[0])
    except Exception as exc:  # noqa: BLE001
        raise MediaError("unparseable-score", f"cannot render it to audio ({_why(exc)})") from None
    return canonical_audio(audio, normalise=False)


def _audio_vector(wav: bytes | Path) -> np.ndarray:
    """(270,) features of a stored WAV, read as :func:`mmkit.data.features.item_features` reads it."""
    import soundfile

    from mmkit.data.features import audio_features
    from mmkit.data.render import SAMPLE_RATE

    audio, sr = soundfile.read(io.BytesIO(wav) if isinstance(wav, bytes) else wav, dtype="float32")
    if sr != SAMPLE_RATE:
        raise ValueError(f"sample rate {sr}, expected {SAMPLE_RATE}")
    return audio_features(audio, sr)[0]


def _image_vector(png: bytes | Path) -> np.ndarray:
    """(1090,) features of a stored PNG, read as :func:`mmkit.data.features.item_features` reads it."""
    from PIL import Image

    from mmkit.data.features import image_features

    return image_features(np.asarray(Image.open(io.BytesIO(png) if isinstance(png, bytes) else png).convert("L")))


def audio_file_features(path: str | os.PathLike) -> np.ndarray:
    """(270,) features of any audio file, exactly as a bundle built from it holds them."""
    return _audio_vector(wav_bytes(read_audio_file(path)))


def image_file_features(path: str | os.PathLike) -> np.ndarray:
    """(1090,) features of a PNG/JPEG score image, exactly as a bundle built from it holds them."""
    return _image_vector(_png_bytes(read_score_image(path)))


def score_file_features(path: str | os.PathLike, audio: bool = True) -> dict[str, np.ndarray]:
    """``{"image": (1090,)[, "audio": (270,)]}`` of a symbolic score, engraved (and rendered)."""
    excerpt = score_excerpt(path)
    out = {"image": _image_vector(_png_bytes(engrave(excerpt)))}
    if audio:
        out["audio"] = _audio_vector(wav_bytes(render_excerpt_audio(excerpt)))
    return out


# ----------------------------------------------------------------------------------------------
# caption vectors, cached per caption
# ----------------------------------------------------------------------------------------------
def caption_vectors(captions: list[str], cache: Path | None = None, progress: bool = False) -> np.ndarray:
    """(N, 384) MiniLM vectors, one caption at a time (a vector depends on its caption alone, not on
    the batch it was computed in), cached per caption under ``<cache>/user-text/`` when ``cache``."""
    from mmkit.data.text_embed import embed_texts, model_dir

    if not captions:
        return np.zeros((0, 384), dtype=np.float32)
    model = sha256_file(model_dir() / "model.safetensors")[:16]
    keys = [hashlib.sha256(f"{model}\0{c}".encode()).hexdigest()[:24] for c in captions]
    found: dict[str, np.ndarray] = {}
    if cache is not None:
        for k in set(keys):
            try:
                with open(cache / "user-text" / k[:2] / f"{k}.npy", "rb") as fh:
                    vec = np.load(fh, allow_pickle=False)
                if vec.shape == (384,) and vec.dtype == np.float32 and np.isfinite(vec).all():
                    found[k] = vec
            except (OSError, ValueError):
                pass
    todo = list(dict.fromkeys((k, c) for k, c in zip(keys, captions) if k not in found))
    if todo:
        vectors = embed_texts([c for _, c in todo], batch_size=1, progress=progress)
        for (k, _), vec in zip(todo, vectors):
            found[k] = np.asarray(vec, dtype=np.float32)
            if cache is not None:
                atomic_write(cache / "user-text" / k[:2] / f"{k}.npy", lambda fh, v=found[k]: np.save(fh, v))
    return np.stack([found[k] for k in keys]).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# cache entries: one per media file (content-addressed)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Task:
    kind: str        # "audio" or "score"
    path: str
    key: str
    render: bool     # score only: also render it to audio


def _entry_key(kind: str, digest: str, suffix: str, render: bool) -> str:
    from mmkit.data.render import SAMPLE_RATE

    text = f"user-media v{MEDIA_VERSION} sr{SAMPLE_RATE}:{kind}:{suffix.lower()}:{digest}:{int(render)}"
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def _entry_dir(cache: Path, key: str) -> Path:
    return cache / "user-media" / key[:2] / key


def _verified(d: Path) -> bool:
    from mmkit.data.cache import verify_entry

    return verify_entry(d)


def _failed(d: Path) -> dict | None:
    """The remembered failure of a cache entry (``kind``, ``reason``); None if there is none, or
    one worded by an older version (tried again)."""
    try:
        failed = json.loads((d / "failed.json").read_text())
        return failed if failed.get("version") == _FAILURE_VERSION and {"kind", "reason"} <= set(failed) else None
    except (OSError, ValueError, AttributeError):
        return None


def build_entry(task: dict, entry_dir: str) -> dict:
    """Normalise one media file into ``entry_dir`` (runs in a worker); ``{"status", "key"[, "kind", "reason"]}``."""
    t = _Task(**task)
    out = Path(entry_dir)
    files = {}

    def put(name: str, data: bytes) -> None:
        atomic_write_bytes(out / name, data)
        files[name] = sha256_bytes(data)

    try:
        meta = {"kind": t.kind, "source_sha256": sha256_file(t.path), "media_version": MEDIA_VERSION}
        if t.kind == "audio":
            wav = wav_bytes(read_audio_file(t.path))
            meta["source"] = "recording"
        elif Path(t.path).suffix.lower() in IMAGE_SUFFIXES:
            png = _png_bytes(read_score_image(t.path))
            meta["source"] = "image"
        else:
            excerpt = score_excerpt(t.path)
            png = _png_bytes(engrave(excerpt))
            wav = wav_bytes(render_excerpt_audio(excerpt)) if t.render else None
            meta["source"] = "symbolic"
    except MediaError as exc:
        atomic_write_json(out / "failed.json", {"kind": exc.kind, "reason": exc.reason, "version": _FAILURE_VERSION})
        return {"status": "failed", "key": t.key, "kind": exc.kind, "reason": exc.reason}
    if t.kind == "audio" or (t.kind == "score" and t.render):
        put("audio.wav", wav)
    if t.kind == "score":
        put("image.png", png)
    put("meta.json", json.dumps(meta, indent=1).encode())
    atomic_write_json(out / "ok.json", {"files": files})
    entry_features(out)  # here, in parallel, while the media are fresh
    return {"status": "ok", "key": t.key}


def entry_features(entry_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{"audio": (270,), "image": (1090,)}`` (those the entry has), cached per feature version."""
    from mmkit.data.features import AUDIO_FEATURE_DIM, FEATURE_VERSION, IMAGE_FEATURE_DIM

    d = Path(entry_dir)
    path = d / f"features-v{FEATURE_VERSION}.npz"
    want = {m: dim for m, dim, name in (("audio", AUDIO_FEATURE_DIM, "audio.wav"), ("image", IMAGE_FEATURE_DIM, "image.png"))
            if (d / name).is_file()}
    try:
        with np.load(path, allow_pickle=False) as f:
            got = {m: f[m] for m in want}
        if all(v.shape == (want[m],) for m, v in got.items()):
            return got
    except (OSError, ValueError, KeyError):
        pass
    got = {}
    if "audio" in want:
        got["audio"] = _audio_vector(d / "audio.wav")
    if "image" in want:
        got["image"] = _image_vector(d / "image.png")
    atomic_write(path, lambda fh: np.savez(fh, **got))
    return got


def _build_star(args):
    return build_entry(*args)


def _worker_init() -> None:
    from mmkit.data.features import use_private_numba_cache

    use_private_numba_cache(force=True)


def _run_tasks(todo: list, workers: int, bar) -> None:
    if workers <= 1 or len(todo) <= 1:
        for args in todo:
            _build_star(args)
            bar.update(1)
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(min(workers, len(todo)), mp_context=mp.get_context("spawn"),
                             initializer=_worker_init) as pool:
        futures = [pool.submit(_build_star, args) for args in todo]
        try:
            for future in as_completed(futures):
                future.result()
                bar.update(1)
        except BrokenProcessPool:
            for future in futures:
                future.cancel()
            raise RuntimeError("a media worker died (a crash in native code); files finished so far are cached — "
                               "run the build again to resume") from None


@dataclass
class _Media:
    """Cache entries of one row: ``audio`` / ``image`` entry directories (None when absent)."""

    audio: Path | None = None
    image: Path | None = None


def prepare_media(rows: list[ItemRow], source: str, cache: Path, workers: int = 1, render_audio: bool = False,
                  progress: bool = True) -> tuple[dict[str, _Media], list[Problem], dict]:
    """Build (or reuse) the cache entries of every row's media.

    Returns ``({id: _Media}, problems, counts)``; a row with a problem is absent from the dict.
    ``counts``: entries ``built`` in this call, ``reused`` and ``rebuilt_corrupt``.
    """
    from tqdm.auto import tqdm

    tasks: dict[str, _Task] = {}
    plan: dict[str, dict[str, _Task]] = {}
    problems: list[Problem] = []
    for row in rows:
        mine = {}
        try:
            if row.audio is not None:
                key = _entry_key("audio", sha256_file(row.audio), row.audio.suffix, False)
                mine["audio"] = tasks.setdefault(key, _Task("audio", str(row.audio), key, False))
            if row.score is not None:
                render = bool(render_audio and row.audio is None and row.score_kind == "symbolic")
                key = _entry_key("score", sha256_file(row.score), row.score.suffix, render)
                mine["score"] = tasks.setdefault(key, _Task("score", str(row.score), key, render))
        except OSError as exc:
            problems.append(Problem(source, f"line {row.line}", row.id, "unreadable-file",
                                    f"cannot read ({_why(exc, row.audio or row.score)})"))
            continue
        plan[row.id] = mine
    todo, rebuilt = [], 0
    for key, t in tasks.items():
        d = _entry_dir(cache, key)
        if _failed(d) is not None or _verified(d):
            continue
        if (d / "ok.json").exists():
            rebuilt += 1
            (d / "ok.json").unlink()
        todo.append(({"kind": t.kind, "path": t.path, "key": t.key, "render": t.render}, str(d)))
    if todo:
        bar = tqdm(total=len(todo), desc="media", unit="file", disable=not progress)
        _run_tasks(todo, workers, bar)
        bar.close()
    media: dict[str, _Media] = {}
    by_line = {row.id: row for row in rows}
    for item, mine in plan.items():
        row, got, bad = by_line[item], _Media(), None
        for col, t in mine.items():
            d = _entry_dir(cache, t.key)
            if _verified(d):
                if col == "audio":
                    got.audio = d
                else:
                    got.image = d
                    if t.render:
                        got.audio = d
            else:
                failed = _failed(d) or {"kind": "unreadable-file", "reason": "not built (run the build again)"}
                bad = (failed["kind"], f"{col} {getattr(row, col + '_source')!r}: {failed['reason']}")
                break
        if bad:
            problems.append(Problem(source, f"line {row.line}", row.id, *bad))
        else:
            media[item] = got
    counts = {"built": len(todo), "reused": len(tasks) - len(todo), "rebuilt_corrupt": rebuilt}
    return media, problems, counts


# ----------------------------------------------------------------------------------------------
# the bundle
# ----------------------------------------------------------------------------------------------
#: What a bundle folder written here holds (a folder with anything else is not overwritten).
_BUNDLE_ENTRIES = {"manifest.json", "card.md", "media"} | {f"{s}.npz" for s in SPLITS}


def check_output_dir(out: Path, inputs: list[Path]) -> None:
    """Refuse to write a bundle over a folder that is not one (or over the inputs). A folder holding
    only a bundle's files (also an unfinished one: a build killed before its manifest) is fine."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a directory")
    foreign = [p.name for p in out.iterdir() if p.name not in _BUNDLE_ENTRIES and not
               (p.name.startswith(".") and p.name.endswith(".tmp"))] if out.is_dir() else []
    if foreign and not (out / "manifest.json").is_file():
        raise ValueError(f"--out {out}: the folder is not empty and holds no mmkit bundle; choose a new folder "
                         "(a bundle folder is rewritten, any other is left alone)")
    for p in inputs:
        if p.resolve() == out.resolve() or out.resolve() in p.resolve().parents:
            raise ValueError(f"--out {out}: the input {p} lies inside it; choose another folder")


def write_user_bundle(out: Path, rows: list[dict], name: str, modalities: list[str], build_key: str,
                      media_files: dict[str, Path]) -> bool:
    """Write (or keep, when built from the same inputs) the bundle of ``rows``; returns True if reused.

    ``rows``: dicts with id, split, group, caption, per-modality vector (or None), ``media_<m>`` (a
    bundle-relative path or ""), ``source_<m>``; ``media_files``: bundle-relative path -> cache file.
    """

    current = bundle_is_current(out, build_key) and all(
        (out / rel).is_file() and sha256_file(out / rel) == sha256_file(src) for rel, src in media_files.items())
    if current:
        return True
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    if media_files:
        (out / "media").mkdir(exist_ok=True)
        remove_stale_temporaries(out / "media")
    for rel, src in media_files.items():
        link_or_copy(src, out / rel)
    shapes = {m: next(np.shape(r[m]) for r in rows if r[m] is not None) for m in modalities}
    arrays = {}
    for s in SPLITS:
        part = [r for r in rows if r["split"] == s]
        a = {"ids": np.array([r["id"] for r in part]), "captions": np.array([r["caption"] or "" for r in part]),
             "group": np.array([r["group"] for r in part])}
        for m in modalities:
            a[m] = np.stack([r[m] if r[m] is not None else np.zeros(shapes[m], np.float32) for r in part]).astype(np.float32)
            a[f"{m}_present"] = np.array([r[m] is not None for r in part], dtype=bool)
            if len(shapes[m]) == 2:  # frame-level: valid frames per row (1 for a missing row)
                a[f"{m}_lengths"] = np.array([r.get(f"{m}_length") or 1 for r in part], dtype=np.int64)
        for m in ("audio", "image"):
            if any(r.get(f"media_{m}") for r in rows):
                a[f"media_{m}"] = np.array([r.get(f"media_{m}", "") for r in part])
            if any(r.get(f"source_{m}") for r in rows):
                a[f"source_{m}"] = np.array([r.get(f"source_{m}", "") for r in part])
        arrays[s] = a
    save_bundle(out, arrays, name=name, build_key=build_key)
    keep = {Path(rel).name for rel in media_files}
    if (out / "media").is_dir():
        for p in (out / "media").iterdir():
            if p.is_file() and p.name not in keep:
                p.unlink()
    return False


def split_items(items: list[dict], problems: list[Problem], source: str, seed: int, fractions, skip_bad: bool,
                empty: str) -> list[dict]:
    """Assign every item dict its ``split`` (leak-free by group), then drop the items of a group
    given two splits (``skip_bad``: added to ``problems``; else an :class:`InputError` with all
    problems so far) and check that no split is empty. Returns the kept items."""
    splits, conflicts = assign_splits([r["group"] for r in items], [r["split"] for r in items], seed, fractions)
    bad = []
    for i in conflicts:
        r = items[i]
        bad.append(Problem(source, r["where"], r["id"], "split-conflict",
                           f"group {r['group']!r} is also given another split than {r['split']!r}"))
    for r, split in zip(items, splits):
        r["split"] = split
    if bad:
        if not skip_bad:
            raise InputError(problems + bad)
        problems += bad
        dropped = {p.item for p in bad}
        items = [r for r in items if r["id"] not in dropped]
    if not items:
        raise InputError(problems or [Problem(source, "file", None, "no-modality", empty)], hint=False)
    _check_splits(items)
    return items


def _check_splits(items: list[dict]) -> None:
    counts = Counter(r["split"] for r in items)
    empty = [s for s in SPLITS if counts.get(s, 0) == 0]
    if empty:
        groups = len({r["group"] for r in items})
        raise ValueError(f"split {empty[0]!r} would be empty ({len(items)} items in {groups} groups; counts "
                         f"{dict(counts)}): give more items or groups, a 'split' column, or other split fractions")


#: the column of the items CSV that gives each modality
_COLUMN_OF = {"audio": "audio", "image": "score", "text": "caption"}


def _check_no_modality_vanished(items: list[dict], problems: list[Problem], columns: list[str], source: str) -> None:
    """Raise ``InputError`` when a modality column of the CSV ends up in no item of the bundle: its
    cells all empty, or every row that had one left out (the reasons are those rows' problems, whose
    reasons start with the column's name)."""
    vanished = []
    for modality, column in _COLUMN_OF.items():
        key = "caption" if modality == "text" else modality
        if column not in columns or any(r[key] is not None for r in items):
            continue
        lost = [p for p in problems if p.reason.startswith(column)]
        if not lost:
            why = f"the {column!r} column is empty in every row"
        else:
            kinds = ", ".join(f"{n} {k}" for k, n in Counter(p.kind for p in lost).items())
            why = (f"all {len(lost)} rows with a cell in the {column!r} column were left out "
                   f"({kinds}: {', '.join(p.where for p in lost[:10])})")
        vanished.append(Problem(source, "file", None, "vanished-modality",
                                f"no item keeps the {modality} modality: {why}; fix those rows, or remove the "
                                f"{column!r} column to build without {modality}"))
    if vanished:
        raise InputError(vanished + [p for p in problems if p.kind != "vanished-modality"], hint=False)


def summary_fields(items: list[dict], modalities: list[str]) -> dict:
    """The parts of a build summary the dataset card shows about the items (shared with imports)."""
    counts = {s: sum(r["split"] == s for r in items) for s in SPLITS}
    present = {s: {m: sum(r["split"] == s and r[m] is not None for r in items) for m in modalities} for s in SPLITS}
    captions = [r["caption"] for r in items if r["caption"]]
    test_captions = [r["caption"] for r in items if r["caption"] and r["split"] == "test"]
    examples = [{"id": r["id"], "caption": r["caption"] or "", "split": r["split"]} for r in items[:5]]
    return {"items": len(items), **counts, "present": present, "groups": len({r["group"] for r in items}),
            "captions": captions, "test_captions": test_captions, "examples": examples}


def build_from_media(items_csv: str | os.PathLike, out: str | os.PathLike, cache: str | os.PathLike | None = None,
                     workers: int | None = None, skip_bad: bool = False, render_audio: bool = False, seed: int = 0,
                     fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), name: str | None = None,
                     progress: bool = True, card: bool = True) -> dict:
    """Build (or reuse) the bundle of a folder of media described by ``items_csv``.

    Parameters
    ----------
    items_csv : the items CSV (:mod:`mmkit.data.user.items`); paths in it are relative to its folder
    out : the bundle directory (created; a bundle there is rewritten only when its inputs changed)
    cache : cache directory (default ``$MMKIT_CACHE`` or ``./.cache/mmkit``)
    workers : processes for the media (default: all cores)
    skip_bad : leave bad rows out (listed in the card and the summary) instead of raising
    render_audio : items with a symbolic score and no recording get the score rendered to audio
    seed, fractions : the split assignment of groups without a given split (:func:`assign_splits`)
    card : write the dataset card to ``out/card.md``

    Returns a summary (``bundle``, ``items``, per-split counts, ``skipped`` problems, ...).

    Raises
    ------
    InputError
        Bad rows (each named by line, id, kind and reason), unless ``skip_bad``.
    """
    t0 = time.perf_counter()
    items_csv, out = Path(items_csv), Path(out)
    cache = Path(cache) if cache is not None else default_cache_dir()
    source = items_csv.name
    rows, problems, ignored = read_items(items_csv)
    check_output_dir(out, [items_csv])
    if problems and not skip_bad:
        raise InputError(problems)
    workers = workers or os.cpu_count() or 1
    media, more, counts = prepare_media(rows, source, cache, workers, render_audio, progress)
    problems += more
    if more and not skip_bad:
        raise InputError(problems)
    items = []
    for row in rows:
        if row.id not in media:
            continue
        m = media[row.id]
        feats = {}
        for mod, d in (("audio", m.audio), ("image", m.image)):
            feats[mod] = entry_features(d)[mod] if d is not None else None
        items.append({"id": row.id, "where": f"line {row.line}", "group": row.group, "split": row.split,
                      "caption": row.caption, "audio": feats["audio"], "image": feats["image"], "text": None,
                      "media_audio": f"media/{m.audio.name}.wav" if m.audio else "",
                      "media_image": f"media/{m.image.name}.png" if m.image else "",
                      "source_audio": row.audio_source if m.audio and row.audio is not None else
                      (f"{row.score_source} (rendered)" if m.audio else ""),
                      "source_image": row.score_source, "_entries": m})
    items = split_items(items, problems, source, seed, fractions, skip_bad, "no item rows")
    _check_no_modality_vanished(items, problems, header_columns(items_csv), source)
    with_caption = [r for r in items if r["caption"]]
    vectors = caption_vectors([r["caption"] for r in with_caption], cache)
    for r, v in zip(with_caption, vectors):
        r["text"] = v
    modalities = [m for m in MODALITIES if any(r[m] is not None for r in items)]
    media_files = {}
    for r in items:
        e = r["_entries"]
        if e.audio is not None:
            media_files[r["media_audio"]] = e.audio / "audio.wav"
        if e.image is not None:
            media_files[r["media_image"]] = e.image / "image.png"
    key_parts = [f"media v{MEDIA_VERSION}", json.dumps(modalities)]
    for r in items:
        e = r["_entries"]
        key_parts.append(json.dumps([r["id"], r["split"], r["group"], r["caption"], r["source_audio"], r["source_image"],
                                     r["media_audio"], r["media_image"]]))
        for d in (e.audio, e.image):
            key_parts.append(sha256_file(d / "ok.json") if d is not None else "-")
    key_parts.append(sha256_bytes(np.stack([r["text"] for r in with_caption]).tobytes()) if with_caption else "-")
    build_key = sha256_bytes("\n".join(key_parts).encode())
    name = name or items_csv.resolve().parent.name
    reused = write_user_bundle(out, items, name, modalities, build_key, media_files)
    summary = {"kind": "media", "name": name, "source": str(items_csv), "bundle": str(out), "bundle_reused": reused,
               **summary_fields(items, modalities), "modalities": modalities,
               "skipped": [p.to_dict() for p in sort_problems(problems)], "ignored_columns": ignored,
               "rendered": counts["built"], "reused_files": counts["reused"],
               "rebuilt_corrupt": counts["rebuilt_corrupt"], "workers": workers,
               "seconds": round(time.perf_counter() - t0, 1), "render_audio": render_audio}
    if card:
        from mmkit.data.bundle.card import write_dataset_card

        write_dataset_card(out / "card.md", summary)
        summary["card"] = str(out / "card.md")
    return summary
