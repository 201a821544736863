"""Training-set perturbations of the study "When does L_S help?" (``docs/study.md`` §4).

Each function takes a clean :class:`~mmkit.data.bundle.FeatureSplit` (the training split: the
validation and test splits stay clean) and returns a new split plus a JSON-ready record of what
was done to which item. Everything is deterministic given ``(experiment, level, seed)``:

* the perturbation order of experiment ``e`` and training seed ``s`` is
  ``numpy.random.default_rng([20261201, e, s]).permutation(n)``, and level ``p`` perturbs the
  first ``round(p * n)`` items of it, so smaller levels are nested in larger ones within a seed;
* draws specific to a level use ``default_rng([20261201, e, round(1000 p), s])``.

The perturbations model the regimes where a probabilistic embedding should matter (METHOD.md §7):
wrong pairs (:func:`swap_captions`, noisy correspondences as in PCME++), one-to-many captions
(:func:`ambiguous_captions`, PCME's motivating case), missing modalities (:func:`drop_modality`)
and scarce pairs (:func:`nested_subset`); :func:`out_of_distribution` splits the embedded data into
folk music for training and art music for testing.

Examples
--------
>>> order = perturbation_order(10, experiment=3, seed=0)
>>> sorted(order.tolist()) == list(range(10))
True
>>> chosen(order, 0.2).tolist() == order[:2].tolist()
True
>>> d = derangement(5, np.random.default_rng(0))
>>> bool((d != np.arange(5)).all()), sorted(d.tolist())
(True, [0, 1, 2, 3, 4])
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from mmkit.data.bundle import FeatureSplit
from mmkit.vocab import MODALITIES

__all__ = ["PROTOCOL_KEY", "FOLK", "ART", "perturbation_order", "chosen", "derangement", "select_rows",
           "nested_subset", "swap_captions", "ambiguous_captions", "generic_caption", "drop_modality",
           "out_of_distribution"]

#: The first entropy word of every perturbation generator (the protocol's date).
PROTOCOL_KEY = 20261201
#: The corpus collections of the out-of-distribution experiment (E6): folk for training, art music
#: for testing (``miscFolk`` is used in neither role).
FOLK = ("essenFolksong", "oneills1850", "ryansMammoth", "airdsAirs")
ART = ("bach", "palestrina", "monteverdi", "trecento")


def perturbation_order(n: int, experiment: int, seed: int) -> np.ndarray:
    """``default_rng([20261201, experiment, seed]).permutation(n)``: the order in which items are perturbed."""
    return np.random.default_rng([PROTOCOL_KEY, experiment, seed]).permutation(n)


def _level_rng(experiment: int, level: float, seed: int) -> np.random.Generator:
    return np.random.default_rng([PROTOCOL_KEY, experiment, int(round(1000 * level)), seed])


def _check_fraction(fraction: float) -> float:
    if not (isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and 0 <= fraction <= 1):
        raise ValueError(f"fraction must be a number in [0, 1], got {fraction!r}")
    return float(fraction)


def chosen(order: np.ndarray, fraction: float) -> np.ndarray:
    """The first ``round(fraction * n)`` rows of ``order`` (the perturbed items of a level)."""
    return order[:int(round(_check_fraction(fraction) * len(order)))]


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random permutation of ``range(n)`` with no fixed point (rejection sampling; n >= 2)."""
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 items, got {n}")
    while True:
        perm = rng.permutation(n)
        if (perm != np.arange(n)).all():
            return perm


def select_rows(split: FeatureSplit, rows: Sequence[int] | np.ndarray) -> FeatureSplit:
    """The items ``rows`` of ``split`` (in that order), every per-item array sliced alike."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 1 or len(rows) == 0:
        raise ValueError(f"rows must be a non-empty 1-D index array, got shape {rows.shape}")
    return dataclasses.replace(
        split, ids=split.ids[rows], features={m: x[rows] for m, x in split.features.items()},
        present={m: p[rows] for m, p in split.present.items()}, lengths={m: v[rows] for m, v in split.lengths.items()},
        captions=None if split.captions is None else split.captions[rows],
        media={m: v[rows] for m, v in split.media.items()}, meta={k: v[rows] for k, v in split.meta.items()},
        relevant=None if split.relevant is None else split.relevant[np.ix_(rows, rows)],
        views=None if split.views is None else split.views.take(rows))


def nested_subset(split: FeatureSplit, n_items: int, seed: int, experiment: int = 2) -> tuple[FeatureSplit, dict]:
    """E2: the first ``n_items`` items of the perturbation order (nested across sizes within a seed)."""
    if not isinstance(n_items, int) or isinstance(n_items, bool) or not 2 <= n_items <= len(split):
        raise ValueError(f"n_items must be an int in [2, {len(split)}], got {n_items!r}")
    rows = np.sort(perturbation_order(len(split), experiment, seed)[:n_items])
    return select_rows(split, rows), {"kind": "subset", "n_items": n_items, "items": split.ids[rows].tolist()}


def swap_captions(split: FeatureSplit, fraction: float, seed: int, experiment: int = 3) -> tuple[FeatureSplit, dict]:
    """E3, wrong pairs: the chosen items' captions and text features are permuted by a random
    derangement among them (no chosen item keeps its own); audio and image stay aligned."""
    if "text" not in split.features:
        raise ValueError("swap_captions needs a split with a text modality")
    rows = chosen(perturbation_order(len(split), experiment, seed), fraction)
    if len(rows) < 2:
        return split, {"kind": "swap_captions", "level": fraction, "items": [], "caption_from": []}
    source = rows[derangement(len(rows), _level_rng(experiment, fraction, seed))]
    text = split.features["text"].copy()
    text[rows] = split.features["text"][source]
    present = dict(split.present)
    present["text"] = split.present["text"].copy()
    present["text"][rows] = split.present["text"][source]
    def moved(array):  # the chosen rows of ``array`` take the rows of their caption's source item
        if array is None:
            return None
        array = array.copy()
        array[rows] = array[source]
        return array

    views = split.views
    if views is not None and "text" in views.features:  # a drawn text view must carry the swap too
        views = dataclasses.replace(views, features={**views.features, "text": moved(views.features["text"])},
                                    severity={**views.severity, "text": moved(views.severity["text"])},
                                    factors={**views.factors, "text": moved(views.factors["text"])},
                                    captions=moved(views.captions), text_truth=moved(views.text_truth))
    out = dataclasses.replace(split, features={**split.features, "text": text}, present=present,
                              captions=moved(split.captions), relevant=moved(split.relevant), views=views,
                              meta={k: moved(v) if k == "caption_attributes" else v for k, v in split.meta.items()})
    return out, {"kind": "swap_captions", "level": fraction, "items": split.ids[rows].tolist(),
                 "caption_from": split.ids[source].tolist()}


def generic_caption(collection_name: str) -> str:
    """The one-descriptor caption of E4: ``"A piece from {collection name}."``."""
    return f"A piece from {collection_name}."


def ambiguous_captions(split: FeatureSplit, fraction: float, seed: int,
                       embed: Callable[[list[str]], np.ndarray] | None = None,
                       experiment: int = 4) -> tuple[FeatureSplit, dict]:
    """E4, one-to-many captions: the chosen items' captions become :func:`generic_caption` of their
    corpus collection (at most one caption per collection, shared by many items) and their text
    features the embeddings of it (``embed``: MiniLM as in the build, :func:`mmkit.data.text_embed.embed_texts`)."""
    from mmkit.data.embedded.corpus import COLLECTION_NAMES

    if "collection" not in split.meta or "text" not in split.features:
        raise ValueError("ambiguous_captions needs a split with a text modality and per-item 'collection' labels "
                         "(an embedded-dataset bundle)")
    if embed is None:
        from mmkit.data.text_embed import embed_texts as embed
    rows = chosen(perturbation_order(len(split), experiment, seed), fraction)
    names = [generic_caption(COLLECTION_NAMES.get(str(c), str(c))) for c in split.meta["collection"][rows]]
    unique = sorted(set(names))
    vectors = dict(zip(unique, np.asarray(embed(unique), dtype=np.float32))) if unique else {}
    text = split.features["text"].copy()
    captions = split.captions.copy() if split.captions is not None else np.array([""] * len(split))
    captions = captions.astype(f"<U{max([captions.dtype.itemsize // 4] + [len(x) for x in names])}")
    for row, name in zip(rows, names):
        text[row] = vectors[name]
        captions[row] = name
    out = dataclasses.replace(split, features={**split.features, "text": text}, captions=captions)
    return out, {"kind": "ambiguous_captions", "level": fraction, "items": split.ids[rows].tolist(), "captions": names}


def drop_modality(split: FeatureSplit, fraction: float, seed: int, experiment: int = 5) -> tuple[FeatureSplit, dict]:
    """E5, missing modalities: each chosen item loses one modality, drawn uniformly per item from the
    generator of the perturbation order (so an item drops the same modality at every level);
    its mask turns False and its features zero, as for an item built without it."""
    rng = np.random.default_rng([PROTOCOL_KEY, experiment, seed])
    order = rng.permutation(len(split))
    which = rng.integers(0, len(MODALITIES), len(split))
    rows = chosen(order, fraction)
    features, present = dict(split.features), dict(split.present)
    dropped = []
    for row in rows:
        m = MODALITIES[which[row]]
        if m not in features:
            dropped.append(None)
            continue
        if features[m] is split.features[m]:
            features[m], present[m] = split.features[m].copy(), split.present[m].copy()
        features[m][row] = 0
        present[m][row] = False
        dropped.append(m)
    out = dataclasses.replace(split, features=features, present=present)
    return out, {"kind": "drop_modality", "level": fraction, "items": split.ids[rows].tolist(), "dropped": dropped}


def out_of_distribution(data: dict[str, FeatureSplit], folk: Sequence[str] = FOLK,
                        art: Sequence[str] = ART) -> tuple[dict[str, FeatureSplit], dict]:
    """E6: train and select on folk music, test on art music.

    Returns splits ``train`` (folk items of ``train``), ``val`` (folk items of ``val``), ``test``
    (every art-music item of the three splits whose near-duplicate group does not occur in the
    new training set) and ``test_id`` (folk items of ``test``, the in-distribution control).
    """
    for name in ("train", "val", "test"):
        if "collection" not in data[name].meta or "group" not in data[name].meta:
            raise ValueError("out_of_distribution needs per-item 'collection' and 'group' labels "
                             "(an embedded-dataset bundle)")

    def rows(split: FeatureSplit, collections) -> np.ndarray:
        return np.flatnonzero(np.isin(split.meta["collection"], list(collections)))

    train = select_rows(data["train"], rows(data["train"], folk))
    seen = set(train.meta["group"].tolist())
    parts, dropped = [], []
    for name in ("train", "val", "test"):
        r = rows(data[name], art)
        keep = np.array([g not in seen for g in data[name].meta["group"][r]], dtype=bool)
        dropped += data[name].ids[r[~keep]].tolist()
        if keep.any():
            parts.append(select_rows(data[name], r[keep]))
    test = _concatenate(parts)
    out = {"train": train, "val": select_rows(data["val"], rows(data["val"], folk)), "test": test,
           "test_id": select_rows(data["test"], rows(data["test"], folk))}
    record = {"kind": "out_of_distribution", "folk": list(folk), "art": list(art),
              "sizes": {k: len(v) for k, v in out.items()}, "art_dropped_for_group_overlap": dropped}
    return out, record


def _concatenate(parts: list[FeatureSplit]) -> FeatureSplit:
    if not parts:
        raise ValueError("no items to concatenate")
    if any(p.relevant is not None or p.views is not None for p in parts):
        # a caption of one part may be true of items of another: the truth cannot be stitched together
        raise ValueError("cannot concatenate splits with many-to-many truth or views; select rows of one split instead")
    first = parts[0]

    def cat(get):
        return np.concatenate([get(p) for p in parts])

    return dataclasses.replace(
        first, ids=cat(lambda p: p.ids), features={m: cat(lambda p, m=m: p.features[m]) for m in first.features},
        present={m: cat(lambda p, m=m: p.present[m]) for m in first.present},
        lengths={m: cat(lambda p, m=m: p.lengths[m]) for m in first.lengths},
        captions=None if first.captions is None else cat(lambda p: p.captions),
        media={m: cat(lambda p, m=m: p.media[m]) for m in first.media},
        meta={k: cat(lambda p, k=k: p.meta[k]) for k in first.meta})
