"""What mmkit.retrieval.scores ranks for one query: the reference the widget tests (headless and in the
browser) compare the displayed ids with. Written from the retrieval primitives, not from mmkit.app.widgets."""
from __future__ import annotations

import numpy as np

from mmkit.retrieval.scores import score


def expected_top_ids(encodings, split, query: dict, target: str, distance: str, k: int) -> list[str]:
    """Top-``k`` ids, best first, of ``mmkit.retrieval.scores.score`` with ``query`` ({modality: id}) as one row
    (modalities in the order audio, image, text) against every item of ``split`` that has ``target``;
    equal scores keep split order. SSW settings: the session defaults (32 samples, 50 projections, seed 0)."""
    ids = np.asarray(split.ids).astype(str)
    gallery = np.flatnonzero(split.present[target])
    rows = {m: int(np.flatnonzero(ids == item)[0]) for m, item in query.items()}
    mods = [m for m in ("audio", "image", "text") if m in query]
    q = [(encodings[m][0][rows[m]][None], encodings[m][1][rows[m]][None]) for m in mods]
    loc, kappa = encodings[target]
    s = score(q, (loc[gallery], kappa[gallery]), distance=distance, n_samples=32, n_projections=50, seed=0)[0]
    order = np.argsort(-s.numpy(), kind="stable")[:k]
    return [str(ids[gallery[i]]) for i in order]
