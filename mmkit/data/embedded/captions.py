"""Captions for excerpts: metadata (collection, country, dance type, meter) plus descriptors computed
from the music itself (key, range, opening interval, contour, motion, density, cadence). Key and
notes are named as the score spells them (:func:`spelled_key`), never from pitch classes alone.

Metadata alone repeats a lot (a prototype found 552 distinct captions for 2,165 excerpts), so the
musical descriptors are what tells pieces apart. Phrasing varies deterministically with the item
key (several templates, clause order). Captions never contain the title.
"""
from __future__ import annotations

import hashlib

import numpy as np

from mmkit.data.embedded.corpus import COLLECTION_NAMES, Work

__all__ = ["describe", "spelled_key", "make_caption"]

_INTERVAL_WORDS = {0: "a repeated note", 1: "a semitone", 2: "a whole tone", 3: "a minor third", 4: "a major third",
                   5: "a fourth", 6: "a tritone", 7: "a fifth", 8: "a minor sixth", 9: "a major sixth",
                   10: "a minor seventh", 11: "a major seventh", 12: "an octave"}


def _spell(name: str) -> str:
    """music21's ``E-5`` / ``F#4`` -> ``Eb5`` / ``F#4``."""
    return name.replace("-", "b")


def spelled_key(excerpt, analysed):
    """The analysed key spelled as the score spells it.

    music21's key finder (Krumhansl–Schmuckler profiles over pitch classes) names its tonic from
    twelve fixed spellings, so a piece written in D flat major comes out "C# major" beside the
    score's own A flats and D flats. The spelling is taken from the score instead: the key
    signature's key in the analysed mode when its tonic is the analysed pitch class, else the
    enharmonic spelling (at most one accidental) whose scale holds most of the excerpt's notated
    pitches (ties: the fewer sharps or flats).

    Parameters
    ----------
    excerpt : music21 stream
        The excerpt the key was analysed from.
    analysed : music21.key.Key
        The key found by ``excerpt.analyze("key")``.

    Returns
    -------
    music21.key.Key
        The same tonic pitch class and mode, spelled from the score.
    """
    from music21 import key

    pc, mode = analysed.tonic.pitchClass, analysed.mode
    signature = excerpt.recurse().getElementsByClass(key.KeySignature).first()
    if signature is not None and mode in ("major", "minor"):
        from_signature = signature.asKey(mode)
        if from_signature.tonic.pitchClass == pc:
            return from_signature
    names = [analysed.tonic.name] + [p.name for p in analysed.tonic.getAllCommonEnharmonics(alterLimit=1)]
    notated = [p.name for n in excerpt.recurse().notes for p in n.pitches]

    def fit(name: str) -> tuple[int, int]:
        candidate = key.Key(name, mode)
        scale = {p.name for p in candidate.getPitches()}
        return sum(n in scale for n in notated), -abs(candidate.sharps or 0)

    return key.Key(max(dict.fromkeys(names), key=fit), mode)


def describe(excerpt) -> dict:
    """Musical descriptors of an excerpt's top part (and its key), as plain Python values."""
    from music21 import meter, note

    top = excerpt.parts[0]
    notes = list(top.recurse().notes)
    pitches = [n.pitch if isinstance(n, note.Note) else max(n.pitches, key=lambda p: p.midi) for n in notes]
    out: dict = {"n_notes": len(pitches), "n_voices": len(excerpt.parts)}
    ts = excerpt.recurse().getElementsByClass(meter.TimeSignature).first()
    out["meter"] = ts.ratioString if ts is not None else None
    if len(pitches) < 2:
        return out
    midi = np.array([p.midi for p in pitches])
    steps = np.diff(midi)
    out["range"] = int(midi.max() - midi.min())
    out["lowest"] = _spell(min(pitches, key=lambda p: p.midi).nameWithOctave)
    out["highest"] = _spell(max(pitches, key=lambda p: p.midi).nameWithOctave)
    out["first_note"] = _spell(pitches[0].name)
    first_step = int(steps[0])
    out["opening"] = (abs(first_step), "up" if first_step > 0 else "down" if first_step < 0 else "")
    half = len(midi) // 2
    a, b = midi[:half].mean(), midi[half:].mean()
    peak_inside = midi[1:-1].max() > max(midi[0], midi[-1]) + 2 if len(midi) > 2 else False
    out["contour"] = "rising" if b - a > 1.5 else "falling" if a - b > 1.5 else "arched" if peak_inside else "level"
    out["stepwise"] = float(np.mean(np.abs(steps) <= 2))
    out["density"] = round(len(pitches) / max(float(excerpt.highestTime), 1e-6), 2)
    try:
        k = spelled_key(excerpt, excerpt.analyze("key"))
        out["key"] = f"{k.tonic.name.replace('-', ' flat')} {k.mode}"
        out["ends_on_tonic"] = pitches[-1].pitchClass == k.tonic.pitchClass
    except Exception:  # noqa: BLE001 - key analysis fails on unusual material; the caption omits it
        pass
    return out


def _pick(options: list[str], seed: int, salt: int) -> str:
    return options[(seed // (salt + 1)) % len(options)]


def make_caption(work: Work, d: dict) -> str:
    """A caption for ``work`` with descriptors ``d`` (from :func:`describe`); deterministic."""
    seed = int(hashlib.sha1(work.key.encode()).hexdigest()[:8], 16)
    source = COLLECTION_NAMES.get(work.collection, f"the {work.collection} collection")
    kind = work.dance or ("chorale" if work.collection == "bach" else
                          "mass movement" if work.collection == "palestrina" else
                          "song" if work.collection == "essenFolksong" else "tune")
    origin = f" from {work.country}" if work.country else ""
    head = _pick([f"A {kind}{origin} in {source}", f"{kind.capitalize()}{origin}, taken from {source}",
                  f"An excerpt of a {kind}{origin} in {source}"], seed, 0)
    clauses = []
    if d.get("meter"):
        clauses.append(_pick([f"in {d['meter']} time", f"with a {d['meter']} meter"], seed, 1))
    if d.get("key"):
        clauses.append(_pick([f"in {d['key']}", f"set in {d['key']}"], seed, 2))
    sentences = [head + (" " + ", ".join(clauses) if clauses else "") + "."]
    if "range" in d:
        size, direction = d["opening"]
        opening = _INTERVAL_WORDS.get(size, f"a leap of {size} semitones")
        opening += f" {direction}" if direction else ""
        motion = "mostly stepwise" if d["stepwise"] > 0.7 else "with many leaps" if d["stepwise"] < 0.4 else "mixing steps and leaps"
        pace = "slow-moving" if d["density"] < 0.9 else "busy" if d["density"] > 2.2 else "moderately paced"
        detail = [
            _pick([f"The melody starts on {d['first_note']} and opens with {opening}",
                   f"It begins on {d['first_note']} with {opening}"], seed, 3),
            _pick([f"it spans {d['range']} semitones from {d['lowest']} to {d['highest']}",
                   f"its range runs from {d['lowest']} to {d['highest']}"], seed, 4),
            f"the line is {motion}, {pace}, with {'an' if d['contour'][0] in 'aeiou' else 'a'} {d['contour']} contour",
        ]
        if seed % 2:
            detail[1], detail[2] = detail[2], detail[1]
        sentences.append("; ".join(detail) + ".")
        if d.get("ends_on_tonic") is not None:
            sentences.append("It closes on the tonic." if d["ends_on_tonic"] else "It stops away from the tonic.")
    if d.get("n_voices", 1) > 1:
        sentences.append(f"{d['n_voices']} voices.")
    return " ".join(sentences)
