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

from mmkit.viz.style import MODALITY_COLORS, BrowserNotFoundError, export, publication_style  # noqa: E402

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
