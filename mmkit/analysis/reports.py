"""Reports: the paper-layout tables (Markdown, LaTeX with booktabs, CSV) and the README's copies of them.

Every file is written atomically: a reader never sees a half-written report.
"""
from __future__ import annotations

import csv
import io
import math
import os
import re
from pathlib import Path

from mmkit.core.io import atomic_write_text
from mmkit.vocab import METHOD_LABELS, METHODS, MULTIMODAL_TASKS

__all__ = ["write_rows_csv", "write_table", "write_recall_tables", "write_relevance_tables", "write_lambda_tables",
           "write_paper_tables", "write_runtime_table", "write_significance_table", "pivot", "readme_tables",
           "sync_readme_tables"]


def write_rows_csv(rows: list[dict], path: str | Path) -> Path:
    """Write long-format rows as CSV (atomically)."""
    fields = ["dataset", "method", "task", "metric", "lambda_s", "distance", "mean", "std", "n_seeds"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in fields})
    return atomic_write_text(path, buf.getvalue())


# ----------------------------------------------------------------------------------------------
# paper-layout tables (Tables 2-10 analogues) from long-format rows
# ----------------------------------------------------------------------------------------------
RECALL_TABLES = {
    "recall_image": ("A->I", "T->I", "A&T->I"),
    "recall_text": ("A->T", "I->T", "A&I->T"),
    "recall_audio": ("I->A", "T->A", "I&T->A"),
}
#: Tables of the many-to-many metrics (R-Precision, mAP@R): the tasks with text, by target modality.
RELEVANCE_TABLES = {
    "relevance_image": ("T->I", "A&T->I"),
    "relevance_text": ("A->T", "I->T", "A&I->T"),
    "relevance_audio": ("T->A", "I&T->A"),
}
_LOWER_IS_BETTER = {"MR", "sec_per_triplet"}
_FRACTIONS = {"MRR", "RP", "mAP@R"}  # in [0, 1], three decimals (R@k is in %)


def _fmt(metric: str, mean: float, std: float) -> str:
    if metric == "MR":
        return f"{mean:.1f}"
    if metric in _FRACTIONS:
        return f"{mean:.3f} ± {std:.3f}"
    if metric == "sec_per_triplet":
        return f"{mean:.5f} ± {std:.5f}"
    return f"{mean:.2f} ± {std:.2f}"


def _lambda_sort(lam: str) -> float:
    return float(lam) if lam not in ("", "inf") else (math.inf if lam == "inf" else -1.0)


def pivot(rows: list[dict], row_key, columns: list[tuple[str, str]]) -> tuple[list[tuple], dict]:
    """Index ``rows`` by (row_key(row), task, metric); returns sorted row keys and the lookup."""
    cells: dict = {}
    keys = []
    for r in rows:
        k = row_key(r)
        if k is None:
            continue
        if (r["task"], r["metric"]) in columns:
            cells[(k, r["task"], r["metric"])] = r
            if k not in keys:
                keys.append(k)
    return keys, cells


def _render(name: str, title: str, label_cols: list[str], keys: list[tuple], labels, columns, cells) -> tuple[str, str]:
    """Markdown and LaTeX (booktabs, best mean per column in bold) of a pivoted table."""
    best = {}
    for col in columns:
        vals = [cells[(k, *col)]["mean"] for k in keys if (k, *col) in cells]
        if len(vals) > 1:
            best[col] = min(vals) if col[1] in _LOWER_IS_BETTER else max(vals)
    head = label_cols + [f"{task} {metric}" for task, metric in columns]
    md = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(label_cols) + "---:|" * len(columns)]
    tex_title = (title.replace("%", "\\%").replace("±", "$\\pm$").replace("λ_S", "$\\lambda_S$")
                 .replace("L_S", "$L_S$"))
    tex = ["\\begin{table}[t]", "\\centering", f"\\caption{{{tex_title}}}", f"\\label{{tab:{name}}}",
           "\\begin{tabular}{" + "l" * len(label_cols) + "r" * len(columns) + "}", "\\toprule",
           " & ".join(h.replace("&", "\\&").replace("->", "$\\to$").replace("λ_S", "$\\lambda_S$") for h in head)
           + " \\\\",
           "\\midrule"]
    for k in keys:
        md_cells, tex_cells = [], []
        for col in columns:
            r = cells.get((k, *col))
            if r is None:
                md_cells.append("–")
                tex_cells.append("--")
                continue
            text = _fmt(col[1], r["mean"], r["std"])
            is_best = col in best and r["mean"] == best[col]
            md_cells.append(f"**{text}**" if is_best else text)
            tex_text = text.replace("±", "$\\pm$")
            tex_cells.append(f"\\textbf{{{tex_text}}}" if is_best else tex_text)
        lab = labels(k)
        md.append("| " + " | ".join(lab + md_cells) + " |")
        tex.append(" & ".join([x.replace("_", "\\_").replace("–", "--") for x in lab] + tex_cells) + " \\\\")
    tex += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(md) + "\n", "\n".join(tex) + "\n"


def write_table(outdir: str | os.PathLike, name: str, rows: list[dict], title: str, row_key, labels,
                label_cols: list[str], columns: list[tuple[str, str]]) -> list[str]:
    """Write ``<name>.md``, ``<name>.tex`` and ``<name>.csv`` (the long rows it shows) atomically."""
    keys, cells = pivot(rows, row_key, columns)
    md, tex = _render(name, title, label_cols, keys, labels, columns, cells)
    out = Path(outdir)
    atomic_write_text(out / f"{name}.md", md)
    atomic_write_text(out / f"{name}.tex", tex)
    shown = [cells[(k, *c)] for k in keys for c in columns if (k, *c) in cells]
    write_rows_csv(shown, out / f"{name}.csv")
    return [str(out / f"{name}.{ext}") for ext in ("md", "tex", "csv")]


def _main_method_key(r: dict):
    """Row key of the main comparison (PCME, MPC, Baseline, Proposed at λ_S = 1; other rows None)."""
    main = r["method"] in ("pcme", "mpc", "baseline") or (r["method"] == "proposed" and r["lambda_s"] == "1")
    return (r["dataset"], METHODS.index(r["method"])) if main else None


def _write_by_target(rows: list[dict], outdir, tables: dict[str, tuple[str, ...]], metrics: tuple[str, ...],
                     title: str) -> list[str]:
    """One table per target modality (``<kind>_<target>``) of the main comparison; ``title`` has a
    ``{target}`` field."""
    written = []
    for name, tasks in tables.items():
        written += write_table(outdir, name, rows, title.format(target=name.rsplit("_", 1)[1]), _main_method_key,
                               lambda k: [k[0], METHOD_LABELS[METHODS[k[1]]]], ["dataset", "method"],
                               [(t, m) for t in tasks for m in metrics])
    return written


def write_recall_tables(rows: list[dict], outdir: str | os.PathLike) -> list[str]:
    """Tables 2-4 analogues: R@5/10/15 per target modality for PCME, MPC, Baseline, Proposed (λ_S = 1);
    with rows of many-to-many metrics (data with caption truth) also :func:`write_relevance_tables`."""
    written = _write_by_target(rows, outdir, RECALL_TABLES, ("R@5", "R@10", "R@15"),
                               "R@k (%) for multimodal {target} retrieval, mean ± std over seeds")
    return written + write_relevance_tables(rows, outdir)


def write_relevance_tables(rows: list[dict], outdir: str | os.PathLike) -> list[str]:
    """R-Precision ("RP", PMRP when the relevant set is the plausible matches) and mAP@R of the tasks
    with text, per target modality (``relevance_image``, ``relevance_text``, ``relevance_audio``), for
    the methods of the recall tables. Written only when ``rows`` hold those metrics (data with
    many-to-many caption truth, :func:`mmkit.analysis.evaluate.aggregate`); returns the files written."""
    if not any(r["metric"] in ("RP", "mAP@R") for r in rows):
        return []
    return _write_by_target(rows, outdir, RELEVANCE_TABLES, ("RP", "mAP@R"),
                            "R-Precision and mAP@R (many-to-many caption truth) for {target} retrieval, "
                            "mean ± std over seeds")


def write_lambda_tables(rows: list[dict], outdir: str | os.PathLike) -> list[str]:
    """Tables 8/9 (every Proposed λ_S) and 10 (Baseline, λ_S = 1e-12 and 1, L_S only) analogues:
    MRR, R@1 and MR of the multimodal queries."""
    cols = [(t, m) for t in MULTIMODAL_TASKS for m in ("MRR", "R@1", "MR")]
    sweep = sorted((r for r in rows if r["method"] == "proposed"), key=lambda r: _lambda_sort(r["lambda_s"]))
    written = write_table(outdir, "lambda_sweep", sweep, "Weight λ_S of L_S for multimodal queries",
                          lambda r: (r["dataset"], r["lambda_s"]), lambda k: [k[0], "Proposed", k[1]],
                          ["dataset", "method", "λ_S"], cols)

    def limit_key(r):
        if r["method"] in ("baseline", "ls_only") or (r["method"] == "proposed" and r["lambda_s"] in ("1e-12", "1")):
            return (r["dataset"], METHODS.index(r["method"]), _lambda_sort(r["lambda_s"]), r["lambda_s"])
        return None

    limits = sorted((r for r in rows if limit_key(r) is not None), key=limit_key)
    written += write_table(outdir, "lambda_limits", limits, "Limit cases of λ_S for multimodal queries", limit_key,
                           lambda k: [k[0], METHOD_LABELS[METHODS[k[1]]], k[3] or "–"],
                           ["dataset", "method", "λ_S"], cols)
    return written


def write_paper_tables(rows: list[dict], outdir: str | os.PathLike) -> list[str]:
    """Tables 2-4 (:func:`write_recall_tables`) and 8-10 (:func:`write_lambda_tables`) from long rows
    (:func:`mmkit.analysis.evaluate.aggregate`). Nothing is typed in."""
    return write_recall_tables(rows, outdir) + write_lambda_tables(rows, outdir)


def write_runtime_table(rows: list[dict], outdir: str | os.PathLike) -> list[str]:
    """Table 1 analogue: seconds per training triplet, Baseline vs Proposed, per encoder setting
    (rows from :func:`mmkit.analysis.runtime.runtime_rows`), with the ratio Proposed / Baseline."""
    settings = sorted({r["task"] for r in rows if r["metric"] == "sec_per_triplet"})
    cols = [(t, "sec_per_triplet") for t in settings]
    written = write_table(outdir, "runtime", rows, "Seconds per training triplet (mean ± std over repeats)",
                          lambda r: (r["dataset"], METHODS.index(r["method"])),
                          lambda k: [k[0], METHOD_LABELS[METHODS[k[1]]]], ["dataset", "method"], cols)
    mean = {(r["method"], r["task"]): r["mean"] for r in rows}
    ratios = [f"{t}: {mean[('proposed', t)] / mean[('baseline', t)]:.3f}" for t in settings
              if ("proposed", t) in mean and ("baseline", t) in mean]
    md = Path(outdir) / "runtime.md"
    atomic_write_text(md, md.read_text() + "\nProposed / Baseline: " + ", ".join(ratios) + "\n")
    return written


def write_significance_table(comparisons: dict[str, dict[str, dict]], outdir: str | os.PathLike,
                             name: str = "significance", title: str = "Proposed − Baseline, paired bootstrap over "
                             "the test queries of all seeds") -> list[str]:
    """Which differences are real: ``{metric: compare_methods(...)}`` as a Markdown and CSV table
    (difference, 95 % interval, p-value per task; ``*`` where the interval excludes 0)."""
    import csv
    import io

    lines = [f"**{title}**", "", "| task | metric | difference | 95 % interval | p | queries |",
             "|---|---|---:|---:|---:|---:|"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["task", "metric", "difference", "ci_low", "ci_high", "p_value", "n_queries"])
    for metric, per_task in comparisons.items():
        for task, c in per_task.items():
            star = " *" if c["ci_low"] > 0 or c["ci_high"] < 0 else ""
            lines.append(f"| {task} | {metric} | {c['difference']:+.4g}{star} | [{c['ci_low']:+.4g}, {c['ci_high']:+.4g}] "
                         f"| {c['p_value']:.3g} | {c['n_queries']} |")
            writer.writerow([task, metric, f"{c['difference']:.6g}", f"{c['ci_low']:.6g}", f"{c['ci_high']:.6g}",
                             f"{c['p_value']:.6g}", c["n_queries"]])
    out = Path(outdir)
    atomic_write_text(out / f"{name}.md", "\n".join(lines) + "\n")
    atomic_write_text(out / f"{name}.csv", buf.getvalue())
    return [str(out / f"{name}.md"), str(out / f"{name}.csv")]


_README_BLOCK = re.compile(r"(<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def readme_tables(readme: str) -> dict[str, str]:
    """``{name: Markdown}`` of the blocks between ``<!-- table:<name> -->`` and ``<!-- /table -->``."""
    return {m["name"]: m["body"] for m in _README_BLOCK.finditer(readme)}


def sync_readme_tables(readme_path: str | os.PathLike, tables_dir: str | os.PathLike) -> list[str]:
    """Replace every marked table block of the README with ``<tables_dir>/<name>.md`` (atomically).

    Keeps the README's numbers identical to the tables of the last run; returns the names updated.
    A marked table whose file is missing raises ``FileNotFoundError`` rather than leaving stale numbers.
    """
    readme_path = Path(readme_path)
    text = readme_path.read_text()
    updated = []

    def replace(m):
        table = Path(tables_dir) / f"{m['name']}.md"
        if not table.is_file():
            raise FileNotFoundError(f"README marks table {m['name']!r} but {table} does not exist")
        body = table.read_text()
        if body != m["body"]:
            updated.append(m["name"])
        return m.group(1) + body + m.group(4)

    new = _README_BLOCK.sub(replace, text)
    if new != text:
        atomic_write_text(readme_path, new)
    return updated
