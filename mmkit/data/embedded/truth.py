"""Item attributes, captions at graded specificity, and the many-to-many truth they imply.

Every item of the ``-real`` presets carries a small set of **attributes** read from the corpus
metadata and the music (collection, composer, genre, kind, country, key, mode, metre, tempo class,
its instrument and instrument family, first note, opening interval, contour). Each caption
**asserts** a subset of them, chosen by a specificity level:

======  =========================================================================  ==============
level   asserted attributes                                                         typical truth
======  =========================================================================  ==============
0       collection, kind, country, composer, key, metre, instrument, first note,   its own item
        opening interval, contour
1       collection, key, metre, instrument                                          a few items
2       genre, mode, metre, instrument family                                       tens of items
3       genre, tempo class                                                          ~a sixth of all
======  =========================================================================  ==============

A caption is **true of** an item exactly when the item has every asserted attribute with the
asserted value (:func:`truth_matrix`); an attribute an item lacks (a key the analysis could not
find) makes the caption false of it. "Generality" is the number of items a caption is true of.
Phrasing varies with paraphrase templates chosen deterministically from the item key and level; the
wording never adds a claim beyond the asserted attributes, and never names the title.

This is the ground truth that R-Precision / PMRP (Chun et al., "Probabilistic Embeddings for
Cross-Modal Retrieval", CVPR 2021) and mAP@R (Musgrave et al., "A Metric Learning Reality Check",
ECCV 2020) need: with plausible matches known, a caption such as "a slow folk tune" is scored by
how many of the items it describes are ranked first, not by where one arbitrary item lands.
"""
from __future__ import annotations

import hashlib
import json
from typing import Mapping, Sequence

import numpy as np

from mmkit.data.embedded.corpus import COLLECTION_NAMES

__all__ = ["TRUTH_VERSION", "LEVELS", "ART_COMPOSERS", "tempo_class", "item_attributes", "caption_for", "truth_matrix"]

#: Bump when attributes, captions or the truth rule change (the -real bundles are then re-assembled).
TRUTH_VERSION = "2"
#: Attributes asserted at each specificity level (0: most specific).
LEVELS: tuple[tuple[str, ...], ...] = (
    ("collection", "kind", "country", "composer", "key", "meter", "instrument", "first_note", "opening", "contour"),
    ("collection", "key", "meter", "instrument"),
    ("genre", "mode", "meter", "instrument_family"),
    ("genre", "tempo_class"),
)
#: Composers of the art-music collections (folk collections are anonymous).
ART_COMPOSERS = {"bach": "J. S. Bach", "palestrina": "Palestrina", "monteverdi": "Monteverdi"}
_ART = ("bach", "palestrina", "monteverdi", "trecento")
_INTERVALS = {0: "a repeated note", 1: "a semitone", 2: "a whole tone", 3: "a minor third", 4: "a major third",
              5: "a fourth", 6: "a tritone", 7: "a fifth", 8: "a minor sixth", 9: "a major sixth", 10: "a minor seventh",
              11: "a major seventh", 12: "an octave"}


def tempo_class(notes_per_second: float) -> str:
    """``"slow"`` (< 2.4 notes per second), ``"moderate"`` (2.4-3.6) or ``"fast"`` (> 3.6) for the
    melody's pace in the clean rendering. The bounds are the terciles measured on 100 works of `small`
    (``notes per quarter x bpm / 60``; the rendering tempo alone is almost always 120 bpm)."""
    if not (isinstance(notes_per_second, (int, float)) and np.isfinite(notes_per_second) and notes_per_second >= 0):
        raise ValueError(f"notes_per_second must be a number >= 0, got {notes_per_second!r}")
    return "slow" if notes_per_second < 2.4 else "fast" if notes_per_second > 3.6 else "moderate"


def _kind(work: Mapping) -> str:
    return work.get("dance") or {"bach": "chorale", "palestrina": "mass movement", "essenFolksong": "song"}.get(
        work["collection"], "madrigal" if work["collection"] == "monteverdi" else "tune")


def item_attributes(work: Mapping, descriptors: Mapping, bpm: float, instrument: str, family: str) -> dict:
    """The attributes of one item (JSON-ready; absent values are left out).

    Parameters
    ----------
    work : the corpus work as a dict (:meth:`mmkit.data.embedded.corpus.Work.to_dict`)
    descriptors : :func:`mmkit.data.embedded.captions.describe` of the excerpt
    bpm : the clean rendering's tempo (with the descriptors' notes per quarter: the tempo class)
    instrument, family : the item's General-MIDI instrument and its family name
    """
    collection = work["collection"]
    out = {"collection": collection, "genre": "art" if collection in _ART else "folk", "kind": _kind(work),
           "composer": ART_COMPOSERS.get(collection), "country": work.get("country"), "meter": descriptors.get("meter"),
           "key": descriptors.get("key"), "instrument": instrument,
           "instrument_family": family, "first_note": descriptors.get("first_note"), "contour": descriptors.get("contour")}
    if "density" in descriptors:
        out["tempo_class"] = tempo_class(descriptors["density"] * bpm / 60.0)
    if out["key"]:
        out["mode"] = out["key"].rsplit(" ", 1)[-1]
    if descriptors.get("opening"):
        size, direction = descriptors["opening"]
        out["opening"] = f"{_INTERVALS.get(int(size), f'a leap of {int(size)} semitones')} {direction}".strip()
    return {k: v for k, v in out.items() if v is not None}


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _pick(options: Sequence[str], key: str, salt: str) -> str:
    return options[int(hashlib.sha1(f"{salt}:{key}".encode()).hexdigest()[:8], 16) % len(options)]


def caption_for(attributes: Mapping, level: int, key: str) -> tuple[str, dict]:
    """``(caption, asserted attributes)`` of an item at specificity ``level`` (0-3); deterministic in ``key``.

    Only attributes the item has are asserted; the wording states exactly those.
    """
    if level not in range(len(LEVELS)):
        raise ValueError(f"level must be in 0..{len(LEVELS) - 1}, got {level!r}")
    a = {k: attributes[k] for k in LEVELS[level] if k in attributes}
    salt = f"level{level}"
    genre = {"folk": "folk", "art": "early art-music"}.get(a.get("genre", ""), "")
    if level == 3:
        pace = a.get("tempo_class", "")
        text = _pick([f"A {pace} {genre} piece.", f"Some {pace} {genre} music.", f"A {genre} piece at a {pace} pace."],
                     key, salt)
    elif level == 2:
        metre = f" in {a['meter']} time" if "meter" in a else ""
        mode = f"{a['mode']}-mode " if "mode" in a else ""
        text = _pick([f"A {mode}{genre} piece{metre}, played on {a['instrument_family']}.",
                      f"{a['instrument_family'].capitalize()} playing a {mode}{genre} piece{metre}."], key, salt)
    else:
        source = COLLECTION_NAMES.get(a["collection"], f"the {a['collection']} collection")
        parts = [f"in {a['key']}"] if "key" in a else []
        parts += [f"in {a['meter']} time"] if "meter" in a else []
        where = _pick([f"from {source}", f"taken from {source}"], key, salt + "src")
        if level == 1:
            clause = "".join(f", {p}" for p in parts)
            text = _pick([f"A piece {where}{clause}, played on the {a['instrument']}.",
                          f"{_article(a['instrument']).capitalize()} {a['instrument']} playing a piece {where}{clause}."],
                         key, salt)
        else:
            who = f" by {a['composer']}" if "composer" in a else ""
            origin = f" from {a['country']}" if "country" in a else ""
            head = f"A {a['kind']}{origin}{who} {where}" + (", " + ", ".join(parts) if parts else "")
            detail = []
            if "first_note" in a:
                detail.append(f"it begins on {a['first_note']}" + (f" with {a['opening']}" if "opening" in a else ""))
            if "contour" in a:
                detail.append(f"the melody has {_article(a['contour'])} {a['contour']} contour")
            tail = "; ".join(detail)
            text = f"{head}, played on the {a['instrument']}." + (f" {tail[:1].upper()}{tail[1:]}." if detail else "")
    return " ".join(text.split()), a


def truth_matrix(asserted: Sequence[Mapping], attributes: Sequence[Mapping]) -> np.ndarray:
    """``(C, N)`` bool: caption ``c`` (its asserted attributes) is true of item ``n`` (its attributes).

    A caption that asserts nothing is true of every item; an asserted attribute the item lacks
    makes it false.
    """
    out = np.ones((len(asserted), len(attributes)), dtype=bool)
    names = sorted({k for a in asserted for k in a})
    for name in names:
        codes: dict[str, int] = {}
        item_code = np.array([codes.setdefault(json.dumps(a[name]), len(codes)) if name in a else -1
                              for a in attributes])
        for c, claim in enumerate(asserted):
            if name in claim:
                code = codes.get(json.dumps(claim[name]), -2)
                out[c] &= item_code == code
    return out
