"""Rendering an excerpt: MIDI -> audio (General-MIDI soundfont) and MusicXML -> engraved image.

* Audio: the excerpt is exported to MIDI with music21 (every part on piano, programme 0), its
  tempo raised when needed so that it fits the fixed length, and synthesised with tinysoundfont
  using the TimGM6mb.sf2 soundfont shipped inside the pretty-midi wheel; mono float32 at
  ``SAMPLE_RATE``, peak-normalised, padded to ``AUDIO_SECONDS``.
* Image: MusicXML -> verovio (no header/footer, no measure numbers, one system) -> SVG ->
  cairosvg -> grayscale, fitted into ``IMAGE_SHAPE`` on white. The engraving carries no text at
  all (checked: any ``<text>`` with content raises), so no caption content can leak into it.
"""
from __future__ import annotations

import copy
import io
import os
import re

import numpy as np

__all__ = ["SAMPLE_RATE", "AUDIO_SECONDS", "IMAGE_SHAPE", "midi_bytes", "synthesize", "engrave_svg", "rasterize",
           "svg_text", "soundfont_path", "require_tinysoundfont", "TINYSOUNDFONT_INSTALL"]

SAMPLE_RATE = 16_000
AUDIO_SECONDS = 8.0
IMAGE_SHAPE = (128, 512)  # height, width
_DEFAULT_BPM = 120.0


def soundfont_path() -> str:
    """TimGM6mb.sf2 inside the pretty-midi package (General MIDI, 6 MB)."""
    import pretty_midi

    path = os.path.join(os.path.dirname(pretty_midi.__file__), "TimGM6mb.sf2")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"soundfont not found at {path}; reinstall pretty-midi")
    return path


def midi_bytes(excerpt, seconds: float = AUDIO_SECONDS) -> tuple[bytes, float]:
    """Standard MIDI file of ``excerpt`` on piano; returns (bytes, tempo in bpm).

    The tempo is the excerpt's own (or 120 bpm), raised just enough that the excerpt lasts at most
    ``seconds - 0.5`` so the release fits too. Nothing is slowed down.
    """
    from music21 import instrument, tempo
    from music21.midi import translate

    ex = copy.deepcopy(excerpt)
    marks = list(ex.recurse().getElementsByClass(tempo.MetronomeMark))
    bpm = float(marks[0].number) if marks and marks[0].number else _DEFAULT_BPM
    for mark in marks:
        mark.activeSite.remove(mark)
    quarters = float(ex.highestTime) or 1.0
    bpm = max(bpm, quarters * 60.0 / (seconds - 0.5))
    for part in ex.parts:
        for inst in list(part.recurse().getElementsByClass("Instrument")):
            inst.activeSite.remove(inst)
        part.insert(0, instrument.Piano())
    first_measure = ex.parts[0].getElementsByClass("Measure").first() or ex.parts[0]
    first_measure.insert(0, tempo.MetronomeMark(number=bpm))
    return translate.streamToMidiFile(ex).writestr(), bpm


#: The one command that installs the synthesiser: without its declared pyaudio/portaudio dependency,
#: which mmkit never uses (``[tool.mmkit] no-deps`` in pyproject.toml; README "Use mmkit as a library").
TINYSOUNDFONT_INSTALL = "pip install --no-deps tinysoundfont==0.3.7"


def require_tinysoundfont():
    """The ``tinysoundfont`` module, or an ImportError that names the command installing it (a build
    can call this once before rendering, to stop early with that message)."""
    try:
        import tinysoundfont
        import tinysoundfont.midi  # noqa: F401 - the MIDI reader the sequencer needs
    except ModuleNotFoundError as err:
        if not (err.name or "").startswith("tinysoundfont"):
            raise
        raise ImportError(f"rendering audio needs tinysoundfont, which is not installed; install it with "
                          f"`{TINYSOUNDFONT_INSTALL}` (--no-deps: its declared pyaudio dependency is "
                          f"never used)") from err
    return tinysoundfont


_SYNTHS: dict[str, tuple] = {}


def _synth(soundfont: str):
    if soundfont not in _SYNTHS:  # one synthesiser per soundfont and process (an .sf3 takes seconds to load)
        tinysoundfont = require_tinysoundfont()
        synth = tinysoundfont.Synth(samplerate=SAMPLE_RATE, gain=-3)
        _SYNTHS[soundfont] = (synth, synth.sfload(soundfont))
    return _SYNTHS[soundfont]


def synthesize(midi: bytes, seconds: float = AUDIO_SECONDS, soundfont: str | None = None,
               program: int = 0) -> np.ndarray:
    """Mono float32 audio ``(SAMPLE_RATE * seconds,)``, peak-normalised to 0.9.

    ``soundfont`` is a General-MIDI ``.sf2``/``.sf3`` file (default: :func:`soundfont_path`) and
    ``program`` the GM program every channel starts on (0: acoustic grand piano).
    Raises ImportError naming the pip command when tinysoundfont is not installed."""
    tinysoundfont = require_tinysoundfont()
    load_memory = tinysoundfont.midi.load_memory

    synth, sfid = _synth(soundfont or soundfont_path())
    synth.notes_off()
    synth.sounds_off()
    for channel in range(16):
        synth.program_select(channel, sfid, 0, program)
    sequencer = tinysoundfont.Sequencer(synth)
    sequencer.add(load_memory(midi))
    audio = np.frombuffer(synth.generate(int(SAMPLE_RATE * seconds)), dtype=np.float32).reshape(-1, 2).mean(1)
    synth.notes_off()
    synth.sounds_off()
    synth.generate(SAMPLE_RATE // 10)  # flush release tails so the next excerpt starts silent
    peak = float(np.abs(audio).max())
    return (audio * (0.9 / peak)).astype(np.float32) if peak > 0 else audio.astype(np.float32)


_TOOLKIT = None
#: verovio options of every engraving; :func:`engrave_svg` may override some (font, scale, spacing).
_ENGRAVING = {"header": "none", "footer": "none", "breaks": "none", "adjustPageWidth": True, "adjustPageHeight": True,
              "pageMarginLeft": 20, "pageMarginRight": 20, "pageMarginTop": 20, "pageMarginBottom": 20, "scale": 40,
              "mnumInterval": 0, "svgViewBox": True, "svgRemoveXlink": True, "font": "Leipzig",
              "spacingLinear": 0.25, "spacingNonLinear": 0.6}


def _toolkit():
    global _TOOLKIT
    if _TOOLKIT is None:
        import verovio

        verovio.enableLog(verovio.LOG_OFF)
        _TOOLKIT = verovio.toolkit()
    return _TOOLKIT


def svg_text(svg: str) -> list[str]:
    """Visible text strings of an SVG (music glyphs are ``<use>`` elements, not text)."""
    found = re.findall(r"<text[^>]*>(.*?)</text>", svg, flags=re.S)
    return [t for t in (re.sub(r"<[^>]+>", "", f).strip() for f in found) if t]


def musicxml(excerpt) -> str:
    """The MusicXML that :func:`engrave_svg` lays out: ``excerpt`` without tempo marks (no text on the image)."""
    from music21 import tempo
    from music21.musicxml.m21ToXml import GeneralObjectExporter

    ex = copy.deepcopy(excerpt)
    for mark in list(ex.recurse().getElementsByClass(tempo.TempoIndication)):
        mark.activeSite.remove(mark)
    return GeneralObjectExporter(ex).parse().decode("utf-8")


def engrave_svg(excerpt, options: dict | None = None) -> str:
    """Engrave with verovio from MusicXML; raises if the result holds any visible text.

    ``excerpt`` is a music21 stream or its :func:`musicxml` (several engravings of one excerpt export
    it once). ``options`` override verovio's layout options (e.g. ``{"font": "Bravura", "scale": 36}``);
    every call sets the full option set, so one engraving's overrides never leak into the next."""
    unknown = set(options or {}) - set(_ENGRAVING)
    if unknown:
        raise ValueError(f"unknown engraving option(s) {sorted(unknown)}; known: {sorted(_ENGRAVING)}")
    xml = excerpt if isinstance(excerpt, str) else musicxml(excerpt)
    tk = _toolkit()
    tk.setOptions({**_ENGRAVING, **(options or {})})
    if not tk.loadData(xml) or tk.getPageCount() < 1:
        raise RuntimeError("verovio could not lay out the excerpt")
    svg = tk.renderToSVG(1)
    leaked = svg_text(svg)
    if leaked:
        raise RuntimeError(f"engraving contains text {leaked[:3]}")
    return svg


def fit_image(img, shape: tuple[int, int] = IMAGE_SHAPE) -> np.ndarray:
    """A grayscale (mode "L") PIL image -> uint8 array of ``shape`` (height, width): scaled to the
    height (aspect kept), shrunk if then too wide, pasted left and centred vertically on white.
    How every score image of a bundle is fitted, rendered here or a user's (:mod:`mmkit.data.user.media`)."""
    from PIL import Image

    height, width = shape
    if img.height != height:
        img = img.resize((max(1, round(img.width * height / img.height)), height), Image.LANCZOS)
    if img.width > width:
        img = img.resize((width, max(1, round(img.height * width / img.width))), Image.LANCZOS)
    canvas = Image.new("L", (width, height), 255)
    canvas.paste(img, (0, (height - img.height) // 2))
    return np.asarray(canvas)


def rasterize(svg: str, shape: tuple[int, int] = IMAGE_SHAPE, backend: str = "cairosvg") -> np.ndarray:
    """SVG -> grayscale uint8 ``shape`` (height, width), on white (:func:`fit_image`).

    ``backend``: ``"cairosvg"`` (the embedded presets' renderer) or ``"rsvg"`` (Debian's
    ``rsvg-convert``, about 5x faster; the ``-real`` presets; a clear error names the package when
    it is missing)."""
    from PIL import Image

    if backend == "cairosvg":
        import cairosvg

        png = cairosvg.svg2png(bytestring=svg.encode(), background_color="white", output_height=shape[0])
    elif backend == "rsvg":
        import shutil
        import subprocess

        exe = shutil.which("rsvg-convert")
        if exe is None:
            raise FileNotFoundError("rsvg-convert is not installed: apt-get install librsvg2-bin (Debian package)")
        png = subprocess.run([exe, "-h", str(shape[0]), "-b", "white", "-f", "png"], input=svg.encode(),
                             capture_output=True, check=True, timeout=60).stdout
    else:
        raise ValueError(f"backend must be 'cairosvg' or 'rsvg', got {backend!r}")
    return fit_image(Image.open(io.BytesIO(png)).convert("L"), shape)
