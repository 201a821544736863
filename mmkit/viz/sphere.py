"""Seeing the vMF embeddings on the sphere: a principled projection ``S^{d-1} → S²``, an
interactive plotly sphere, and matplotlib counterparts for print.

Every item of every modality is a von Mises–Fisher distribution ``vMF(μ, κ)`` on ``S^{d-1}``.
The sphere figures show the mean direction ``μ`` of each item (marker size grows with ``κ``) and
samples drawn from :class:`mmkit.core.distributions.VonMisesFisher` around it (their spread shows
``1/κ``; in the print version they are also more opaque for larger ``κ``), coloured by modality (:data:`mmkit.viz.style.MODALITY_COLORS`), with the item id, ``κ`` and
caption on hover.

Projection for ``d > 3`` (``d = 3`` is shown as it is): tangent PCA, the linearised principal
geodesic analysis of Fletcher, Lu, Pizer & Joshi (2004), "Principal geodesic analysis for the
study of nonlinear statistics of shape", IEEE Trans. Medical Imaging 23(8):995–1005:

1. ``m`` = the Fréchet (intrinsic, Karcher) mean of the item means on ``S^{d-1}``;
2. ``v = Log_m(x)`` in the tangent space ``T_m S^{d-1}``;
3. ``e_1, e_2`` = the two leading principal directions of the ``Log_m`` of the item means;
4. ``y = Exp_n(⟨v, e_1⟩ f_1 + ⟨v, e_2⟩ f_2)`` on ``S²``, ``n = (0, 0, 1)``, ``f_1, f_2`` its tangent basis.

The geometry (Fréchet mean by gradient descent, log and exp maps, tangent PCA, great circles) is
geomstats' ``Hypersphere`` (Miolane et al. 2020, JMLR 21(223)). Properties: ``m`` goes to the
north pole; the great 2-sphere through ``m`` spanned by ``e_1, e_2`` is mapped isometrically; every
other point lands at distance ``|(⟨v, e_1⟩, ⟨v, e_2⟩)| <= d(x, m)`` from the pole, in the direction of
its tangent vector's principal components. What it cannot do: a 2-D picture of data
spread over many dimensions loses the rest (:attr:`SphereProjection.explained_variance_ratio`
says how much of the tangent variance is shown), and points near ``-m`` (where ``Log_m`` is
singular) get unstable directions. Samples of a concentrated vMF in high dimension deviate from
``μ`` mostly in discarded directions, so they look tighter than they are.
"""
from __future__ import annotations

import html
import math
import os
import textwrap
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from mmkit.core.distributions import VonMisesFisher
from mmkit.model.run import Run
from mmkit.vocab import MODALITIES
from mmkit.viz.style import MODALITY_COLORS, OKABE_ITO, plotly_template, publication_style

# geomstats picks its array backend once, at its first import (numpy unless the user set $GEOMSTATS_BACKEND,
# e.g. pytorch): every array goes to geomstats through _to_gs and comes back through _from_gs, for any backend
os.environ.setdefault("GEOMSTATS_BACKEND", "numpy")

__all__ = ["SphereProjection", "SpherePoints", "fit_sphere_projection", "sphere_points", "sphere_figure",
           "plotly_title", "plotly_top_margin", "sphere_name", "MODEBAR_PX", "text_width_px", "orthographic_figure",
           "kappa_histograms", "read_training_log", "training_curves"]

_NORTH = np.array([0.0, 0.0, 1.0])
_UNIT_TOL = 1e-3
_SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
#: Height (px) of the toolbar (modebar) plotly draws at the top right of a figure: titles start below it.
MODEBAR_PX = 32


def _to_gs(x):
    """``x`` (numpy, float64) as an array of geomstats' backend (a torch tensor under ``GEOMSTATS_BACKEND=pytorch``)."""
    import geomstats.backend as gs

    return gs.array(np.asarray(x, dtype=np.float64))


def _from_gs(x) -> np.ndarray:
    """An array of geomstats' backend as numpy float64."""
    import geomstats.backend as gs

    return np.asarray(gs.to_numpy(x), dtype=np.float64)


def _hypersphere(dim: int):
    """geomstats' ``Hypersphere`` ``S^{dim}`` embedded in ``R^{dim+1}``."""
    from geomstats.geometry.hypersphere import Hypersphere

    return Hypersphere(dim=dim)


def _numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a numeric array or tensor, got {type(x).__name__}") from exc


def _unit_rows(x, name: str, dim: int | None = None) -> np.ndarray:
    """``x`` as float64 rows of shape (N, d), d >= 3, finite and of unit norm (renormalised)."""
    arr = _numpy(x, name)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, d) with N >= 1, got shape {arr.shape}")
    if arr.shape[1] < 3:
        raise ValueError(f"{name}: the sphere figures need points on S^(d-1) with d >= 3, got d = {arr.shape[1]}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name}: expected dimension d = {dim} (that of the fitted projection), got d = {arr.shape[1]}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has non-finite entries (row {int(np.argmin(np.isfinite(arr).all(1)))})")
    norms = np.linalg.norm(arr, axis=1)
    if np.abs(norms - 1).max() > _UNIT_TOL:
        raise ValueError(f"{name} must be unit vectors (points on the sphere); norms range over "
                         f"[{norms.min():.4g}, {norms.max():.4g}]")
    return arr / norms[:, None]


@dataclass(frozen=True)
class SphereProjection:
    """A map ``S^{d-1} → S²`` (tangent PCA at the Fréchet mean; the identity for d = 3).

    Attributes
    ----------
    dim : int, the ambient dimension ``d`` of the input points
    base_point : np.ndarray (d,) or None, the Fréchet mean ``m`` (None: identity)
    components : np.ndarray (2, d) or None, orthonormal principal directions in ``T_m S^{d-1}``
    explained_variance_ratio : tuple of 2 floats, share of the tangent variance on each direction
    """

    dim: int
    base_point: np.ndarray | None = None
    components: np.ndarray | None = None
    explained_variance_ratio: tuple[float, float] = (1.0, 0.0)

    @property
    def is_identity(self) -> bool:
        return self.base_point is None

    def __call__(self, points) -> np.ndarray:
        """Project points of shape (..., d) to (..., 3) on ``S²``."""
        arr = _numpy(points, "points")
        if arr.ndim < 1 or arr.shape[-1] != self.dim:
            raise ValueError(f"points must have shape (..., {self.dim}), got shape {arr.shape}")
        lead = arr.shape[:-1]
        flat = _unit_rows(arr.reshape(-1, self.dim), "points", self.dim)
        if self.is_identity:
            return flat.reshape(*lead, 3)
        logs = _from_gs(_hypersphere(self.dim - 1).metric.log(_to_gs(flat), _to_gs(self.base_point)))   # (N, d)
        coords = logs @ self.components.T                                                 # (N, 2)
        tangent = np.concatenate([coords, np.zeros((len(coords), 1))], axis=1)           # T_n S^2
        return _from_gs(_hypersphere(2).metric.exp(_to_gs(tangent), _to_gs(_NORTH))).reshape(*lead, 3)

    def describe(self) -> str:
        if self.is_identity:
            return "d = 3: the sphere itself"
        ratio = sum(self.explained_variance_ratio)
        return (f"{sphere_name(self.dim - 1)} → S² by tangent PCA at the Fréchet mean "
                f"({100 * ratio:.0f}% of the tangent variance shown)")


def _frechet_mean(x: np.ndarray, max_iter: int = 1000, epsilon: float = 1e-14) -> np.ndarray:
    """Fréchet mean (d,) of unit rows x (N, d) by geomstats' gradient descent (Karcher 1977)."""
    from geomstats.learning.frechet_mean import FrechetMean

    mean = FrechetMean(_hypersphere(x.shape[1] - 1))
    mean.optimizer.max_iter, mean.optimizer.epsilon = max_iter, epsilon
    base = _from_gs(mean.fit(_to_gs(x)).estimate_)
    return base / np.linalg.norm(base)


def fit_sphere_projection(points, max_iter: int = 1000, epsilon: float = 1e-14) -> SphereProjection:
    """Fit :class:`SphereProjection` to points (N, d) on ``S^{d-1}`` (identity when d = 3).

    ``max_iter`` and ``epsilon`` control geomstats' gradient descent for the Fréchet mean
    (its defaults, 32 steps and 1e-4, stop ~1e-2 from the optimum on 300 points; these ~1e-7).
    """
    x = _unit_rows(points, "points")
    d = x.shape[1]
    if d == 3:
        return SphereProjection(3)
    if len(x) < 3:
        raise ValueError(f"points: need at least 3 points to fit a projection from d = {d}, got {len(x)}")
    base = _frechet_mean(x, max_iter, epsilon)
    components, ratio = _tangent_pca(_from_gs(_hypersphere(d - 1).metric.log(_to_gs(x), _to_gs(base))))
    return SphereProjection(d, base, components, (float(ratio[0]), float(ratio[1])))


def _tangent_pca(logs: np.ndarray, n_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Principal directions (n_components, d) and explained-variance ratios (n_components,) of the log
    maps ``logs`` (N, d) at the Fréchet mean: PCA in the tangent space, the linearised principal geodesic
    analysis of Fletcher et al. (2004, IEEE TMI 23(8)), as geomstats' ``TangentPCA`` computes it (centred
    SVD; each direction's sign makes the largest entry of its score column positive). In numpy, so that it
    runs under every geomstats backend (scikit-learn's sign flip, which ``TangentPCA`` calls, takes no
    torch tensors)."""
    centred = logs - logs.mean(axis=0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    signs = np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(u.shape[1])])
    signs[signs == 0] = 1.0
    variance = s ** 2
    return (vt * signs[:, None])[:n_components], (variance / variance.sum())[:n_components]


@dataclass
class SpherePoints:
    """What the sphere figures draw for one modality (all on ``S²``).

    rows : (R,) int, rows of the split; means : (R, 3); kappa : (R,); samples : (n, R, 3)
    """

    rows: np.ndarray
    means: np.ndarray
    kappa: np.ndarray
    samples: np.ndarray


def _check_params(params: Mapping) -> tuple[int, int]:
    """``params`` is ``{modality: (loc (N, d), kappa (N,))}``; return ``(N, d)``."""
    if not isinstance(params, Mapping) or not params:
        raise ValueError(f"params must be a non-empty mapping modality -> (loc, kappa), got {type(params).__name__}")
    shape = None
    for m, value in params.items():
        if not (isinstance(value, (tuple, list)) and len(value) == 2):
            raise ValueError(f"params[{m!r}] must be a pair (loc (N, d), kappa (N,)), got {type(value).__name__}")
        loc, kappa = _numpy(value[0], f"params[{m!r}] loc"), _numpy(value[1], f"params[{m!r}] kappa")
        if loc.ndim != 2 or kappa.shape != loc.shape[:1]:
            raise ValueError(f"params[{m!r}]: loc must be (N, d) and kappa (N,), got {loc.shape} and {kappa.shape}")
        if shape is not None and loc.shape != shape:
            raise ValueError(f"params[{m!r}]: loc shape {loc.shape} differs from another modality's {shape}")
        if not (np.isfinite(kappa).all() and (kappa > 0).all()):
            raise ValueError(f"params[{m!r}] kappa must be finite and > 0; got range [{kappa.min()}, {kappa.max()}]")
        shape = loc.shape
    return shape


def _selected_rows(n: int, m: str, present: Mapping | None, rows: Sequence[int] | None, max_items: int) -> np.ndarray:
    chosen = np.arange(min(n, max_items)) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
    if chosen.size and (chosen.min() < 0 or chosen.max() >= n):
        raise IndexError(f"rows must lie in [0, {n}), got range [{chosen.min()}, {chosen.max()}]")
    if present is not None and m in present:
        mask = np.asarray(present[m], dtype=bool)
        if mask.shape != (n,):
            raise ValueError(f"present[{m!r}] must have shape ({n},), got {mask.shape}")
        chosen = chosen[mask[chosen]]
    return chosen


def sphere_points(params: Mapping, present: Mapping | None = None, rows: Sequence[int] | None = None,
                  max_items: int = 60, n_samples: int = 16, projection: SphereProjection | None = None,
                  seed: int = 0) -> tuple[dict[str, SpherePoints], SphereProjection]:
    """Means and vMF samples of the chosen items, projected to ``S²``.

    ``params``: ``{modality: (loc (N, d), kappa (N,))}`` as :func:`mmkit.model.run.encode_split`
    returns it for a vMF model. ``rows`` (default: the first ``max_items``) are kept where
    ``present[modality]`` is true. ``projection`` defaults to one fitted on the means shown.
    Samples: ``n_samples`` draws per item, reproducible from ``seed`` (global RNG untouched).
    """
    n, d = _check_params(params)
    if not (isinstance(n_samples, int) and n_samples >= 0 and isinstance(max_items, int) and max_items >= 1):
        raise ValueError(f"n_samples must be an int >= 0 and max_items an int >= 1, got {n_samples!r}, {max_items!r}")
    chosen = {m: _selected_rows(n, m, present, rows, max_items) for m in params}
    if not any(len(r) for r in chosen.values()):
        raise ValueError("no item to show: every selected row is absent in every modality")
    locs = {m: _unit_rows(_numpy(params[m][0], f"params[{m!r}] loc")[chosen[m]], f"params[{m!r}] loc")
            if len(chosen[m]) else np.zeros((0, d)) for m in params}
    if projection is None:
        projection = fit_sphere_projection(np.concatenate([v for v in locs.values() if len(v)]))
    elif projection.dim != d:
        raise ValueError(f"projection was fitted for d = {projection.dim}, the params have d = {d}")
    out = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in params:
            kappa = _numpy(params[m][1], f"params[{m!r}] kappa")[chosen[m]]
            if len(chosen[m]) and n_samples:
                draws = VonMisesFisher(torch.from_numpy(locs[m]), torch.from_numpy(kappa)).sample((n_samples,)).numpy()
                samples = projection(draws)
            else:
                samples = np.zeros((n_samples, len(chosen[m]), 3))
            means = projection(locs[m]) if len(chosen[m]) else np.zeros((0, 3))
            out[m] = SpherePoints(chosen[m], means, kappa, samples)
    return out, projection


def _kappa_scale(points: Mapping[str, SpherePoints]) -> tuple[float, float]:
    """``(lo, hi)`` of ``log κ`` over every shown item (one scale for all modalities)."""
    logs = np.concatenate([np.log(p.kappa) for p in points.values()])
    return float(logs.min()), float(logs.max())


def _scaled(kappa: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    lo, hi = scale
    return np.full(kappa.shape, 0.5) if hi - lo < 1e-12 else (np.log(kappa) - lo) / (hi - lo)


def _color(m: str, i: int) -> str:
    spare = [OKABE_ITO[k] for k in ("vermillion", "reddish_purple", "sky_blue", "yellow", "black")]
    return MODALITY_COLORS.get(m, spare[i % len(spare)])


def _great_circles(n_meridians: int = 6, n_points: int = 181) -> list[np.ndarray]:
    """The equator and ``n_meridians`` great circles through the poles, each (n_points, 3), by geomstats' geodesics."""
    sphere = _hypersphere(2)
    t = np.linspace(0.0, 1.0, n_points)
    circles = [_from_gs(sphere.metric.geodesic(initial_point=_to_gs([1.0, 0.0, 0.0]),
                                               initial_tangent_vec=_to_gs([0.0, 2 * np.pi, 0.0]))(_to_gs(t)))]
    for k in range(n_meridians):
        phi = np.pi * k / n_meridians
        start = np.array([np.cos(phi), np.sin(phi), 0.0])
        circles.append(_from_gs(sphere.metric.geodesic(initial_point=_to_gs(start),
                                                       initial_tangent_vec=_to_gs(2 * np.pi * _NORTH))(_to_gs(t))))
    return circles


def sphere_backdrop(opacity: float, surface: str, grid: str) -> list:
    """The plotly traces of a translucent unit sphere and its great-circle grid (no hover, no legend)."""
    import plotly.graph_objects as go

    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, 49), np.linspace(0, np.pi, 25))
    circles = np.concatenate([np.vstack([c, np.full((1, 3), np.nan)]) for c in _great_circles()])
    return [go.Surface(x=np.cos(u) * np.sin(v), y=np.sin(u) * np.sin(v), z=np.cos(v), name="sphere", opacity=opacity,
                       showscale=False, colorscale=[[0, surface], [1, surface]], hoverinfo="skip"),
            go.Scatter3d(x=circles[:, 0], y=circles[:, 1], z=circles[:, 2], mode="lines", name="grid",
                         showlegend=False, line=dict(color=grid, width=1), hoverinfo="skip")]


def _labels(values, n: int, name: str) -> list[str] | None:
    if values is None:
        return None
    values = list(values)
    if len(values) != n:
        raise ValueError(f"{name} must have one entry per row (N = {n}), got {len(values)}")
    return [str(v) for v in values]


def sphere_figure(params: Mapping, ids: Sequence | None = None, captions: Sequence | None = None,
                  present: Mapping | None = None, rows: Sequence[int] | None = None, max_items: int = 60,
                  n_samples: int = 16, projection: SphereProjection | None = None, seed: int = 0,
                  title: str | None = None):
    """Interactive plotly 3-D sphere of the items' vMF distributions.

    Traces: ``sphere`` (translucent surface), ``grid`` (great circles), then per modality
    ``<modality> samples`` (vMF draws; one opacity, as WebGL renders per-point alpha wrongly) and
    ``<modality> means`` (marker size by κ,
    hover: id, modality, κ, caption). Arguments as in :func:`sphere_points`; ``ids`` and
    ``captions`` are per row of the split (N,).
    """
    import plotly.graph_objects as go

    n, _ = _check_params(params)
    ids, captions = _labels(ids, n, "ids"), _labels(captions, n, "captions")
    points, projection = sphere_points(params, present, rows, max_items, n_samples, projection, seed)
    scale = _kappa_scale(points)
    traces = sphere_backdrop(opacity=0.12, surface="#BBBBBB", grid="#DDDDDD")
    for i, (m, p) in enumerate(points.items()):
        color, s = _color(m, i), _scaled(p.kappa, scale)
        names = [ids[r] if ids else f"row {r}" for r in p.rows]
        if p.samples.size:
            flat = p.samples.reshape(-1, 3)
            traces.append(go.Scatter3d(
                x=flat[:, 0], y=flat[:, 1], z=flat[:, 2], mode="markers", name=f"{m} samples", legendgroup=m,
                marker=dict(size=2, color=color, opacity=0.35),
                text=[f"{html.escape(name)} ({m}) sample" for name in names] * len(p.samples), hoverinfo="text"))
        hover = []
        for r, name, kappa in zip(p.rows, names, p.kappa):
            lines = [f"<b>{html.escape(name)}</b> ({m})", f"κ = {kappa:.3g}"]
            if captions:
                lines += [html.escape(line) for line in textwrap.wrap(captions[r], 60)]
            hover.append("<br>".join(lines))
        traces.append(go.Scatter3d(
            x=p.means[:, 0], y=p.means[:, 1], z=p.means[:, 2], mode="markers", name=f"{m} means", legendgroup=m,
            marker=dict(size=4 + 10 * s, color=color, line=dict(color="black", width=1)), text=hover, hoverinfo="text"))
    axis = dict(visible=False, range=[-1.05, 1.05])
    eye = 1.9 * _facing(points)
    fig = go.Figure(traces)
    header = plotly_title(title or projection.describe(), 760, 640)
    fig.update_layout(template=plotly_template(), title=header, width=760, height=640,
                      scene=dict(xaxis=axis, yaxis=axis, zaxis=axis, aspectmode="cube",
                                 camera=dict(eye=dict(x=eye[0], y=eye[1], z=eye[2]))),
                      legend=dict(itemsizing="constant", title="mean marker size grows with κ"),
                      margin=dict(l=0, r=0, t=plotly_top_margin(header), b=0))
    return fig


def text_width_px(text: str, size: float) -> float:
    """Rendered width (pixels) of ``text`` in DejaVu Sans at ``size`` px (matplotlib's font metrics)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    width, _, _ = TextToPath().get_text_width_height_descent(text, FontProperties(family="DejaVu Sans", size=size),
                                                             ismath=False)
    return float(width)


def _fit_lines(text: str, width_px: float, size: float) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and text_width_px(lines[-1] + " " + word, size) <= width_px:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def plotly_title(text: str, width_px: int, height_px: int, size: int = 14, margin_px: int = 12) -> dict:
    """A plotly title that fits the figure (``width_px`` x ``height_px``) below its toolbar: left-aligned
    ``margin_px`` from the edge, wrapped with ``<br>`` into lines no wider than ``width_px − 2 margin_px``
    (DejaVu Sans metrics, the template's font), its top :data:`MODEBAR_PX` below the figure's top edge,
    under the toolbar plotly draws at the top right. Leave it :func:`plotly_top_margin` pixels."""
    lines = _fit_lines(text, width_px - 2 * margin_px, size)
    return dict(text="<br>".join(html.escape(line) for line in lines), x=margin_px / width_px, xanchor="left",
                xref="container", y=1 - MODEBAR_PX / height_px, yanchor="top", yref="container", font=dict(size=size))


def plotly_top_margin(title: Mapping) -> int:
    """Pixels above the plot area for a :func:`plotly_title`: the toolbar, the title's lines and a gap."""
    lines = title["text"].count("<br>") + 1
    return MODEBAR_PX + math.ceil(lines * 1.3 * title["font"]["size"]) + 8


def sphere_name(n: int) -> str:
    """The sphere ``S^n`` as titles print it: ``S³¹`` (unicode superscripts, never a literal caret)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"sphere_name: n must be an int >= 0, got {n!r}")
    return "S" + str(n).translate(_SUPERSCRIPTS)


def _facing(points: Mapping[str, SpherePoints]) -> np.ndarray:
    """Unit vector (3,) toward the Fréchet mean of the shown means: the default viewing direction."""
    means = np.concatenate([p.means for p in points.values()])
    return _frechet_mean(means) if len(means) > 1 else means[0]


def _view_basis(toward: np.ndarray) -> np.ndarray:
    """Rows ``(right, up, toward the viewer)`` of an orthographic camera looking at ``-toward``."""
    right = np.cross(_NORTH, toward)
    right = right / np.linalg.norm(right) if np.linalg.norm(right) > 1e-9 else np.array([0.0, 1.0, 0.0])
    return np.stack([right, np.cross(toward, right), toward])


def orthographic_figure(params: Mapping, present: Mapping | None = None, rows: Sequence[int] | None = None,
                        max_items: int = 60, n_samples: int = 16, projection: SphereProjection | None = None,
                        seed: int = 0, view: Sequence[float] | None = None, title: str | None = None):
    """Print version of :func:`sphere_figure`: two orthographic views (front and back hemisphere).

    ``view``: the direction (3,) the front panel faces (default: the Fréchet mean of the means
    shown, so the data face the reader). The back panel is the far hemisphere seen from behind, so
    every point is drawn once. Returns a matplotlib ``Figure`` in the publication style, axes
    titled ``front`` and ``back``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    points, projection = sphere_points(params, present, rows, max_items, n_samples, projection, seed)
    scale = _kappa_scale(points)
    if view is None:
        toward = _facing(points)
    else:
        toward = _numpy(view, "view")
        if toward.shape != (3,) or not np.isfinite(toward).all() or np.linalg.norm(toward) == 0:
            raise ValueError(f"view must be a non-zero finite direction of shape (3,), got {toward!r}")
        toward = toward / np.linalg.norm(toward)
    basis = _view_basis(toward)
    circles = _great_circles()
    with publication_style():
        fig, axes = plt.subplots(1, 2, figsize=(6.8, 3.6), layout="constrained")
        for ax, side in zip(axes, (1.0, -1.0)):
            flip = np.diag([side, 1.0, side])     # seen from behind: mirror left-right, depth reversed
            view = flip @ basis
            ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, color="#888888", lw=0.8))
            for c in circles:
                xyz = c @ view.T
                xyz[xyz[:, 2] < 0] = np.nan
                ax.plot(xyz[:, 0], xyz[:, 1], color="#DDDDDD", lw=0.5, zorder=0)
            for i, (m, p) in enumerate(points.items()):
                color, s = _color(m, i), _scaled(p.kappa, scale)
                if p.samples.size:
                    xyz = p.samples.reshape(-1, 3) @ view.T
                    alpha = np.tile(0.1 + 0.5 * s, len(p.samples))
                    keep = xyz[:, 2] >= 0
                    rgba = np.tile(to_rgba(color), (int(keep.sum()), 1))
                    rgba[:, 3] = alpha[keep]
                    ax.scatter(xyz[keep, 0], xyz[keep, 1], s=1.5, c=rgba, lw=0, zorder=1)
                xyz = p.means @ view.T
                keep = xyz[:, 2] >= 0
                ax.scatter(xyz[keep, 0], xyz[keep, 1], s=8 + 40 * s[keep], color=color,
                           edgecolors="black", linewidths=0.4, zorder=2, label=m if side > 0 else None)
            ax.set(xlim=(-1.05, 1.05), ylim=(-1.05, 1.05), aspect="equal", title="front" if side > 0 else "back")
            ax.axis("off")
        fig.legend(loc="outside lower center", ncol=len(points), title="marker size and sample opacity grow with κ")
        fig.suptitle(title or projection.describe())
    return fig


def kappa_histograms(params: Mapping, present: Mapping | None = None, bins: int = 30):
    """One histogram of κ per modality (bins shared by all, log-spaced over > 1 decade), median marked.

    Returns a matplotlib ``Figure`` with one axes per modality, titled by the modality.
    """
    import matplotlib.pyplot as plt

    n, _ = _check_params(params)
    if not (isinstance(bins, int) and bins >= 1):
        raise ValueError(f"bins must be an int >= 1, got {bins!r}")
    kappas = {m: _numpy(params[m][1], "kappa")[_selected_rows(n, m, present, None, n)] for m in params}
    every = np.concatenate(list(kappas.values()))
    if not every.size:
        raise ValueError("no κ to show: every row is absent in every modality")
    lo, hi = float(every.min()), float(every.max())
    wide = hi > 10 * lo                     # log-spaced bins only over more than a decade
    hi = hi if hi > lo else lo * 1.01
    edges = np.geomspace(lo, hi, bins + 1) if wide else np.linspace(lo, hi, bins + 1)
    with publication_style():
        fig, axes = plt.subplots(len(kappas), 1, sharex=True, squeeze=False, figsize=(3.4, 1.1 + 0.9 * len(kappas)),
                                 layout="constrained")
        for i, (ax, (m, k)) in enumerate(zip(axes[:, 0], kappas.items())):
            ax.hist(k, bins=edges, color=_color(m, i))
            if k.size:
                ax.axvline(np.median(k), color="black", lw=0.8, ls="--")
            ax.set_title(f"{m} (n = {k.size}, median κ = {np.median(k) if k.size else float('nan'):.3g})", loc="left")
            ax.set_ylabel("items")
        if wide:
            axes[-1, 0].set_xscale("log")
        axes[-1, 0].set_xlabel("κ (concentration)")
    return fig


def read_training_log(run: str | os.PathLike) -> dict[str, np.ndarray]:
    """The columns of a run's ``log.csv`` (:meth:`mmkit.model.run.Run.read_log`) as float arrays, NaN where empty."""
    rows = Run(run).read_log()
    return {c: np.array([r[c] for r in rows]) for c in rows[0]}


def training_curves(run: str | os.PathLike, title: str | None = None):
    """Training curves of a run: loss terms, validation mean MRR, mean κ per modality.

    Returns a matplotlib ``Figure`` with three axes (``loss``, ``validation``, ``κ``); terms the
    method does not have (empty columns) are left out.
    """
    import matplotlib.pyplot as plt

    log = read_training_log(run)
    epoch = log["epoch"]

    def have(c):
        return c in log and np.isfinite(log[c]).any()

    with publication_style():
        fig, (a, b, c) = plt.subplots(1, 3, figsize=(6.8, 2.4), layout="constrained")
        for term, label in (("loss", "total"), ("L_C", "L_C"), ("L_S", "L_S"), ("VIB", "VIB")):
            if have(term):
                a.plot(epoch, log[term], label=label)
        a.set(xlabel="epoch", ylabel="training loss", title="loss")
        a.legend()
        if have("val_score"):
            b.plot(epoch, log["val_score"], color=OKABE_ITO["black"])
        b.set(xlabel="epoch", ylabel="mean MRR (validation)", title="validation")
        for i, m in enumerate(MODALITIES):
            if have(f"kappa_{m}"):
                c.plot(epoch, log[f"kappa_{m}"], color=_color(m, i), label=m)
        c.set(xlabel="epoch", ylabel="mean κ", title="κ", yscale="log")
        if c.lines:
            c.legend()
        if title:
            fig.suptitle(title)
    return fig
