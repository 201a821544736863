"""What the method is about, drawn: each item's vMF *density* on the sphere, its triplet linked, and a
query's fused distribution with what it retrieves.

Every item of every modality is a von Mises–Fisher distribution ``vMF(μ, κ)`` on ``S^{d-1}``. It is
rotationally symmetric about ``μ``, and ``t = μᵀz`` has the marginal density (Mardia & Jupp 2000,
*Directional Statistics*, §9.3.2)

    f_d(t; κ) ∝ exp(κ t) (1 − t²)^((d−3)/2),   t ∈ [−1, 1].

The **cap** ``{z : μᵀz ≥ t_p}`` holds the share ``p`` of the mass when ``t_p`` is the ``(1 − p)``
quantile of ``f_d``; its angular radius ``θ_p = arccos t_p`` is how wide the distribution is, and it
shrinks as κ grows. The figures shade the caps holding 50 % and 90 % of each distribution:

* ``d = 3``: ``F(t) = (e^{κt} − e^{−κ}) / (e^κ − e^{−κ})``, so ``t_p = 1 + log(1 − p (1 − e^{−2κ})) / κ``
  in closed form (:func:`vmf_cap_angle`).
* ``d > 3``: the quantile comes from the integral of ``f_d`` in the angle, on a grid refined to
  where the mass lies (its tests check it against closed forms in d = 3 and d = 5). The picture is
  the tangent projection (:class:`mmkit.viz.sphere.SphereProjection`, tangent PCA at the Fréchet
  mean), which shows two of the d − 1 directions around a mean. Drawing the cap of ``S^{d-1}`` there
  would mix scales (the projection contracts the distances between means, the cap would keep its
  full radius); what is drawn is the disc around the projected mean holding the share ``p`` of the
  vMF's *projected* mass, :func:`vmf_projected_radius` (a draw at angle θ from μ lands at ``θ sqrt(B)``,
  ``B ~ Beta(1, (d−3)/2)``; checked against projected samples in d = 32). Its width follows κ on the
  same scale as the distances between the means. The cap radius in ``S^{d-1}`` is in the hover text.

A multimodal query is the normalised product of its vMFs, ``vMF(μ*, κ*)`` with ``κ* μ* = Σ_m κ_m μ_m``
(:func:`mmkit.retrieval.scores.fuse_vmf_product`): more concentrated than either part when they
agree. :func:`distribution_scene` collects what to draw — a handful of items (their audio, image
and text vMFs, linked), a query's parts, its fused vMF and the top-k items it retrieves (ranked by
:func:`mmkit.retrieval.scores.score`) — and :func:`distribution_figure` (matplotlib, for print) and
:func:`distribution_sphere` (plotly, interactive) draw it.
"""
from __future__ import annotations

import html
import math
import textwrap
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from mmkit.core.metrics import ranks_from_scores
from mmkit.retrieval.scores import fuse_vmf_product, score
from mmkit.viz.sphere import (fit_sphere_projection, plotly_title, plotly_top_margin, sphere_backdrop, sphere_name,
                              SphereProjection, _check_params, _color, _fit_lines, _great_circles, _numpy, _unit_rows,
                              _view_basis)
from mmkit.viz.style import MODALITY_COLORS, OKABE_ITO, plotly_template, publication_style
from mmkit.vocab import DISTANCES, MODALITIES

__all__ = ["MASSES", "vmf_cap_cosine", "vmf_cap_angle", "vmf_projected_radius", "cap_ring", "VmfCap",
           "DistributionScene", "distribution_scene", "distribution_figure", "distribution_sphere"]

#: The shares of the mass whose caps are drawn (inner, outer).
MASSES = (0.5, 0.9)
#: Colour of a fused query distribution.
QUERY_COLOR = OKABE_ITO["black"]
_SHORT = {"audio": "A", "image": "I", "text": "T"}
_GRID = 4097            # points of each integration grid in the angle
_TAIL = 1e-13           # mass left beyond the refined grid


# ----------------------------------------------------------------------------------------------
# the cap holding a share of the mass
# ----------------------------------------------------------------------------------------------
def _check_cap_args(kappa, d, mass) -> tuple[np.ndarray, int, float]:
    k = np.asarray(kappa, dtype=np.float64)
    if not (np.isfinite(k).all() and (k > 0).all()):
        raise ValueError(f"kappa must be finite and > 0, got {kappa!r}")
    if not (isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 2):
        raise ValueError(f"d must be an int >= 2 (the sphere S^(d-1) lives in R^d), got {d!r}")
    if not (isinstance(mass, (int, float)) and 0.0 < float(mass) < 1.0):
        raise ValueError(f"mass must be a share strictly between 0 and 1, got {mass!r}")
    return k, int(d), float(mass)


def _cap_cosine_d3(kappa: float, mass: float) -> float:
    """Closed form in d = 3: ``t_p = 1 + log(1 − p (1 − e^{−2κ})) / κ`` (stable for small and large κ)."""
    return float(min(1.0, max(-1.0, 1.0 + math.log1p(mass * math.expm1(-2.0 * kappa)) / kappa)))


def _log_density(theta: np.ndarray, kappa: float, d: int) -> np.ndarray:
    """log of the angle's density ``exp(κ (cos θ − 1)) sin^{d−2} θ`` (unnormalised; −inf where sin θ = 0)."""
    with np.errstate(divide="ignore"):
        log_g = kappa * (np.cos(theta) - 1.0) + (d - 2) * np.log(np.sin(theta))
    log_g[~np.isfinite(log_g)] = -np.inf
    return log_g


def _angle_grid(kappa: float, d: int) -> tuple[np.ndarray, np.ndarray]:
    """A grid ``θ`` over [0, θ_hi] and trapezoid weights (summing to 1) of the angle ``θ = arccos(μᵀz)``.

    First a grid over [0, π], then (up to three times) one over [0, θ_hi], where θ_hi leaves at most
    ``_TAIL`` of the mass beyond it: a concentrated vMF gets a fine grid where its mass is.
    """
    hi = math.pi
    for _ in range(4):
        theta = np.linspace(0.0, hi, _GRID)
        g = np.exp(_log_density(theta, kappa, d) - _log_density(theta, kappa, d).max())
        w = np.concatenate([[0.0], 0.5 * (g[1:] + g[:-1]) * np.diff(theta)])       # mass of each interval
        cum = np.cumsum(w) / w.sum()
        beyond = np.nonzero(cum >= 1.0 - _TAIL)[0]
        new_hi = float(theta[min(beyond[0] + 1, len(theta) - 1)]) if len(beyond) else hi
        if new_hi >= 0.5 * hi:
            break
        hi = new_hi
    dt = theta[1] - theta[0]
    weights = g * dt
    weights[[0, -1]] *= 0.5
    return theta, weights / weights.sum()


def _cap_angle_numeric(kappa: float, d: int, mass: float) -> float:
    """θ_p from the cumulative trapezoid integral of the angle's density on :func:`_angle_grid`."""
    theta, weights = _angle_grid(kappa, d)
    # cumulative mass at each grid point: the trapezoid rule's partial sums
    g = weights.copy()
    g[[0, -1]] *= 2.0
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (g[1:] + g[:-1]))])
    return float(np.interp(mass, cum / cum[-1], theta))


def vmf_cap_angle(kappa, d: int, mass: float = 0.5) -> np.ndarray:
    """Angular radius θ_p (radians) of the cap ``{z : μᵀz ≥ cos θ_p}`` that holds the share ``mass``
    of a ``vMF(μ, κ)`` on ``S^{d-1}``; elementwise over ``kappa`` (any shape, > 0).

    ``d = 3`` in closed form, any other ``d`` by numerical integration of the marginal of ``μᵀz``
    (module docstring). θ_p falls monotonically in κ, from the uniform distribution's cap as κ → 0.
    """
    k, d, mass = _check_cap_args(kappa, d, mass)
    if d == 3:
        out = [math.acos(_cap_cosine_d3(float(x), mass)) for x in k.reshape(-1)]
    else:
        out = [_cap_angle_numeric(float(x), d, mass) for x in k.reshape(-1)]
    return np.asarray(out, dtype=np.float64).reshape(k.shape)


def vmf_cap_cosine(kappa, d: int, mass: float = 0.5) -> np.ndarray:
    """``t_p = cos θ_p``: the ``(1 − mass)`` quantile of ``μᵀz`` under ``vMF(μ, κ)`` on ``S^{d-1}``."""
    k, d, mass = _check_cap_args(kappa, d, mass)
    if d == 3:
        return np.asarray([_cap_cosine_d3(float(x), mass) for x in k.reshape(-1)]).reshape(k.shape)
    return np.cos(vmf_cap_angle(k, d, mass))


def _projected_radius_numeric(kappa: float, d: int, mass: float) -> float:
    theta, weights = _angle_grid(kappa, d)
    b = 0.5 * (d - 3)

    def inside(rho: float) -> float:          # P(θ sqrt(B) <= rho), B ~ Beta(1, b)
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(theta > 0, rho**2 / np.maximum(theta, 1e-300) ** 2, np.inf)
        return float(weights @ np.where(x >= 1.0, 1.0, 1.0 - np.clip(1.0 - x, 0.0, 1.0) ** b))

    lo, hi = 0.0, float(theta[-1])
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if inside(mid) < mass else (lo, mid)
    return 0.5 * (lo + hi)


def vmf_projected_radius(kappa, d: int, mass: float = 0.5) -> np.ndarray:
    """Radius (radians on ``S²``) of the disc around the projected mean that holds the share ``mass``
    of a ``vMF(μ, κ)`` on ``S^{d-1}`` seen through :class:`~mmkit.viz.sphere.SphereProjection`.

    A draw ``z = cos θ μ + sin θ ξ`` (θ from the marginal of ``μᵀz``, ξ uniform on the directions
    orthogonal to μ) lands at distance ``R = θ sqrt(B)`` from μ's image, where ``B ~ Beta(1, (d−3)/2)``
    is the share of ξ in the two shown directions; so ``P(R <= ρ) = E_θ[1 − (1 − ρ²/θ²)_+^{(d−3)/2}]``.
    Exact when μ is the projection's base point (the Fréchet mean) and the shown directions are
    orthogonal to it; elsewhere the log map's distortion is left out. In d = 3 (B = 1) it is the
    cap's angular radius :func:`vmf_cap_angle`. In high dimension it is much smaller than the cap
    in ``S^{d-1}``: most of a draw's deviation lies in directions the picture does not show.
    """
    k, d, mass = _check_cap_args(kappa, d, mass)
    if d == 3:
        return vmf_cap_angle(k, d, mass)
    if d == 2:
        raise ValueError("d = 2: the circle needs no projection to S^2")
    return np.asarray([_projected_radius_numeric(float(x), d, mass) for x in k.reshape(-1)]).reshape(k.shape)


def _orthonormal_to(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    helper = np.eye(3)[int(np.argmin(np.abs(c)))]
    u = np.cross(c, helper)
    u /= np.linalg.norm(u)
    return u, np.cross(c, u)


def cap_ring(center, angle: float, n: int = 121) -> np.ndarray:
    """``n`` points (n, 3) of the circle at geodesic distance ``angle`` from ``center`` on ``S²``
    (closed: the last point repeats the first)."""
    c = np.asarray(center, dtype=np.float64)
    c = c / np.linalg.norm(c)
    u, v = _orthonormal_to(c)
    phi = np.linspace(0.0, 2.0 * np.pi, n)
    return np.cos(angle) * c + np.sin(angle) * (np.cos(phi)[:, None] * u + np.sin(phi)[:, None] * v)


def _arc(a: np.ndarray, b: np.ndarray, n: int = 48) -> np.ndarray:
    """The shorter great-circle arc (n, 3) from ``a`` to ``b`` on ``S²`` (slerp)."""
    omega = math.acos(float(np.clip(a @ b, -1.0, 1.0)))
    t = np.linspace(0.0, 1.0, n)[:, None]
    if omega < 1e-9:
        return np.repeat(a[None], n, axis=0)
    return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / math.sin(omega)


# ----------------------------------------------------------------------------------------------
# what to draw
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VmfCap:
    """One vMF as drawn: centre (3,) on ``S²``, κ, and per share of the mass in
    :attr:`DistributionScene.masses` the radius (radians) of the disc drawn on ``S²``
    (:func:`vmf_projected_radius`: the cap itself in d = 3) and the angular radius of the cap in
    ``S^{d-1}`` (:func:`vmf_cap_angle`). ``row`` is the split row (-1: a fused query)."""

    modality: str
    row: int
    label: str
    center: np.ndarray
    kappa: float
    angles: tuple[float, ...]
    cap_angles: tuple[float, ...]
    caption: str = ""


@dataclass(frozen=True)
class DistributionScene:
    """Everything :func:`distribution_figure` and :func:`distribution_sphere` draw.

    triplets : {row: {modality: VmfCap}}, the chosen items, each modality's vMF
    query : the fused query vMF (None: no query), made of ``query_parts`` of item ``query_row``,
        whose own vMFs are ``parts``
    top : the top-k items of ``target`` for the query, best first (``distance`` ranks them);
    true_rank : rank of the query item's own ``target`` among ``gallery_size`` items
    """

    dim: int
    projection: SphereProjection
    masses: tuple[float, ...]
    triplets: dict[int, dict[str, VmfCap]]
    query: VmfCap | None = None
    query_parts: tuple[str, ...] = ()
    query_row: int | None = None
    parts: dict[str, VmfCap] = field(default_factory=dict)
    target: str | None = None
    top: list[VmfCap] = field(default_factory=list)
    true_rank: float | None = None
    gallery_size: int = 0
    distance: str = "kl"

    def caps(self) -> list[VmfCap]:
        """Every cap of the scene (triplets, then the query, then its top-k)."""
        out = [c for item in self.triplets.values() for c in item.values()] + list(self.parts.values())
        return out + ([self.query] if self.query is not None else []) + list(self.top)


def _tensor(x) -> torch.Tensor:
    return torch.as_tensor(_numpy(x, "params"), dtype=torch.float64)


def distribution_scene(params: Mapping, rows: Sequence[int], present: Mapping | None = None,
                       ids: Sequence | None = None, captions: Sequence | None = None,
                       query: Sequence[str] | None = None, query_row: int | None = None, target: str | None = None,
                       k: int = 5, distance: str = "kl", masses: Sequence[float] = MASSES,
                       projection: SphereProjection | None = None) -> DistributionScene:
    """Collect the caps of a handful of items, and optionally of a query and its top-k.

    Parameters
    ----------
    params : {modality: (loc (N, d), kappa (N,))}, e.g. ``Run(run).encode(split)`` of a vMF run
    rows : the items (split rows, at most 12) whose audio, image and text vMFs are drawn and linked
    present : {modality: bool (N,)}; absent modalities of an item are left out
    ids, captions : per row (N,), for labels and hover text
    query : the query's modalities (e.g. ``("audio", "image")``), fused by the product of vMFs;
        ``query_row`` (default ``rows[0]``) is the item they come from
    target : the modality to retrieve (default: the one modality not in ``query``); its present
        items form the gallery, ranked by :func:`mmkit.retrieval.scores.score` with ``distance``
    k : how many of the best-ranked target items to draw
    masses : shares of the mass whose caps are drawn (inner first)
    projection : ``S^{d-1} → S²`` (default: fitted on every drawn mean; the identity when d = 3)
    """
    n, d = _check_params(params)
    rows = [int(r) for r in np.asarray(rows, dtype=np.int64).reshape(-1)]
    if not 1 <= len(rows) <= 12:
        raise ValueError(f"rows: choose 1 to 12 items to draw (a handful), got {len(rows)}")
    if min(rows) < 0 or max(rows) >= n:
        raise IndexError(f"rows must lie in [0, {n}), got {rows}")
    masses = tuple(float(m) for m in masses)
    if not masses or any(not 0 < m < 1 for m in masses) or list(masses) != sorted(masses):
        raise ValueError(f"masses must be increasing shares in (0, 1), got {masses}")
    mask = {m: (np.ones(n, bool) if present is None or m not in present else np.asarray(present[m], bool))
            for m in params}
    ids = [str(i) for i in ids] if ids is not None else [f"row {r}" for r in range(n)]
    captions = [str(c) for c in captions] if captions is not None else [""] * n
    if len(ids) != n or len(captions) != n:
        raise ValueError(f"ids and captions must have one entry per row (N = {n}), got {len(ids)} and {len(captions)}")
    loc = {m: _unit_rows(_numpy(params[m][0], f"params[{m!r}] loc"), f"params[{m!r}] loc") for m in params}
    kap = {m: _numpy(params[m][1], f"params[{m!r}] kappa") for m in params}

    drawn: list[tuple[str, int, np.ndarray, float, str]] = []     # (kind, row, loc (d,), kappa, modality)
    for r in rows:
        for m in params:
            if mask[m][r]:
                drawn.append(("item", r, loc[m][r], float(kap[m][r]), m))
    if not drawn:
        raise ValueError(f"no item to show: rows {rows} have no modality present")

    fused = None
    top_rows: list[int] = []
    true_rank, gallery_size = None, 0
    parts: tuple[str, ...] = ()
    if query is not None:
        parts = tuple(m for m in MODALITIES if m in set(query)) + tuple(m for m in query if m not in MODALITIES)
        unknown = [m for m in parts if m not in params]
        if not parts or unknown:
            raise ValueError(f"query must name modalities of params {list(params)}, got {list(query)!r}")
        if target is None:
            rest = [m for m in params if m not in parts]
            if len(rest) != 1:
                raise ValueError(f"target: name the modality to retrieve (one of {rest})")
            target = rest[0]
        if target not in params or target in parts:
            raise ValueError(f"target must be a modality of params outside the query {parts}, got {target!r}")
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        if not (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        query_row = rows[0] if query_row is None else int(query_row)
        if not 0 <= query_row < n:
            raise IndexError(f"query_row must lie in [0, {n}), got {query_row}")
        missing = [m for m in parts if not mask[m][query_row]]
        if missing:
            raise ValueError(f"query_row {query_row} ({ids[query_row]}) has no {missing}")
        q = [(_tensor(loc[m][query_row:query_row + 1]), _tensor(kap[m][query_row:query_row + 1])) for m in parts]
        f_loc, f_kappa = fuse_vmf_product([a for a, _ in q], [b for _, b in q])
        fused = (f_loc[0].numpy(), float(f_kappa[0]))
        gallery = np.nonzero(mask[target])[0]
        gallery_size = len(gallery)
        if not gallery_size:
            raise ValueError(f"target {target!r}: no item of the split has it, nothing to retrieve")
        scores = score(q, (_tensor(loc[target][gallery]), _tensor(kap[target][gallery])), distance=distance)[0]
        order = torch.argsort(-scores, stable=True)[:k]
        top_rows = [int(gallery[i]) for i in order]
        where = np.nonzero(gallery == query_row)[0]
        if len(where):
            true_rank = float(ranks_from_scores(scores[None], torch.tensor([int(where[0])]))[0])
        drawn += [("part", query_row, loc[m][query_row], float(kap[m][query_row]), m) for m in parts]
        drawn.append(("query", query_row, fused[0], fused[1], "query"))
        drawn += [("top", r, loc[target][r], float(kap[target][r]), target) for r in top_rows]

    if projection is None:
        projection = fit_sphere_projection(np.stack([x[2] for x in drawn]))
    elif projection.dim != d:
        raise ValueError(f"projection was fitted for d = {projection.dim}, the params have d = {d}")
    centers = projection(np.stack([x[2] for x in drawn]))
    kappas = np.array([x[3] for x in drawn])
    cap_angles = {p: vmf_cap_angle(kappas, d, p) for p in masses}
    angles = cap_angles if d == 3 else {p: vmf_projected_radius(kappas, d, p) for p in masses}

    def cap(i: int) -> VmfCap:
        kind, r, _, kappa, m = drawn[i]
        label = (f"query {'&'.join(_SHORT.get(p, p) for p in parts)} of {ids[r]}" if kind == "query"
                 else f"{ids[r]} · {m}")
        return VmfCap(m, -1 if kind == "query" else r, label, centers[i], kappa,
                      tuple(float(angles[p][i]) for p in masses), tuple(float(cap_angles[p][i]) for p in masses),
                      "" if kind == "query" else captions[r])

    triplets: dict[int, dict[str, VmfCap]] = {}
    for i, (kind, r, _, _, m) in enumerate(drawn):
        if kind == "item":
            triplets.setdefault(r, {})[m] = cap(i)
    query_cap = next((cap(i) for i, x in enumerate(drawn) if x[0] == "query"), None)
    part_caps = {x[4]: cap(i) for i, x in enumerate(drawn) if x[0] == "part"}
    top = [cap(i) for i, x in enumerate(drawn) if x[0] == "top"]
    return DistributionScene(d, projection, masses, triplets, query_cap, parts, query_row if query else None,
                             part_caps, target if query else None, top, true_rank, gallery_size, distance)


# ----------------------------------------------------------------------------------------------
# matplotlib: two orthographic panels
# ----------------------------------------------------------------------------------------------
def _facing(centers: Sequence[np.ndarray]) -> np.ndarray:
    s = np.sum(centers, axis=0)
    return s / np.linalg.norm(s) if np.linalg.norm(s) > 1e-6 else np.asarray(centers[0], dtype=np.float64)


def _visible(xyz: np.ndarray) -> np.ndarray:
    """Orthographic (x, y) of view coordinates; points behind the limb are moved onto it."""
    xy = xyz[:, :2].copy()
    behind = xyz[:, 2] < 0
    if behind.any():
        xy[behind] /= np.maximum(np.linalg.norm(xy[behind], axis=1, keepdims=True), 1e-12)
    return xy


def _draw_cap(ax, cap: VmfCap, view: np.ndarray, color: str, masses, outline: str = "-", lw: float = 0.7,
              fill: bool = True) -> bool:
    """Shade the caps of ``cap`` (outer first); False when it lies wholly behind the sphere."""
    from matplotlib.patches import Polygon

    shown = False
    for angle, mass in sorted(zip(cap.angles, masses), reverse=True):
        xyz = cap_ring(cap.center, angle) @ view.T
        if (xyz[:, 2] < 0).all() and (cap.center @ view[2]) < 0:
            continue
        shown = True
        xy = _visible(xyz)
        inner = mass == min(masses)
        if fill:
            ax.add_patch(Polygon(xy, closed=True, facecolor=color, alpha=0.32 if inner else 0.13, lw=0, zorder=2))
        ax.add_patch(Polygon(xy, closed=True, fill=False, edgecolor=color, lw=lw if inner else 0.5 * lw,
                             ls=outline if inner else ":", zorder=3))
    return shown


def _sphere_axes(ax, view: np.ndarray) -> None:
    from matplotlib.patches import Circle

    ax.add_patch(Circle((0, 0), 1.0, fill=False, color="#888888", lw=0.8))
    for c in _great_circles():
        xyz = c @ view.T
        xyz[xyz[:, 2] < 0] = np.nan
        ax.plot(xyz[:, 0], xyz[:, 1], color="#E4E4E4", lw=0.5, zorder=0)
    ax.set(xlim=(-1.04, 1.04), ylim=(-1.04, 1.04), aspect="equal", xticks=[], yticks=[])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _degrees(cap: VmfCap, masses, dim: int) -> str:
    drawn = ", ".join(f"{100 * p:.0f} %: {math.degrees(a):.1f}°" for p, a in zip(masses, cap.angles))
    if dim == 3:
        return f"cap radius {drawn}"
    true = ", ".join(f"{math.degrees(a):.1f}°" for a in cap.cap_angles)
    return f"drawn radius {drawn}; cap radius in {sphere_name(dim - 1)}: {true}"


def distribution_figure(scene: DistributionScene, title: str | None = None, width: float = 6.8):
    """Print figure of a :class:`DistributionScene`: orthographic views of ``S²``.

    Left panel (``items``): each chosen item's vMFs, one colour per modality, the cap holding 50 %
    of the mass shaded dark and the 90 % cap light (dotted outline), the item's modalities linked by
    great-circle arcs and numbered. Right panel (``query``, when the scene has one): the query's
    parts, their fused vMF (black) and the top-k items of the target numbered by rank, the true
    match ringed. Each panel faces the centre of what it shows; caps behind the sphere are counted
    in the panel's caption. Returns a matplotlib ``Figure`` (publication style).
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    two = scene.query is not None
    masses = scene.masses
    with publication_style():
        fig, axes = plt.subplots(1, 2 if two else 1, figsize=(width, width / 2 + 0.9 if two else width * 0.6),
                                 layout="constrained", squeeze=False)
        axes = axes[0]
        # items and their triplets
        ax = axes[0]
        items = scene.triplets
        view = _view_basis(_facing([c.center for item in items.values() for c in item.values()]))
        _sphere_axes(ax, view)
        hidden = 0
        for number, (row, caps) in enumerate(items.items(), 1):
            centers = [c.center for c in caps.values()]
            for i in range(len(centers)):
                for j in range(i + 1, len(centers)):
                    xyz = _arc(centers[i], centers[j]) @ view.T
                    xyz[xyz[:, 2] < 0] = np.nan
                    ax.plot(xyz[:, 0], xyz[:, 1], color="#555555", lw=0.7, zorder=4)
            for m, c in caps.items():
                hidden += not _draw_cap(ax, c, view, _color(m, MODALITIES.index(m) if m in MODALITIES else 0), masses)
                xyz = c.center @ view.T
                if xyz[2] >= 0:
                    ax.plot(*xyz[:2], "o", ms=2.5, color=_color(m, 0), mec="black", mew=0.3, zorder=5)
            mid = _facing(centers) @ view.T
            if mid[2] >= 0:
                ax.annotate(str(number), mid[:2], xytext=(4, 4), textcoords="offset points", fontsize=7,
                            fontweight="bold", zorder=6)
        ax.set_title("each item's audio, image and text vMF", loc="left")
        names = [f"{n}: {_short_id(scene, r)}" for n, r in enumerate(items, 1)]
        ax.set_xlabel(_wrapped("; ".join(names) + (f" ({hidden} caps behind the sphere)" if hidden else ""),
                               width * (0.5 if two else 1.0)))
        # the query
        if two:
            ax = axes[1]
            q = scene.query
            view = _view_basis(q.center)
            _sphere_axes(ax, view)
            hidden = 0
            for m, part in scene.parts.items():
                hidden += not _draw_cap(ax, part, view, _color(m, 0), masses, lw=0.6, fill=False)
            for rank, c in enumerate(scene.top, 1):
                hidden += not _draw_cap(ax, c, view, _color(c.modality, 0), masses[:1], lw=0.6)
                xyz = c.center @ view.T
                if xyz[2] >= 0:
                    true = c.row == scene.query_row
                    ax.plot(*xyz[:2], "o", ms=7 if true else 5, color="white",
                            mec=OKABE_ITO["bluish_green"] if true else _color(c.modality, 0), mew=1.4 if true else 0.8,
                            zorder=6)
                    ax.annotate(str(rank), xyz[:2], ha="center", va="center", fontsize=5.5, zorder=7)
            _draw_cap(ax, q, view, QUERY_COLOR, masses, lw=1.2)
            ax.plot(0, 0, "D", ms=3, color=QUERY_COLOR, zorder=8)
            parts = "&".join(_SHORT.get(p, p) for p in scene.query_parts)
            ax.set_title(f"query {parts} → {scene.target}: fused vMF and top {len(scene.top)}", loc="left")
            kappas = ", ".join(f"κ_{_SHORT.get(m, m)} = {c.kappa:.3g}" for m, c in scene.parts.items())
            rank = (f"true match at rank {scene.true_rank:g} of {scene.gallery_size}" if scene.true_rank is not None
                    else "true match not in the gallery")
            ax.set_xlabel(_wrapped(f"κ* = ‖Σ κ_m μ_m‖ = {q.kappa:.3g} ({kappas}); {rank}; ranked by {scene.distance}"
                                   + (f" ({hidden} caps behind)" if hidden else ""), width * 0.5))
        handles = [Patch(facecolor=MODALITY_COLORS.get(m, "#999999"), alpha=0.5, label=m)
                   for m in MODALITIES if any(m in caps for caps in items.values())]
        if two:
            handles.append(Patch(facecolor=QUERY_COLOR, alpha=0.4, label="fused query"))
            handles.append(Line2D([], [], marker="o", ls="", mfc="white", mec=OKABE_ITO["bluish_green"], mew=1.4,
                                  label="true match"))
        mass = "mass" if scene.dim == 3 else "projected mass"
        handles.append(Patch(facecolor="#999999", alpha=0.32,
                             label=f"shaded: {100 * masses[0]:.0f} % of the {mass} (dark), "
                                   + ", ".join(f"{100 * p:.0f} %" for p in masses[1:]) + " (light, dotted)"))
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 3 if two else 2))
        fig.suptitle(_wrapped(title or _describe(scene), width, 8.0), fontsize=8)
    return fig


def _short_id(scene: DistributionScene, row: int, n: int = 22) -> str:
    label = next(iter(scene.triplets[row].values())).label.rsplit(" · ", 1)[0]
    return label if len(label) <= n else label[: n - 1] + "…"


def _wrapped(text: str, inches: float, points: float = 8.0) -> str:
    """``text`` broken into lines no wider than ``inches`` at ``points`` size (DejaVu Sans metrics)."""
    return "\n".join(_fit_lines(text, 0.92 * inches * 72.0, points))


def _describe(scene: DistributionScene) -> str:
    p = scene.projection
    if p.is_identity:
        where = "d = 3: the sphere itself"
    else:
        where = (f"{sphere_name(p.dim - 1)} → S² by tangent PCA ({100 * sum(p.explained_variance_ratio):.0f} % of "
                 f"the tangent variance shown); discs hold the share of each vMF's projected mass")
    return f"vMF densities: {where}"


# ----------------------------------------------------------------------------------------------
# plotly: the interactive sphere
# ----------------------------------------------------------------------------------------------
def _mesh(center: np.ndarray, angle: float, lift: float, n_rings: int = 6, n: int = 61) -> tuple:
    """Vertices and triangles of a cap that follows the sphere (concentric rings, radius ``lift``)."""
    c = center / np.linalg.norm(center)
    u, v = _orthonormal_to(c)
    phi = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    pts = [c]
    for a in np.linspace(angle / n_rings, angle, n_rings):
        pts += list(np.cos(a) * c + np.sin(a) * (np.cos(phi)[:, None] * u + np.sin(phi)[:, None] * v))
    pts = np.asarray(pts) * lift
    tri = [(0, 1 + j, 1 + (j + 1) % n) for j in range(n)]
    for r in range(n_rings - 1):
        a0, b0 = 1 + r * n, 1 + (r + 1) * n
        for j in range(n):
            j1 = (j + 1) % n
            tri += [(a0 + j, b0 + j, b0 + j1), (a0 + j, b0 + j1, a0 + j1)]
    i, j, k = np.asarray(tri).T
    return pts, i, j, k


def distribution_sphere(scene: DistributionScene, title: str | None = None, width: int = 900, height: int = 680):
    """Interactive plotly sphere of a :class:`DistributionScene`.

    Traces: ``sphere``, ``grid``; per drawn vMF a shaded cap per mass (``mesh``) and its outline;
    the items' means (hover: id, modality, κ, cap radii, caption), grey arcs linking each item's
    modalities, the fused query (black) and the top-k items numbered by rank. The title is wrapped
    to the figure's width (:func:`plotly_title`).
    """
    import plotly.graph_objects as go

    masses = scene.masses
    traces = sphere_backdrop(opacity=0.18, surface="#CCCCCC", grid="#E0E0E0")

    def add_cap(c: VmfCap, color: str, group: str, show: bool, which=None) -> None:
        for level, (angle, mass) in enumerate(sorted(zip(c.angles, masses), reverse=True)):
            if which is not None and mass not in which:
                continue
            inner = mass == min(masses)
            pts, i, j, k = _mesh(c.center, angle, 1.002 + 0.002 * level)
            traces.append(go.Mesh3d(x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], i=i, j=j, k=k, color=color,
                                    opacity=0.35 if inner else 0.15, name=f"{group} {100 * mass:.0f} % cap",
                                    legendgroup=group, showlegend=False, hoverinfo="skip",
                                    lighting=dict(ambient=1.0, diffuse=0.0, specular=0.0, fresnel=0.0)))
            ring = cap_ring(c.center, angle, 97) * 1.006
            traces.append(go.Scatter3d(x=ring[:, 0], y=ring[:, 1], z=ring[:, 2], mode="lines", legendgroup=group,
                                       name=f"{group} {100 * mass:.0f} % outline", showlegend=False, hoverinfo="skip",
                                       line=dict(color=color, width=4 if inner else 2,
                                                 dash="solid" if inner else "dot")))

    def hover(c: VmfCap, extra: str = "") -> str:
        lines = [f"<b>{html.escape(c.label)}</b>", f"κ = {c.kappa:.3g}", _degrees(c, masses, scene.dim)]
        if extra:
            lines.append(extra)
        lines += [html.escape(line) for line in textwrap.wrap(c.caption, 60)]
        return "<br>".join(lines)

    by_modality: dict[str, list[VmfCap]] = {}
    for caps in scene.triplets.values():
        for m, c in caps.items():
            by_modality.setdefault(m, []).append(c)
    for i, (m, caps) in enumerate(by_modality.items()):
        color = _color(m, i)
        for c in caps:
            add_cap(c, color, m, False)
        xyz = np.stack([c.center for c in caps]) * 1.01
        traces.append(go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="markers", name=m, legendgroup=m,
                                   marker=dict(size=4, color=color, line=dict(color="black", width=1)),
                                   text=[hover(c) for c in caps], hoverinfo="text"))
    links = []
    for caps in scene.triplets.values():
        cs = [c.center for c in caps.values()]
        links += [np.vstack([_arc(cs[a], cs[b]) * 1.01, np.full((1, 3), np.nan)])
                  for a in range(len(cs)) for b in range(a + 1, len(cs))]
    if links:
        xyz = np.concatenate(links)
        traces.append(go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="lines", name="same item",
                                   line=dict(color="#555555", width=3), hoverinfo="skip"))
    if scene.query is not None:
        q = scene.query
        for m, c in scene.parts.items():
            if scene.query_row not in scene.triplets or m not in scene.triplets[scene.query_row]:
                add_cap(c, _color(m, 0), m, False)
        for c in scene.top:
            add_cap(c, _color(c.modality, 0), "top-k", False, which=masses[:1])
        xyz = np.stack([c.center for c in scene.top]) * 1.015
        traces.append(go.Scatter3d(
            x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], mode="markers+text", name=f"top {len(scene.top)} {scene.target}",
            text=[str(r) for r in range(1, len(scene.top) + 1)], textposition="top center",
            hovertext=[hover(c, f"rank {r}" + (" — the true match" if c.row == scene.query_row else ""))
                       for r, c in enumerate(scene.top, 1)], hoverinfo="text",
            marker=dict(size=[11 if c.row == scene.query_row else 7 for c in scene.top],
                        symbol=["diamond-open" if c.row == scene.query_row else "circle-open" for c in scene.top],
                        color=[OKABE_ITO["bluish_green"] if c.row == scene.query_row else _color(c.modality, 0)
                               for c in scene.top], line=dict(width=3))))
        add_cap(q, QUERY_COLOR, "query", False)
        traces.append(go.Scatter3d(x=[q.center[0] * 1.015], y=[q.center[1] * 1.015], z=[q.center[2] * 1.015],
                                   mode="markers", name="fused query", marker=dict(size=6, color=QUERY_COLOR,
                                                                                   symbol="diamond"),
                                   text=[hover(q, "product of " + " & ".join(scene.query_parts))], hoverinfo="text"))
    axis = dict(visible=False, range=[-1.05, 1.05])
    eye = 1.6 * _facing([c.center for c in scene.caps()])
    fig = go.Figure(traces)
    header = plotly_title(title or _describe(scene), width, height)
    fig.update_layout(template=plotly_template(), title=header,
                      width=width, height=height, margin=dict(l=0, r=0, t=plotly_top_margin(header), b=0),
                      scene=dict(xaxis=axis, yaxis=axis, zaxis=axis, aspectmode="cube",
                                 camera=dict(eye=dict(x=eye[0], y=eye[1], z=eye[2]))),
                      legend=dict(itemsizing="constant",
                                  title=f"shaded: {100 * masses[0]:.0f} % / {100 * masses[-1]:.0f} %<br>"
                                        f"of each vMF's{'' if scene.dim == 3 else '<br>projected'} mass"))
    return fig
