"""A small example of "your own data", generated offline: ``python -m mmkit.data.user.example OUT``.

The folder looks like what a researcher brings: recordings, scores and a spreadsheet of captions::

    OUT/items.csv                   id, audio, score, caption, group (no split: assigned by group)
    OUT/audio/<id>.wav|.flac|.mp3   6 bars played on violin, flute, clarinet or guitar at 70 % of the
                                    embedded dataset's tempo (WAV 44.1 kHz stereo, FLAC 22.05 kHz, MP3 44.1 kHz)
    OUT/scores/<id>.musicxml|.mid   the same 6 bars exported by music21 ...
    OUT/scores/<id>.png|.jpg        ... or engraved as a 192 x 768 image
    OUT/captions/<id>.txt           some captions live in files

Works come from music21's corpus (a deterministic choice for ``seed``). Some works are recorded
twice ("take 2", another instrument and format, same ``group``: the two stay in one split), some
items lack a score or a recording. With ``bad_rows`` the CSV ends with one row of each kind of bad
input, so that ``build-data --from`` needs ``--skip-bad`` and its card lists them:
a missing file, silent audio, an unparseable score, a truncated image, an empty caption file,
a duplicate id and a path escaping the folder (``../outside.wav``: refused before anything is read,
so no file is written there — the generator writes inside ``OUT`` only).

MP3 is written by libsndfile (1.1 or newer); where it cannot write MP3 those items are FLAC.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import io
import os
import re
import sys
from pathlib import Path

import numpy as np

from mmkit.core.io import atomic_write_bytes, atomic_write_text

__all__ = ["BAD_ROWS", "make_example_folder", "main"]

_COLLECTIONS = ("ryansMammoth", "oneills1850", "essenFolksong", "bach")
_INSTRUMENTS = {40: "violin", 73: "flute", 71: "clarinet", 24: "nylon guitar"}
_TEMPO_FACTOR = 0.7
_AUDIO = (("wav", 44100, 2), ("flac", 22050, 1), ("mp3", 44100, 1))

#: id -> (problem kind build-data reports) of the deliberately bad rows
BAD_ROWS = {"bad-missing-audio": "missing-file", "bad-silent": "silent-audio", "bad-broken-score": "unparseable-score",
            "bad-truncated-image": "unreadable-file", "bad-empty-caption": "empty-caption",
            "bad-escaping-path": "escaping-path"}  # plus a duplicate id (duplicate-id) repeating the first item's


def _slug(key: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", key.lower().replace(".mxl", "").replace(".abc", "")).strip("-")


def _mp3_ok() -> bool:
    import soundfile

    return "MP3" in soundfile.available_formats()


def _audio_bytes(audio: np.ndarray, fmt: str, rate: int, channels: int) -> bytes:
    import librosa
    import soundfile

    from mmkit.data.render import SAMPLE_RATE

    y = librosa.resample(audio, orig_sr=SAMPLE_RATE, target_sr=rate) if rate != SAMPLE_RATE else audio
    if channels == 2:
        y = np.stack([y, 0.8 * y], axis=1)
    buf = io.BytesIO()
    subtype = {"wav": "PCM_16", "flac": "PCM_16", "mp3": "MPEG_LAYER_III"}[fmt]
    soundfile.write(buf, y.astype(np.float32), rate, format=fmt.upper(), subtype=subtype)
    return buf.getvalue()


def _performance(excerpt, program: int, bpm: float) -> np.ndarray:
    """The excerpt played by one General-MIDI ``program`` at ``bpm`` (float32, 16 kHz, mono)."""
    from music21 import instrument, tempo
    from music21.midi import translate

    from mmkit.data.render import synthesize

    ex = copy.deepcopy(excerpt)
    for mark in list(ex.recurse().getElementsByClass(tempo.MetronomeMark)):
        mark.activeSite.remove(mark)
    for part in ex.parts:
        for inst in list(part.recurse().getElementsByClass("Instrument")):
            inst.activeSite.remove(inst)
        part.insert(0, instrument.instrumentFromMidiProgram(program))
    first = ex.parts[0].getElementsByClass("Measure").first() or ex.parts[0]
    first.insert(0, tempo.MetronomeMark(number=bpm))
    # long enough for the whole sequence: synthesize() shares one synthesiser per process, and a sequence
    # cut short would go on sounding into the next rendering
    seconds = float(ex.highestTime) * 60.0 / bpm + 1.5
    return synthesize(translate.streamToMidiFile(ex).writestr(), seconds=seconds)


def _score_file(excerpt6, excerpt4, kind: str) -> bytes:
    from PIL import Image
    from music21.midi import translate
    from music21.musicxml.m21ToXml import GeneralObjectExporter

    from mmkit.data.render import engrave_svg, rasterize

    if kind == "musicxml":
        return GeneralObjectExporter(excerpt6).parse()
    if kind == "mid":
        return translate.streamToMidiFile(excerpt6).writestr()
    image = Image.fromarray(rasterize(engrave_svg(excerpt4), shape=(192, 768)))
    buf = io.BytesIO()
    if kind == "jpg":
        image.save(buf, format="JPEG", quality=92)
    else:
        image.save(buf, format="PNG")
    return buf.getvalue()


def _rank(seed: int, key: str) -> str:
    return hashlib.sha1(f"example{seed}:{key}".encode()).hexdigest()


def make_example_folder(out: str | os.PathLike, n_works: int = 36, seed: int = 0, bad_rows: bool = True,
                        progress: bool = False) -> Path:
    """Write the example folder (see the module docstring) to ``out``; returns the path of ``items.csv``.

    Deterministic for ``(n_works, seed)``; takes about a second per work.
    """
    from tqdm.auto import tqdm

    from mmkit.data import render
    from mmkit.data.embedded import captions, corpus

    out = Path(out)
    by_collection: dict[str, list] = {c: [] for c in _COLLECTIONS}
    for w in corpus.list_works(_COLLECTIONS):
        by_collection[w.collection].append(w)
    for ws in by_collection.values():
        ws.sort(key=lambda w: _rank(seed, w.key))
    works = [w for group in zip(*by_collection.values()) for w in group]  # the collections in turn
    mp3 = _mp3_ok()
    rows, made = [], 0
    bar = tqdm(total=n_works, desc="example works", unit="work", disable=not progress)
    for w in works:
        if made >= n_works:
            break
        try:
            score = corpus.parse_work(w)
            excerpt4 = corpus.cut_excerpt(score)
            excerpt6 = corpus.cut_excerpt(score, n_measures=6)
            _, bpm = render.midi_bytes(excerpt4)
            desc = captions.describe(excerpt4)
            caption = captions.make_caption(w, desc)
            score_kind = ("musicxml", "mid", "png", "musicxml", "png", "jpg")[made % 6]
            score_bytes = _score_file(excerpt6, excerpt4, score_kind)
            program = list(_INSTRUMENTS)[made % len(_INSTRUMENTS)]
            audio = _performance(excerpt6, program, _TEMPO_FACTOR * bpm)
        except Exception:  # noqa: BLE001 - a work music21/verovio cannot handle is simply not used
            continue
        if float(np.abs(audio).max()) == 0.0:
            continue
        item = f"{_slug(w.collection)}-{made:02d}"
        fmt, rate, channels = _AUDIO[made % len(_AUDIO)]
        if fmt == "mp3" and not mp3:
            fmt = "flac"
        has_audio, has_score = made % 11 != 5, made % 13 != 7  # a few items lack one modality
        audio_rel = f"audio/{item}.{fmt}" if has_audio else ""
        score_rel = f"scores/{item}.{score_kind}" if has_score else ""
        if has_audio:
            atomic_write_bytes(out / audio_rel, _audio_bytes(audio, fmt, rate, channels))
        if has_score:
            atomic_write_bytes(out / score_rel, score_bytes)
        cap = caption
        if made % 5 == 2:
            cap = f"captions/{item}.txt"
            atomic_write_text(out / cap, caption + "\n")
        rows.append([item, audio_rel, score_rel, cap, f"work-{_slug(w.key)}"])
        if made % 6 == 1:  # a second performance of the same work: another instrument and format, same group
            program2 = list(_INSTRUMENTS)[(made + 2) % len(_INSTRUMENTS)]
            take2 = _performance(excerpt6, program2, _TEMPO_FACTOR * bpm * 1.15)
            fmt2 = "flac" if fmt != "flac" else "wav"
            rel = f"audio/{item}-take2.{fmt2}"
            atomic_write_bytes(out / rel, _audio_bytes(take2, fmt2, 44100, 1))
            rows.append([f"{item}-take2", rel, "", f"{caption} Played again, on the {_INSTRUMENTS[program2]}.",
                         f"work-{_slug(w.key)}"])
        made += 1
        bar.update(1)
    bar.close()
    if made < n_works:
        raise RuntimeError(f"only {made} usable works for the example (asked for {n_works})")
    if bad_rows:
        rows += _bad_rows(out, rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "audio", "score", "caption", "group"])
    writer.writerows(rows)
    return atomic_write_text(out / "items.csv", buf.getvalue())


def _bad_rows(out: Path, rows: list[list[str]]) -> list[list[str]]:
    """One row of each kind of bad input (files written where the kind needs one)."""
    import soundfile

    first = rows[0]
    good_audio = next(r[1] for r in rows if r[1])
    png = next(r[2] for r in rows if r[2].endswith(".png"))
    silent = io.BytesIO()
    soundfile.write(silent, np.zeros(5 * 16000, dtype=np.int16), 16000, format="WAV", subtype="PCM_16")
    atomic_write_bytes(out / "audio/silence.wav", silent.getvalue())
    atomic_write_text(out / "scores/broken.musicxml", "<?xml version='1.0'?>\n<score-partwise><part id='P1'>"
                                                      "<measure number='1'><note><pitch>")
    atomic_write_bytes(out / "scores/truncated.png", (out / png).read_bytes()[:200])
    atomic_write_text(out / "captions/empty.txt", "\n")
    return [["bad-missing-audio", "audio/not-recorded-yet.wav", "", "A tune whose recording is missing.", ""],
            ["bad-silent", "audio/silence.wav", "", "A recording of nothing at all.", ""],
            ["bad-broken-score", "", "scores/broken.musicxml", "A score file cut off in the middle.", ""],
            ["bad-truncated-image", "", "scores/truncated.png", "A score image cut off after 200 bytes.", ""],
            ["bad-empty-caption", good_audio, "", "captions/empty.txt", ""],
            [first[0], first[1], first[2], "The first item again, under the same id.", ""],
            ["bad-escaping-path", "../outside.wav", "", "A recording outside the folder.", ""]]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mmkit.data.user.example",
                                     description="write the example folder of docs/your_data.md")
    parser.add_argument("out", help="folder to create (nothing is written outside it)")
    parser.add_argument("--works", type=int, default=36, help="number of music21 works (default 36)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-bad-rows", action="store_true", help="leave out the deliberately bad rows")
    args = parser.parse_args(argv)
    path = make_example_folder(args.out, n_works=args.works, seed=args.seed, bad_rows=not args.no_bad_rows,
                               progress=True)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
