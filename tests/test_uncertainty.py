"""mmkit.analysis.uncertainty: known answers (closed forms, scipy, brute force, simulations)."""
import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy import stats

from mmkit.analysis import uncertainty as U
from mmkit.data.bundle import load_bundle, make_synthetic_bundle
from mmkit.model.config import TrainConfig
from mmkit.model.factory import build_model
from mmkit.model.run import encode_split


def _copula(n, k, r, seed):
    """(severity, kappa) of n items x k views: severity = Phi(z1) in (0, 1) and kappa = 100 exp(-z2), (z1, z2)
    standard bivariate normal with correlation r. Spearman is rank-based, so its population value is that of
    (z1, -z2): -(6 / pi) arcsin(r / 2)."""
    rng = np.random.default_rng(seed)
    z = rng.multivariate_normal([0, 0], [[1, r], [r, 1]], size=(n, k))
    return stats.norm.cdf(z[..., 0]), 100 * np.exp(-z[..., 1])


def test_kappa_severity_recovers_the_population_spearman():
    r = 0.6
    severity, kappa = _copula(2000, 4, r, seed=1)
    truth = -(6 / math.pi) * math.asin(r / 2)
    out = U.kappa_severity(kappa, severity, n_resamples=200, seed=0)
    # 8000 pairs: the standard error of Spearman's rho is below 0.01 (items share nothing here)
    assert out["rho"] == pytest.approx(truth, abs=0.03)
    assert out["ci_low"] < truth < out["ci_high"]
    assert out["n_items"] == 2000 and out["n_pairs"] == 8000


def test_kappa_severity_equals_scipy_and_skips_missing_views():
    severity, kappa = _copula(50, 3, 0.4, seed=2)
    kappa[3, 1] = np.nan
    keep = np.isfinite(kappa.ravel())
    expected = stats.spearmanr(kappa.ravel()[keep], severity.ravel()[keep]).statistic
    out = U.kappa_severity(kappa, severity, n_resamples=50)
    assert out["rho"] == pytest.approx(expected, abs=1e-12)
    assert out["n_pairs"] == 149


def test_item_bootstrap_keeps_an_items_views_together():
    """Views of one item that share a strong item effect: resampling pairs would understate the spread;
    the item bootstrap's interval must be about as wide as the spread of rho over fresh data sets."""
    rng = np.random.default_rng(3)

    def draw():
        item = rng.normal(size=(60, 1))
        severity = stats.norm.cdf(item + 0.3 * rng.normal(size=(60, 4)))
        kappa = np.exp(-0.3 * item[:, 0:1] + rng.normal(size=(60, 4)))
        return kappa, severity

    rhos = [stats.spearmanr(*(a.ravel() for a in draw())).statistic for _ in range(300)]
    out = U.kappa_severity(*draw(), n_resamples=400, seed=0)
    width = out["ci_high"] - out["ci_low"]
    assert 0.6 * 2 * 1.96 * np.std(rhos) < width < 1.6 * 2 * 1.96 * np.std(rhos)


def test_kappa_generality_is_spearman_against_generality():
    rng = np.random.default_rng(4)
    generality = rng.integers(1, 40, size=(80, 4))
    kappa = 200.0 / generality + rng.normal(scale=2.0, size=(80, 4))
    out = U.kappa_generality(kappa, generality, n_resamples=50)
    assert out["rho"] == pytest.approx(stats.spearmanr(kappa.ravel(), generality.ravel()).statistic, abs=1e-12)
    assert out["rho"] < -0.5
    with pytest.raises(ValueError, match="generality >= 1"):
        U.kappa_generality(kappa, generality - 1)


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="same shape"):
        U.kappa_severity(np.ones((5, 2)), np.ones((5, 3)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        U.kappa_severity(np.ones((5, 2)), np.full((5, 2), 2.0))
    with pytest.raises(ValueError, match="threshold"):
        U.severe_auroc(np.ones(4), np.ones(4), threshold=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        U.risk_coverage(np.ones(3), np.array([0, 2, 1]))
    with pytest.raises(ValueError, match="G >= 2"):
        U.score_margin(np.ones((3, 1)))


def test_severe_auroc_against_a_brute_force_pair_count():
    rng = np.random.default_rng(5)
    severity = rng.random((30, 4))
    kappa = np.round(50 - 20 * severity + rng.normal(scale=5, size=(30, 4)))  # rounding makes ties
    sev, mild = 1 / kappa[severity >= 0.6], 1 / kappa[severity < 0.6]
    brute = np.mean([(a > b) + 0.5 * (a == b) for a in sev for b in mild])
    assert U.severe_auroc(kappa, severity) == pytest.approx(brute, abs=1e-12)
    assert math.isnan(U.severe_auroc(kappa, np.zeros_like(severity)))


def test_score_margin_by_hand():
    scores = np.array([[0.9, 0.2, 0.5], [0.1, 0.1, 0.0]])
    assert U.score_margin(scores) == pytest.approx([0.4, 0.0])


def test_risk_coverage_oracle_minimum_by_hand():
    accuracy = np.array([1, 0, 1, 1, 0, 0, 1, 0, 0, 0], dtype=float)  # m = 4 correct of Q = 10
    out = U.risk_coverage(accuracy, accuracy)
    q, m = 10, 4
    minimum = sum((i - m) / i for i in range(m + 1, q + 1)) / q  # correct first: risk 0, then (i - m) / i
    assert out["aurc"] == pytest.approx(minimum, abs=1e-12)
    assert out["oracle_aurc"] == pytest.approx(minimum, abs=1e-12)
    assert out["risk"][:m] == pytest.approx(0.0) and out["full_risk"] == pytest.approx(0.6)
    assert out["coverage"][[0, -1]] == pytest.approx([0.1, 1.0])
    worst = U.risk_coverage(-accuracy, accuracy)["aurc"]  # wrong first
    assert worst == pytest.approx(sum(1 - max(0, i - 6) / i for i in range(1, 11)) / 10, abs=1e-12)


def test_risk_coverage_random_confidence_gives_the_mean_risk():
    rng = np.random.default_rng(6)
    accuracy = rng.random(200) < 0.3
    aurcs = [U.risk_coverage(rng.random(200), accuracy)["aurc"] for _ in range(400)]
    # each AURC is a mean of dependent risks; 400 replicates put the mean within about 0.003 of its expectation
    assert np.mean(aurcs) == pytest.approx(1 - accuracy.mean(), abs=0.01)
    # a constant confidence: ties broken at random in expectation, exactly the overall risk at every coverage
    assert U.risk_coverage(np.ones(200), accuracy)["risk"] == pytest.approx(np.full(200, 1 - accuracy.mean()))


def test_compare_confidences_detects_information_the_margin_lacks():
    """Accuracy depends on two independent signals; the margin sees one, kappa the other: each alone is
    better than chance, and the combination beats the margin alone (its interval below 0)."""
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(2, 600))
    accuracy = (rng.random(600) < 1 / (1 + np.exp(-2 * (a + b)))).astype(float)
    out = U.compare_confidences(np.exp(a), b, accuracy, n_resamples=300)
    assert out["aurc_kappa"] < out["full_risk"] and out["aurc_margin"] < out["full_risk"]
    assert out["combined_ci_high"] < 0
    assert out["ci_low"] < out["difference"] < out["ci_high"]
    # a kappa carrying nothing the margin lacks (a monotone function of it) adds nothing
    same = U.compare_confidences(np.exp(b), b, accuracy, n_resamples=100)
    assert same["difference"] == pytest.approx(0.0) and same["combined_minus_margin"] == pytest.approx(0.0)
    other = U.compare_confidences(np.exp(a), b, accuracy, margin_accuracy=1 - accuracy, n_resamples=50)
    assert "aurc_combined" not in other


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = make_synthetic_bundle(tmp_path_factory.mktemp("b") / "syn", n_items=(60, 40, 10), truth=True, views=3)
    data = load_bundle(path)
    torch.manual_seed(0)
    model, _ = build_model(TrainConfig(hidden=16, layers=1), {m: data["val"].feature_dim(m)
                                                                  for m in data["val"].modalities})
    return data["val"], model.eval()


def test_view_concentrations_match_encoding_each_view_alone(synthetic):
    split, model = synthetic
    kappa = U.view_concentrations(model, split)
    assert set(kappa) == {"audio", "image", "text"} and kappa["audio"].shape == (40, 3)
    main = encode_split(model, split)  # the main features hold view 0
    for m in kappa:
        assert kappa[m][:, 0] == pytest.approx(main[m].concentration.double().numpy(), rel=1e-6)
    i, k = 7, 2  # one item, its view 2 in every modality, encoded on its own
    rows = np.array([i])
    one = dataclasses.replace(split, ids=split.ids[rows], present={m: p[rows] for m, p in split.present.items()},
                              features={m: split.views.features[m][rows, k] for m in split.modalities},
                              captions=None, relevant=None, views=None, meta={})
    enc = encode_split(model, one)
    for m in kappa:
        assert kappa[m][i, k] == pytest.approx(float(enc[m].concentration[0]), rel=1e-5)
    assert U.view_generality(split).shape == (40, 3)


def test_retrieval_confidence_accuracy_is_the_top1_hit(synthetic):
    split, model = synthetic
    enc = encode_split(model, split)
    out = U.retrieval_confidence(enc, "audio", "image", split.present)
    scores = enc["audio"].loc.double() @ enc["image"].loc.double().T
    assert out["accuracy"] == pytest.approx((scores.argmax(1) == torch.arange(40)).double().numpy())
    assert out["kappa"] == pytest.approx(enc["audio"].concentration.double().numpy())
    text = U.retrieval_confidence(enc, "text", "image", split.present, relevant=split.relevant)
    hit = (enc["text"].loc.double() @ enc["image"].loc.double().T).argmax(1) == torch.arange(40)
    specific = split.relevant.sum(1) == 1  # a caption true of its own item only: R = 1, the top-1 hit
    assert 0 < specific.sum() < 40
    assert text["accuracy"][specific] == pytest.approx(hit.double().numpy()[specific])


def test_the_figure_renders(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from mmkit.viz.style import export
    from mmkit.viz.uncertainty import uncertainty_figure

    severity, kappa = _copula(40, 3, 0.5, seed=8)
    accuracy = (np.random.default_rng(8).random(40) < 0.5).astype(float)
    curves = {"κ": U.risk_coverage(kappa[:, 0], accuracy), "top-1 margin": U.risk_coverage(severity[:, 0], accuracy)}
    fig = uncertainty_figure({"audio": kappa, "image": kappa}, {"audio": severity, "image": severity}, curves)
    assert len(fig.axes) == 3 and fig.axes[0].get_title().startswith("audio: ρ = -0.")
    assert "AURC" in fig.axes[2].get_legend().get_texts()[0].get_text()
    paths = export(fig, tmp_path / "u", formats=("png",))
    assert paths[0].stat().st_size > 1000
    with pytest.raises(ValueError, match="nothing to draw"):
        uncertainty_figure({}, {})
