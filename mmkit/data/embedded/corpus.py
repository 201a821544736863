"""The music21 corpus as a source of excerpts: listing works with metadata, cutting clean excerpts,
and a transposition-invariant melody key for near-duplicate detection.

Listing reads music21's cached metadata bundle (about 15,000 works, a few seconds, no score
parsing); dance types and genres, which the bundle drops, come from a regex over the ABC headers
(``R:`` field) or, for Ryan's Mammoth Collection, the title suffix (``"... -- Reel"``).

Corpus quirks handled here (each documented where it is fixed):

* Essen / ABC number a full first bar 0 and restart numbering inside opus files: measures are
  cut by index, and a pickup is detected by duration, not by number;
* repeat barlines and brackets break MIDI export: stripped;
* one TimeSignature object reused in two bars makes music21's MIDI export raise: de-aliased;
* parts that rest through the whole excerpt (Palestrina, double choirs): removed;
* titles, lyrics, tempo and expression text, chord symbols, part names: removed so that nothing
  that a caption could mention is engraved.
"""
from __future__ import annotations

import copy
import hashlib
import os
import re
from dataclasses import asdict, dataclass
from functools import lru_cache

__all__ = ["Work", "COLLECTION_NAMES", "list_works", "parse_work", "cut_excerpt", "melody_key", "essen_country"]

#: Human-readable collection names used in captions and the dataset card.
COLLECTION_NAMES = {
    "essenFolksong": "the Essen folksong collection",
    "oneills1850": "O'Neill's Music of Ireland",
    "ryansMammoth": "Ryan's Mammoth Collection",
    "airdsAirs": "Aird's Airs",
    "bach": "the Bach chorales",
    "palestrina": "Palestrina's masses",
    "miscFolk": "a miscellany of folk tunes",
    "trecento": "the Trecento repertoire",
    "monteverdi": "Monteverdi's madrigals",
    "josquin": "Josquin's works",
}
#: Collections that are not music for this purpose (teaching material, demos, analyses).
_SKIP = {"demos", "theoryExercises", "leadSheet"}

_ESSEN_COUNTRIES = (
    ("China", "China"), ("Irland", "Ireland"), ("Luxemburg", "Luxembourg"), ("Lothringen", "Lorraine"),
    ("Niederlande", "the Netherlands"), ("Schweiz", "Switzerland"), ("Ungarn", "Hungary"), ("Elsass", "Alsace"),
    ("Frankreich", "France"), ("Oesterreich", "Austria"), ("Polen", "Poland"), ("Tschechien", "Czechia"),
    ("Jugoslavien", "Yugoslavia"), ("Daenemark", "Denmark"), ("Island", "Iceland"), ("Deutschland", "Germany"),
)
_ABC_FIELD = re.compile(r"^([A-Za-z]):\s*(.*)$")


def _tune_number(text: str) -> str:
    """ABC ``X:`` values compare as numbers ("0601" is tune 601)."""
    text = text.strip()
    return str(int(text)) if text.isdigit() else text


@dataclass(frozen=True)
class Work:
    """One work of the corpus (a file, or one tune of a multi-tune ABC file)."""

    key: str               # "path" or "path#number", unique
    path: str              # relative to the music21 corpus
    number: int | None     # tune number inside an opus file
    collection: str
    title: str
    country: str | None    # Essen region -> country
    dance: str | None      # reel, jig, hornpipe, ... (ABC R: field or Ryan's title suffix)
    meter: str | None
    n_parts: int | None

    def to_dict(self) -> dict:
        return asdict(self)


def essen_country(locale: str | None) -> str | None:
    """Country of an Essen song from its ``O:`` locale ("Europa, Mitteleuropa, Deutschland, ...")."""
    if not locale:
        return None
    for token, country in _ESSEN_COUNTRIES:
        if token in locale:
            return country
    return None


def _corpus_root() -> str:
    from music21 import corpus

    return os.path.dirname(corpus.__file__)


@lru_cache(maxsize=None)
def _abc_headers(path: str) -> dict[str, dict[str, str]]:
    """``{X number: {field letter: first value}}`` of an ABC file (latin-1, as the corpus is)."""
    out: dict[str, dict[str, str]] = {}
    current = None
    with open(os.path.join(_corpus_root(), path), encoding="latin-1") as fh:
        for line in fh:
            m = _ABC_FIELD.match(line.strip())
            if not m:
                continue
            field_name, value = m.group(1), m.group(2).strip()
            if field_name == "X":
                current = _tune_number(value)
                out[current] = {}
            elif current is not None and field_name not in out[current]:
                out[current][field_name] = value
    return out


def _dance(collection: str, title: str, header: dict) -> str | None:
    rhythm = header.get("R")
    if rhythm and collection != "essenFolksong":  # Essen's R: holds damaged German genre labels
        value = re.sub(r"[^a-z \-]", "", rhythm.lower()).strip()
        return value or None
    if collection == "ryansMammoth" and "--" in title:
        return title.rsplit("--", 1)[1].strip().lower() or None
    return None


def list_works(collections: tuple[str, ...] | None = None) -> list[Work]:
    """Every usable work of music21's core corpus (from the metadata cache; no parsing).

    Parameters
    ----------
    collections : names of top-level corpus folders to keep (default: all but demos/exercises).
    """
    from music21 import corpus

    bundle = corpus.corpora.CoreCorpus().metadataBundle
    works = []
    # MetadataBundle has no __iter__; iterating it by index is quadratic, the dict is not.
    for entry in bundle._metadataEntries.values():
        md = entry.metadata
        if md is None:  # file-level placeholder of a multi-tune ABC file
            continue
        path = str(entry.sourcePath)
        collection = path.split("/")[0]
        if collection in _SKIP or path.endswith(".rntxt"):
            continue
        if collections is not None and collection not in collections:
            continue
        number = int(entry.number) if entry.number not in (None, "") else None
        title = md.title or md.movementName or ""
        header = {}
        if path.endswith(".abc"):
            header = _abc_headers(path).get(_tune_number(str(md.number or number or "1")), {})
        works.append(Work(
            key=f"{path}#{number}" if number is not None else path, path=path, number=number,
            collection=collection, title=title,
            country=essen_country(md.localeOfComposition) if collection == "essenFolksong" else None,
            dance=_dance(collection, title, header), meter=md.timeSignatureFirst,
            n_parts=md.numberOfParts))
    works.sort(key=lambda w: w.key)
    return works


@lru_cache(maxsize=64)
def _abc_tunes(path: str) -> tuple[str, dict[str, str]]:
    """(file preamble, {X number: tune text}) of a multi-tune ABC file."""
    with open(os.path.join(_corpus_root(), path), encoding="latin-1") as fh:
        lines = fh.read().splitlines()
    preamble, tunes, current, number = [], {}, None, None
    for line in lines:
        m = re.match(r"^X:\s*(\S+)", line)
        if m:
            if current is not None:
                tunes[number] = "\n".join(current)
            number, current = _tune_number(m.group(1)), [line]
        elif current is None:
            preamble.append(line)
        else:
            current.append(line)
    if current is not None:
        tunes[number] = "\n".join(current)
    return "\n".join(preamble), tunes


def parse_work(work: Work):
    """The parsed music21 score of ``work``.

    One tune of a multi-tune ABC file is cut out of the file and parsed alone (music21 would parse
    the whole file, up to ~1,000 tunes and 30 s, to return one); everything else goes through
    ``music21.corpus.parse``.
    """
    from music21 import converter, corpus

    if work.number is not None and work.path.endswith(".abc"):
        preamble, tunes = _abc_tunes(work.path)
        text = tunes.get(_tune_number(str(work.number)))
        if text is None:
            raise ValueError(f"tune X:{work.number} not found in {work.path}")
        return converter.parseData((preamble + "\n" + text).strip() + "\n", format="abc")
    if work.number is not None:
        return corpus.parse(work.path, number=work.number)
    return corpus.parse(work.path)


def _as_score(s):
    from music21 import stream

    if isinstance(s, stream.Opus):
        s = s.scores[0]
    if not isinstance(s, stream.Score):
        score = stream.Score()
        score.insert(0, s)
        s = score
    return s


def _strip_for_excerpt(ex) -> None:
    """Remove everything that is not notes, rests, clefs, keys and meters (in place)."""
    from music21 import bar, chord, dynamics, expressions, harmony, layout, metadata, note, repeat, spanner, tempo, text

    ex.metadata = metadata.Metadata()
    removable = (bar.Repeat, repeat.RepeatExpression, expressions.TextExpression, tempo.TempoIndication,
                 harmony.ChordSymbol, text.TextBox, dynamics.Dynamic, expressions.Fermata, layout.LayoutBase,
                 expressions.RehearsalMark)
    doomed = []
    for el in ex.recurse():
        if isinstance(el, removable):
            doomed.append(el)
        elif isinstance(el, (note.Note, chord.Chord)):
            el.lyrics = []
    for el in doomed:
        if el.activeSite is not None:
            el.activeSite.remove(el)
    for sp in list(ex.spannerBundle):
        if isinstance(sp, spanner.RepeatBracket):
            ex.remove(sp, recurse=True)
    for part in ex.parts:
        part.partName = part.partAbbreviation = None
        for inst in part.recurse().getElementsByClass("Instrument"):
            inst.partName = inst.partAbbreviation = inst.instrumentName = inst.instrumentAbbreviation = None
    seen = set()  # de-alias context objects shared by two bars (breaks MIDI export)
    for el in list(ex.recurse().getElementsByClass(("TimeSignature", "KeySignature", "Clef"))):
        if id(el) in seen and el.activeSite is not None:
            el.activeSite.replace(el, copy.deepcopy(el))
        seen.add(id(el))
    for part in ex.parts:
        measures = part.getElementsByClass("Measure")
        if measures:
            measures[-1].rightBarline = bar.Barline("final")


def cut_excerpt(score, n_measures: int = 4):
    """The first ``n_measures`` full bars (plus a pickup bar if the piece starts with one), cleaned.

    Raises ``ValueError`` when the piece has no measures or the excerpt has no notes.
    """
    from music21 import stream

    s = _as_score(score)
    parts = list(s.parts)
    if not parts:
        raise ValueError("no parts")
    measures = list(parts[0].getElementsByClass(stream.Measure))
    if not measures:
        s = s.makeMeasures()
        measures = list(s.parts[0].getElementsByClass(stream.Measure))
        if not measures:
            raise ValueError("no measures")
    first = measures[0]
    bar_length = first.barDuration.quarterLength if first.barDuration else None
    pickup = bool(bar_length) and first.duration.quarterLength < bar_length - 1e-6
    ex = s.measures(0, n_measures + (1 if pickup else 0), indicesNotNumbers=True)  # end index exclusive
    _strip_for_excerpt(ex)
    silent = [p for p in ex.parts if not p.recurse().notes]
    if len(silent) == len(ex.parts):
        raise ValueError("excerpt has no notes")
    for p in silent:
        ex.remove(p)
    return ex


def melody_key(score, n_intervals: int = 16) -> str | None:
    """Transposition-invariant key of a tune: a hash of the first ``n_intervals`` semitone steps
    of its top part (tied continuations skipped). ``None`` for melodies with fewer than 6 notes.

    Tunes that appear in several collections (O'Neill's / Ryan's / Essen's Irish songs, Bach's
    re-harmonised chorale melodies) share a key and are kept in one split.
    """
    from music21 import note

    s = _as_score(score)
    top = s.parts[0] if s.parts else s
    pitches = []
    for el in top.recurse().notes:
        if el.tie is not None and el.tie.type in ("stop", "continue"):
            continue
        pitches.append(el.pitch.midi if isinstance(el, note.Note) else max(p.midi for p in el.pitches))
        if len(pitches) > n_intervals:
            break
    if len(pitches) < 6:
        return None
    steps = bytes((b - a) % 256 for a, b in zip(pitches, pitches[1:]))
    return hashlib.sha1(steps).hexdigest()[:16]
