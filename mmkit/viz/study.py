"""Figures of the study "When does L_S help?" (``docs/study.md`` §8), from its stored tables.

* :func:`study_differences_figure` — each variant minus Baseline in per-task test MRR (SSW₁),
  the nine tasks as dots and their mean (``mean9``) with its 95 % interval, against each
  experiment's levels, with the equivalence band ±0.02 shaded;
* :func:`kappa_auroc_figure` — how well 1/κ flags the perturbed (or out-of-distribution) items:
  AUROC per level and variant, mean and range over seeds, 0.5 = chance.

Both take the rows of ``reports/tables/study_summary.csv`` / ``study_kappa.csv`` as dicts of
strings (as :mod:`csv` reads them) and return a matplotlib ``Figure`` in the publication style;
save it with :func:`mmkit.viz.style.export`.
"""
from __future__ import annotations

from collections import defaultdict

from mmkit.analysis.study import EXPERIMENTS, SLOPE_TASK, is_exploratory
from mmkit.viz.style import OKABE_ITO, publication_style

__all__ = ["VARIANT_COLORS", "study_differences_figure", "kappa_auroc_figure"]

VARIANT_COLORS = {"baseline": OKABE_ITO["blue"], "proposed": OKABE_ITO["vermillion"],
                  "debiased": OKABE_ITO["bluish_green"], "proposed-0.1": OKABE_ITO["orange"]}
_LABELS = {"baseline": "Baseline", "proposed": "Proposed (λ_S = 1)", "debiased": "debiased L_S (λ_S = 1)",
           "proposed-0.1": "Proposed (λ_S = 0.1)"}


def _experiments(rows: list[dict]) -> list[str]:
    return sorted({r["experiment"] for r in rows}, key=lambda e: int(e[1:]))


def _title(experiment: str, rows: list[dict] = ()) -> str:
    """Panel title; an experiment analysed on fewer seeds than its grid (``rows``' ``n_seeds``,
    :func:`~mmkit.analysis.study.is_exploratory`) says so."""
    if experiment not in EXPERIMENTS:
        return experiment
    title = f"{experiment}: {EXPERIMENTS[experiment].title}"
    seeds = {int(r["n_seeds"]) for r in rows if r.get("n_seeds") not in (None, "")}
    if seeds and is_exploratory(experiment, max(seeds)):
        title += f"\n(exploratory, {max(seeds)} seeds)"
    return title


#: Panels per row: more experiments wrap onto further rows.
_PER_ROW = 4


def _panels(n: int, height: float):
    """A figure with ``n`` panels, at most :data:`_PER_ROW` a row, sharing y; (figure, the n axes).
    Unused cells of the last row are switched off."""
    import matplotlib.pyplot as plt

    cols = min(n, _PER_ROW)
    rows = -(-n // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(2.4 * cols + 1.2, height * rows + 0.4 * (rows - 1)), squeeze=False,
                             sharey=True)
    flat = [ax for row in grid for ax in row]
    for ax in flat[n:]:
        ax.set_axis_off()
    for ax in flat[:n]:
        ax.yaxis.set_tick_params(labelleft=True)
    return fig, flat[:n]


def _shared_legend(fig, axes, bottom: float) -> None:
    """One legend below the panels with each label once, and room for it."""
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, bottom, 1, 1))


def study_differences_figure(rows: list[dict], metric: str = "MRR", distance: str = "ssw", margin: float = 0.02):
    """One panel per experiment: variant − Baseline per level (mean9 with 95 % CI; tasks as dots)."""
    # per-level rows only (E2's slope over its levels is a table row, not a level)
    picked = [r for r in rows if r["metric"] == metric and r["distance"] == distance and r["task"] != SLOPE_TASK]
    if not picked:
        raise ValueError(f"no rows of {metric} under {distance} to draw")
    experiments = _experiments(picked)
    with publication_style():
        fig, axes = _panels(len(experiments), 2.8)
        for ax, experiment in zip(axes, experiments):
            mine = [r for r in picked if r["experiment"] == experiment]
            levels = list(dict.fromkeys(r["level"] for r in mine))
            variants = list(dict.fromkeys(r["method"] for r in mine))
            width = 0.7 / len(variants)
            ax.axhspan(-margin, margin, color="0.9", zorder=0, lw=0)
            ax.axhline(0.0, color="0.4", lw=0.6, zorder=1)
            for j, variant in enumerate(variants):
                for i, level in enumerate(levels):
                    x = i + (j - (len(variants) - 1) / 2) * width
                    tasks = [float(r["difference"]) for r in mine
                             if r["method"] == variant and r["level"] == level and r["task"] != "mean9"]
                    ax.plot([x] * len(tasks), tasks, ".", ms=2.5, color=VARIANT_COLORS.get(variant, "0.3"), alpha=0.45)
                    nine = next(r for r in mine if r["method"] == variant and r["level"] == level and r["task"] == "mean9")
                    d, lo, hi = (float(nine[k]) for k in ("difference", "ci_low", "ci_high"))
                    ax.errorbar([x], [d], yerr=[[d - lo], [hi - d]], fmt="o", ms=4, capsize=2,
                                color=VARIANT_COLORS.get(variant, "0.3"), label=_LABELS.get(variant, variant) if i == 0 else None)
            ax.set_xticks(range(len(levels)))
            ax.set_xticklabels(levels, rotation=30 if max(len(str(v)) for v in levels) > 6 else 0)
            ax.set_title(_title(experiment, mine))
        for ax in axes[::_PER_ROW]:
            ax.set_ylabel(f"Δ test {metric} vs Baseline ({'SSW₁' if distance == 'ssw' else 'μ-cosine'})")
        _shared_legend(fig, axes, bottom=0.1 / (1 + (len(axes) - 1) // _PER_ROW))
    return fig


def kappa_auroc_figure(rows: list[dict]):
    """One panel per experiment with κ rows: AUROC of 1/κ per level and variant (mean over seeds, range as bars)."""
    if not rows:
        raise ValueError("no κ AUROC rows to draw")
    experiments = _experiments(rows)
    with publication_style():
        fig, axes = _panels(len(experiments), 2.6)
        for ax, experiment in zip(axes, experiments):
            groups: dict = defaultdict(list)
            for r in rows:
                if r["experiment"] == experiment:
                    groups[(r["level"], r["method"])].append(float(r["auroc_mean"]))
            levels = list(dict.fromkeys(level for level, _ in groups))
            variants = list(dict.fromkeys(v for _, v in groups))
            width = 0.7 / len(variants)
            ax.axhline(0.5, color="0.4", lw=0.6, ls="--")
            for j, variant in enumerate(variants):
                for i, level in enumerate(levels):
                    values = groups.get((level, variant), [])
                    if not values:
                        continue
                    x = i + (j - (len(variants) - 1) / 2) * width
                    mean = sum(values) / len(values)
                    ax.errorbar([x], [mean], yerr=[[mean - min(values)], [max(values) - mean]], fmt="o", ms=4, capsize=2,
                                color=VARIANT_COLORS.get(variant, "0.3"), label=_LABELS.get(variant, variant) if i == 0 else None)
            ax.set_xticks(range(len(levels)))
            ax.set_xticklabels(levels)
            ax.set_title(_title(experiment))
        for ax in axes[::_PER_ROW]:
            ax.set_ylabel("AUROC of 1/κ (perturbed or OOD items)")
        _shared_legend(fig, axes, bottom=0.12 / (1 + (len(axes) - 1) // _PER_ROW))
    return fig
