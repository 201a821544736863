"""Figures of results (matplotlib, publication style): the λ_S sweep, κ reliability and runtime.

Each function takes stored results — long-format rows of :func:`mmkit.analysis.evaluate.aggregate` /
:func:`mmkit.analysis.runtime.runtime_rows`, or :func:`mmkit.analysis.evaluate.kappa_reliability` output — and
returns a ``matplotlib.figure.Figure`` drawn in :func:`mmkit.viz.style.publication_style`; save it
with :func:`mmkit.viz.style.export`. Nothing is typed in.
"""
from __future__ import annotations

import math

from mmkit.viz.style import METHOD_COLORS, publication_style

__all__ = ["lambda_sweep_figure", "kappa_reliability_figure", "runtime_figure"]


def _pick(rows: list[dict], **match) -> list[dict]:
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


def lambda_sweep_figure(rows: list[dict], metric: str = "MRR", tasks=("A&T->I", "A&I->T", "I&T->A")):
    """``metric`` (mean ± std over seeds) against λ_S for Proposed, one panel per task, with
    Baseline (λ_S = 0) and L_S only as horizontal references.

    Parameters
    ----------
    rows : long-format rows holding Proposed at several ``lambda_s`` (and optionally baseline, ls_only)
    """
    import matplotlib.pyplot as plt

    sweep = [r for r in rows if r["method"] == "proposed" and r["metric"] == metric and r["lambda_s"] not in ("", "inf")]
    if not sweep:
        raise ValueError(f"rows hold no Proposed results for metric {metric!r}")
    with publication_style():
        fig, axes = plt.subplots(1, len(tasks), figsize=(2.3 * len(tasks), 2.1), sharey=True, squeeze=False)
        for ax, task in zip(axes[0], tasks):
            pts = sorted((float(r["lambda_s"]), r["mean"], r["std"]) for r in sweep if r["task"] == task)
            if pts:
                lam, mean, std = zip(*pts)
                ax.errorbar(lam, mean, yerr=std, marker="o", capsize=2, color=METHOD_COLORS["proposed"],
                            label="Proposed")
            for method, style in (("baseline", "--"), ("ls_only", ":")):
                ref = _pick(rows, method=method, metric=metric, task=task)
                if ref:
                    ax.axhline(ref[0]["mean"], ls=style, color=METHOD_COLORS[method],
                               label="Baseline (λ_S = 0)" if method == "baseline" else "L_S only")
            ax.set_xscale("log")
            ax.set_xlabel("λ_S")
            ax.set_title(task.replace("->", "→"))
        axes[0][0].set_ylabel(metric)
        axes[0][-1].legend(loc="best")
        fig.tight_layout()
    return fig


def kappa_reliability_figure(reliability: dict[str, dict], title: str = ""):
    """R@1 (%) per query-κ quantile bin (1 = least concentrated) for each task
    (:func:`mmkit.analysis.evaluate.kappa_reliability` output); the legend gives each task's Spearman
    correlation ρ between κ and the reciprocal rank (ρ > 0: confident queries are retrieved better).
    Composed (fused) queries are drawn dashed, single-modality queries solid."""
    import matplotlib.pyplot as plt

    if not reliability:
        raise ValueError("reliability holds no tasks")
    with publication_style():
        fig, ax = plt.subplots(figsize=(5.0, 2.4))
        for task, res in reliability.items():
            ax.plot(range(1, len(res["bins"]) + 1), [b["R@1"] for b in res["bins"]], marker="o",
                    linestyle="--" if "&" in task else "-",
                    label=f"{task.replace('->', '→')} (ρ = {res['spearman_kappa_vs_reciprocal_rank']:+.2f})")
        n_bins = max(len(res["bins"]) for res in reliability.values())
        ax.set_xticks(range(1, n_bins + 1))
        ax.set_xlabel("query κ quantile bin (1 = lowest κ)")
        ax.set_ylabel("R@1 (%)")
        if title:
            ax.set_title(title)
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
    return fig


def runtime_figure(rows: list[dict]):
    """Seconds per training triplet (mean ± std over repeats), Baseline vs Proposed per setting."""
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["metric"] == "sec_per_triplet"]
    settings = sorted({r["task"] for r in rows})
    if not settings:
        raise ValueError("rows hold no sec_per_triplet results")
    with publication_style():
        fig, ax = plt.subplots(figsize=(3.4, 2.2))
        width = 0.38
        for i, method in enumerate(("baseline", "proposed")):
            vals = [_pick(rows, method=method, task=s) for s in settings]
            xs = [j + (i - 0.5) * width for j in range(len(settings))]
            ax.bar(xs, [v[0]["mean"] * 1e3 if v else 0 for v in vals], width,
                   yerr=[v[0]["std"] * 1e3 if v else 0 for v in vals], capsize=2, color=METHOD_COLORS[method],
                   label=method.capitalize())
        ax.set_xticks(range(len(settings)), [s.split(":", 1)[-1] for s in settings])
        ax.set_ylabel("ms per training triplet")
        ax.legend()
        fig.tight_layout()
    return fig
