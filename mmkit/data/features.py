"""Frozen per-modality input features for the encoder heads.

* audio (236-d): log-mel spectrogram (librosa; 64 bands, n_fft 1024, hop 512 at 16 kHz) mean and
  standard deviation per band (128), chroma (12 pitch classes) averaged over 8 equal time segments
  (96) and over the whole excerpt (12). Chroma carries the pitch content that the score shows.
* image (1024-d): ink density (1 - grey/255) of the engraving averaged over 8 x 8 pixel blocks
  (a 16 x 64 map of where the notes are).
* text (384-d): MiniLM sentence embeddings of the captions (:mod:`mmkit.data.text_embed`).

The raw log-mel (64 x frames) is kept for the optional CNN backbones.
"""
from __future__ import annotations

import numpy as np

__all__ = ["AUDIO_FEATURE_DIM", "IMAGE_FEATURE_DIM", "log_mel", "audio_features", "image_features"]

AUDIO_FEATURE_DIM = 236
IMAGE_FEATURE_DIM = 1024
_N_MELS, _N_FFT, _HOP, _SEGMENTS, _BLOCK = 64, 1024, 512, 8, 8


def log_mel(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Log-mel spectrogram in dB, (64, frames), float32."""
    import librosa

    mel = librosa.feature.melspectrogram(y=audio, sr=sample_rate, n_fft=_N_FFT, hop_length=_HOP, n_mels=_N_MELS)
    return librosa.power_to_db(mel, ref=1.0, top_db=80.0).astype(np.float32)


def audio_features(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """``(features (236,), log_mel (64, frames))`` for mono float32 audio."""
    import librosa

    mel = log_mel(audio, sample_rate)
    chroma = librosa.feature.chroma_stft(y=audio, sr=sample_rate, n_fft=_N_FFT, hop_length=_HOP)
    segments = np.array_split(np.arange(chroma.shape[1]), _SEGMENTS)
    seg_means = np.concatenate([chroma[:, s].mean(1) for s in segments])
    feats = np.concatenate([mel.mean(1) / 40.0, mel.std(1) / 20.0, seg_means, chroma.mean(1)]).astype(np.float32)
    if feats.shape != (AUDIO_FEATURE_DIM,):
        raise AssertionError(f"audio feature size {feats.shape}")
    return feats, mel


def image_features(gray: np.ndarray) -> np.ndarray:
    """Block-averaged ink density of a (128, 512) uint8 grayscale image -> (1024,) float32."""
    h, w = gray.shape
    ink = 1.0 - gray.astype(np.float32) / 255.0
    blocks = ink.reshape(h // _BLOCK, _BLOCK, w // _BLOCK, _BLOCK).mean(axis=(1, 3))
    return (blocks.reshape(-1) * 4.0).astype(np.float32)
