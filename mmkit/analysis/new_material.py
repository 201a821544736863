"""Use a trained run on new material: encode audio files, score files and text to (mu, kappa),
search a gallery with them, and export gallery embeddings for other tools.

Inputs go through the same code as ``build-data --from`` (:mod:`mmkit.data.user.media`), so a file
gets exactly the features a bundle built from it holds: audio is loaded with librosa (resampled
to 16 kHz mono, first 8 s, peak-normalised, 16-bit); a score image is fitted to the dataset's
shape; a score file (MusicXML, MIDI, ABC, kern, ... — anything music21 parses) is cut to its
first bars and engraved as in the dataset (and can be rendered to audio too); text is embedded
with MiniLM.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mmkit.core.io import atomic_write
from mmkit.model.encoders import MultimodalEncoder

__all__ = ["features_from_audio_file", "features_from_image_file", "features_from_score_file", "features_from_text",
           "features_from_file", "encode_features", "encode_files", "export_embeddings"]


def features_from_audio_file(path: str | os.PathLike) -> np.ndarray:
    """(270,) audio features of an audio file (any format librosa reads): exactly the features a
    bundle built from it holds (:func:`mmkit.data.user.media.audio_file_features`: first 8 s at 16 kHz
    mono, peak-normalised, stored as 16-bit as in the embedded dataset). Raises
    :class:`mmkit.data.user.media.MediaError` for a silent or unreadable file."""
    from mmkit.data.user.media import audio_file_features

    return audio_file_features(path)


def features_from_image_file(path: str | os.PathLike) -> np.ndarray:
    """(1090,) image features of a PNG/JPEG score image, as a bundle built from it holds them."""
    from mmkit.data.user.media import image_file_features

    return image_file_features(path)


def features_from_score_file(path: str | os.PathLike, audio: bool = True) -> dict[str, np.ndarray]:
    """``{"image": (1090,), "audio": (270,)}`` features of a symbolic score file (MusicXML, MIDI, ABC,
    kern, ...): cut to its first bars, engraved and rendered as in the embedded dataset."""
    from mmkit.data.user.media import score_file_features

    return score_file_features(path, audio=audio)


def features_from_text(texts: Sequence[str]) -> np.ndarray:
    """(N, 384) MiniLM embeddings."""
    from mmkit.data.text_embed import embed_texts

    return embed_texts(list(texts))


def features_from_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{modality: features}`` of one new file, by its suffix: a score image (PNG/JPEG) -> image; a
    symbolic score -> image and its rendered audio; a ``.txt`` -> text (its content); anything
    else -> audio (decoded by librosa)."""
    from mmkit.data.user.items import IMAGE_SUFFIXES, SYMBOLIC_SUFFIXES

    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return {"image": features_from_image_file(path)}
    if suffix in SYMBOLIC_SUFFIXES:
        return features_from_score_file(path)
    if suffix == ".txt":
        return {"text": features_from_text([Path(path).read_text(encoding="utf-8-sig").strip()])[0]}
    return {"audio": features_from_audio_file(path)}


def encode_files(model: MultimodalEncoder, paths: Sequence[str | os.PathLike],
                 modality: str | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Encode new files against a trained model (e.g. one trained on your own bundle).

    Each file goes through :func:`features_from_file` (the features of ``build-data --from``);
    returns ``{modality: (loc (n, d), kappa (n,))}`` over the files that have it, in order. With
    ``modality`` only that one is kept (a score file then gives just its image, or its audio).
    """
    feats: dict[str, list[np.ndarray]] = {}
    for path in paths:
        for m, x in features_from_file(path).items():
            if modality is None or m == modality:
                feats.setdefault(m, []).append(x)
    if modality is not None and modality not in feats:
        raise ValueError(f"none of the files gives {modality!r} features")
    return {m: encode_features(model, m, np.stack(xs)) for m, xs in feats.items()}


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
