"""Views with recorded nuisance: several renderings of one excerpt, each with its factors and a severity.

Audio views vary the General-MIDI soundfont (TimGM6mb from pretty-midi; FluidR3Mono and MuseScore
General Lite from Debian), the tempo (x0.8-1.25), the dynamics (MIDI velocities x0.5-1), room
reverb (pedalboard's ``Reverb``) and additive white noise at a signal-to-noise ratio down to 0 dB.
Score-image views vary verovio's bundled music font (Leipzig, Bravura, Gootville, Leland, Petaluma),
the engraving scale and spacing, and a graded scan-like degradation made with albumentations
(rotation, perspective, Gaussian blur, ink bleed by erosion of the paper, Gaussian noise, JPEG).
View 0 of every modality is the clean rendering (severity 0), the fixed evaluation view.

Each other view draws one degradation *level* ``L ~ U(0, 1)``; every degradation factor takes a
strength ``L * U(0.5, 1)`` of its range, and the view's **severity** in [0, 1] is a fixed weighted
mean of the normalised strengths (:func:`audio_severity`, :func:`image_severity`). Tempo, dynamics,
soundfont, font, scale and spacing are nuisance that does not count towards severity. All draws
come from a generator seeded by the item key, modality, view and build seed (:func:`view_rng`), so
a view is the same on every machine and every rebuild.
"""
from __future__ import annotations

import hashlib
import io
import os
from typing import Mapping

import numpy as np

__all__ = ["SOUNDFONTS", "FONTS", "INSTRUMENTS", "soundfont_file", "check_soundfonts", "view_rng", "instrument_of",
           "audio_factors", "image_factors", "audio_severity", "image_severity", "view_midi", "render_audio_view",
           "add_noise", "render_image_view", "degrade"]

#: name -> (file, Debian package) of the General-MIDI soundfonts; None: TimGM6mb inside pretty-midi.
SOUNDFONTS: dict[str, tuple[str, str] | None] = {
    "timgm6mb": None,
    "fluidr3mono": ("/usr/share/sounds/sf3/FluidR3Mono_GM.sf3", "fluidr3mono-gm-soundfont"),
    "musescore-lite": ("/usr/share/sounds/sf3/MuseScore_General_Lite.sf3", "musescore-general-soundfont-small"),
}
#: verovio's bundled music fonts (Leipzig is the embedded presets' and view 0's).
FONTS = ("Leipzig", "Bravura", "Gootville", "Leland", "Petaluma")
#: GM program -> (instrument, family as captions name it), across eight General-MIDI families.
INSTRUMENTS: dict[int, tuple[str, str]] = {
    0: ("piano", "a keyboard instrument"), 6: ("harpsichord", "a keyboard instrument"),
    11: ("vibraphone", "a mallet instrument"), 19: ("church organ", "an organ"),
    24: ("nylon-string guitar", "a plucked string instrument"), 40: ("violin", "a bowed string instrument"),
    42: ("cello", "a bowed string instrument"), 56: ("trumpet", "a brass instrument"),
    60: ("french horn", "a brass instrument"), 68: ("oboe", "a reed instrument"), 71: ("clarinet", "a reed instrument"),
    73: ("flute", "a flute-like wind instrument"),
}
_SNR_RANGE = (0.0, 30.0)      # dB: a view with noise has an SNR in this range (severe: <= 5 dB)
_REVERB_WET = 0.5             # the strongest reverb's wet level
_IMAGE_RANGES = {"rotate": 3.0, "perspective": 0.04, "blur": 1.2, "bleed": 3, "noise": 0.1, "jpeg": 75}


def soundfont_file(name: str) -> str:
    """The path of soundfont ``name``; a missing Debian soundfont is an error naming its package."""
    if name not in SOUNDFONTS:
        raise ValueError(f"unknown soundfont {name!r}; known: {sorted(SOUNDFONTS)}")
    if SOUNDFONTS[name] is None:
        from mmkit.data.render import soundfont_path

        return soundfont_path()
    path, package = SOUNDFONTS[name]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"soundfont {name!r} not found at {path}: install the Debian package {package} "
                                f"(apt-get install {package}; `make venv` does it when run as root)")
    return path


def check_soundfonts(programs=tuple(INSTRUMENTS), soundfonts=tuple(SOUNDFONTS), min_rms: float = 1e-3) -> dict:
    """Render a two-second C major arpeggio for every soundfont x program pair; raise on a silent one.

    Returns ``{(soundfont, program): rms}`` (after peak normalisation). A soundfont without a preset for
    a program can play nothing or a near-silent default; a build must not learn from such clips.
    """
    import pretty_midi

    from mmkit.data.render import synthesize

    pm = pretty_midi.PrettyMIDI(initial_tempo=120)
    inst = pretty_midi.Instrument(program=0)
    inst.notes = [pretty_midi.Note(velocity=90, pitch=p, start=0.4 * i, end=0.4 * i + 0.35)
                  for i, p in enumerate((60, 64, 67, 72))]
    pm.instruments.append(inst)
    buf = io.BytesIO()
    pm.write(buf)
    out, silent = {}, []
    for name in soundfonts:
        path = soundfont_file(name)
        for program in programs:
            audio = synthesize(view_midi(buf.getvalue(), program, 1.0, 1.0), seconds=2.0, soundfont=path, program=program)
            out[(name, program)] = rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
            if not rms >= min_rms:
                silent.append(f"{name} x program {program} ({INSTRUMENTS.get(program, ('?',))[0]}): RMS {rms:.2e}")
    if silent:
        raise RuntimeError("silent soundfont x program pairs: " + "; ".join(silent))
    return out


def view_rng(key: str, modality: str, view: int, seed: int = 0) -> np.random.Generator:
    """The generator of one view's draws (stable across machines and rebuilds)."""
    digest = hashlib.sha1(f"views{seed}:{key}:{modality}:{view}".encode()).hexdigest()[:16]
    return np.random.default_rng(int(digest, 16))


def instrument_of(key: str) -> tuple[int, str, str]:
    """``(program, instrument, family)`` of an item: one of :data:`INSTRUMENTS`, fixed by its key."""
    programs = sorted(INSTRUMENTS)
    program = programs[int(hashlib.sha1(f"instrument:{key}".encode()).hexdigest()[:8], 16) % len(programs)]
    return (program, *INSTRUMENTS[program])


def audio_factors(rng: np.random.Generator, view: int, soundfonts=tuple(SOUNDFONTS)) -> dict:
    """The nuisance of an audio view (view 0: clean, TimGM6mb, as written)."""
    if view == 0:
        return {"soundfont": "timgm6mb", "tempo": 1.0, "velocity": 1.0, "reverb": 0.0, "room": 0.0, "snr_db": None}
    level = float(rng.uniform())
    strength = lambda: level * float(rng.uniform(0.5, 1.0))  # noqa: E731 - one draw per factor
    out = {"soundfont": str(rng.choice(list(soundfonts))),
           "tempo": round(float(np.exp(rng.uniform(np.log(0.8), np.log(1.25)))), 4),
           "velocity": round(float(rng.uniform(0.5, 1.0)), 3), "reverb": round(_REVERB_WET * strength(), 4),
           "room": round(float(rng.uniform(0.2, 0.9)), 3)}
    noise = strength()
    out["snr_db"] = None if noise < 0.1 else round(_SNR_RANGE[1] - (_SNR_RANGE[1] - _SNR_RANGE[0]) * noise, 2)
    return out


def audio_severity(f: Mapping) -> float:
    """``0.75 * noise + 0.25 * reverb`` strengths in [0, 1] (noise: (30 dB - SNR) / 30 dB; none: 0)."""
    noise = 0.0 if f["snr_db"] is None else (_SNR_RANGE[1] - f["snr_db"]) / (_SNR_RANGE[1] - _SNR_RANGE[0])
    return float(np.clip(0.75 * noise + 0.25 * f["reverb"] / _REVERB_WET, 0.0, 1.0))


def image_factors(rng: np.random.Generator, view: int, fonts=FONTS) -> dict:
    """The nuisance of a score-image view (view 0: clean Leipzig at scale 40, as the embedded presets)."""
    if view == 0:
        return {"font": "Leipzig", "scale": 40, "spacing": 0.25, "rotate": 0.0, "perspective": 0.0, "blur": 0.0,
                "bleed": 0, "noise": 0.0, "jpeg": 100}
    level = float(rng.uniform())
    strength = lambda: level * float(rng.uniform(0.5, 1.0))  # noqa: E731 - one draw per factor
    r = _IMAGE_RANGES
    return {"font": str(rng.choice(list(fonts))), "scale": int(rng.integers(32, 49)),
            "spacing": round(float(rng.uniform(0.15, 0.35)), 3),
            "rotate": round(r["rotate"] * strength() * float(rng.choice([-1.0, 1.0])), 3),
            "perspective": round(r["perspective"] * strength(), 4), "blur": round(r["blur"] * strength(), 3),
            "bleed": int(round(r["bleed"] * strength())), "noise": round(r["noise"] * strength(), 4),
            "jpeg": int(round(95 - r["jpeg"] * strength()))}


def image_severity(f: Mapping) -> float:
    """Mean of the six degradation strengths, each normalised to [0, 1] by its range."""
    r = _IMAGE_RANGES
    parts = [abs(f["rotate"]) / r["rotate"], f["perspective"] / r["perspective"], f["blur"] / r["blur"],
             f["bleed"] / r["bleed"], f["noise"] / r["noise"], min(1.0, (100 - f["jpeg"]) / (r["jpeg"] + 5))]
    return float(np.clip(np.mean(parts), 0.0, 1.0))


def view_midi(midi: bytes, program: int, tempo: float, velocity: float) -> bytes:
    """``midi`` with every part on GM ``program``, ``tempo`` times faster and velocities scaled."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(io.BytesIO(midi))
    for inst in pm.instruments:
        inst.program, inst.is_drum = int(program), False
        for n in inst.notes:
            n.velocity = int(np.clip(round(n.velocity * velocity), 1, 127))
    end = pm.get_end_time()
    if tempo != 1.0 and end > 0:
        pm.adjust_times(np.array([0.0, end]), np.array([0.0, end / tempo]))
    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()


def render_audio_view(midi: bytes, program: int, f: Mapping, rng: np.random.Generator) -> np.ndarray:
    """Mono float32 audio of one view (peak 0.9): synthesis, then reverb, then noise at the view's SNR.

    Raises RuntimeError for a silent rendering (RMS < 1e-3 before the effects)."""
    from mmkit.data.render import SAMPLE_RATE, synthesize

    audio = synthesize(view_midi(midi, program, f["tempo"], f["velocity"]), soundfont=soundfont_file(f["soundfont"]),
                       program=program)
    if not float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) >= 1e-3:
        raise RuntimeError(f"silent audio ({f['soundfont']}, program {program})")
    if f["reverb"] > 0:
        import pedalboard

        board = pedalboard.Pedalboard([pedalboard.Reverb(room_size=f["room"], wet_level=f["reverb"],
                                                         dry_level=1.0 - 0.5 * f["reverb"])])
        audio = board(audio[None, :].astype(np.float32), SAMPLE_RATE)[0]
    if f["snr_db"] is not None:
        audio = add_noise(audio, f["snr_db"], rng)
    peak = float(np.abs(audio).max())
    return (audio * (0.9 / peak)).astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``audio`` plus white Gaussian noise scaled so that the signal-to-noise power ratio is exactly
    ``snr_db`` decibels (over the whole clip)."""
    audio = np.asarray(audio, dtype=np.float64)
    noise = rng.standard_normal(len(audio))
    gain = np.sqrt(np.mean(audio**2) / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    return audio + gain * noise


#: A clean engraving with fewer dark pixels (< 128) than this share is blank (the embedded build's rule).
MIN_INK = 0.002


def render_image_view(excerpt, f: Mapping, seed: int) -> np.ndarray:
    """uint8 (128, 512) score image of one view: engraving in the view's font, scale and spacing
    (rasterised by rsvg-convert), then the scan-like degradation (albumentations, seeded).

    Raises RuntimeError when the clean engraving is blank (:data:`MIN_INK`); a degraded view may be
    faint, that is what it is for, so the check comes before the degradation."""
    from mmkit.data.render import engrave_svg, rasterize

    svg = engrave_svg(excerpt, {"font": f["font"], "scale": f["scale"], "spacingLinear": f["spacing"]})
    gray = rasterize(svg, backend="rsvg")
    if float((gray < 128).mean()) < MIN_INK:
        raise RuntimeError(f"blank image ({f['font']}, scale {f['scale']})")
    return degrade(gray, f, seed)


def degrade(gray: np.ndarray, f: Mapping, seed: int) -> np.ndarray:
    """Apply a view's scan-like degradation to a uint8 grayscale image (white paper, black ink)."""
    import albumentations as A

    steps = []
    if f["rotate"]:  # border_mode 0 = OpenCV's BORDER_CONSTANT: white paper enters at the corners
        steps.append(A.Rotate(limit=(f["rotate"], f["rotate"]), border_mode=0, fill=255, p=1.0))
    if f["perspective"]:
        steps.append(A.Perspective(scale=(f["perspective"], f["perspective"]), fill=255, p=1.0))
    if f["bleed"] >= 2:  # ink bleed: the paper erodes, strokes thicken (a 1-pixel kernel does nothing)
        steps.append(A.Morphological(scale=(f["bleed"], f["bleed"]), operation="erosion", p=1.0))
    if f["blur"]:
        steps.append(A.GaussianBlur(blur_limit=0, sigma_limit=(f["blur"], f["blur"]), p=1.0))
    if f["noise"]:
        steps.append(A.GaussNoise(std_range=(f["noise"], f["noise"]), p=1.0))
    if f["jpeg"] < 100:
        steps.append(A.ImageCompression(quality_range=(f["jpeg"], f["jpeg"]), p=1.0))
    if not steps:
        return gray
    return np.ascontiguousarray(A.Compose(steps, seed=seed)(image=gray)["image"]).astype(np.uint8)
