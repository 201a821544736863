"""Build the embedded dataset: music21 excerpts -> aligned (audio, score image, caption) triplets.

Pipeline per work (in a worker process): parse -> cut a 4-bar excerpt -> MIDI -> audio
(tinysoundfont) -> engraving (verovio, cairosvg) -> descriptors and caption; then features
(cached per feature version, so a feature change does not re-render the media). Each item
lands in a **content-addressed cache** directory ``<cache>/items/<hash>/`` (hash of the work key
and the render version) with its files written atomically and an ``ok.json`` listing their
SHA-256 written last. A rerun reuses verified items (so an interrupted build resumes), rebuilds
corrupt ones, and skips works that failed before (the reason is cached and counted).

Then, in the main process: near-duplicate tunes are grouped by their melody key and every group
goes to one split (deterministic hash of the group key), captions are embedded with MiniLM, and a
bundle (:mod:`mmkit.data.bundle`) is written to ``<cache>/bundles/<name>/`` with the media
hard-linked (or copied) into it. A dataset card summarises the build.
"""
from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmkit.core.io import atomic_write_bytes, atomic_write_json, sha256_bytes, sha256_file
from mmkit.data.bundle import save_bundle
from mmkit.data.cache import bundle_is_current, default_cache_dir, link_or_copy, verify_entry

__all__ = ["PRESET_SPECS", "PresetSpec", "PROGRESS_ENV", "Progress", "select_works", "build_item", "build_dataset",
           "bundle_name", "render_items", "render_in_pool", "split_of", "open_excerpt", "record_failure",
           "write_item"]

#: Bump when rendering or features change: every cached item is then rebuilt.
RENDER_VERSION = "1"

#: Environment variable naming a JSON file in which :func:`build_dataset` reports how far it is
#: (``{"what", "done", "total", "unit"}``, rewritten at most twice a second): the reproduce pipeline
#: sets it for the notebook that builds the dataset and shows the count while the step runs.
PROGRESS_ENV = "MMKIT_PROGRESS_FILE"


@dataclass(frozen=True)
class PresetSpec:
    n_items: int | None                 # None: every usable work
    weights: dict[str, float]           # collection -> share of the items
    split: tuple[float, float, float]   # train, val, test fractions (by near-duplicate group)


_FOLK = {"essenFolksong": 0.45, "oneills1850": 0.25, "ryansMammoth": 0.15, "airdsAirs": 0.15}
PRESET_SPECS = {
    # tiny: fast folk material only; larger val/test shares so retrieval metrics mean something
    "tiny": PresetSpec(200, _FOLK, (0.5, 0.2, 0.3)),
    "small": PresetSpec(2000, {"essenFolksong": 0.40, "oneills1850": 0.17, "ryansMammoth": 0.13, "airdsAirs": 0.10,
                               "bach": 0.08, "palestrina": 0.06, "miscFolk": 0.03, "trecento": 0.015,
                               "monteverdi": 0.015}, (0.8, 0.1, 0.1)),
    "full": PresetSpec(None, {}, (0.8, 0.1, 0.1)),
}


def _rank_key(seed: int, key: str) -> str:
    return hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()


def select_works(preset: str, seed: int = 0, collections: tuple[str, ...] | None = None, oversample: float = 1.08):
    """Works to render for ``preset``, in a deterministic priority order.

    Each collection contributes ``weight * n_items * oversample`` works (capped by what exists; the
    shortfall goes to the remaining collections in proportion), so that skipped works can be
    replaced. With ``collections`` only those collections are used (weights renormalised).
    """
    from mmkit.data.embedded.corpus import list_works

    spec = PRESET_SPECS[preset]
    works = list_works(tuple(collections) if collections else None)
    by_collection: dict[str, list] = defaultdict(list)
    for w in works:
        by_collection[w.collection].append(w)
    for items in by_collection.values():
        items.sort(key=lambda w: _rank_key(seed, w.key))
    if spec.n_items is None:
        return sorted(works, key=lambda w: _rank_key(seed, w.key))
    weights = {c: spec.weights.get(c, 0.0) for c in by_collection}
    if collections or not any(weights.values()):
        weights = {c: spec.weights.get(c, 1.0) or 1.0 for c in by_collection}
    target = int(round(spec.n_items * oversample))
    quota: dict[str, int] = {}
    remaining, pool = target, {c: w for c, w in weights.items() if w > 0}
    while remaining > 0 and pool:
        total = sum(pool.values())
        grant = {c: max(1, int(round(remaining * w / total))) for c, w in pool.items()}
        for c, g in grant.items():
            have = len(by_collection[c]) - quota.get(c, 0)
            quota[c] = quota.get(c, 0) + min(g, have)
        remaining = target - sum(quota.values())
        pool = {c: w for c, w in pool.items() if quota[c] < len(by_collection[c])}
    chosen = [w for c, n in quota.items() for w in by_collection[c][:n]]
    return sorted(chosen, key=lambda w: _rank_key(seed, w.key))


def item_hash(work_key: str) -> str:
    return hashlib.sha1(f"render-v{RENDER_VERSION}:{work_key}".encode()).hexdigest()[:20]


def _item_dir(cache: Path, key: str) -> Path:
    h = item_hash(key)
    return cache / "items" / h[:2] / h


def build_item(work_dict: dict, item_dir: str) -> dict:
    """Render one work into ``item_dir`` (runs in a worker). Returns ``{"status", "key", ...}``."""
    from mmkit.data import features, render
    from mmkit.data.embedded import captions, corpus

    work = corpus.Work(**work_dict)
    out = Path(item_dir)
    stage = ["parse"]
    try:
        score, excerpt, group = open_excerpt(work, stage)
        stage[0] = "midi"
        midi, bpm = render.midi_bytes(excerpt)
        stage[0] = "audio"
        audio = render.synthesize(midi)
        if float(np.sqrt(np.mean(audio**2))) < 1e-3:
            raise RuntimeError("silent audio")
        stage[0] = "engrave"
        image = render.rasterize(render.engrave_svg(excerpt))
        ink = float((image < 128).mean())
        if ink < 0.002:
            raise RuntimeError("blank image")
        stage[0] = "caption"
        desc = captions.describe(excerpt)
        caption = captions.make_caption(work, desc)
    except ImportError:
        raise  # a missing package (tinysoundfont) is no property of the work: fail the build, cache nothing
    except Exception as exc:  # noqa: BLE001 - every failure is counted by stage and reason, never fatal
        return record_failure(out, work.key, stage[0], exc)
    meta = {"work": work.to_dict(), "caption": caption, "descriptors": desc, "group": group, "bpm": bpm,
            "ink": ink, "n_measures": len(excerpt.parts[0].getElementsByClass("Measure")),
            "quarter_length": float(excerpt.highestTime)}
    write_item(out, audio, image, meta)
    features.item_features(out, render.SAMPLE_RATE)  # computed here, in parallel, while the media are fresh
    return {"status": "ok", "key": work.key}


def open_excerpt(work, stage: list[str]) -> tuple:
    """``(score, excerpt, group)`` of a corpus work: parsed, cut to its excerpt, its near-duplicate group
    (the melody key, else the work key). ``stage[0]`` names the step under way, for the failure record."""
    from mmkit.data.embedded import corpus

    stage[0] = "parse"
    score = corpus.parse_work(work)
    stage[0] = "excerpt"
    return score, corpus.cut_excerpt(score), corpus.melody_key(score) or work.key


def record_failure(out: Path, key: str, stage: str, exc: Exception) -> dict:
    """Cache why a work failed (``failed.json``: stage and exception type; a rerun skips it) and say so."""
    reason = f"{stage}: {type(exc).__name__}"
    atomic_write_json(out / "failed.json", {"key": key, "reason": reason, "detail": str(exc)[:500]})
    return {"status": "failed", "key": key, "reason": reason}


def write_item(out: Path, audio: np.ndarray, image: np.ndarray, meta: dict, extra: dict[str, bytes] | None = None) -> None:
    """Write a rendered item into its cache folder: ``audio.wav`` (16-bit PCM), ``image.png``, the
    ``extra`` files, ``meta.json``, each atomically, then ``ok.json`` with their SHA-256 (last: an
    item without it is not there)."""
    import soundfile
    from PIL import Image

    from mmkit.data.render import SAMPLE_RATE

    files = {}

    def put(name: str, data: bytes) -> None:
        atomic_write_bytes(out / name, data)
        files[name] = sha256_bytes(data)

    wav = io.BytesIO()
    soundfile.write(wav, (audio * 32767).astype(np.int16), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    put("audio.wav", wav.getvalue())
    png = io.BytesIO()
    Image.fromarray(image).save(png, format="PNG", optimize=True)
    put("image.png", png.getvalue())
    for name, data in (extra or {}).items():
        put(name, data)
    put("meta.json", json.dumps(meta, indent=1, default=str).encode())
    atomic_write_json(out / "ok.json", {"files": files})


class Progress:
    """Writes ``{"what", "done", "total", "unit"}`` to the file named by ``$MMKIT_PROGRESS_FILE``
    (nothing when it is unset), at most every ``interval`` seconds unless forced. The file is
    replaced atomically (a reader never sees half of it) but not fsynced: it is a display, not state."""

    def __init__(self, interval: float = 0.5):
        path = os.environ.get(PROGRESS_ENV)
        self.path = Path(path) if path else None
        self.interval = interval
        self.last = 0.0

    def __call__(self, what: str, done: int | None = None, total: int | None = None, unit: str = "items",
                 force: bool = False) -> None:
        if self.path is None or (not force and time.monotonic() - self.last < self.interval):
            return
        self.last = time.monotonic()
        try:
            atomic_write_json(self.path, {"what": what, "done": done, "total": total, "unit": unit})
        except OSError:  # a display only: never let it stop a build
            pass


def _call(job):
    fn, args = job
    return fn(*args)


def _worker_init() -> None:
    from mmkit.data.features import use_private_numba_cache

    use_private_numba_cache(force=True)


def render_in_pool(todo: list, workers: int, tick) -> None:
    """Run ``todo``, ``(function, args)`` jobs, in ``workers`` processes.
    A worker that dies (a crash in native code) breaks the pool: the build stops with a clear error
    instead of waiting forever, and a rerun resumes from the verified cache."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init) as pool:
        futures = [pool.submit(_call, job) for job in todo]
        try:
            for future in as_completed(futures):
                future.result()
                tick()
        except BrokenProcessPool:
            for future in futures:
                future.cancel()
            raise RuntimeError("a rendering worker died (a crash in native code); items finished so far are "
                               "cached — run the build again to resume") from None


def split_of(group: str, seed: int, fractions: tuple[float, float, float]) -> str:
    u = int(hashlib.sha1(f"split{seed}:{group}".encode()).hexdigest()[:12], 16) / 16**12
    return "train" if u < fractions[0] else "val" if u < fractions[0] + fractions[1] else "test"


def bundle_name(preset: str, collections: tuple[str, ...] | None, seed: int) -> str:
    suffix = "" if not collections else "-" + hashlib.sha1(",".join(sorted(collections)).encode()).hexdigest()[:8]
    from mmkit.data.features import FEATURE_VERSION

    return f"music21-{preset}-seed{seed}-v{RENDER_VERSION}.{FEATURE_VERSION}{suffix}"


def build_dataset(preset: str = "tiny", cache: str | os.PathLike | None = None,
                  collections: tuple[str, ...] | None = None, workers: int | None = None, seed: int = 0,
                  progress: bool = True, card: str | os.PathLike | None = None) -> dict:
    """Build (or reuse) the embedded dataset for ``preset``; returns a summary with the bundle path.

    Parameters
    ----------
    preset : "tiny" | "small" | "full"
    cache : cache directory (default ``$MMKIT_CACHE`` or ``./.cache/mmkit``)
    collections : restrict to these corpus collections (e.g. ``("essenFolksong",)``)
    workers : processes (default: all cores)
    card : path of the Markdown dataset card to write (None: do not write)
    """
    if preset not in PRESET_SPECS:
        raise ValueError(f"preset must be one of {tuple(PRESET_SPECS)}, got {preset!r}")
    t0 = time.perf_counter()
    cache = Path(cache) if cache is not None else default_cache_dir()
    spec = PRESET_SPECS[preset]
    report = Progress()
    report(f"selecting {preset} works", force=True)
    works = select_works(preset, seed, collections)
    workers = workers or os.cpu_count() or 1
    metas, skipped, rendered, rebuilt = render_items(preset, [(w, _item_dir(cache, w.key), (w.to_dict(),)) for w in works],
                                                     build_item, workers, progress, report)
    if spec.n_items is not None:
        metas = metas[: spec.n_items]
    if not metas:
        raise RuntimeError(f"no usable item for preset {preset!r} (skipped: {dict(skipped)})")
    report(f"assembling the {preset} bundle", len(metas), len(metas), force=True)
    summary = _assemble(preset, cache, metas, spec, seed, collections, progress)
    summary.update(skipped=sum(skipped.values()), skipped_by_reason=dict(skipped), rebuilt_corrupt=rebuilt,
                   rendered=rendered, seconds=round(time.perf_counter() - t0, 1), workers=workers)
    if card is not None:
        from mmkit.data.bundle.card import write_dataset_card

        write_dataset_card(card, summary)
    return summary


def render_items(preset: str, items: list, fn, workers: int, progress: bool, report: Progress,
                 before=None) -> tuple[list, Counter, int, int]:
    """Render what the cache lacks and collect every item: the loop both builders share.

    ``items`` holds ``(work, item_dir, args)``; ``fn(*args, str(item_dir))`` renders one item in a worker
    (:func:`build_item`, :func:`mmkit.data.embedded.real.build_real_item`). Verified items are reused, an
    item whose files no longer match ``ok.json`` is rendered again, a work that failed before is skipped.
    ``before()`` runs once before the first render (checks that should stop a build early).
    Returns ``(metas [(work, item_dir, meta)], skipped reasons, rendered, rebuilt)``.
    """
    from tqdm.auto import tqdm

    todo, rebuilt = [], 0
    for i, (w, d, args) in enumerate(items):
        report(f"checking the {preset} cache", i, len(items))
        if (d / "failed.json").is_file():
            continue
        if not verify_entry(d):
            if (d / "ok.json").exists():
                rebuilt += 1
                (d / "ok.json").unlink()
            todo.append((fn, (*args[:1], str(d), *args[1:])))
    if todo:
        from mmkit.data.render import require_tinysoundfont

        require_tinysoundfont()  # before any worker starts: a clear error naming the pip command
        if before is not None:
            before()
        bar = tqdm(total=len(todo), desc=f"rendering {preset}", unit="item", disable=not progress)
        report(f"rendering {preset}", 0, len(todo), force=True)
        done = [0]

        def tick() -> None:
            bar.update(1)
            done[0] += 1
            report(f"rendering {preset}", done[0], len(todo), force=done[0] == len(todo))

        if workers > 1:
            render_in_pool(todo, workers, tick)
        else:
            for job in todo:
                _call(job)
                tick()
        bar.close()
    metas, skipped = [], Counter()
    for w, d, _ in items:
        if verify_entry(d):
            metas.append((w, d, json.loads((d / "meta.json").read_text())))
        elif (d / "failed.json").is_file():
            skipped[json.loads((d / "failed.json").read_text())["reason"]] += 1
        else:
            skipped["missing after build"] += 1
    return metas, skipped, len(todo), rebuilt


def _bundle_key(metas, spec, seed) -> str:
    """SHA-256 of everything a bundle is assembled from: each item's ``ok.json`` (the SHA-256 of
    its media and features), its order and split, the feature version and the text encoder."""
    from mmkit.data.features import FEATURE_VERSION
    from mmkit.data.text_embed import model_dir

    parts = [f"render {RENDER_VERSION} features {FEATURE_VERSION} seed {seed} split {spec.split}",
             sha256_file(model_dir() / "model.safetensors")]
    parts += [f"{work.key}\t{d.name}\t{sha256_file(d / 'ok.json')}" for work, d, _ in metas]
    return sha256_bytes("\n".join(parts).encode())


def _assemble(preset, cache, metas, spec, seed, collections, progress) -> dict:
    """Write the bundle of ``metas`` (features, MiniLM caption embeddings, hard-linked media), or
    reuse it when it was assembled from the same verified items (embedding the captions costs
    about 30 s for `small`, which every notebook that loads the preset would otherwise pay)."""
    root = cache / "bundles" / bundle_name(preset, collections, seed)
    captions = [m["caption"] for _, _, m in metas]
    assigned = [split_of(meta["group"], seed, spec.split) for _, _, meta in metas]
    counts = {s: assigned.count(s) for s in ("train", "val", "test")}
    empty = [s for s, n in counts.items() if n == 0]
    if empty:
        raise RuntimeError(f"split {empty[0]!r} is empty for preset {preset!r}; build more items")
    key = _bundle_key(metas, spec, seed)
    reused = bundle_is_current(root, key) and _media_is_current(root, metas)
    if not reused:
        _write_bundle(root, preset, collections, seed, metas, assigned, key, progress)
    per_collection = {s: dict(Counter(w.collection for (w, _, _), a in zip(metas, assigned) if a == s))
                      for s in ("train", "val", "test")}
    examples = [{"id": work.key, "caption": meta["caption"], "collection": work.collection}
                for work, _, meta in metas[:5]]
    return {"preset": preset, "bundle": str(root), "bundle_reused": reused, "items": len(metas), **counts,
            "per_collection": per_collection, "captions": captions,
            "test_captions": [c for c, a in zip(captions, assigned) if a == "test"], "examples": examples}


def _media_is_current(root: Path, metas) -> bool:
    """Every media file of the bundle is its (verified) item's file: the same hard link, or a copy
    with the SHA-256 recorded in the item's ``ok.json``."""
    for _, d, _ in metas:
        recorded = json.loads((d / "ok.json").read_text())["files"]
        for name, ext in (("audio.wav", "wav"), ("image.png", "png")):
            target = root / "media" / f"{d.name}.{ext}"
            try:
                if not (os.path.samefile(d / name, target) or sha256_file(target) == recorded[name]):
                    return False
            except (OSError, KeyError):
                return False
    return True


def _write_bundle(root, preset, collections, seed, metas, assigned, key, progress) -> None:
    from mmkit.data.features import item_features
    from mmkit.data.render import SAMPLE_RATE
    from mmkit.data.text_embed import embed_texts

    media = root / "media"
    media.mkdir(parents=True, exist_ok=True)
    text = embed_texts([m["caption"] for _, _, m in metas], progress=progress)
    splits: dict[str, dict[str, list]] = {s: defaultdict(list) for s in ("train", "val", "test")}
    for (work, d, meta), emb, split in zip(metas, text, assigned):
        h = d.name
        audio, image = item_features(d, SAMPLE_RATE)
        for name, ext in (("audio.wav", "wav"), ("image.png", "png")):
            link_or_copy(d / name, media / f"{h}.{ext}")
        rows = splits[split]
        rows["ids"].append(work.key)
        rows["audio"].append(audio)
        rows["image"].append(image)
        rows["text"].append(emb)
        rows["captions"].append(meta["caption"])
        rows["media_audio"].append(f"media/{h}.wav")
        rows["media_image"].append(f"media/{h}.png")
        rows["collection"].append(work.collection)
        rows["group"].append(meta["group"])
    arrays = {}
    for s, rows in splits.items():
        arrays[s] = {"ids": np.array(rows["ids"]), "audio": np.stack(rows["audio"]), "image": np.stack(rows["image"]),
                     "text": np.stack(rows["text"]).astype(np.float32), "captions": np.array(rows["captions"]),
                     "media_audio": np.array(rows["media_audio"]), "media_image": np.array(rows["media_image"]),
                     "collection": np.array(rows["collection"]), "group": np.array(rows["group"])}
    save_bundle(root, arrays, name=bundle_name(preset, collections, seed), build_key=key)
