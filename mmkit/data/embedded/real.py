"""The ``-real`` presets: the same works and splits as ``tiny`` / ``small``, each item with K views per
modality, their nuisance factors and severities, captions at graded specificity and many-to-many truth.

Per work (in a worker process, like :func:`mmkit.data.embedded.build.build_item`): parse, cut the
excerpt, descriptors, the item's instrument (:func:`~mmkit.data.embedded.views.instrument_of`) and
attributes (:func:`~mmkit.data.embedded.truth.item_attributes`); then K audio views
(:func:`~mmkit.data.embedded.views.render_audio_view`), K score-image views
(:func:`~mmkit.data.embedded.views.render_image_view`) and K captions, caption ``k`` of item ``i`` at
specificity level ``(k + r_i) mod K`` with ``r_i`` fixed by the item key, so that the evaluation
caption (view 0) mixes all levels across items. The features of every view are computed in the
worker; only view 0's media (the evaluation view) are kept as files. The item lands in
``<cache>/real-items/<hash>/`` with ``ok.json`` written last (kill-safe, resumable, verified on reuse).

In the main process the items are split exactly as their base preset (near-duplicate groups, the
same hash), all K captions of every item are embedded with MiniLM, the truth of every caption is
computed within its split (:func:`~mmkit.data.embedded.truth.truth_matrix`), and the bundle is
written with views (``docs/data_format.md``). The degraded-view test set is derived, not stored:
:func:`degraded_view_split` puts each item's most severe view in the main fields.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from mmkit.core.io import sha256_bytes, sha256_file
from mmkit.data.bundle import FeatureSplit, save_bundle, truth_to_csr
from mmkit.data.cache import bundle_is_current, default_cache_dir, link_or_copy
from mmkit.data.embedded.build import (PRESET_SPECS, Progress, open_excerpt, record_failure, render_items, select_works,
                                      split_of, write_item)

__all__ = ["REAL_PRESETS", "REAL_VERSION", "build_real_item", "build_real_dataset", "degraded_view_split"]

#: ``-real`` preset -> (base preset whose works and splits it shares, views per modality)
REAL_PRESETS = {"tiny-real": ("tiny", 4), "small-real": ("small", 4)}
#: Bump when the views' rendering, factors or captions change: every cached -real item is rebuilt.
REAL_VERSION = "2"
MODS = ("audio", "image")


def _real_dir(cache: Path, key: str, n_views: int, seed: int) -> Path:
    h = hashlib.sha1(f"real-v{REAL_VERSION}:k{n_views}:s{seed}:{key}".encode()).hexdigest()[:20]
    return cache / "real-items" / h[:2] / h


def build_real_item(work_dict: dict, item_dir: str, n_views: int, seed: int) -> dict:
    """Render one work's views into ``item_dir`` (runs in a worker). Returns ``{"status", "key", ...}``."""
    from mmkit.data import features, render
    from mmkit.data.embedded import captions, corpus, views

    work = corpus.Work(**work_dict)
    out = Path(item_dir)
    stage = ["parse"]
    try:
        score, excerpt, group = open_excerpt(work, stage)
        stage[0] = "caption"
        desc = captions.describe(excerpt)
        program, instrument, family = views.instrument_of(work.key)
        stage[0] = "midi"
        midi, bpm = render.midi_bytes(excerpt)
        xml = render.musicxml(excerpt)
        audio_f, image_f, audio_v, image_v, clean = [], [], [], [], {}
        for k in range(n_views):
            stage[0] = "audio"
            fa = views.audio_factors(views.view_rng(work.key, "audio", k, seed), k)
            wave = views.render_audio_view(midi, program, fa, views.view_rng(work.key, "audio-noise", k, seed))
            stage[0] = "engrave"
            fi = views.image_factors(views.view_rng(work.key, "image", k, seed), k)
            image = views.render_image_view(xml, fi, seed=int(hashlib.sha1(f"{seed}:{work.key}:{k}".encode())
                                                               .hexdigest()[:7], 16))
            if k == 0:
                clean = {"audio": wave, "image": image}
            audio_v.append(features.audio_features(wave, render.SAMPLE_RATE)[0])
            image_v.append(features.image_features(image))
            audio_f.append({**fa, "severity": round(views.audio_severity(fa), 4)})
            image_f.append({**fi, "severity": round(views.image_severity(fi), 4)})
    except ImportError:
        raise  # a missing package is no property of the work: fail the build, cache nothing
    except FileNotFoundError:
        raise  # a missing soundfont or rsvg-convert: the message names the Debian package
    except Exception as exc:  # noqa: BLE001 - every failure is counted by stage and reason, never fatal
        return record_failure(out, work.key, stage[0], exc)
    npz = io.BytesIO()
    np.savez(npz, audio=np.stack(audio_v).astype(np.float32), image=np.stack(image_v).astype(np.float32))
    meta = {"work": work.to_dict(), "group": group, "bpm": bpm, "program": program, "instrument": instrument,
            "family": family, "descriptors": desc, "factors": {"audio": audio_f, "image": image_f}}
    write_item(out, clean["audio"], clean["image"], meta, {f"views-f{features.FEATURE_VERSION}.npz": npz.getvalue()})
    return {"status": "ok", "key": work.key}


def _captions(meta: dict, n_views: int) -> dict:
    """An item's attributes and its ``n_views`` captions (derived from the cached descriptors, so a change
    of wording or truth rebuilds the bundle, not the media): caption ``k`` at level ``(k + r) mod 4``."""
    from mmkit.data.embedded import truth

    key = meta["work"]["key"]
    attributes = truth.item_attributes(meta["work"], meta["descriptors"], meta["bpm"], meta["instrument"], meta["family"])
    offset = int(hashlib.sha1(f"levels:{key}".encode()).hexdigest()[:8], 16)
    levels = [(k + offset) % len(truth.LEVELS) for k in range(n_views)]
    caps = [truth.caption_for(attributes, level, key) for level in levels]
    return {"attributes": attributes, "levels": levels, "captions": [c for c, _ in caps],
            "asserted": [a for _, a in caps]}


def build_real_dataset(preset: str, cache: str | os.PathLike | None = None, workers: int | None = None, seed: int = 0,
                       progress: bool = True, card: str | os.PathLike | None = None) -> dict:
    """Build (or reuse) a ``-real`` preset; returns a summary with the bundle path (as
    :func:`mmkit.data.embedded.build.build_dataset`, plus the views' severities and the captions' generality)."""
    from mmkit.data.embedded import views

    if preset not in REAL_PRESETS:
        raise ValueError(f"preset must be one of {tuple(REAL_PRESETS)}, got {preset!r}")
    base, n_views = REAL_PRESETS[preset]
    t0 = time.perf_counter()
    cache = Path(cache) if cache is not None else default_cache_dir()
    report = Progress()
    report(f"selecting {preset} works", force=True)
    works = select_works(base, seed)
    workers = workers or os.cpu_count() or 1

    def check() -> None:
        report(f"checking {len(views.SOUNDFONTS)} soundfonts x {len(views.INSTRUMENTS)} programs for silence", force=True)
        views.check_soundfonts()  # also: a missing Debian soundfont stops here, naming its package

    metas, skipped, rendered, _ = render_items(
        preset, [(w, _real_dir(cache, w.key, n_views, seed), (w.to_dict(), n_views, seed)) for w in works],
        build_real_item, workers, progress, report, before=check)
    spec = PRESET_SPECS[base]
    metas = [(w, d, {**m, **_captions(m, n_views)}) for w, d, m in metas[: spec.n_items]]
    if not metas:
        raise RuntimeError(f"no usable item for preset {preset!r} (skipped: {dict(skipped)})")
    report(f"assembling the {preset} bundle", len(metas), len(metas), force=True)
    summary = _assemble(preset, cache, metas, spec, seed, n_views, progress)
    summary.update(skipped=sum(skipped.values()), skipped_by_reason=dict(skipped), rendered=rendered,
                   seconds=round(time.perf_counter() - t0, 1), workers=workers)
    if card:
        from mmkit.data.bundle.card import write_dataset_card

        write_dataset_card(card, summary)
    return summary


def _assemble(preset, cache, metas, spec, seed, n_views, progress) -> dict:
    from mmkit.data.features import FEATURE_VERSION
    from mmkit.data.text_embed import model_dir

    name = f"music21-{preset}-seed{seed}-r{REAL_VERSION}.{FEATURE_VERSION}"
    root = cache / "bundles" / name
    assigned = [split_of(meta["group"], seed, spec.split) for _, _, meta in metas]
    empty = [s for s in ("train", "val", "test") if s not in assigned]
    if empty:
        raise RuntimeError(f"split {empty[0]!r} is empty for preset {preset!r}; build more items")
    from mmkit.data.embedded.truth import TRUTH_VERSION

    parts = [f"real {REAL_VERSION} truth {TRUTH_VERSION} features {FEATURE_VERSION} seed {seed} split {spec.split} "
             f"views {n_views}",
             sha256_file(model_dir() / "model.safetensors")]
    parts += [f"{w.key}\t{d.name}\t{sha256_file(d / 'ok.json')}" for w, d, _ in metas]
    key = sha256_bytes("\n".join(parts).encode())
    reused = bundle_is_current(root, key) and all(
        (root / "media" / f"{d.name}.{ext}").is_file() for _, d, _ in metas for ext in ("wav", "png"))
    if not reused:
        _write(root, name, metas, assigned, key, n_views, progress)
    severity = {m: [meta["factors"][m][k]["severity"] for _, _, meta in metas for k in range(1, n_views)]
                for m in MODS}
    return {"preset": preset, "bundle": str(root), "bundle_reused": reused, "items": len(metas),
            **{s: assigned.count(s) for s in ("train", "val", "test")}, "views": n_views,
            "per_collection": {s: dict(Counter(w.collection for (w, _, _), a in zip(metas, assigned) if a == s))
                               for s in ("train", "val", "test")},
            "captions": [m["captions"][0] for _, _, m in metas],
            "test_captions": [m["captions"][0] for (_, _, m), a in zip(metas, assigned) if a == "test"],
            "examples": [{"id": w.key, "caption": m["captions"][0], "collection": w.collection} for w, _, m in metas[:5]],
            "severity": {m: [float(np.quantile(v, q)) for q in (0.0, 0.25, 0.5, 0.75, 1.0)] for m, v in severity.items()},
            "severe_share": {m: float(np.mean(np.array(v) >= 0.6)) for m, v in severity.items()},
            "generality": _generality_summary(root)}


def _generality_summary(root: Path) -> dict:
    """Per split and specificity level: [median, max] of the number of items a caption view describes."""
    from mmkit.data.bundle import load_bundle

    out = {}
    for s, part in load_bundle(root).items():
        g = part.views.text_truth.sum(-1)  # (N, K): items each caption view describes
        levels = np.array([[json.loads(f)["level"] for f in row] for row in part.views.factors["text"]])
        out[s] = {f"level {lv}": [int(np.median(g[levels == lv])), int(g[levels == lv].max())] for lv in np.unique(levels)}
    return out


def _write(root: Path, name: str, metas, assigned, key: str, n_views: int, progress: bool) -> None:
    from mmkit.data.features import FEATURE_VERSION
    from mmkit.data.embedded.truth import truth_matrix
    from mmkit.data.text_embed import embed_texts

    media = root / "media"
    media.mkdir(parents=True, exist_ok=True)
    text = embed_texts([c for _, _, m in metas for c in m["captions"]], progress=progress).astype(np.float32)
    text = text.reshape(len(metas), n_views, -1)
    rows: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(assigned):
        rows[s].append(i)
    arrays = {}
    for s, idx in rows.items():
        ms = [metas[i] for i in idx]
        feats = [np.load(io.BytesIO((d / f"views-f{FEATURE_VERSION}.npz").read_bytes())) for _, d, _ in ms]
        attrs = [m["attributes"] for _, _, m in ms]
        asserted = [a for _, _, m in ms for a in m["asserted"]]
        view_truth = truth_matrix(asserted, attrs)  # (N * K, N)
        main_truth = view_truth.reshape(len(ms), n_views, len(ms))[:, 0]
        a = {"ids": np.array([w.key for w, _, _ in ms]), "captions": np.array([m["captions"][0] for _, _, m in ms]),
             "collection": np.array([w.collection for w, _, _ in ms]), "group": np.array([m["group"] for _, _, m in ms]),
             "attributes": np.array([json.dumps(m["attributes"], sort_keys=True) for _, _, m in ms]),
             "caption_attributes": np.array([json.dumps(m["asserted"][0], sort_keys=True) for _, _, m in ms]),
             "media_audio": np.array([f"media/{d.name}.wav" for _, d, _ in ms]),
             "media_image": np.array([f"media/{d.name}.png" for _, d, _ in ms]),
             "views_text": text[idx], "views_text_captions": np.array([m["captions"] for _, _, m in ms]),
             "views_text_severity": np.array([[lv / 3 for lv in m["levels"]] for _, _, m in ms], dtype=np.float32),
             "views_text_factors": np.array([[json.dumps({"level": lv, "asserted": sorted(ad)}) for lv, ad in
                                              zip(m["levels"], m["asserted"])] for _, _, m in ms])}
        a["truth_indptr"], a["truth_indices"] = truth_to_csr(main_truth)
        a["views_text_truth_indptr"], a["views_text_truth_indices"] = truth_to_csr(view_truth)
        for mod in MODS:
            a[f"views_{mod}"] = np.stack([f[mod] for f in feats]).astype(np.float32)
            a[f"views_{mod}_severity"] = np.array([[f["severity"] for f in m["factors"][mod]] for _, _, m in ms],
                                                  dtype=np.float32)
            a[f"views_{mod}_factors"] = np.array([[json.dumps(f, sort_keys=True) for f in m["factors"][mod]]
                                                  for _, _, m in ms])
        for mod in (*MODS, "text"):
            a[mod] = a[f"views_{mod}"][:, 0]
        for _, d, _ in ms:
            for fname, ext in (("audio.wav", "wav"), ("image.png", "png")):
                link_or_copy(d / fname, media / f"{d.name}.{ext}")
        arrays[s] = a
    save_bundle(root, arrays, name=name, build_key=key, eval_view={"audio": 0, "image": 0, "text": 0})


def degraded_view_split(split: FeatureSplit) -> FeatureSplit:
    """``split`` with each item's **most severe** view of every viewed modality in its main features
    (the degraded-view test set; ties: the lowest view index). Truth and captions follow the text view."""
    if split.views is None:
        raise ValueError("degraded_view_split needs a split with views (a -real preset)")
    v = split.views
    rows = np.arange(len(split))
    features = dict(split.features)
    pick = {m: v.severity[m].argmax(axis=1) for m in v.features}
    for m, k in pick.items():
        features[m] = v.features[m][rows, k]
    out = dataclasses.replace(split, features=features)
    if "text" in pick and v.captions is not None:
        k = pick["text"]
        relevant = None if v.text_truth is None else v.text_truth[rows, k]
        out = dataclasses.replace(out, captions=v.captions[rows, k], relevant=relevant)
    return out
