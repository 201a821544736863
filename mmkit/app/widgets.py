"""Interactive retrieval in JupyterLab: pick a query, hear and see it, compare the top-k of several runs.

Two layers, so that the logic is testable without a browser:

* :class:`RetrievalSession` — no widgets. Encodes the split once per run (a run directory or
  precomputed encodings) and ranks the gallery of a target modality for a query given as
  ``{modality: item id}``: the query modalities are fused by the vMF product
  (:func:`mmkit.retrieval.scores.fuse_vmf_product`) and scored by :func:`mmkit.retrieval.scores.score` with the
  query as one row against every item of the split that has the target modality.
* :class:`RetrievalApp` — an ``ipywidgets.VBox`` over a session: one picker per modality (caption
  or id search, random item, dropdown; audio player, score image, caption), the target modality,
  the distance, k and the active query modalities; one result list per run side by side (distance,
  kappa, a mark on the true match; one under another where the notebook is too narrow for both, so
  that nothing overlaps from 1,280 px wide with the file browser open) and a preview of any retrieved item.

Stable DOM hooks (for the real-browser test and :mod:`mmkit.app.browser`): every widget the user
operates carries a class ``mmkit-<role>[-<modality>]`` (``mmkit-search-audio``,
``mmkit-pick-image``, ``mmkit-random-text``, ``mmkit-use-audio``, ``mmkit-target``,
``mmkit-distance``, ``mmkit-k``, ``mmkit-linked``); each result list is an ``ipywidgets.HTML`` with
classes ``mmkit-results`` and ``mmkit-results-<run slug>`` whose content is a
``<div class="mmkit-ranking">`` with the attributes ``data-mmkit-run``, ``data-mmkit-ids`` (JSON
list, best first), ``data-mmkit-query`` (JSON ``{modality: id}``), ``data-mmkit-target``,
``data-mmkit-distance`` (the distance asked for), ``data-mmkit-version`` (incremented at every
update) and ``data-mmkit-error`` (empty when the ranking succeeded).
"""
from __future__ import annotations

import contextlib
import html
import json
import os
import random
import re
import time
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor

from mmkit.core.metrics import ranks_from_scores
from mmkit.data.bundle import FeatureSplit
from mmkit.model.run import Run
from mmkit.retrieval.scores import fuse_vmf_product, score
from mmkit.vocab import DISTANCES, MODALITIES, task_name

__all__ = ["DISTANCE_LABELS", "Ranking", "RetrievalSession", "RetrievalApp", "run_slug", "runs_from_json",
           "caption_truth_rows"]

#: How a score of :func:`mmkit.retrieval.scores.score` (higher = more relevant) is shown: column header
#: and the sign that turns it into the displayed value (distances and divergences are shown as such).
DISTANCE_LABELS = {"ssw": ("SSW₁ ↓", -1.0), "kl": ("KL ↓", -1.0), "elk": ("log ELK ↑", 1.0),
                   "cosine": ("cos μ ↑", 1.0)}


def run_slug(name: str) -> str:
    """``"Proposed (λ=1)"`` -> ``"proposed-1"``: the run's part of its result list's CSS class."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not slug:
        raise ValueError(f"run name {name!r} needs at least one letter or digit")
    return slug


@dataclass(frozen=True)
class Ranking:
    """The top-k of one run for one query.

    Attributes
    ----------
    run : the run's name
    query : {modality: item id}, in the order audio, image, text
    target : the gallery's modality
    distance : the distance used (a Gaussian run is always ranked by ``"cosine"``)
    ids, rows : the top-k item ids and their split rows, best first
    scores : their :func:`mmkit.retrieval.scores.score` values (higher = more relevant)
    kappas : their gallery concentrations kappa (target modality)
    matches : whether each is a true match (an item of the query)
    query_kappa : concentration of the fused query vMF
    true_ranks : {query item id: 1-based rank of that item in the whole gallery} (the tie rule of
        :func:`mmkit.core.metrics.ranks_from_scores`), for the query items that have the target modality
    gallery_size : number of gallery items
    """

    run: str
    query: dict[str, str]
    target: str
    distance: str
    ids: list[str]
    rows: list[int]
    scores: list[float]
    kappas: list[float]
    matches: list[bool]
    query_kappa: float
    true_ranks: dict[str, float]
    gallery_size: int


#: user-supplied encodings: modality -> (loc (N, d), kappa (N,)), row-aligned with the split
EncodingPairs = Mapping[str, tuple[Tensor, Tensor]]


class RetrievalSession:
    """Rank the items of one split for queries built from its items, for several runs.

    Parameters
    ----------
    split : FeatureSplit
        Queries and galleries both come from it.
    runs : {name: run directory | encodings}
        A run directory (str or path) is loaded with :func:`mmkit.model.run.load_run_model` and its best
        model encodes ``split`` once; encodings are ``{modality: (loc (N, d), kappa (N,))}``,
        row-aligned with ``split`` (treated as vMF parameters).
    n_samples, n_projections, seed : SSW settings passed to :func:`mmkit.retrieval.scores.score`.
    """

    def __init__(self, split: FeatureSplit, runs: Mapping[str, str | os.PathLike | EncodingPairs], n_samples: int = 32,
                 n_projections: int = 50, seed: int = 0):
        if not isinstance(split, FeatureSplit):
            raise TypeError(f"split: expected a FeatureSplit, got {type(split).__name__}")
        if not isinstance(runs, Mapping) or not runs:
            raise ValueError(f"runs: expected a non-empty mapping name -> run directory or encodings, got {runs!r}")
        slugs = [run_slug(name) for name in runs]
        if len(set(slugs)) != len(slugs):
            raise ValueError(f"runs: names {list(runs)} collide once reduced to CSS classes {slugs}")
        self.split = split
        self.ids = [str(i) for i in split.ids]
        self.row_by_id = {item: row for row, item in enumerate(self.ids)}
        self.n_samples, self.n_projections, self.seed = n_samples, n_projections, seed
        self.families: dict[str, str] = {}
        self.encodings = {name: self._encode(name, spec) for name, spec in runs.items()}
        self._galleries: dict[tuple[str, str], tuple[Tensor, Tensor, Tensor]] = {}
        if not self.modalities:
            raise ValueError(f"runs: no modality of the split {self.split.modalities} is encoded by every run")
        # SSW's kernel is compiled on its first call in a process (seconds): pay it here, not at the first click
        loc, kappa = next(iter(self.encodings.values()))[self.modalities[0]]
        score([(loc[:1], kappa[:1])], (loc[:2], kappa[:2]), "ssw", n_samples=2, n_projections=2)

    @property
    def runs(self) -> tuple[str, ...]:
        return tuple(self.encodings)

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities of the split that every run encodes."""
        return tuple(m for m in self.split.modalities if all(m in enc for enc in self.encodings.values()))

    def _encode(self, name: str, spec) -> dict[str, tuple[Tensor, Tensor]]:
        n = len(self.split)
        if isinstance(spec, (str, os.PathLike)):
            run = Run(spec)
            if not run.is_run():
                raise ValueError(f"runs[{name!r}]: {run.path} is not a run directory (no manifest.json)")
            wrong = run.feature_mismatch(self.split)
            if wrong:
                raise ValueError(f"runs[{name!r}]: {run.path} was trained on other features; "
                                 f"modality -> (run's input dim, split's dim): {wrong}")
            encodings = run.encode(self.split)
            self.families[name] = encodings.family
            return encodings
        if not isinstance(spec, Mapping):
            raise TypeError(f"runs[{name!r}]: expected a run directory or {{modality: (loc, kappa)}}, "
                            f"got {type(spec).__name__}")
        out = {}
        for m, pair in spec.items():
            if m not in MODALITIES:
                raise ValueError(f"runs[{name!r}]: modality must be one of {MODALITIES}, got {m!r}")
            loc, kappa = (torch.as_tensor(x).detach().to("cpu", torch.float32) for x in pair)
            if loc.dim() != 2 or loc.shape[0] != n or kappa.shape != (n,):
                raise ValueError(f"runs[{name!r}][{m!r}]: expected loc (N={n}, d) and kappa ({n},), "
                                 f"got {tuple(loc.shape)} and {tuple(kappa.shape)}")
            if not (torch.isfinite(loc).all() and torch.isfinite(kappa).all() and (kappa > 0).all()):
                raise ValueError(f"runs[{name!r}][{m!r}]: loc must be finite and kappa finite and > 0")
            out[m] = (loc, kappa)
        self.families[name] = "vmf"
        return out

    def row_of(self, item: str, modality: str) -> int:
        """Split row of ``item``, checking that it has ``modality``."""
        if item not in self.row_by_id:
            raise ValueError(f"item id {item!r} is not in the split ({len(self.ids)} items, e.g. {self.ids[0]!r})")
        row = self.row_by_id[item]
        if not self.split.present[modality][row]:
            raise ValueError(f"item {item!r} has no {modality}")
        return row

    def items_with(self, modality: str) -> list[int]:
        """Rows of the items that have ``modality``."""
        return [int(r) for r in self.split.present[modality].nonzero()[0]]

    def gallery(self, run: str, target: str) -> tuple[Tensor, Tensor, Tensor]:
        """Rows (G,), loc (G, d) and kappa (G,) of the items of ``target`` (cached per run and target)."""
        key = (run, target)
        if key not in self._galleries:
            rows = torch.as_tensor(self.items_with(target), dtype=torch.long)
            loc, kappa = self.encodings[run][target]
            self._galleries[key] = (rows, loc[rows], kappa[rows])
        return self._galleries[key]

    def rank(self, query: Mapping[str, str], target: str, distance: str = "ssw", run: str | None = None,
             k: int = 10) -> Ranking:
        """Top-``k`` items of ``target`` for ``query`` = ``{modality: item id}`` under ``run``.

        The query modalities (fused in the order audio, image, text) are scored as one row against
        the gallery by :func:`mmkit.retrieval.scores.score`; the order is by descending score, ties broken
        by split row. ``run`` defaults to the first run.
        """
        run = self.runs[0] if run is None else run
        if run not in self.encodings:
            raise ValueError(f"run must be one of {list(self.runs)}, got {run!r}")
        if target not in self.modalities:
            raise ValueError(f"target must be one of {self.modalities}, got {target!r}")
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        if not isinstance(query, Mapping) or not query:
            raise ValueError("query needs at least one modality: {modality: item id}")
        unknown = [m for m in query if m not in self.modalities]
        if unknown:
            raise ValueError(f"query modalities must be drawn from {self.modalities}, got {unknown}")
        if target in query:
            raise ValueError(f"the query must not use the target modality {target!r}")
        mods = [m for m in MODALITIES if m in query]
        rows = {m: self.row_of(str(query[m]), m) for m in mods}
        enc = self.encodings[run]
        used = distance if self.families[run] == "vmf" else "cosine"
        g_rows, g_loc, g_kappa = self.gallery(run, target)
        q = [(enc[m][0][rows[m]:rows[m] + 1], enc[m][1][rows[m]:rows[m] + 1]) for m in mods]
        scores = score(q, (g_loc, g_kappa), distance=used, n_samples=self.n_samples,
                       n_projections=self.n_projections, seed=self.seed)[0]
        top = torch.argsort(-scores, stable=True)[:k]
        _, q_kappa = fuse_vmf_product([x[0] for x in q], [x[1] for x in q])
        positions = {int(r): i for i, r in enumerate(g_rows.tolist())}
        true_ranks = {}
        for item in dict.fromkeys(str(query[m]) for m in mods):
            pos = positions.get(self.row_by_id[item])
            if pos is not None:
                true_ranks[item] = float(ranks_from_scores(scores[None], torch.tensor([pos]))[0])
        top_rows = g_rows[top].tolist()
        return Ranking(run=run, query={m: str(query[m]) for m in mods}, target=target, distance=used,
                       ids=[self.ids[r] for r in top_rows], rows=top_rows, scores=scores[top].tolist(),
                       kappas=g_kappa[top].tolist(), matches=[self.ids[r] in true_ranks for r in top_rows],
                       query_kappa=float(q_kappa[0]), true_ranks=true_ranks, gallery_size=int(len(g_rows)))


# ----------------------------------------------------------------------------------------------
# widget layer
# ----------------------------------------------------------------------------------------------
_FORMATS = {"jpg": "jpeg", "mp3": "mpeg"}


def caption_truth_rows(split: FeatureSplit, query_rows: Mapping[str, int], target: str) -> set[int] | None:
    """Split rows of the gallery items that truly match a query by the captions' many-to-many truth.

    With text in the query, the items its caption describes; with text as the target, the captions
    that describe one of the query's items (the relevant sets of
    :func:`mmkit.retrieval.tasks.task_relevance`). None when the split has no truth
    (``split.text_relevance()``) or neither side is text.

    Parameters
    ----------
    split : FeatureSplit
    query_rows : {modality: split row} of the query
    target : the gallery's modality
    """
    truth = split.text_relevance()
    if truth is None or ("text" not in query_rows and target != "text"):
        return None
    if "text" in query_rows:
        return {int(r) for r in truth[query_rows["text"]].nonzero()[0]}
    return {int(r) for r in truth[:, sorted(set(query_rows.values()))].any(axis=1).nonzero()[0]}


def _caption(split: FeatureSplit, row: int) -> str:
    return str(split.captions[row]) if split.captions is not None else ""


class _MediaView:
    """Caption, audio player and score image of one item (the parts listed in ``show``)."""

    def __init__(self, split: FeatureSplit, show: tuple[str, ...], caption_chars: int | None = None):
        import ipywidgets as w

        self.split, self.caption_chars = split, caption_chars
        self.caption = w.HTML(layout=w.Layout(max_width="100%"))
        self.audio = w.Audio(value=b"", format="wav", autoplay=False, controls=True,
                             layout=w.Layout(display="none", max_width="100%"))
        self.image = w.Image(value=b"", format="png", layout=w.Layout(display="none", max_width="100%"))
        self.box = w.VBox([self.caption] + [self.audio] * ("audio" in show) + [self.image] * ("image" in show),
                          layout=w.Layout(max_width="520px"))

    def _media(self, widget, modality: str, row: int) -> bool:
        has = modality in self.split.present and bool(self.split.present[modality][row])
        path = self.split.media_path(modality, row) if has else None
        if path is None or not path.is_file():
            widget.layout.display = "none"
            return False
        suffix = path.suffix.lstrip(".").lower()
        widget.format = _FORMATS.get(suffix, suffix)
        widget.value = path.read_bytes()
        widget.layout.display = None
        return True

    def show(self, row: int | None) -> None:
        if row is None:
            self.caption.value = ""
            self.audio.layout.display = self.image.layout.display = "none"
            return
        missing = [m for m, widget in (("audio", self.audio), ("image", self.image))
                   if widget in self.box.children and not self._media(widget, m, row)]
        note = f" <i>(no {' or '.join(missing)} file)</i>" if missing else ""
        cap = _caption(self.split, row)
        if self.caption_chars is not None and len(cap) > self.caption_chars:
            cap = cap[:self.caption_chars] + "…"
        self.caption.value = (f"<div style='line-height:1.35'><code>{html.escape(str(self.split.ids[row]))}</code>"
                              f"{note}<br><small>{html.escape(cap)}</small></div>")


class _ItemPicker:
    """Query item of one modality: use checkbox, search box, random button, dropdown, preview."""

    def __init__(self, session: RetrievalSession, modality: str):
        import ipywidgets as w

        self.session, self.modality = session, modality
        split = session.split
        self.rows = session.items_with(modality)
        self.all_options = [(self.label(r), session.ids[r]) for r in self.rows]
        self.use = w.Checkbox(value=True, description=f"query with {modality}", indent=False)
        self.search = w.Text(placeholder="caption words or id, then Enter", continuous_update=False,
                             layout=w.Layout(width="auto", flex="1 1 120px", min_width="0"))
        self.random = w.Button(description="random", icon="random", layout=w.Layout(width="96px", flex="0 0 96px"),
                               tooltip=f"a random item with {modality}")
        self.pick = w.Dropdown(options=self.all_options, layout=w.Layout(width="auto", max_width="100%"))
        self.note = w.HTML()
        self.media = _MediaView(split, (modality,), caption_chars=None if modality == "text" else 90)
        for role, widget in (("use", self.use), ("search", self.search), ("random", self.random), ("pick", self.pick)):
            widget.add_class(f"mmkit-{role}-{modality}")
        self.box = w.VBox([self.use, w.HBox([self.search, self.random]), self.pick, self.note, self.media.box],
                          layout=w.Layout(border="1px solid #ccc", padding="4px", margin="2px", flex=_PICKER_FLEX,
                                          min_width="0", max_width="440px"))
        self.box.add_class(f"mmkit-query-{modality}")

    def label(self, row: int) -> str:
        cap = _caption(self.session.split, row)
        return f"{self.session.ids[row]} · {cap[:60]}{'…' if len(cap) > 60 else ''}"

    def matches(self, text: str) -> list[tuple[str, str]]:
        """Options whose id or caption holds every word of ``text`` (an exact id comes first)."""
        words = text.lower().split()
        hits = [(lab, i) for (lab, i), r in zip(self.all_options, self.rows)
                if all(word in f"{i} {_caption(self.session.split, r)}".lower() for word in words)]
        return sorted(hits, key=lambda opt: opt[1] != text.strip())


class RetrievalApp:
    """The retrieval widget over a :class:`RetrievalSession` (display ``app.widget``, or the app itself).

    Parameters
    ----------
    session : RetrievalSession
    target : initial target modality; the query starts with every other modality
    distance : initial distance ("ssw", "kl", "elk" or "cosine")
    k : initial number of results per run
    query : initial query item id (default: the first item that has every modality)
    seed : seed of the "random" buttons

    Operating it from Python (what the widgets' callbacks do): ``app.select(modality, item_id)``,
    ``app.pickers[m].search.value = "jig"``, ``app.target.value = "audio"``; the current results are
    ``app.rankings`` ({run: Ranking}) and ``app.errors`` ({run: message}).
    """

    def __init__(self, session: RetrievalSession, target: str = "image", distance: str = "ssw", k: int = 10,
                 query: str | None = None, seed: int = 0):
        import ipywidgets as w

        mods = session.modalities
        if target not in mods:
            raise ValueError(f"target must be one of {mods}, got {target!r}")
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 50:
            raise ValueError(f"k must be an int in [1, 50], got {k!r}")
        if query is not None and str(query) not in session.row_by_id:
            raise ValueError(f"query: item id {query!r} is not in the split")
        self.session = session
        self._rng = random.Random(seed)
        self._quiet = 0
        self.version = 0
        self.rankings: dict[str, Ranking] = {}
        self.errors: dict[str, str] = {}
        self.last_update_seconds = float("nan")
        self.pickers = {m: _ItemPicker(session, m) for m in mods}
        self.linked = w.Checkbox(value=True, description="same item for every query modality", indent=False)
        self.target = w.Dropdown(options=list(mods), value=target, description="target")
        self.distance = w.Dropdown(options=list(DISTANCES), value=distance, description="distance")
        self.k = w.BoundedIntText(value=k, min=1, max=50, description="top k", layout=w.Layout(width="150px"))
        controls = {"linked": self.linked, "target": self.target, "distance": self.distance, "k": self.k}
        for role, widget in controls.items():
            widget.add_class(f"mmkit-{role}")
        self.status = w.HTML()
        self.status.add_class("mmkit-status")
        self.results = {}
        for run in session.runs:
            self.results[run] = w.HTML(layout=w.Layout(flex=_RESULT_FLEX, min_width="0", margin="0 12px 8px 0"))
            self.results[run].add_class("mmkit-results")
            self.results[run].add_class(f"mmkit-results-{run_slug(run)}")
        self.preview_pick = w.Dropdown(description="listen to", layout=w.Layout(width="auto", max_width="520px"))
        self.preview_pick.add_class("mmkit-preview-pick")
        self.preview = _MediaView(session.split, mods)
        self.widget = w.VBox([
            w.HTML("<h3>Multimodal retrieval</h3>"),
            w.HBox([self.linked]),
            w.HBox([p.box for p in self.pickers.values()], layout=_WRAP),
            w.HBox([self.target, self.distance, self.k], layout=_WRAP),
            self.status,
            w.HBox(list(self.results.values()), layout=_WRAP),
            w.HTML("<b>Retrieved item</b>"), self.preview_pick, self.preview.box,
        ])
        self.widget.add_class("mmkit-retrieval-app")
        self.widget.layout.max_width = "100%"
        for m, p in self.pickers.items():
            p.pick.observe(lambda ch, m=m: self._on_pick(m, ch["new"]), "value")
            p.search.observe(lambda ch, m=m: self._on_search(m, ch["new"]), "value")
            p.random.on_click(lambda _, m=m: self._on_random(m))
            p.use.observe(lambda ch: self.refresh(), "value")
        self.target.observe(lambda ch: self._on_target(), "value")
        for widget in (self.distance, self.k):
            widget.observe(lambda ch: self.refresh(), "value")
        self.linked.observe(lambda ch: self._on_linked(ch["new"]), "value")
        self.preview_pick.observe(lambda ch: self._show_preview(), "value")
        with self._hold():
            first = self._default_item() if query is None else str(query)
            for m in mods:
                self._set(m, first)
            self._on_target()
        self.refresh()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    @contextlib.contextmanager
    def _hold(self):
        """Change several widgets without an update per change."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def _default_item(self) -> str:
        split = self.session.split
        for row in range(len(split)):
            if all(split.present[m][row] for m in self.pickers):
                return self.session.ids[row]
        return self.session.ids[self.pickers[self.target.value].rows[0]]

    # -- callbacks ---------------------------------------------------------------------------
    def select(self, modality: str, item: str) -> bool:
        """Choose ``item`` as the query item of ``modality``, as its dropdown does (linked pickers follow).

        Returns False, leaving the picker as it was with a note, when ``item`` lacks ``modality``.
        """
        if modality not in self.pickers:
            raise ValueError(f"modality must be one of {tuple(self.pickers)}, got {modality!r}")
        if not self._set(modality, item):
            return False
        if self.linked.value:
            with self._hold():
                for m in self.pickers:
                    if m != modality:
                        self._set(m, item)
        self.refresh()
        return True

    def _set(self, modality: str, item: str) -> bool:
        """Put ``item`` in the picker of ``modality`` and preview it (no update, no linked pickers)."""
        p = self.pickers[modality]
        row = self.session.row_by_id.get(item)
        if row is None or not self.session.split.present[modality][row]:
            p.note.value = f"<i>{html.escape(item)} has no {modality}; kept the previous item</i>"
            return False
        with self._hold():
            if item not in [i for _, i in p.pick.options]:
                p.search.value = ""
                p.pick.options = p.all_options
            p.pick.value = item
            p.note.value = ""
        p.media.show(row)
        return True

    def _on_pick(self, modality: str, item: str | None) -> None:
        if not self._quiet and item is not None:
            self.select(modality, item)

    def _on_search(self, modality: str, text: str) -> None:
        if self._quiet:
            return
        p = self.pickers[modality]
        hits = p.matches(text) if text.strip() else p.all_options
        if not hits:
            p.note.value = f"<i>no item with {modality} matches {html.escape(text)}</i>"
            return
        with self._hold():
            p.pick.options = hits
            p.pick.value = hits[0][1]
        self.select(modality, hits[0][1])
        p.note.value = f"<i>{len(hits)} match(es)</i>" if text.strip() else ""

    def _on_random(self, modality: str) -> None:
        p = self.pickers[modality]
        choices = [r for r in p.rows if self.session.ids[r] != p.pick.value] or p.rows
        with self._hold():
            p.search.value = ""
            p.pick.options = p.all_options
        self.select(modality, self.session.ids[self._rng.choice(choices)])

    def _on_target(self) -> None:
        target = self.target.value
        with self._hold():
            for m, p in self.pickers.items():
                p.use.disabled = m == target
                if m == target:
                    p.use.value = False
            if not any(p.use.value for p in self.pickers.values()):
                for m, p in self.pickers.items():
                    p.use.value = m != target
        self.refresh()

    def _on_linked(self, linked: bool) -> None:
        if linked:
            first = next((m for m, p in self.pickers.items() if p.use.value), next(iter(self.pickers)))
            self.select(first, self.pickers[first].pick.value)

    def _show_preview(self) -> None:
        if self._quiet:
            return
        item = self.preview_pick.value
        self.preview.show(None if item is None else self.session.row_by_id[item])

    # -- update ------------------------------------------------------------------------------
    @property
    def query(self) -> dict[str, str]:
        """The current query: {modality: item id} of the ticked modalities other than the target."""
        return {m: p.pick.value for m, p in self.pickers.items()
                if p.use.value and m != self.target.value and p.pick.value is not None}

    def refresh(self) -> None:
        """Rank the gallery for the current query under every run and redraw the result lists."""
        if self._quiet:
            return
        start = time.perf_counter()
        self.version += 1
        query, target, distance = self.query, self.target.value, self.distance.value
        self.rankings, self.errors = {}, {}
        for run in self.session.runs:
            try:
                self.rankings[run] = self.session.rank(query, target, distance, run=run, k=int(self.k.value))
            except ValueError as exc:
                self.errors[run] = str(exc)
        for run, widget in self.results.items():
            widget.value = self._render(run, query, target, distance)
        ids = list(dict.fromkeys(i for r in self.rankings.values() for i in r.ids))
        with self._hold():
            keep = self.preview_pick.value
            self.preview_pick.options = ids
            self.preview_pick.value = keep if keep in ids else (ids[0] if ids else None)
        self._show_preview()
        self.last_update_seconds = time.perf_counter() - start
        if self.errors:
            self.status.value = f"<span style='color:#b00'>{html.escape(next(iter(self.errors.values())))}</span>"
        else:
            self.status.value = (f"task <b>{task_name(list(query), target)}</b> · gallery of "
                                 f"{next(iter(self.rankings.values())).gallery_size} items · "
                                 f"updated in {1000 * self.last_update_seconds:.0f} ms")

    def _render(self, run: str, query: dict, target: str, distance: str) -> str:
        r = self.rankings.get(run)
        attrs = {"run": run, "ids": json.dumps(r.ids if r else []), "query": json.dumps(query), "target": target,
                 "distance": distance, "version": str(self.version), "error": self.errors.get(run, "")}
        head = " ".join(f'data-mmkit-{k}="{html.escape(v, quote=True)}"' for k, v in attrs.items())
        title = f"<b>{html.escape(run)}</b>"
        if r is None:
            return f'<div class="mmkit-ranking" {head}>{title}<br><i>{html.escape(self.errors[run])}</i></div>'
        label, sign = DISTANCE_LABELS[r.distance]
        found = ", ".join(f"{html.escape(i)} at rank {rank:g}" for i, rank in r.true_ranks.items()) or "none"
        truth = caption_truth_rows(self.session.split, {m: self.session.row_by_id[i] for m, i in query.items()}, target)
        if truth is not None:  # many-to-many truth: ≈ marks the other items the caption truly describes
            found += f" · {len(truth & set(r.rows))} of {len(truth)} true by caption (≈) in the list"
        rows = "".join(
            f"<tr style='background:{'#d9f2d9' if hit else '#eef7ee' if row in (truth or ()) else 'none'}'><td>{n}</td>"
            f"<td>{'✔' if hit else '≈' if row in (truth or ()) else ''}</td>"
            f"{_clipped(i, code=True)}{_clipped(_caption(self.session.split, row))}"
            f"<td>{sign * s:.4g}</td><td>{kap:.3g}</td></tr>"
            for n, (i, row, s, kap, hit) in enumerate(zip(r.ids, r.rows, r.scores, r.kappas, r.matches), 1))
        note = "" if r.distance == distance else f" (Gaussian run: {r.distance})"
        return (f'{_RESULT_STYLE}<div class="mmkit-ranking" {head}>{title}{note} · query κ {r.query_kappa:.3g} · '
                f"true match: {found} (of {r.gallery_size})<table>{_COLUMNS}<tr><th>#</th><th>✔</th><th>id</th>"
                f"<th>caption</th><th title='{label}'>{label}</th><th>κ</th></tr>{rows}</table></div>")


# Layout: the pickers and the result lists wrap onto further rows when the notebook is narrower than they
# need side by side (a laptop screen with JupyterLab's file browser open); a result table takes its list's
# width exactly (fixed columns, the id and caption cut with "…" and shown whole on hover), so that nothing
# of one list is drawn over the next.
_WRAP = {"flex_flow": "row wrap", "align_items": "flex-start", "width": "100%"}
_PICKER_FLEX = "1 1 280px"
_RESULT_FLEX = "1 1 440px"
_COLUMNS = ("<colgroup><col style='width:26px'><col style='width:22px'><col style='width:34%'><col>"
            "<col style='width:68px'><col style='width:48px'></colgroup>")
_RESULT_STYLE = ("<style>.mmkit-ranking {line-height: 1.35; overflow-wrap: anywhere} .mmkit-ranking table "
                 "{border-collapse: collapse; font-size: 12px; table-layout: fixed; width: 100%} .mmkit-ranking td, "
                 ".mmkit-ranking th {padding: 1px 4px; text-align: left; white-space: nowrap; overflow: hidden; "
                 "text-overflow: ellipsis}</style>")


def _clipped(text: str, code: bool = False) -> str:
    """A table cell showing ``text`` on one line, cut to its column's width (all of it on hover)."""
    inner = f"<code>{html.escape(text)}</code>" if code else html.escape(text)
    return f"<td title='{html.escape(text, quote=True)}'>{inner}</td>"


def runs_from_json(text: str) -> dict[str, str]:
    """Parse the demo notebook's ``runs`` parameter: a JSON object ``{"name": "run directory", ...}``."""
    try:
        runs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"runs: expected a JSON object {{name: run directory}}, got {text!r} ({exc})") from None
    if not isinstance(runs, dict) or not runs or not all(isinstance(v, str) for v in runs.values()):
        raise ValueError(f"runs: expected a non-empty JSON object {{name: run directory}}, got {text!r}")
    return runs
