"""Paper-layout tables round-trip from stored long-format rows (never typed-in numbers)."""
import csv

from mmkit.data.bundle.card import caption_diversity
from mmkit.analysis.reports import write_paper_tables


def _rows():
    rows = []
    for method, lam, base in (("baseline", "0", 10.0), ("proposed", "1", 12.0), ("proposed", "0.1", 11.0),
                              ("proposed", "1e-12", 10.1), ("ls_only", "inf", 1.0), ("pcme", "", 5.0)):
        tasks = ("T->I", "I->T") if method == "pcme" else ("A->I", "T->I", "A&T->I", "A->T", "I->T", "A&I->T",
                                                            "I->A", "T->A", "I&T->A")
        for i, task in enumerate(tasks):
            for metric, scale in (("R@1", 1), ("R@5", 2), ("R@10", 3), ("R@15", 4), ("MRR", 0.01), ("MR", 5)):
                rows.append({"dataset": "music21-small", "method": method, "task": task, "metric": metric,
                             "lambda_s": lam, "distance": "ssw" if method != "pcme" else "cosine",
                             "mean": base * scale + i, "std": 0.5, "n_seeds": 3})
    return rows


def test_tables_round_trip(tmp_path):
    rows = _rows()
    files = write_paper_tables(rows, tmp_path)
    names = {p.rsplit("/", 1)[1] for p in files}
    for name in ("recall_image", "recall_text", "recall_audio", "lambda_sweep", "lambda_limits"):
        assert {f"{name}.md", f"{name}.tex", f"{name}.csv"} <= names
    assert not any(n.startswith("relevance_") for n in names)  # no many-to-many rows: no such tables
    with open(tmp_path / "recall_image.csv") as fh:
        back = list(csv.DictReader(fh))
    index = {(r["method"], r["lambda_s"], r["task"], r["metric"]): r for r in rows}
    for r in back:
        src = index[(r["method"], r["lambda_s"], r["task"], r["metric"])]
        assert float(r["mean"]) == src["mean"] and int(r["n_seeds"]) == 3
    assert {r["method"] for r in back} == {"baseline", "proposed", "pcme"}
    assert {r["lambda_s"] for r in back if r["method"] == "proposed"} == {"1"}
    md = (tmp_path / "recall_image.md").read_text()
    best = index[("proposed", "1", "A->I", "R@5")]["mean"]
    assert f"**{best:.2f} ± 0.50**" in md  # best in bold
    assert "PCME" in md and "–" in md          # PCME has no A->I: a dash
    tex = (tmp_path / "recall_image.tex").read_text()
    assert "\\toprule" in tex and "\\textbf{" in tex and "\\%" in tex
    sweep = (tmp_path / "lambda_sweep.md").read_text()
    assert sweep.index("| 1e-12 |") < sweep.index("| 0.1 |") < sweep.index("| 1 |")
    limits = (tmp_path / "lambda_limits.md").read_text()
    assert "L_S only" in limits and "Baseline" in limits and "| 0.1 |" not in limits


def test_caption_diversity_best_r1():
    d = caption_diversity(["a", "a", "b", "c"])
    assert d["distinct"] == 3 and abs(d["best_text_r1"] - 100 * (0.5 + 0.5 + 1 + 1) / 4) < 1e-12


def test_runtime_table_from_measured_rows(tmp_path):
    import pytest

    from mmkit.viz.results import runtime_figure
    from mmkit.analysis.reports import write_runtime_table
    from mmkit.analysis.runtime import runtime_rows, time_methods

    times = {"heads": time_methods("heads", batch=4, steps=1, repeats=2)}
    assert all(len(v) == 2 and min(v) > 0 for v in times["heads"].values())
    times["backbones"] = {"baseline": [2.0, 4.0], "proposed": [3.0, 3.0]}  # hand-made: ratio 1.000
    rows = runtime_rows(times)
    write_runtime_table(rows, tmp_path)
    md = (tmp_path / "runtime.md").read_text()
    assert "train:backbones: 1.000" in md
    with open(tmp_path / "runtime.csv") as fh:
        back = {(r["method"], r["task"]): r for r in csv.DictReader(fh)}
    assert float(back[("baseline", "train:backbones")]["mean"]) == 3.0 and back[("proposed", "train:heads")]["n_seeds"] == "2"
    assert back[("proposed", "train:heads")]["metric"] == "sec_per_triplet"
    assert len(runtime_figure(rows).axes[0].patches) == 4
    with pytest.raises(ValueError, match="setting must be one of"):
        time_methods("gpu")
    with pytest.raises(ValueError, match="repeats must be an int >= 2"):
        time_methods("heads", repeats=1)


def test_significance_table_marks_intervals_excluding_zero(tmp_path):
    from mmkit.analysis.reports import write_significance_table

    comparisons = {"MRR": {"A->I": {"difference": 0.05, "ci_low": 0.01, "ci_high": 0.09, "p_value": 0.01, "n_queries": 600},
                           "T->I": {"difference": -0.01, "ci_low": -0.04, "ci_high": 0.02, "p_value": 0.5,
                                    "n_queries": 600}}}
    write_significance_table(comparisons, tmp_path)
    md = (tmp_path / "significance.md").read_text()
    assert "| A->I | MRR | +0.05 * |" in md and "| T->I | MRR | -0.01 |" in md
    with open(tmp_path / "significance.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["task"], float(r["p_value"])) for r in rows] == [("A->I", 0.01), ("T->I", 0.5)]


def test_readme_tables_are_synced_from_the_table_files(tmp_path):
    import pytest

    from mmkit.analysis.reports import readme_tables, sync_readme_tables

    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "runtime.md").write_text("| a |\n|---|\n| 2 |\n")
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- table:runtime -->\n| a |\n|---|\n| 1 |\n<!-- /table -->\ntext\n")
    assert sync_readme_tables(readme, tmp_path / "t") == ["runtime"]
    assert readme_tables(readme.read_text()) == {"runtime": "| a |\n|---|\n| 2 |\n"}
    assert readme.read_text().endswith("<!-- /table -->\ntext\n")
    assert sync_readme_tables(readme, tmp_path / "t") == []
    readme.write_text(readme.read_text() + "<!-- table:missing -->\n<!-- /table -->\n")
    with pytest.raises(FileNotFoundError, match="missing"):
        sync_readme_tables(readme, tmp_path / "t")


def test_committed_readme_matches_committed_tables():
    """docs/results.md's numbers are the tables of the last reproduce run (reports/tables), verbatim
    (``make reproduce`` passes ``--readme docs/results.md``)."""
    from pathlib import Path

    from mmkit.analysis.reports import readme_tables

    root = Path(__file__).resolve().parents[1]
    blocks = readme_tables((root / "docs" / "results.md").read_text())
    assert {"recall_image", "recall_text", "recall_audio", "significance", "lambda_sweep", "lambda_limits",
            "runtime"} <= set(blocks)
    for name, body in blocks.items():
        assert body == (root / "reports" / "tables" / f"{name}.md").read_text(), name


def test_relevance_tables_from_many_to_many_rows(tmp_path):
    from mmkit.analysis.reports import write_recall_tables

    rows = _rows()
    for method, lam, base in (("baseline", "0", 0.40), ("proposed", "1", 0.45), ("proposed", "0.1", 0.9),
                              ("pcme", "", 0.30)):
        tasks = ("T->I", "I->T") if method == "pcme" else ("T->I", "A&T->I", "A->T", "I->T", "A&I->T", "T->A", "I&T->A")
        for i, task in enumerate(tasks):
            for metric, shift in (("RP", 0.0), ("mAP@R", -0.1)):
                rows.append({"dataset": "music21-small-real", "method": method, "task": task, "metric": metric,
                             "lambda_s": lam, "distance": "ssw", "mean": base + shift + 0.01 * i, "std": 0.02,
                             "n_seeds": 3})
    files = write_recall_tables(rows, tmp_path)
    assert {p.rsplit("/", 1)[1] for p in files} >= {f"relevance_{t}.{e}" for t in ("image", "text", "audio")
                                                     for e in ("md", "tex", "csv")}
    with open(tmp_path / "relevance_text.csv") as fh:
        back = list(csv.DictReader(fh))
    assert {(r["method"], r["task"], r["metric"]) for r in back} == {
        (m, t, k) for m in ("baseline", "proposed") for t in ("A->T", "I->T", "A&I->T") for k in ("RP", "mAP@R")} | {
        ("pcme", "I->T", k) for k in ("RP", "mAP@R")}
    assert {r["lambda_s"] for r in back if r["method"] == "proposed"} == {"1"}  # λ_S = 0.1 is not a main row
    md = (tmp_path / "relevance_image.md").read_text()
    assert "| T->I RP | T->I mAP@R | A&T->I RP | A&T->I mAP@R |" in md
    assert "**0.450 ± 0.020**" in md and "0.400 ± 0.020" in md  # three decimals; the best mean in bold
    assert "\\textbf{0.450 $\\pm$ 0.020}" in (tmp_path / "relevance_image.tex").read_text()
