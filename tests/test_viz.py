"""mmkit.viz.sphere: the S^(d-1) -> S^2 projection against independent oracles (arccos distances, a
symmetric configuration's known mean, isometry on a great 2-sphere, geodesic order on noisy data);
the figure builders' traces and axes; clear errors on bad inputs; a real d = 3 run end to end."""
import csv

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from mmkit.model.run import LOG_FIELDS
from mmkit.model.config import TrainConfig
from mmkit.training.loop import fit  # noqa: E402
from mmkit.model.run import Run  # noqa: E402
from mmkit.viz.sphere import (fit_sphere_projection, kappa_histograms, orthographic_figure, read_training_log, sphere_figure, sphere_points, training_curves)

# Spearman correlation of pairwise geodesic distances (S^63 vs the projection) on the noisy data
# below; measured 0.964-0.981 over seeds 0-2, a random great 2-sphere projection gives 0.57-0.69.
ORDER_THRESHOLD = 0.9


@pytest.fixture(autouse=True)
def _close_figures():
    """Every figure a test opens is closed after it (matplotlib keeps pyplot figures alive)."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def _geodesic(points):
    """Pairwise geodesic distances arccos(x.y) of unit rows, upper triangle (the oracle)."""
    g = np.clip(points @ points.T, -1.0, 1.0)
    return np.arccos(g)[np.triu_indices(len(points), 1)]


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _great_sphere_data(seed, sigma, n=200, d=64):
    """Points spread over a 2-sphere (most of it) embedded in S^(d-1) by a random isometry, plus noise."""
    rng = np.random.default_rng(seed)
    on_s2 = _unit(rng.normal(size=(n, 3)) + np.array([0.0, 0.0, 1.0]))
    basis, _ = np.linalg.qr(rng.normal(size=(d, 3)))
    return _unit(on_s2 @ basis.T + sigma * rng.normal(size=(n, d))), rng


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projection_preserves_geodesic_order_on_noisy_data(seed):
    points, rng = _great_sphere_data(seed, sigma=0.05)
    projection = fit_sphere_projection(points)
    rho = spearmanr(_geodesic(points), _geodesic(projection(points))).statistic
    assert rho > ORDER_THRESHOLD, rho
    # the statistic discriminates: an arbitrary great 2-sphere keeps much less of the order
    random_basis, _ = np.linalg.qr(rng.normal(size=(points.shape[1], 3)))
    assert spearmanr(_geodesic(points), _geodesic(_unit(points @ random_basis))).statistic < ORDER_THRESHOLD - 0.1


def test_projection_is_an_isometry_on_a_great_two_sphere():
    points, _ = _great_sphere_data(3, sigma=0.0)
    projected = fit_sphere_projection(points)(points)
    np.testing.assert_allclose(np.linalg.norm(projected, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(_geodesic(projected), _geodesic(points), atol=1e-8)


def test_frechet_mean_goes_to_the_pole_and_distances_to_it_follow_the_tangent_pca():
    rng = np.random.default_rng(4)
    d = 16
    centre = _unit(rng.normal(size=d))
    tangents = rng.normal(size=(40, d))
    tangents -= np.outer(tangents @ centre, centre)
    tangents = _unit(tangents)
    angles = rng.uniform(0.1, 1.2, size=(40, 1))
    # symmetric pairs exp_c(+-t v): the Fréchet mean is the centre
    points = np.concatenate([np.cos(angles) * centre + np.sin(angles) * tangents,
                             np.cos(angles) * centre - np.sin(angles) * tangents])
    projection = fit_sphere_projection(points)
    np.testing.assert_allclose(projection.base_point, centre, atol=1e-6)
    np.testing.assert_allclose(projection(centre[None])[0], [0, 0, 1], atol=1e-6)
    noisy = _unit(points + 0.1 * rng.normal(size=points.shape))
    # oracle: Log_m(x) = theta / sin(theta) (x - cos(theta) m), kept on the principal plane, is the
    # tangent vector whose exp at the pole gives the projection: its norm is the distance to the pole
    m = projection.base_point
    theta = np.arccos(np.clip(noisy @ m, -1, 1))[:, None]
    logs = theta / np.sin(theta) * (noisy - np.cos(theta) * m)
    expected = np.linalg.norm(logs @ projection.components.T, axis=1)
    to_pole = np.arccos(np.clip(projection(noisy)[:, 2], -1, 1))
    np.testing.assert_allclose(to_pole, expected, atol=1e-8)
    assert np.all(to_pole <= theta[:, 0] + 1e-12)     # never farther from the mean than on S^(d-1)
    assert projection(noisy.reshape(8, 10, d)).shape == (8, 10, 3)


def test_d3_is_shown_as_it_is():
    points = _unit(np.random.default_rng(5).normal(size=(10, 3)))
    projection = fit_sphere_projection(points)
    assert projection.is_identity and "d = 3" in projection.describe()
    np.testing.assert_allclose(projection(points), points, atol=1e-15)


def _params(n=20, d=8, seed=6):
    g = torch.Generator().manual_seed(seed)
    params = {m: (torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1),
                  torch.exp(torch.rand(n, generator=g) * 5)) for m in ("audio", "image", "text")}
    present = {m: np.ones(n, bool) for m in params}
    present["image"][[1, 4]] = False
    return params, present


def test_sphere_figure_traces_and_hover():
    params, present = _params()
    ids = [f"item{i}" for i in range(20)]
    captions = [f"caption <{i}> with an ampersand & a long tail of words to wrap " * 2 for i in range(20)]
    fig = sphere_figure(params, ids=ids, captions=captions, present=present, max_items=10, n_samples=5)
    names = [t.name for t in fig.data]
    assert names == ["sphere", "grid"] + [f"{m} {k}" for m in ("audio", "image", "text") for k in ("samples", "means")]
    by_name = {t.name: t for t in fig.data}
    assert len(by_name["audio means"].x) == 10 and len(by_name["image means"].x) == 8   # rows 1 and 4 absent
    assert len(by_name["image samples"].x) == 8 * 5
    hover = by_name["audio means"].text[3]
    kappa = float(params["audio"][1][3])
    assert "item3" in hover and f"κ = {kappa:.3g}" in hover and "&lt;3&gt;" in hover and "<br>" in hover
    sizes = np.asarray(by_name["audio means"].marker.size)
    order = np.argsort(params["audio"][1][:10].numpy())
    assert np.all(np.diff(sizes[order]) >= 0)           # marker size grows with kappa
    xyz = np.stack([by_name["text samples"][c] for c in "xyz"], 1)
    np.testing.assert_allclose(np.linalg.norm(xyz, axis=1), 1.0, atol=1e-9)
    assert "tangent PCA" in fig.layout.title.text


def test_samples_are_reproducible_and_follow_kappa():
    params, present = _params(d=3)
    a, _ = sphere_points(params, present, n_samples=200, seed=1)
    b, _ = sphere_points(params, present, n_samples=200, seed=1)
    np.testing.assert_array_equal(a["audio"].samples, b["audio"].samples)
    p = a["audio"]
    spread = np.einsum("nrd,rd->r", p.samples, p.means) / 200       # mean cosine to the item's mean
    kappa = p.kappa
    expected = 1 / np.tanh(kappa) - 1 / kappa                        # A_3(kappa), independent closed form
    np.testing.assert_allclose(spread, expected, atol=5 * 0.5 / np.sqrt(200))


def test_orthographic_figure_draws_every_mean_once():
    params, present = _params()
    fig = orthographic_figure(params, present=present, max_items=12, n_samples=3)
    axes = fig.axes
    assert [a.get_title() for a in axes] == ["front", "back"]
    drawn = sum(len(c.get_offsets()) for a in axes for c in a.collections if c.get_zorder() == 2)
    assert drawn == 12 + 10 + 12
    # looking from a mean: that item is drawn at the centre of the front panel
    points, _ = sphere_points(params, present, max_items=12, n_samples=0)
    fig = orthographic_figure(params, present=present, max_items=12, n_samples=0, view=points["text"].means[5] * 3)
    front = np.concatenate([c.get_offsets() for c in fig.axes[0].collections if c.get_zorder() == 2])
    assert np.min(np.linalg.norm(front, axis=1)) < 1e-9
    with pytest.raises(ValueError, match=r"view must be a non-zero finite direction of shape \(3,\)"):
        orthographic_figure(params, view=[0, 0, 0])


def test_kappa_histograms_count_present_items():
    params, present = _params()
    fig = kappa_histograms(params, present=present, bins=7)
    assert len(fig.axes) == 3
    for ax, m in zip(fig.axes, ("audio", "image", "text")):
        assert ax.get_title(loc="left").startswith(m)
        assert sum(p.get_height() for p in ax.patches) == present[m].sum()


def _write_log(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
        w.writeheader()
        w.writerows(rows)


def test_training_curves_from_a_log(tmp_path):
    rows = [{"epoch": e, "loss": 5 - e, "L_C": 5 - e, "L_S": "", "VIB": "", "val_score": 0.1 * e, "val_R@1_mean": e,
             "kappa_audio": 10 + e, "kappa_image": 11 + e, "kappa_text": "", "seconds": 0.5} for e in range(4)]
    _write_log(tmp_path / "log.csv", rows)
    log = read_training_log(tmp_path)
    np.testing.assert_array_equal(log["loss"], [5, 4, 3, 2])
    assert np.isnan(log["L_S"]).all()
    fig = training_curves(tmp_path)
    loss_ax, val_ax, kappa_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ["total", "L_C"]        # empty L_S left out
    np.testing.assert_array_equal(val_ax.lines[0].get_ydata(), [0, 0.1, 0.2, 0.30000000000000004])
    assert [line.get_label() for line in kappa_ax.lines] == ["audio", "image"]


def test_bad_inputs_fail_clearly(tmp_path):
    params, present = _params()
    with pytest.raises(ValueError, match="must be unit vectors"):
        fit_sphere_projection(np.ones((5, 4)))
    with pytest.raises(ValueError, match=r"d >= 3, got d = 2"):
        fit_sphere_projection(_unit(np.ones((5, 2))))
    with pytest.raises(ValueError, match=r"shape \(N, d\)"):
        fit_sphere_projection(np.ones(4))
    with pytest.raises(ValueError, match="non-finite"):
        fit_sphere_projection(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="at least 3 points"):
        fit_sphere_projection(_unit(np.eye(5)[:2]))
    projection = fit_sphere_projection(params["audio"][0])
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 8\)"):
        projection(np.ones((3, 5)))
    with pytest.raises(ValueError, match="fitted for d = 8"):
        sphere_figure({"audio": (torch.eye(4)[:3], torch.ones(3))}, projection=projection)
    with pytest.raises(ValueError, match=r"kappa must be finite and > 0"):
        sphere_figure({"audio": (params["audio"][0], -params["audio"][1])})
    with pytest.raises(ValueError, match=r"loc must be \(N, d\) and kappa \(N,\)"):
        sphere_figure({"audio": (params["audio"][0], params["audio"][1][:3])})
    with pytest.raises(ValueError, match="non-empty mapping"):
        sphere_figure({})
    with pytest.raises(ValueError, match=r"ids must have one entry per row \(N = 20\), got 3"):
        sphere_figure(params, ids=["a", "b", "c"])
    with pytest.raises(IndexError, match=r"rows must lie in \[0, 20\)"):
        sphere_figure(params, rows=[0, 25])
    with pytest.raises(ValueError, match="no item to show"):
        sphere_figure(params, present={m: np.zeros(20, bool) for m in params})
    with pytest.raises(FileNotFoundError, match="no training log"):
        read_training_log(tmp_path)
    (tmp_path / "log.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="'epoch' and 'loss'"):
        training_curves(tmp_path)


def test_a_d3_run_end_to_end(tiny, tmp_path):
    data = tiny["data"]
    run = tmp_path / "d3"
    fit(TrainConfig(dim=3, epochs=2, batch_size=32, hidden=32, layers=1, n_projections=10), data, run, progress=False)
    test = data["test"]
    params = Run(run).encode(test).require_vmf("the sphere figures")
    assert {m: tuple(v[0].shape) for m, v in params.items()} == {m: (len(test), 3) for m in test.modalities}
    fig = sphere_figure(params, ids=test.ids, captions=test.captions, present=test.present, max_items=5, n_samples=2)
    assert fig.layout.title.text.startswith("d = 3")
    assert len(training_curves(run).axes[0].lines) >= 2
    gaussian = tmp_path / "pcme"
    fit(TrainConfig(method="pcme", epochs=1, batch_size=32, hidden=32, layers=1), data, gaussian, progress=False)
    with pytest.raises(ValueError, match="the sphere figures: needs vMF encodings"):
        Run(gaussian).encode(test).require_vmf("the sphere figures")


# ------------------------------------------------------------------------------------------------
# densities on the sphere (mmkit.viz.density): cap widths against closed forms and samples, the
# fused query against its definition, the drawn geometry against the caps
# ------------------------------------------------------------------------------------------------
import math  # noqa: E402

import mpmath  # noqa: E402

from mmkit.core.distributions import VonMisesFisher  # noqa: E402
from mmkit.viz.density import (_cap_angle_numeric, cap_ring, distribution_figure, distribution_scene,  # noqa: E402
                               distribution_sphere, vmf_cap_angle, vmf_cap_cosine, vmf_projected_radius)
from mmkit.viz.sphere import SphereProjection  # noqa: E402

KAPPAS = (1e-3, 0.5, 3.0, 40.0, 1e3, 1e5)


def _quantile_oracle(cdf, mass):
    """t with P(muᵀz >= t) = mass: bisection (200 halvings) on an exact CDF of muᵀz, in mpmath at 50 digits."""
    lo, hi, target = mpmath.mpf(-1), mpmath.mpf(1), 1 - mpmath.mpf(mass)
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < target else (lo, mid)
    return float((lo + hi) / 2)


def _cdf_d3(kappa):
    k = mpmath.mpf(kappa)
    return lambda t: (mpmath.exp(k * t) - mpmath.exp(-k)) / (mpmath.exp(k) - mpmath.exp(-k))


def _cdf_d5(kappa):
    """d = 5: the density exp(kt)(1 - t^2) has the antiderivative exp(kt)((1 - t^2)/k + 2t/k^2 - 2/k^3)."""
    k = mpmath.mpf(kappa)
    g = lambda t: mpmath.exp(k * t) * ((1 - t * t) / k + 2 * t / k**2 - 2 / k**3)  # noqa: E731
    return lambda t: (g(t) - g(-1)) / (g(1) - g(-1))


@pytest.mark.parametrize("mass", [0.5, 0.9])
def test_cap_width_is_the_closed_form_quantile_of_the_marginal(mass):
    for kappa in KAPPAS:
        want = math.acos(_quantile_oracle(_cdf_d3(kappa), mass))
        assert vmf_cap_angle(kappa, 3, mass) == pytest.approx(want, rel=1e-9, abs=1e-12), kappa
        assert _cap_angle_numeric(kappa, 3, mass) == pytest.approx(want, rel=1e-5), kappa   # the d > 3 path
        assert math.acos(vmf_cap_cosine(kappa, 3, mass)) == pytest.approx(want, rel=1e-9, abs=1e-12)
    for kappa in (0.5, 3.0, 40.0, 300.0):
        want = math.acos(_quantile_oracle(_cdf_d5(kappa), mass))
        assert vmf_cap_angle(kappa, 5, mass) == pytest.approx(want, rel=1e-5), kappa


def test_caps_hold_their_mass_and_shrink_with_kappa():
    d, n = 32, 20000
    gen = torch.Generator().manual_seed(7)
    mu = torch.nn.functional.normalize(torch.randn(d, generator=gen, dtype=torch.float64), dim=0)
    widths = vmf_cap_angle([1.0, 10.0, 100.0, 1000.0], d, 0.9)
    assert np.all(np.diff(widths) < 0)                                   # wider for smaller kappa
    for kappa in (10.0, 1000.0):
        torch.manual_seed(3)
        z = VonMisesFisher(mu.expand(n, d), torch.full((n,), kappa, dtype=torch.float64)).sample()
        t = (z @ mu).numpy()
        for mass in (0.5, 0.9):
            inside = float(np.mean(t >= vmf_cap_cosine(kappa, d, mass)))
            assert abs(inside - mass) < 4 * math.sqrt(mass * (1 - mass) / n), (kappa, mass, inside)


def test_projected_radius_holds_the_projected_mass():
    """Draws of vMF(m, kappa) in d = 32 through a projection based at m: the share within the radius."""
    d, n = 32, 20000
    mu = np.eye(d)[0]
    projection = SphereProjection(d, mu, np.eye(d)[1:3], (0.5, 0.5))
    for kappa in (3.0, 100.0, 3000.0):
        torch.manual_seed(11)
        z = VonMisesFisher(torch.from_numpy(mu).expand(n, d), torch.full((n,), kappa, dtype=torch.float64)).sample()
        to_pole = np.arccos(np.clip(projection(z.numpy())[:, 2], -1, 1))
        for mass in (0.5, 0.9):
            rho = float(vmf_projected_radius(kappa, d, mass))
            inside = float(np.mean(to_pole <= rho))
            assert abs(inside - mass) < 4 * math.sqrt(mass * (1 - mass) / n), (kappa, mass, inside)
            assert rho < vmf_cap_angle(kappa, d, mass)       # most of a deviation is in hidden directions
    np.testing.assert_allclose(vmf_projected_radius(KAPPAS, 3, 0.5), vmf_cap_angle(KAPPAS, 3, 0.5))   # d = 3: the cap


def test_cap_arguments_are_checked():
    with pytest.raises(ValueError, match="kappa must be finite and > 0"):
        vmf_cap_angle([1.0, 0.0], 3)
    with pytest.raises(ValueError, match="mass must be a share strictly between 0 and 1"):
        vmf_cap_angle(1.0, 3, 1.0)
    with pytest.raises(ValueError, match="d must be an int >= 2"):
        vmf_cap_angle(1.0, 2.5)


def _kl_d3(q_mu, q_k, g_mu, g_k):
    """KL(vMF(q) || vMF(g)) on S^2 in closed form: C_3(k) = k / (4 pi sinh k), A_3(k) = coth k - 1/k."""
    log_c = lambda k: np.log(k) - np.log(4 * np.pi) - (k + np.log1p(-np.exp(-2 * k)) - np.log(2))  # noqa: E731
    a = 1 / np.tanh(q_k) - 1 / q_k
    return log_c(q_k) - log_c(g_k) + a * (q_k - g_k * (g_mu @ q_mu))


def _scene_params(d, n=30, seed=12):
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    return {m: (torch.nn.functional.normalize(base + 0.4 * torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1),
                torch.exp(1 + 4 * torch.rand(n, generator=g, dtype=torch.float64))) for m in ("audio", "image", "text")}


def test_scene_fuses_the_query_and_ranks_its_top_k():
    params = _scene_params(3)
    present = {m: np.ones(30, bool) for m in params}
    present["text"][4] = False
    scene = distribution_scene(params, rows=[2, 4, 7], present=present, query=("image", "audio"), k=4)
    assert scene.query_parts == ("audio", "image") and scene.target == "text" and scene.query_row == 2
    mu = {m: params[m][0].numpy() for m in params}
    kap = {m: params[m][1].numpy() for m in params}
    total = kap["audio"][2] * mu["audio"][2] + kap["image"][2] * mu["image"][2]      # sum of kappa mu
    assert scene.query.kappa == pytest.approx(np.linalg.norm(total), rel=1e-12)
    np.testing.assert_allclose(scene.query.center, total / np.linalg.norm(total), atol=1e-12)   # d = 3: identity
    assert scene.query.angles[0] == pytest.approx(math.acos(_quantile_oracle(_cdf_d3(np.linalg.norm(total)), 0.5)),
                                                  rel=1e-9)
    gallery = np.flatnonzero(present["text"])
    kl = np.array([_kl_d3(total / np.linalg.norm(total), np.linalg.norm(total), mu["text"][r], kap["text"][r])
                   for r in gallery])
    want = [int(gallery[i]) for i in np.argsort(kl, kind="stable")[:4]]
    assert [c.row for c in scene.top] == want
    assert scene.true_rank == 1 + int(np.sum(kl < kl[list(gallery).index(2)]))
    assert set(scene.triplets) == {2, 4, 7} and set(scene.triplets[4]) == {"audio", "image"}   # row 4 has no text
    assert set(scene.parts) == {"audio", "image"}
    with pytest.raises(ValueError, match="target: name the modality to retrieve"):
        distribution_scene(params, rows=[1], query=("audio",))
    with pytest.raises(ValueError, match="has no"):
        distribution_scene(params, rows=[4], present=present, query=("text",), target="audio")
    with pytest.raises(ValueError, match="choose 1 to 12 items"):
        distribution_scene(params, rows=list(range(13)))


def test_drawn_caps_have_the_caps_geometry():
    """Orthographic print figure: the fused query faces the reader, so its inner cap is drawn as a
    circle of radius sin(theta); on the plotly sphere every outline point lies theta from the centre."""
    from matplotlib.patches import Polygon

    params = _scene_params(3)
    scene = distribution_scene(params, rows=[0, 1, 2], query=("audio", "text"), k=3)
    fig = distribution_figure(scene)
    left, right = fig.axes
    inner = scene.query.angles[0]
    outlines = [p for p in right.patches if isinstance(p, Polygon) and not p.get_fill()]
    radii = [np.linalg.norm(p.get_xy(), axis=1) for p in outlines]
    assert any(np.allclose(r, math.sin(inner), atol=1e-9) for r in radii)
    links = [line for line in left.lines if line.get_color() == "#555555"]
    assert len(links) == 3 * 3                                     # three items, three pairs each
    assert [t.get_text() for t in right.texts] == ["1", "2", "3"]
    sphere = distribution_sphere(scene)
    for trace in sphere.data:
        if trace.name == "query 50 % outline":
            xyz = np.stack([trace.x, trace.y, trace.z], 1)
            xyz /= np.linalg.norm(xyz, axis=1, keepdims=True)
            np.testing.assert_allclose(np.arccos(np.clip(xyz @ scene.query.center, -1, 1)), inner, atol=1e-9)
            break
    else:
        raise AssertionError("no outline of the query's 50 % cap")
    ring = cap_ring(np.array([0.0, 0.6, 0.8]), 0.3)
    np.testing.assert_allclose(np.arccos(ring @ np.array([0.0, 0.6, 0.8])), 0.3, atol=1e-12)


def test_scene_in_higher_dimension_uses_the_tangent_projection():
    params = _scene_params(16)
    scene = distribution_scene(params, rows=[0, 1, 2, 3], query=("audio", "image"), k=5)
    assert not scene.projection.is_identity and scene.dim == 16
    for cap in scene.caps():
        np.testing.assert_allclose(np.linalg.norm(cap.center), 1.0, atol=1e-9)
        assert cap.angles[0] == pytest.approx(float(vmf_projected_radius(cap.kappa, 16, 0.5)))
        assert cap.cap_angles[0] == pytest.approx(float(vmf_cap_angle(cap.kappa, 16, 0.5)))
    assert "tangent PCA" in distribution_sphere(scene).layout.title.text
