"""Figure titles of the sphere views: the sphere's name with unicode superscripts (no literal caret,
"S³¹ → S²"), plotly titles below plotly's toolbar, and the projection computed by the same numbers
whatever array backend geomstats was told to use ($GEOMSTATS_BACKEND=pytorch, as geomstats users often
have it set), checked in a subprocess against the numpy backend."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mmkit.viz.density import distribution_figure, distribution_scene, distribution_sphere
from mmkit.viz.sphere import MODEBAR_PX, fit_sphere_projection, sphere_figure, sphere_name


def _params(d: int = 32, n: int = 30, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return {m: (torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1),
                torch.exp(2 + 3 * torch.rand(n, generator=g))) for m in ("audio", "image", "text")}


def test_sphere_names_use_superscripts():
    assert sphere_name(31) == "S³¹" and sphere_name(2) == "S²" and sphere_name(1024) == "S¹⁰²⁴"
    with pytest.raises(ValueError, match="int >= 0"):
        sphere_name(-1)
    params = _params()
    projection = fit_sphere_projection(params["audio"][0].numpy())
    assert projection.describe().startswith("S³¹ → S² by tangent PCA")
    scene = distribution_scene(params, rows=[0, 1], query=("audio", "image"), target="text", k=3)
    figures = {"plotly sphere": sphere_figure(params, max_items=8, n_samples=2).layout.title.text,
               "plotly densities": distribution_sphere(scene).layout.title.text,
               "print densities": distribution_figure(scene)._suptitle.get_text()}
    for where, title in figures.items():
        assert "^" not in title and "S³¹" in title, (where, title)


@pytest.mark.parametrize("make", ["sphere_figure", "distribution_sphere"])
def test_plotly_titles_start_below_the_toolbar(make):
    params = _params()
    fig = (sphere_figure(params, max_items=8, n_samples=2) if make == "sphere_figure" else
           distribution_sphere(distribution_scene(params, rows=[0, 1], query=("audio",), target="text", k=3)))
    title, height = fig.layout.title, fig.layout.height
    assert title.yref == "container" and title.yanchor == "top"
    top = (1 - title.y) * height                                     # pixels from the figure's top edge
    assert top >= MODEBAR_PX >= 28                                   # plotly's toolbar is ~28 px high
    lines = title.text.count("<br>") + 1
    assert fig.layout.margin.t >= top + lines * title.font.size      # the title's lines end above the plot area


_PROJECT = """
import json, sys, torch
from mmkit.viz.density import distribution_figure, distribution_scene, distribution_sphere
g = torch.Generator().manual_seed(3)
params = {m: (torch.nn.functional.normalize(torch.randn(25, 16, generator=g), dim=-1),
              torch.exp(2 + 3 * torch.rand(25, generator=g))) for m in ("audio", "image", "text")}
scene = distribution_scene(params, rows=[0, 1, 2], query=("audio", "image"), target="text", k=4)
distribution_sphere(scene), distribution_figure(scene)
import geomstats.backend as gs
print(json.dumps({"backend": gs.__name__, "ratio": list(scene.projection.explained_variance_ratio),
                  "centers": [c.center.tolist() for c in scene.caps()]}))
"""


def _project(backend: str) -> dict:
    env = {**os.environ, "GEOMSTATS_BACKEND": backend, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _PROJECT], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_sphere_views_run_and_agree_under_the_pytorch_backend_of_geomstats():
    torch_run, numpy_run = _project("pytorch"), _project("numpy")
    assert torch_run["backend"] == "geomstats.pytorch" and numpy_run["backend"] == "geomstats.numpy"
    assert torch_run["ratio"] == pytest.approx(numpy_run["ratio"], abs=1e-9)
    np.testing.assert_allclose(torch_run["centers"], numpy_run["centers"], atol=1e-6)
