"""Look at triplets in a notebook: list, play, view and read them.

>>> from mmkit.data import resolve_data
>>> from mmkit.data.browse import triplet, show_triplet
>>> test = resolve_data("tiny")["test"]
>>> show_triplet(test, 0)          # audio player, score image and caption in the cell output
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmkit.data.bundle import FeatureSplit

__all__ = ["Triplet", "triplet", "list_triplets", "show_triplet"]


@dataclass
class Triplet:
    id: str
    caption: str | None
    audio: np.ndarray | None        # float32 mono samples
    sample_rate: int | None
    image: np.ndarray | None        # uint8 grayscale (H, W)


def list_triplets(split: FeatureSplit, limit: int = 20) -> list[tuple[int, str, str]]:
    """``(row, id, caption)`` for the first ``limit`` rows."""
    caps = split.captions if split.captions is not None else [""] * len(split)
    return [(i, str(split.ids[i]), str(caps[i])) for i in range(min(limit, len(split)))]


def triplet(split: FeatureSplit, row: int) -> Triplet:
    """Load the raw media of one row (paths resolved inside the bundle directory)."""
    import soundfile
    from PIL import Image

    if not 0 <= row < len(split):
        raise IndexError(f"row {row} outside [0, {len(split)})")
    audio = sr = image = None
    path = split.media_path("audio", row)
    if path is not None:
        audio, sr = soundfile.read(path, dtype="float32")
    path = split.media_path("image", row)
    if path is not None:
        image = np.asarray(Image.open(path).convert("L"))
    caption = str(split.captions[row]) if split.captions is not None else None
    return Triplet(str(split.ids[row]), caption, audio, sr, image)


def show_triplet(split: FeatureSplit, row: int):
    """An ipywidgets box with the audio player, the score image and the caption of one row."""
    import io

    import ipywidgets as w
    from PIL import Image

    t = triplet(split, row)
    children = [w.HTML(f"<b>{t.id}</b><br>{t.caption or ''}")]
    if t.audio is not None:
        buf = io.BytesIO()
        import soundfile

        soundfile.write(buf, t.audio, t.sample_rate, format="WAV")
        children.append(w.Audio(value=buf.getvalue(), format="wav", autoplay=False))
    if t.image is not None:
        buf = io.BytesIO()
        Image.fromarray(t.image).save(buf, format="PNG")
        children.append(w.Image(value=buf.getvalue(), format="png"))
    return w.VBox(children)
