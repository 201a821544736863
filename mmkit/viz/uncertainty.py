"""Does κ know anything a point model doesn't? One figure (issue 23 section 4).

:func:`uncertainty_figure`: a panel per modality with views, κ of every (item, view) pair against the
view's severity, with Spearman ρ and its item-bootstrap interval
(:func:`mmkit.analysis.uncertainty.kappa_severity`); and a risk–coverage panel, κ against the
point model's top-1 score margin on the same queries (:func:`mmkit.analysis.uncertainty.risk_coverage`,
AURC in the legend; lower is better). Matplotlib in the publication style of :mod:`mmkit.viz.style`;
write it with :func:`mmkit.viz.style.export`.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from mmkit.analysis.uncertainty import kappa_severity
from mmkit.viz.style import MODALITY_COLORS, OKABE_ITO, publication_style

__all__ = ["uncertainty_figure"]

_CURVE_COLORS = (OKABE_ITO["vermillion"], OKABE_ITO["blue"], OKABE_ITO["bluish_green"], OKABE_ITO["black"])


def uncertainty_figure(kappa: Mapping[str, np.ndarray], severity: Mapping[str, np.ndarray],
                       curves: Mapping[str, Mapping] | None = None, title: str | None = None):
    """κ vs view severity per modality (with ρ), and risk–coverage curves side by side.

    Parameters
    ----------
    kappa : modality -> array (N, K_m), κ of every view (:func:`~mmkit.analysis.uncertainty.view_concentrations`)
    severity : modality -> array (N, K_m) in [0, 1]; the modalities drawn are those in both mappings
    curves : label -> the dict of :func:`~mmkit.analysis.uncertainty.risk_coverage` (e.g. ``{"κ of the query":
        ..., "top-1 margin": ...}``), drawn in one panel; None: no such panel
    title : the figure's title (default: none)

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    modalities = [m for m in kappa if m in severity]
    if not modalities and not curves:
        raise ValueError("uncertainty_figure: nothing to draw (no modality with both kappa and severity, no curves)")
    n = len(modalities) + (1 if curves else 0)
    with publication_style():
        fig, axes = plt.subplots(1, n, figsize=(2.4 * n, 2.4), squeeze=False)
        axes = axes[0]
        for ax, m in zip(axes, modalities):
            k, s = np.asarray(kappa[m], dtype=float), np.asarray(severity[m], dtype=float)
            keep = np.isfinite(k) & np.isfinite(s)
            rho = kappa_severity(k, s, n_resamples=200)
            ax.scatter(s[keep], k[keep], s=4, alpha=0.4, color=MODALITY_COLORS.get(m, "0.3"), linewidths=0)
            ax.set_yscale("log")
            ax.set_xlabel(f"{m} view severity")
            ax.set_title(f"{m}: ρ = {rho['rho']:.2f} [{rho['ci_low']:.2f}, {rho['ci_high']:.2f}]")
        axes[0].set_ylabel("κ of the view")
        if curves:
            ax = axes[-1]
            for color, (label, curve) in zip(_CURVE_COLORS * len(curves), curves.items()):
                ax.plot(curve["coverage"], curve["risk"], color=color, label=f"{label} (AURC {curve['aurc']:.3f})")
            ax.set_xlabel("coverage (most confident queries kept)")
            ax.set_ylabel("risk (1 − accuracy)")
            ax.set_xlim(0, 1)
            ax.legend(loc="lower right")
            ax.set_title("selective retrieval")
        if title:
            fig.suptitle(title)
        fig.tight_layout()
    return fig
