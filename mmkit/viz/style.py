"""Figures for papers: one publication style and one :func:`export` for matplotlib and plotly.

Style: vector PDFs with embedded TrueType fonts (``pdf.fonttype = 42``: journals reject Type 3
fonts), the Okabe–Ito colour-blind-safe palette (Okabe & Ito 2008, "Color Universal Design";
Wong 2011, Nature Methods 8:441), one colour per modality (:data:`MODALITY_COLORS`) and per
method (:data:`METHOD_COLORS`) shared by every notebook and by :mod:`mmkit.viz.sphere`.

Export: :func:`export` writes ``<path>.<format>`` for each requested format, each file atomically
(:func:`mmkit.core.io.atomic_write_bytes`). Matplotlib files are reproducible: the PDF carries no
creation date, SVG element ids come from a fixed salt, so rerunning a notebook rewrites
byte-identical PDF and SVG files. Plotly figures are rendered by kaleido (≥ 1.0), which drives a
headless Chromium (on Debian: ``apt-get install chromium``); they also get a self-contained
interactive ``.html``.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Iterator, Sequence

from mmkit.core.io import atomic_write_bytes, atomic_write_text

__all__ = ["OKABE_ITO", "MODALITY_COLORS", "METHOD_COLORS", "PUBLICATION_RC", "STATIC_FORMATS", "BrowserNotFoundError",
           "publication_style", "set_publication_style", "plotly_template", "export"]

#: Okabe–Ito palette, in its usual order (black first).
OKABE_ITO = {
    "black": "#000000", "orange": "#E69F00", "sky_blue": "#56B4E9", "bluish_green": "#009E73",
    "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish_purple": "#CC79A7",
}
#: One colour per modality, used by every sphere, histogram and legend.
MODALITY_COLORS = {"audio": OKABE_ITO["orange"], "image": OKABE_ITO["blue"], "text": OKABE_ITO["bluish_green"]}
#: One colour per training method (tables' figures and comparisons).
METHOD_COLORS = {"proposed": OKABE_ITO["vermillion"], "baseline": OKABE_ITO["blue"], "pcme": OKABE_ITO["reddish_purple"],
                 "mpc": OKABE_ITO["sky_blue"], "ls_only": OKABE_ITO["black"]}
_CYCLE = [OKABE_ITO[k] for k in ("blue", "vermillion", "bluish_green", "orange", "reddish_purple", "sky_blue",
                                 "yellow", "black")]

#: Formats each figure library can write (``html`` only for plotly).
STATIC_FORMATS = ("pdf", "svg", "png")
_PLOTLY_FORMATS = STATIC_FORMATS + ("html",)
_SVG_SALT = "mmkit"


def _rc() -> dict:
    from cycler import cycler

    return {
        "pdf.fonttype": 42, "ps.fonttype": 42,        # embed TrueType (Type 42), never Type 3
        "svg.fonttype": "path", "svg.hashsalt": _SVG_SALT,
        "font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans"],  # ships with matplotlib
        "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
        "legend.fontsize": 7, "legend.frameon": False,
        "axes.prop_cycle": cycler(color=_CYCLE), "image.cmap": "viridis",
        "axes.spines.top": False, "axes.spines.right": False, "axes.linewidth": 0.6,
        "lines.linewidth": 1.2, "lines.markersize": 3,
        "figure.figsize": (3.4, 2.4),                 # one column of a two-column paper, inches
        "figure.dpi": 100, "savefig.dpi": 300, "savefig.bbox": "tight", "savefig.pad_inches": 0.02,
    }


PUBLICATION_RC = _rc()


@contextlib.contextmanager
def publication_style() -> Iterator[None]:
    """Context manager: matplotlib figures created inside use :data:`PUBLICATION_RC`.

    Only the keys of :data:`PUBLICATION_RC` are set and restored on exit. (``matplotlib.rc_context``
    restores every parameter, ``interactive`` included: in a Jupyter kernel whose backend is first
    loaded inside the context, that switched interactive mode off again on exit, and every later
    figure of the kernel was drawn but never shown.)

    >>> with publication_style():
    ...     fig, ax = plt.subplots()
    """
    import matplotlib as mpl

    before = {key: mpl.rcParams[key] for key in PUBLICATION_RC}
    mpl.rcParams.update(PUBLICATION_RC)
    try:
        yield
    finally:
        mpl.rcParams.update(before)


def set_publication_style() -> None:
    """Apply :data:`PUBLICATION_RC` globally (for a whole notebook)."""
    import matplotlib as mpl

    mpl.rcParams.update(PUBLICATION_RC)


def plotly_template():
    """A plotly ``layout.Template`` with the same palette and font as :data:`PUBLICATION_RC`."""
    import plotly.graph_objects as go

    return go.layout.Template(layout=dict(colorway=_CYCLE, font=dict(family="DejaVu Sans, Arial, sans-serif", size=12),
                                          paper_bgcolor="white", plot_bgcolor="white"))


class BrowserNotFoundError(RuntimeError):
    """Plotly's static export needs a Chromium browser and none was found."""


def _is_matplotlib(fig) -> bool:
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return False
    return isinstance(fig, Figure)


def _is_plotly(fig) -> bool:
    try:
        from plotly.basedatatypes import BaseFigure
    except ImportError:  # pragma: no cover - plotly is a dependency
        return False
    return isinstance(fig, BaseFigure)


def _matplotlib_bytes(fig, fmt: str) -> bytes:
    """``fig`` as ``fmt`` bytes with reproducible metadata (no dates, fixed SVG id salt)."""
    import matplotlib as mpl

    metadata = {"pdf": {"CreationDate": None, "ModDate": None}, "svg": {"Date": None}, "png": {}}[fmt]
    buf = BytesIO()
    with mpl.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42, "svg.hashsalt": _SVG_SALT}):
        fig.savefig(buf, format=fmt, metadata=metadata, dpi=PUBLICATION_RC["savefig.dpi"], bbox_inches="tight",
                    pad_inches=PUBLICATION_RC["savefig.pad_inches"])
    return buf.getvalue()


def _plotly_static(fig, formats: Sequence[str], width: int | None, height: int | None,
                   scale: float) -> dict[str, bytes]:
    """Render ``fig`` once per format with kaleido (one browser session for all of them), at the
    figure's own layout size unless ``width``/``height`` are given (kaleido's default is 700 x 500,
    which cuts off a wider figure's text)."""
    import plotly.io as pio

    width = width or fig.layout.width
    height = height or fig.layout.height

    try:
        from kaleido.errors import ChromeNotFoundError
    except ImportError as exc:
        raise ImportError("plotly static export needs kaleido >= 1.0 (pip install 'kaleido>=1.0')") from exc
    with tempfile.TemporaryDirectory(prefix="mmkit-kaleido-") as tmp:
        files = [Path(tmp) / f"figure.{fmt}" for fmt in formats]
        try:
            pio.write_images([fig] * len(files), files, format=list(formats), width=width, height=height, scale=scale)
        except (ChromeNotFoundError, RuntimeError) as exc:
            if isinstance(exc, ChromeNotFoundError) or "Chrome" in str(exc):
                raise BrowserNotFoundError(
                    "plotly static export (kaleido) found no Chromium browser; install the system one "
                    "(Debian/Ubuntu: apt-get install chromium) or export formats=('html',) only") from None
            raise
        for fmt, f in zip(formats, files):  # kaleido can drop a page of a batch without an error (seen under load)
            for _ in range(2):
                if f.is_file() and f.stat().st_size:
                    break
                pio.write_image(fig, f, format=fmt, width=width, height=height, scale=scale)
            if not (f.is_file() and f.stat().st_size):
                raise RuntimeError(f"plotly static export (kaleido) wrote no {fmt} file, after two retries of it alone")
        return {fmt: f.read_bytes() for fmt, f in zip(formats, files)}


def _html_id(stem: str) -> str:
    return "mmkit-" + re.sub(r"[^A-Za-z0-9_-]", "-", stem)


def export(fig, path: str | os.PathLike, formats: Sequence[str] = STATIC_FORMATS, *, width: int | None = None,
           height: int | None = None, scale: float = 2.0, plotlyjs: bool | str = True) -> list[Path]:
    """Write ``fig`` to ``<path>.<fmt>`` for every ``fmt`` in ``formats``; return the paths written.

    ``fig`` is a matplotlib ``Figure`` (formats ``pdf``, ``svg``, ``png``) or a plotly figure
    (the same, rendered by kaleido with Chromium, and ``html``: a plotly figure always also gets
    its interactive ``<path>.html``, with plotly.js embedded so it opens offline).
    ``path`` is the file stem (``reports/figures/sphere``); a trailing ``.pdf``/``.svg``/``.png``/
    ``.html`` is dropped. ``width``, ``height`` (layout pixels; default: the figure's layout size)
    and ``scale`` apply to plotly's static images only; ``plotlyjs="cdn"`` makes the html small (4.8 MB less) but needs the
    network to open. Every file is written atomically.
    """
    if isinstance(formats, str):
        formats = (formats,)
    formats = tuple(dict.fromkeys(str(f).lower().lstrip(".") for f in formats))
    if not formats:
        raise ValueError("export: formats must name at least one format, got an empty sequence")
    if plotlyjs is not True and plotlyjs != "cdn":
        raise ValueError(f"export: plotlyjs must be True (embedded) or 'cdn', got {plotlyjs!r}")
    path = Path(path)
    if path.suffix.lower().lstrip(".") in _PLOTLY_FORMATS:
        path = path.with_suffix("")
    if _is_matplotlib(fig):
        allowed = STATIC_FORMATS
    elif _is_plotly(fig):
        allowed = _PLOTLY_FORMATS
        formats = formats + (() if "html" in formats else ("html",))
    else:
        raise TypeError(f"export: fig must be a matplotlib Figure or a plotly figure, got {type(fig).__name__}")
    unknown = [f for f in formats if f not in allowed]
    if unknown:
        raise ValueError(f"export: unknown format(s) {unknown} for a {'matplotlib' if allowed == STATIC_FORMATS else 'plotly'} "
                         f"figure; expected some of {list(allowed)}")
    target = {fmt: Path(f"{path}.{fmt}") for fmt in formats}
    if allowed == STATIC_FORMATS:
        data = {fmt: _matplotlib_bytes(fig, fmt) for fmt in formats}
    else:
        static = [f for f in formats if f != "html"]
        data = _plotly_static(fig, static, width, height, scale) if static else {}
    written = []
    for fmt in formats:
        if fmt == "html":
            import plotly.io as pio

            html = pio.to_html(fig, include_plotlyjs=plotlyjs, full_html=True, div_id=_html_id(path.name))
            written.append(atomic_write_text(target[fmt], html))
        else:
            written.append(atomic_write_bytes(target[fmt], data[fmt]))
    return written
