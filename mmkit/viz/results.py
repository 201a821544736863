"""Figures of results (matplotlib, publication style): the λ_S sweep, κ reliability and runtime.

Each function takes stored results — long-format rows of :func:`mmkit.analysis.evaluate.aggregate` /
:func:`mmkit.analysis.runtime.runtime_rows`, or :func:`mmkit.analysis.evaluate.kappa_reliability` output — and
returns a ``matplotlib.figure.Figure`` drawn in :func:`mmkit.viz.style.publication_style`; save it
with :func:`mmkit.viz.style.export`. Nothing is typed in.
"""
from __future__ import annotations

import math

from mmkit.viz.style import METHOD_COLORS, OKABE_ITO, publication_style

__all__ = ["lambda_sweep_figure", "wilson_interval", "kappa_reliability_groups", "kappa_reliability_figure",
           "runtime_figure"]


def _pick(rows: list[dict], **match) -> list[dict]:
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


def _split_at_gap(values: list[float], decades: float = 2.0) -> tuple[list[float], list[float]]:
    """Split sorted positive ``values`` at their widest gap when it spans more than ``decades``
    decades (the limit case 1e-12 against the sweep 0.01..100); else nothing on the left."""
    logs = [math.log10(v) for v in values]
    gaps = [b - a for a, b in zip(logs, logs[1:])]
    if not gaps or max(gaps) <= decades:
        return [], values
    cut = gaps.index(max(gaps)) + 1
    return values[:cut], values[cut:]


def _log_limits(values: list[float], pad: float = 0.35) -> tuple[float, float]:
    """x-limits of a log axis: the values' range widened by ``pad`` decades on each side."""
    return 10 ** (math.log10(min(values)) - pad), 10 ** (math.log10(max(values)) + pad)


def _break_marks(left, right) -> None:
    """The slashes of a broken x-axis at the right end of ``left`` and the left end of ``right``
    (markers, so that they slant alike on axes of different widths)."""
    marks = dict(marker=[(-1, -1), (1, 1)], markersize=5, linestyle="none", color="black", mec="black", mew=0.8,
                 clip_on=False, gid="axis-break")
    left.plot([1], [0], transform=left.transAxes, **marks)
    right.plot([0], [0], transform=right.transAxes, **marks)


def lambda_sweep_figure(rows: list[dict], metric: str = "MRR", tasks=("A&T->I", "A&I->T", "I&T->A")):
    """``metric`` (mean ± std over seeds) against λ_S for Proposed, one panel per task, with
    Baseline (λ_S = 0) and L_S only as horizontal references.

    The λ_S axis is logarithmic and **broken** where consecutive values are more than two decades
    apart: the limit case (λ_S = 1e-12, ≈ Baseline) gets a narrow axis of its own, the sweep
    (0.01..100) the rest, so no width goes to the empty decades between them (the break is marked
    with two slashes; the references run across both parts).

    Parameters
    ----------
    rows : long-format rows holding Proposed at several ``lambda_s`` (and optionally baseline, ls_only)
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    sweep = [r for r in rows if r["method"] == "proposed" and r["metric"] == metric and r["lambda_s"] not in ("", "inf")]
    if not sweep:
        raise ValueError(f"rows hold no Proposed results for metric {metric!r}")
    limit, swept = _split_at_gap(sorted({float(r["lambda_s"]) for r in sweep}))
    handles = {}
    with publication_style():
        fig = plt.figure(figsize=(2.35 * len(tasks), 2.3), layout="constrained")
        panels = fig.subfigures(1, len(tasks), squeeze=False)[0]
        for panel, task in zip(panels, tasks):
            if limit:
                lim_ax, ax = panel.subplots(1, 2, sharey=True, gridspec_kw=dict(width_ratios=(1, 4), wspace=0.06))
                parts = ((lim_ax, limit), (ax, swept))
            else:
                ax = panel.subplots()
                lim_ax, parts = None, ((ax, swept),)
            pts = sorted((float(r["lambda_s"]), float(r["mean"]), float(r["std"])) for r in sweep if r["task"] == task)
            for part_ax, values in parts:
                here = [p for p in pts if p[0] in values]
                if here:
                    lam, mean, std = zip(*here)
                    h = part_ax.errorbar(lam, mean, yerr=std, marker="o", capsize=2, color=METHOD_COLORS["proposed"],
                                         label="Proposed")
                    handles.setdefault("Proposed", h)
                part_ax.set_xscale("log")
                part_ax.set_xlim(*_log_limits(values))
                for method, style in (("baseline", "--"), ("ls_only", ":")):
                    ref = _pick(rows, method=method, metric=metric, task=task)
                    if ref:
                        label = "Baseline (λ_S = 0)" if method == "baseline" else "L_S only (λ_S = ∞)"
                        h = part_ax.axhline(float(ref[0]["mean"]), ls=style, color=METHOD_COLORS[method], label=label)
                        handles.setdefault(label, h)
            for part_ax, values in parts:       # every λ_S value its own plain tick (0.01, not 10^-2)
                part_ax.xaxis.set_major_locator(FixedLocator(values))
                part_ax.xaxis.set_minor_locator(NullLocator())
                part_ax.set_xticklabels([f"{v:g}" for v in values])
            if lim_ax is not None:
                lim_ax.spines["right"].set_visible(False)
                ax.spines["left"].set_visible(False)
                ax.tick_params(axis="y", left=False, labelleft=False)
                _break_marks(lim_ax, ax)
                lim_ax.set_ylabel(metric)
            else:
                ax.set_ylabel(metric)
            ax.set_xlabel("λ_S")
            panel.suptitle(task.replace("->", "→"), fontsize=9)
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=len(handles))
    return fig


def wilson_interval(hits: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval (default 95 %) of a binomial proportion ``hits / n`` (Wilson 1927)."""
    if n <= 0:
        return math.nan, math.nan
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # exact at the ends (0 hits: lower bound 0; all hits: upper bound 1), where rounding leaves ~1e-17
    return (0.0 if hits == 0 else max(0.0, centre - half)), (1.0 if hits == n else min(1.0, centre + half))


def kappa_reliability_groups(reliability: dict[str, dict]) -> dict[str, dict]:
    """Pool :func:`mmkit.analysis.evaluate.kappa_reliability` over tasks into two groups, single-modality
    and composed (fused) queries: per κ-quantile bin the hits of R@1, the queries and the Wilson 95 %
    interval; and the range of the tasks' Spearman ρ (κ against the reciprocal rank).

    Returns ``{group: {"tasks": [...], "bins": [{"hits", "n", "R@1", "low", "high"}], "rho": (min, max)}}``
    with R@1 and its interval in %. Queries of one group's tasks share items, so the interval
    (independent queries) is a guide, not a test.
    """
    groups: dict[str, dict] = {}
    for task, res in reliability.items():
        name = "composed queries (fused)" if "&" in task else "single-modality queries"
        g = groups.setdefault(name, {"tasks": [], "hits": [], "n": [], "rho": []})
        g["tasks"].append(task)
        g["rho"].append(res["spearman_kappa_vs_reciprocal_rank"])
        for i, b in enumerate(res["bins"]):
            if len(g["n"]) <= i:
                g["hits"].append(0)
                g["n"].append(0)
            g["hits"][i] += int(round(b["R@1"] * b["n"] / 100.0))
            g["n"][i] += int(b["n"])
    out = {}
    for name in ("single-modality queries", "composed queries (fused)"):
        if name not in groups:
            continue
        g = groups[name]
        bins = []
        for hits, n in zip(g["hits"], g["n"]):
            low, high = wilson_interval(hits, n)
            bins.append({"hits": hits, "n": n, "R@1": 100.0 * hits / n if n else math.nan,
                         "low": 100.0 * low, "high": 100.0 * high})
        rho = [r for r in g["rho"] if not math.isnan(r)]
        out[name] = {"tasks": g["tasks"], "bins": bins, "rho": (min(rho), max(rho)) if rho else (math.nan, math.nan)}
    return out


def kappa_reliability_figure(reliability: dict[str, dict], title: str = ""):
    """Does the learned κ predict success? One panel: R@1 (%) per query-κ quantile bin (1 = least
    concentrated, bins taken per task), pooled over the single-modality tasks and over the composed
    (fused) tasks (:func:`kappa_reliability_groups`), with Wilson 95 % intervals; the legend gives
    the range of the tasks' Spearman ρ between κ and the reciprocal rank (ρ > 0: confident queries
    are retrieved better). Input: :func:`mmkit.analysis.evaluate.kappa_reliability` output."""
    import matplotlib.pyplot as plt

    if not reliability:
        raise ValueError("reliability holds no tasks")
    groups = kappa_reliability_groups(reliability)
    styles = {"single-modality queries": dict(marker="o", ls="-", color=OKABE_ITO["blue"], offset=-0.07),
              "composed queries (fused)": dict(marker="s", ls="--", color=OKABE_ITO["vermillion"], offset=0.07)}
    with publication_style():
        fig, ax = plt.subplots(figsize=(3.6, 2.6), layout="constrained")
        for name, g in groups.items():
            st = styles[name]
            x = [i + 1 + st["offset"] for i in range(len(g["bins"]))]
            y = [b["R@1"] for b in g["bins"]]
            err = [[max(0.0, b["R@1"] - b["low"]) for b in g["bins"]], [max(0.0, b["high"] - b["R@1"]) for b in g["bins"]]]
            lo, hi = g["rho"]
            ax.errorbar(x, y, yerr=err, marker=st["marker"], ls=st["ls"], color=st["color"], capsize=2.5,
                        label=f"{name}: {len(g['tasks'])} tasks, ρ {lo:+.2f} to {hi:+.2f}")
        n_bins = max(len(g["bins"]) for g in groups.values())
        ax.set_xticks(range(1, n_bins + 1))
        ax.set_xlim(0.5, n_bins + 0.5)
        ax.set_xlabel("query κ quantile bin, per task (1 = lowest κ)")
        ax.set_ylabel("R@1 (%), 95 % interval")
        ax.set_ylim(bottom=0)
        if title:
            ax.set_title(title)
        fig.legend(loc="outside lower center", ncol=1)
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
