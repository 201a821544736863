"""Frozen per-modality input features for the encoder heads.

* audio (270-d): log-mel spectrogram (librosa; 64 bands, n_fft 1024, hop 512 at 16 kHz) mean and
  standard deviation per band (128), chroma (12 pitch classes) averaged over 8 equal time segments
  (96) and over the whole excerpt (12), and a pitch contour: the strongest partial between 60 Hz
  and 1.1 kHz per frame as a MIDI number, median over 32 time segments, centred (32), with its
  mean (1) and the onset rate (1). Chroma and contour carry the pitch content the score shows.
* image (1090-d): ink density (1 - grey/255) of the engraving averaged over 8 x 8 pixel blocks
  (a 16 x 64 map of where the notes are, 1024), and, with the staff lines removed, the vertical
  ink centroid of each 8-pixel column relative to the staff centre (64; the melodic contour as
  drawn), its mean and the fraction of columns with notes (2).
* text (384-d): MiniLM sentence embeddings of the captions (:mod:`mmkit.data.text_embed`).

The raw log-mel (64 x frames) is kept for the optional CNN backbones.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import numpy as np

__all__ = ["AUDIO_FEATURE_DIM", "IMAGE_FEATURE_DIM", "FEATURE_VERSION", "log_mel", "pitch_contour", "audio_features",
           "image_features", "item_features"]

AUDIO_FEATURE_DIM = 270
IMAGE_FEATURE_DIM = 1090
#: Bump when a feature changes: cached features are then recomputed (media are not re-rendered).
FEATURE_VERSION = "2"
_N_MELS, _N_FFT, _HOP, _SEGMENTS, _BLOCK, _CONTOUR = 64, 1024, 512, 8, 8, 32


def use_private_numba_cache(force: bool = False) -> str:
    """Compile librosa's numba kernels into a private temporary directory of this process.

    By default numba caches compiled code next to the installed package; a process killed while
    writing that cache (an interrupted build) leaves corrupt files that make every later process
    segfault on the first chroma or onset computation. A per-process cache costs a few seconds of
    compilation and cannot be corrupted for anyone else. Must run before numba is imported; a
    ``NUMBA_CACHE_DIR`` set by the user is respected unless ``force`` (used in build workers).
    """
    if force or "NUMBA_CACHE_DIR" not in os.environ:
        path = tempfile.mkdtemp(prefix="mmkit-numba-")
        atexit.register(shutil.rmtree, path, ignore_errors=True)
        os.environ["NUMBA_CACHE_DIR"] = path
    return os.environ["NUMBA_CACHE_DIR"]


use_private_numba_cache()


def log_mel(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Log-mel spectrogram in dB, (64, frames), float32."""
    import librosa

    mel = librosa.feature.melspectrogram(y=audio, sr=sample_rate, n_fft=_N_FFT, hop_length=_HOP, n_mels=_N_MELS)
    return librosa.power_to_db(mel, ref=1.0, top_db=80.0).astype(np.float32)


def pitch_contour(audio: np.ndarray, sample_rate: int, segments: int = _CONTOUR) -> tuple[np.ndarray, float, float]:
    """(centred contour (segments,), mean MIDI pitch, onset rate per second) of the loudest partial."""
    import librosa

    spec = np.abs(librosa.stft(audio, n_fft=2048, hop_length=_HOP))
    freqs = librosa.fft_frequencies(sr=sample_rate, n_fft=2048)
    band = (freqs >= 60.0) & (freqs <= 1100.0)
    sub = spec[band]
    peak = freqs[band][sub.argmax(0)]
    loud = sub.max(0) > 0.05 * sub.max()
    midi = np.where(loud, 69.0 + 12.0 * np.log2(np.maximum(peak, 1e-6) / 440.0), np.nan)
    seg = np.array([np.nanmedian(midi[s]) if np.isfinite(midi[s]).any() else np.nan
                    for s in np.array_split(np.arange(len(midi)), segments)])
    valid = np.isfinite(seg)
    mean = float(np.mean(seg[valid])) if valid.any() else 60.0
    seg = np.where(valid, seg, mean)
    onsets = librosa.onset.onset_detect(y=audio, sr=sample_rate, hop_length=_HOP, units="time")
    return (seg - mean).astype(np.float32), mean, len(onsets) / (len(audio) / sample_rate)


def audio_features(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """``(features (270,), log_mel (64, frames))`` for mono float32 audio."""
    import librosa

    mel = log_mel(audio, sample_rate)
    chroma = librosa.feature.chroma_stft(y=audio, sr=sample_rate, n_fft=_N_FFT, hop_length=_HOP)
    segments = np.array_split(np.arange(chroma.shape[1]), _SEGMENTS)
    seg_means = np.concatenate([chroma[:, s].mean(1) for s in segments])
    contour, mean_pitch, onset_rate = pitch_contour(audio, sample_rate)
    feats = np.concatenate([mel.mean(1) / 40.0, mel.std(1) / 20.0, seg_means, chroma.mean(1), contour / 6.0,
                            [(mean_pitch - 66.0) / 12.0, onset_rate / 4.0]]).astype(np.float32)
    if feats.shape != (AUDIO_FEATURE_DIM,):
        raise AssertionError(f"audio feature size {feats.shape}")
    return feats, mel


def image_features(gray: np.ndarray) -> np.ndarray:
    """Ink map and drawn contour of a (128, 512) uint8 grayscale engraving -> (1090,) float32."""
    h, w = gray.shape
    ink = 1.0 - gray.astype(np.float32) / 255.0
    blocks = ink.reshape(h // _BLOCK, _BLOCK, w // _BLOCK, _BLOCK).mean(axis=(1, 3))
    # staff lines: rows inked across most of the engraved width
    used = ink.max(0) > 0.5
    row_cover = (ink[:, used] > 0.5).mean(1) if used.any() else np.zeros(h)
    staff = row_cover > 0.6
    centre = float(np.mean(np.flatnonzero(staff))) if staff.any() else h / 2.0
    notes = ink.copy()
    notes[staff] = 0.0
    cols = notes.reshape(h, w // _BLOCK, _BLOCK).sum(2)  # (h, 64)
    mass = cols.sum(0)
    rows = np.arange(h, dtype=np.float32)[:, None]
    has = mass > 1.0
    centroid = np.where(has, (cols * rows).sum(0) / np.maximum(mass, 1e-6) - centre, 0.0)
    contour = np.where(has, centroid - centroid[has].mean() if has.any() else 0.0, 0.0) / 16.0
    extra = [float(centroid[has].mean()) / 16.0 if has.any() else 0.0, float(has.mean())]
    return np.concatenate([blocks.reshape(-1) * 4.0, contour, extra]).astype(np.float32)


def item_features(item_dir, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(audio (270,), image (1090,)) features of a cached item, computed once per FEATURE_VERSION.

    Read from ``features-v<FEATURE_VERSION>.npz`` when it loads; otherwise computed from the
    item's ``audio.wav`` and ``image.png`` and written atomically.
    """
    import io
    from pathlib import Path

    import soundfile
    from PIL import Image

    from mmkit.core.io import atomic_write_bytes

    item_dir = Path(item_dir)
    path = item_dir / f"features-v{FEATURE_VERSION}.npz"
    try:
        with np.load(path, allow_pickle=False) as f:
            audio_vec, image_vec = f["audio"], f["image"]
        if audio_vec.shape == (AUDIO_FEATURE_DIM,) and image_vec.shape == (IMAGE_FEATURE_DIM,):
            return audio_vec, image_vec
    except (OSError, ValueError, KeyError):
        pass
    audio, sr = soundfile.read(item_dir / "audio.wav", dtype="float32")
    if sr != sample_rate:
        raise ValueError(f"{item_dir / 'audio.wav'}: sample rate {sr}, expected {sample_rate}")
    audio_vec, _ = audio_features(audio, sr)
    image_vec = image_features(np.asarray(Image.open(item_dir / "image.png").convert("L")))
    buf = io.BytesIO()
    np.savez(buf, audio=audio_vec, image=image_vec)
    atomic_write_bytes(path, buf.getvalue())
    return audio_vec, image_vec
