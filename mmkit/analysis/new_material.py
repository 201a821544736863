"""Use a trained run on new material: encode audio files, score files and text to (mu, kappa),
search a gallery with them, and export gallery embeddings for other tools.

Inputs go through the same feature extraction as the embedded dataset: audio is loaded with
librosa (resampled to 16 kHz mono, first 8 s); a score file (MusicXML, MIDI, ABC, kern, ... —
anything music21 parses) is cut to its first bars and engraved as in the dataset (and can be
rendered to audio too); text is embedded with MiniLM.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mmkit.core.io import atomic_write
from mmkit.model.encoders import MultimodalEncoder

__all__ = ["features_from_audio_file", "features_from_score_file", "features_from_text", "encode_features",
           "export_embeddings"]


def features_from_audio_file(path: str | os.PathLike) -> np.ndarray:
    """(270,) audio features of an audio file (any format libsndfile/audioread reads)."""
    import librosa

    from mmkit.data.features import audio_features
    from mmkit.data.render import AUDIO_SECONDS, SAMPLE_RATE

    audio, _ = librosa.load(str(path), sr=SAMPLE_RATE, mono=True, duration=AUDIO_SECONDS)
    audio = np.pad(audio, (0, max(0, int(SAMPLE_RATE * AUDIO_SECONDS) - len(audio)))).astype(np.float32)
    peak = float(np.abs(audio).max())
    if peak == 0:
        raise ValueError(f"{path}: the audio is silent")
    return audio_features(audio * (0.9 / peak), SAMPLE_RATE)[0]


def features_from_score_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{"image": (1090,), "audio": (270,)}`` features of a score file, via the dataset pipeline."""
    from music21 import converter

    from mmkit.data.corpus import cut_excerpt
    from mmkit.data.features import audio_features, image_features
    from mmkit.data.render import SAMPLE_RATE, engrave_svg, midi_bytes, rasterize, synthesize

    excerpt = cut_excerpt(converter.parse(str(path)))
    image = rasterize(engrave_svg(excerpt))
    audio = synthesize(midi_bytes(excerpt)[0])
    return {"image": image_features(image), "audio": audio_features(audio, SAMPLE_RATE)[0]}


def features_from_text(texts: Sequence[str]) -> np.ndarray:
    """(N, 384) MiniLM embeddings."""
    from mmkit.data.text_embed import embed_texts

    return embed_texts(list(texts))


@torch.no_grad()
def encode_features(model: MultimodalEncoder, modality: str, features: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode (N, D) features of one modality: returns loc (N, d) and kappa (N,)."""
    if modality not in model.heads:
        raise ValueError(f"the model has no {modality!r} head (it has {list(model.heads)})")
    x = torch.as_tensor(np.atleast_2d(features), dtype=torch.float32)
    model.eval()
    loc, second = model({modality: x})[modality]
    if model.family == "gaussian":
        second = torch.exp(-second).mean(-1)
    return loc, second


def export_embeddings(path: str | os.PathLike, ids: Sequence[str], params: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> Path:
    """Write ``ids`` and per-modality ``<m>_loc`` (N, d) / ``<m>_kappa`` (N,) to an ``.npz`` (atomically)."""
    arrays = {"ids": np.array([str(i) for i in ids])}
    for m, (loc, kappa) in params.items():
        if loc.shape[0] != len(ids):
            raise ValueError(f"{m}: {loc.shape[0]} rows for {len(ids)} ids")
        arrays[f"{m}_loc"] = loc.detach().cpu().numpy().astype(np.float32)
        arrays[f"{m}_kappa"] = kappa.detach().cpu().numpy().astype(np.float32)
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))
