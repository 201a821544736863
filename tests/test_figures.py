"""mmkit.viz.style: every format is a valid, non-empty file of its kind; matplotlib PDF/SVG are
byte-identical across reruns (also across processes); TrueType fonts are embedded; bad calls fail
clearly. Plotly's static export needs Chromium: skipped without it, except under CI=true where a
missing browser is a failure."""
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
import pytest  # noqa: E402

from mmkit.viz.style import MODALITY_COLORS, BrowserNotFoundError, export  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# the same figure, built in this process and in a fresh interpreter
BUILD = """
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from mmkit.viz.style import publication_style
with publication_style():
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2, 3], [1.0, 3.0, 2.0, 2.5], label="audio")
    ax.scatter([0.5, 1.5], [2.0, 2.2], label="text")
    ax.set_xlabel("epoch"); ax.set_ylabel("loss"); ax.set_title("Reproducible"); ax.legend()
"""


@pytest.fixture(autouse=True)
def _close_figures():
    """Every figure a test opens is closed after it (matplotlib keeps pyplot figures alive)."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def _mpl_figure():
    namespace = {}
    exec(BUILD, namespace)
    return namespace["fig"]


def _plotly_figure():
    return go.Figure([go.Scatter3d(x=[0, 1, 0], y=[0, 0, 1], z=[1, 0, 0], mode="markers",
                                   marker=dict(color=MODALITY_COLORS["audio"]), name="audio")])


def _check_pdf(data: bytes):
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")


def _check_svg(data: bytes):
    root = ET.fromstring(data)
    assert root.tag.endswith("svg"), root.tag


def test_matplotlib_formats_are_valid(tmp_path):
    written = export(_mpl_figure(), tmp_path / "curve")
    assert written == [tmp_path / f"curve.{f}" for f in ("pdf", "svg", "png")]
    pdf, svg, png = (p.read_bytes() for p in written)
    _check_pdf(pdf)
    assert b"/FontFile2" in pdf, "no embedded TrueType font program"
    assert b"/Type3" not in pdf, "Type 3 fonts in the PDF"
    _check_svg(svg)
    assert png.startswith(PNG_SIGNATURE) and len(png) > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.pdf", "curve.png", "curve.svg"]  # no temp files


def test_matplotlib_export_is_byte_identical_across_reruns(tmp_path):
    first = [p.read_bytes() for p in export(_mpl_figure(), tmp_path / "a", formats=("pdf", "svg"))]
    second = [p.read_bytes() for p in export(_mpl_figure(), tmp_path / "b", formats=("pdf", "svg"))]
    assert first == second
    assert b"/CreationDate" not in first[0] and b"<dc:date>" not in first[1]
    script = BUILD + f"\nfrom mmkit.viz.style import export\nexport(fig, {str(tmp_path / 'c')!r}, formats=('pdf', 'svg'))\n"
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).resolve().parents[1])
    assert [(tmp_path / f"c.{f}").read_bytes() for f in ("pdf", "svg")] == first


def test_suffix_in_path_is_dropped_and_formats_normalised(tmp_path):
    written = export(_mpl_figure(), tmp_path / "fig.pdf", formats=[".PNG", "png"])
    assert written == [tmp_path / "fig.png"]


def test_bad_calls_fail_clearly(tmp_path):
    fig = _mpl_figure()
    with pytest.raises(ValueError, match=r"unknown format\(s\) \['jpeg'\].*'pdf', 'svg', 'png'"):
        export(fig, tmp_path / "x", formats=("pdf", "jpeg"))
    with pytest.raises(ValueError, match=r"unknown format\(s\) \['html'\] for a matplotlib figure"):
        export(fig, tmp_path / "x", formats=("html",))
    with pytest.raises(ValueError, match="at least one format"):
        export(fig, tmp_path / "x", formats=())
    with pytest.raises(TypeError, match="matplotlib Figure or a plotly figure, got list"):
        export([1, 2], tmp_path / "x")
    with pytest.raises(ValueError, match="plotlyjs must be True"):
        export(_plotly_figure(), tmp_path / "x", formats=("html",), plotlyjs="inline")
    assert not list(tmp_path.iterdir())


def test_plotly_html_is_self_contained(tmp_path):
    (html,) = export(_plotly_figure(), tmp_path / "sphere", formats=("html",))
    text = html.read_text()
    assert html == tmp_path / "sphere.html"
    assert "<html>" in text[:100].lower() and "Plotly.newPlot" in text and 'id="mmkit-sphere"' in text
    assert "plotly.js v" in text  # the library itself is embedded, the file opens offline
    small = export(_plotly_figure(), tmp_path / "small", formats=("html",), plotlyjs="cdn")[0].read_text()
    assert len(small) < len(text) / 20


def _chromium_or_skip():
    if any(shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")):
        return
    message = "plotly static export needs Chromium (apt-get install chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; under CI a missing browser is a failure")
    pytest.skip(message)


@pytest.mark.slow
def test_plotly_static_formats_are_valid(tmp_path):
    _chromium_or_skip()
    written = export(_plotly_figure(), tmp_path / "sphere", width=400, height=300)
    assert [p.name for p in written] == ["sphere.pdf", "sphere.svg", "sphere.png", "sphere.html"]
    pdf, svg, png, html = (p.read_bytes() for p in written)
    _check_pdf(pdf)
    _check_svg(svg)
    assert png.startswith(PNG_SIGNATURE)
    assert int.from_bytes(png[16:20], "big") == 400 * 2  # IHDR width: layout pixels x scale
    assert b"plotly" in html


def test_missing_browser_is_a_clear_error(tmp_path, monkeypatch):
    from choreographer.browsers.chromium import Chromium

    monkeypatch.setattr(Chromium, "find_browser", classmethod(lambda cls, **kw: None))
    with pytest.raises(BrowserNotFoundError, match="apt-get install chromium"):
        export(_plotly_figure(), tmp_path / "x", formats=("png",))
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------
# the figures of mmkit.viz: no clipped text, and what the result figures show
# ------------------------------------------------------------------------------------------------
import csv  # noqa: E402
import math  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from mmkit.viz.results import kappa_reliability_figure, lambda_sweep_figure, runtime_figure  # noqa: E402
from mmkit.vocab import PAPER_TASKS, task_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _drawn_texts(fig):
    """Every text ``fig`` draws: titles, labels, legends, annotations, and the tick labels of ticks
    inside their axis's view (matplotlib keeps labels for ticks out of view, but does not draw them)."""
    ticks, drawn = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                labels = (tick.label1, tick.label2)
                ticks.update(map(id, labels))
                slack = 1e-12 * abs(hi - lo)
                if ax.get_visible() and ax.axison and axis.get_visible() and lo - slack <= tick.get_loc() <= hi + slack:
                    drawn += [t for t in labels if t.get_visible() and t.get_text().strip()]
    hidden = {id(t) for ax in fig.axes if not ax.axison for t in (ax.xaxis.label, ax.yaxis.label)}
    others = [t for t in fig.findobj(Text) if id(t) not in ticks | hidden and t.get_visible() and t.get_text().strip()
              and (t.axes is None or t.axes.get_visible())]
    return drawn + others


def _clipped(fig, tol=1.0):
    """Texts whose rendered box leaves the canvas (after a draw, in display pixels)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    out = []
    for t in _drawn_texts(fig):
        ext = t.get_window_extent(renderer)
        if ext.x0 < box.x0 - tol or ext.y0 < box.y0 - tol or ext.x1 > box.x1 + tol or ext.y1 > box.y1 + tol:
            out.append((t.get_text()[:40], tuple(round(v) for v in ext.extents)))
    return out


def _overlapping_titles(fig):
    """Pairs of titles and axis labels (not tick labels) whose boxes overlap."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    named = []
    for ax in fig.axes:
        named += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
    named += [f._suptitle for f in [fig, *fig.subfigs] if f._suptitle is not None]
    named = [t for t in named if t.get_visible() and t.get_text().strip()]
    boxes = [(t.get_text()[:30], t.get_window_extent(renderer)) for t in named]
    return [(a, b) for i, (a, x) in enumerate(boxes) for b, y in boxes[i + 1:] if x.overlaps(y)]


def _reliability(n_bins=5, seed=0):
    rng = np.random.default_rng(seed)
    return {task_name(q, t): {"bins": [{"R@1": 100 * int(rng.integers(0, 42)) / 42, "n": 42} for _ in range(n_bins)],
                              "spearman_kappa_vs_reciprocal_rank": float(rng.uniform(-0.2, 0.3))}
            for q, t in PAPER_TASKS}


def _table_rows():
    rows = []
    for name in ("lambda_sweep", "lambda_limits"):
        with open(ROOT / "reports" / "tables" / f"{name}.csv") as fh:
            rows += list(csv.DictReader(fh))
    return rows


def _viz_figures(tmp_path):
    """One of each matplotlib figure mmkit.viz draws (the sphere ones on random vMFs, d = 3 and 16)."""
    from mmkit.model.run import LOG_FIELDS
    from mmkit.viz.density import distribution_figure, distribution_scene
    from mmkit.viz.sphere import kappa_histograms, orthographic_figure, training_curves

    g = torch.Generator().manual_seed(0)
    figs = {"lambda_sweep": lambda_sweep_figure(_table_rows()),
            "kappa_reliability": kappa_reliability_figure(_reliability(), title="proposed-l1-s0"),
            "runtime": runtime_figure([{"metric": "sec_per_triplet", "task": f"train:{s}", "method": m, "mean": 0.01,
                                        "std": 0.001} for s in ("heads", "backbones") for m in ("baseline", "proposed")])}
    for d in (3, 16):
        params = {m: (torch.nn.functional.normalize(torch.randn(40, d, generator=g), dim=-1),
                      torch.exp(2 + 3 * torch.rand(40, generator=g))) for m in ("audio", "image", "text")}
        ids = [f"essenFolksong/item-with-a-long-name-{i}" for i in range(40)]
        scene = distribution_scene(params, rows=[0, 1, 2, 3], ids=ids, query=("audio", "image"), k=5)
        figs[f"distribution_d{d}"] = distribution_figure(scene)
        figs[f"orthographic_d{d}"] = orthographic_figure(params, max_items=20, n_samples=3)
        figs[f"kappa_histograms_d{d}"] = kappa_histograms(params)
    with open(tmp_path / "log.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
        w.writeheader()
        w.writerows([{"epoch": e, "loss": 3 - e, "L_C": 3 - e, "val_score": 0.1 * e, "kappa_audio": 10 + e,
                      "seconds": 1} for e in range(3)])
    figs["training_curves"] = training_curves(tmp_path, title="proposed, d = 3")
    return figs


def test_no_text_is_clipped_or_overlaps_a_title(tmp_path):
    for name, fig in _viz_figures(tmp_path).items():
        assert not _clipped(fig), (name, _clipped(fig))
        assert not _overlapping_titles(fig), (name, _overlapping_titles(fig))
    # the check sees a title pushed over the left edge, and two labels on top of each other
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.set_title("a title far too long for this narrow figure, so it runs over both edges of the canvas")
    assert _clipped(fig)
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.set_title("title")
    ax.set_xlabel("label", y=0)
    ax.xaxis.set_label_coords(0.5, 1.05)
    assert _overlapping_titles(fig)


def _pil_width(text: str, size: int) -> float:
    """Width in pixels of ``text`` in DejaVu Sans at ``size`` px, measured by Pillow's FreeType binding."""
    from matplotlib import font_manager
    from PIL import ImageFont

    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    return font.getlength(text)


def _plotly_title_fits(fig, width=None) -> bool:
    """Every line of the title lies inside an image ``width`` px wide (default: the layout's width)."""
    import html

    title = fig.layout.title
    width = width or fig.layout.width
    lines = [html.unescape(line) for line in title.text.split("<br>")]
    widest = max(_pil_width(line, title.font.size) for line in lines)
    left = title.x * width if title.xanchor == "left" else title.x * width - widest / 2
    return left >= 0 and left + widest <= width


def test_plotly_titles_fit_and_are_exported_at_the_layout_size(tmp_path, monkeypatch):
    import plotly.io as pio

    from mmkit.viz.density import distribution_scene, distribution_sphere
    from mmkit.viz.sphere import sphere_figure

    g = torch.Generator().manual_seed(1)
    params = {m: (torch.nn.functional.normalize(torch.randn(40, 32, generator=g), dim=-1),
                  torch.exp(2 + 3 * torch.rand(40, generator=g))) for m in ("audio", "image", "text")}
    figs = [sphere_figure(params, max_items=10, n_samples=2),
            distribution_sphere(distribution_scene(params, rows=[0, 1], query=("text",), target="image"))]
    for fig in figs:
        assert _plotly_title_fits(fig), fig.layout.title.text
    # the static images are rendered at the layout's size, not kaleido's default 700 x 500
    sizes = []
    monkeypatch.setattr(pio, "write_images", lambda figs, files, **kw: sizes.append((kw["width"], kw["height"])) or
                        [Path(f).write_bytes(b"x") for f in files])
    export(figs[1], tmp_path / "sphere", formats=("png",))
    assert sizes == [(figs[1].layout.width, figs[1].layout.height)]
    # the projection figure's title as it was: one line, centred, plotly's default 16.8 px, drawn 700 px wide
    old = go.Figure(layout=dict(width=760, title=dict(text="S^31 → S² by tangent PCA at the Fréchet mean (29% of the "
                                                      "tangent variance shown)", x=0.5, xanchor="center",
                                                      font=dict(size=16.8))))
    assert not _plotly_title_fits(old, width=700)


def _errorbars(ax):
    """{label: (x, y, low, high)} of every errorbar of ``ax``."""
    out = {}
    for container in ax.containers:
        line, _, (bars,) = container.lines
        segments = np.array(bars.get_segments())           # (n, 2 points, xy)
        out[container.get_label()] = (np.asarray(line.get_xdata()), np.asarray(line.get_ydata()),
                                      segments[:, :, 1].min(1), segments[:, :, 1].max(1))
    return out


def test_kappa_reliability_is_one_panel_of_two_pooled_groups_with_wilson_intervals():
    from scipy.stats import binomtest

    reliability = _reliability(seed=3)
    fig = kappa_reliability_figure(reliability)
    (ax,) = fig.axes
    bars = _errorbars(ax)
    assert len(bars) == 2
    for label, (x, y, low, high) in bars.items():
        composed = label.startswith("composed")
        tasks = [t for t in reliability if ("&" in t) == composed]
        assert f"{len(tasks)} tasks" in label
        rho = [reliability[t]["spearman_kappa_vs_reciprocal_rank"] for t in tasks]
        assert f"ρ {min(rho):+.2f} to {max(rho):+.2f}" in label
        np.testing.assert_allclose(np.round(x.astype(float)), np.arange(1, 6))
        for b in range(5):
            hits = sum(round(reliability[t]["bins"][b]["R@1"] * 42 / 100) for t in tasks)
            n = 42 * len(tasks)
            ci = binomtest(hits, n).proportion_ci(confidence_level=0.95, method="wilson")
            assert y[b] == pytest.approx(100 * hits / n)
            assert (low[b], high[b]) == pytest.approx((100 * ci.low, 100 * ci.high), rel=1e-9)


def test_lambda_axis_is_broken_between_the_limit_case_and_the_sweep():
    rows = _table_rows()
    fig = lambda_sweep_figure(rows)
    tasks = ("A&T->I", "A&I->T", "I&T->A")
    axes = fig.axes
    assert len(axes) == 2 * len(tasks)
    for i, task in enumerate(tasks):
        limit_ax, sweep_ax = axes[2 * i], axes[2 * i + 1]
        want = {float(r["lambda_s"]): float(r["mean"]) for r in rows
                if r["method"] == "proposed" and r["metric"] == "MRR" and r["task"] == task}
        drawn = {}
        for ax, expect in ((limit_ax, {1e-12}), (sweep_ax, {0.01, 0.1, 1.0, 10.0, 100.0})):
            (line, *_), = [c.lines for c in ax.containers]
            xs = [float(x) for x in line.get_xdata()]
            assert set(xs) == expect                            # the limit case left, the sweep right
            drawn.update(zip(xs, line.get_ydata()))
            lo, hi = ax.get_xlim()
            assert math.log10(hi / lo) <= math.log10(max(expect) / min(expect)) + 1.0    # no empty decades
            base = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
            assert base and base[0].get_ydata()[0] == pytest.approx(
                next(float(r["mean"]) for r in rows if r["method"] == "baseline" and r["metric"] == "MRR"
                     and r["task"] == task))
        assert drawn == pytest.approx(want)
        marks = [ln for ax in (limit_ax, sweep_ax) for ln in ax.get_lines() if ln.get_gid() == "axis-break"]
        assert len(marks) == 2
        assert limit_ax.get_xticklabels()[0].get_text() == "1e-12"
    # without a limit case there is nothing to break
    plain = lambda_sweep_figure([r for r in rows if r["lambda_s"] != "1e-12"])
    assert len(plain.axes) == 3
    assert not [ln for ax in plain.axes for ln in ax.get_lines() if ln.get_gid() == "axis-break"]


def test_wilson_interval_is_exact_at_zero_and_all_hits_and_the_figure_draws_them():
    """0 hits: lower bound exactly 0 (rounding left 5.6e-17, a negative error bar matplotlib
    refused: a kappa bin without a hit stopped reproduce --data on a user's bundle)."""
    from mmkit.viz.results import kappa_reliability_figure, wilson_interval

    assert wilson_interval(0, 7)[0] == 0.0 and wilson_interval(7, 7)[1] == 1.0
    ranks_bin = {"bins": [{"kappa_min": 1.0, "kappa_max": 2.0, "n": 7, "R@1": 0.0},
                          {"kappa_min": 2.0, "kappa_max": 3.0, "n": 7, "R@1": 100.0}],
                 "spearman_kappa_vs_reciprocal_rank": 0.1}
    fig = kappa_reliability_figure({"A->I": ranks_bin, "A&T->I": ranks_bin})
    assert fig.axes


def test_publication_style_restores_only_its_own_parameters():
    """Leaving the context restores the keys it set and leaves every other parameter as the body
    left it: a Jupyter kernel that loads its backend inside the context switches interactive mode
    on there, and restoring all of rcParams (``matplotlib.rc_context``) switched it off again, so
    later figures were never shown (09_uncertainty's test executes that case in a kernel)."""
    import matplotlib as mpl

    from mmkit.viz.style import PUBLICATION_RC, publication_style

    key = next(iter(PUBLICATION_RC))
    was_interactive, before = mpl.is_interactive(), mpl.rcParams[key]
    try:
        with publication_style():
            assert mpl.rcParams[key] == PUBLICATION_RC[key]
            mpl.interactive(not was_interactive)
        assert mpl.rcParams[key] == before
        assert mpl.is_interactive() is (not was_interactive)
    finally:
        mpl.interactive(was_interactive)
