"""A trained run used on new material (audio files, score files, text), gallery search, export,
and the kappa-reliability analysis."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from oracles import log_normalizer, mean_resultant

from mmkit.analysis.new_material import (encode_features, export_embeddings, features_from_audio_file, features_from_score_file, features_from_text)
from mmkit.analysis.evaluate import kappa_reliability
from mmkit.retrieval.scores import score
from mmkit.retrieval.tasks import evaluate_tasks
from mmkit.model.config import TrainConfig
from mmkit.model.run import Run, encode_split
from mmkit.training.loop import fit


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "r"
    fit(TrainConfig(method="proposed", seed=0, epochs=10, batch_size=16, hidden=64, layers=1), tiny["data"], run,
        progress=False)
    return Run(run).load_model()


def test_audio_file_features_match_the_dataset(tiny):
    split = tiny["data"]["test"]
    got = features_from_audio_file(split.media_path("audio", 0))
    assert got.shape == split.features["audio"][0].shape
    np.testing.assert_allclose(got, split.features["audio"][0], atol=2e-3)


def test_score_file_and_text_search_the_gallery(tiny, trained, tmp_path):
    from music21 import corpus

    path = tmp_path / "tune.musicxml"
    corpus.parse("ryansMammoth/RidingOnAHandCarJig.abc").write("musicxml", fp=str(path))
    feats = features_from_score_file(path)
    assert feats["image"].shape == (1090,) and feats["audio"].shape == (270,)
    q_loc, q_kappa = encode_features(trained, "image", feats["image"])
    assert q_loc.shape == (1, trained.dim) and (q_kappa > 0).all()
    t_loc, t_kappa = encode_features(trained, "text", features_from_text(["A jig in 6/8 time in G major."]))
    gallery = encode_split(trained, tiny["data"]["test"])["audio"]
    s = score([(q_loc, q_kappa), (t_loc, t_kappa)], gallery, distance="kl")
    assert s.shape == (1, len(tiny["data"]["test"]))
    # -KL(fused query || item) from the closed form at 50 digits (tests/oracles.py): the product of the
    # two query vMFs is vMF(total / |total|, |total|) with total = kappa_q mu_q + kappa_t mu_t
    total = q_kappa.double()[0] * q_loc.double()[0] + t_kappa.double()[0] * t_loc.double()[0]
    k_q, d = float(total.norm()), trained.dim
    mu_q = total / k_q
    expected = [-(log_normalizer(d, k_q) - log_normalizer(d, float(k_g))
                  + mean_resultant(d, k_q) * (k_q - float(k_g) * float(mu_q @ loc_g.double())))
                for loc_g, k_g in zip(*gallery)]
    np.testing.assert_allclose(s[0].double().numpy(), expected, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="no 'video' head"):
        encode_features(trained, "video", feats["image"])


def test_export_and_kappa_reliability(tiny, trained, tmp_path):
    split = tiny["data"]["test"]
    params = encode_split(trained, split)
    path = export_embeddings(tmp_path / "emb.npz", split.ids, params)
    with np.load(path) as f:
        assert f["ids"].tolist() == split.ids.tolist()
        np.testing.assert_array_equal(f["image_loc"], params["image"][0].numpy())
    present = {m: torch.from_numpy(split.present[m]) for m in params}
    rel = kappa_reliability(params, present, n_bins=4)
    assert len(rel) == 9
    bins = rel["A->I"]["bins"]
    assert sum(b["n"] for b in bins) == len(split) and bins[0]["kappa_max"] <= bins[-1]["kappa_min"]
    # scipy's Spearman (average ranks for ties) of the query kappa and the reciprocal cosine ranks
    ranks = evaluate_tasks(params, present, tasks=[(("audio",), "image")], return_ranks=True)["A->I"]["ranks"].numpy()
    assert len(set(ranks.tolist())) < len(ranks)  # tied reciprocal ranks: the case the tie rule is about
    kappa = params["audio"].concentration.numpy()
    expected = spearmanr(kappa, 1.0 / ranks).statistic
    assert rel["A->I"]["spearman_kappa_vs_reciprocal_rank"] == pytest.approx(expected, abs=1e-12)
    first = np.argsort(kappa, kind="stable")[:bins[0]["n"]]
    assert bins[0]["R@1"] == pytest.approx(100.0 * np.mean(ranks[first] <= 1))


def _one_task_params(kappa, ranks_wanted):
    """Encodings of len(kappa) items for A->I whose cosine ranks are ``ranks_wanted``: audio i is e_i
    (so the query's kappa is exactly ``kappa[i]``), and in the gallery column i of the image rows
    scores its own image 0.5 and r - 1 other images 1 (cosine scores need no unit rows)."""
    n = len(kappa)
    image = torch.zeros(n, n, dtype=torch.float64)
    for i, r in enumerate(ranks_wanted):
        image[i, i] = 0.5
        image[[j for j in range(n) if j != i][: r - 1], i] = 1.0
    params = {"audio": (torch.eye(n, dtype=torch.float64), torch.tensor(kappa, dtype=torch.float64)),
              "image": (image, torch.ones(n, dtype=torch.float64))}
    return params, {m: torch.ones(n, dtype=torch.bool) for m in params}


def test_kappa_reliability_spearman_by_hand():
    """Ties in both kappa and the reciprocal ranks, worked out by hand with average ranks:
    kappa (5, 5, 1, 4, 2) -> ranks (4.5, 4.5, 1, 3, 2); reciprocal ranks (1, 1, 1/2, 1, 1/3) ->
    (4, 4, 2, 4, 1); deviations from the mean 3: (1.5, 1.5, -2, 0, -1) and (1, 1, -1, 1, -2), so
    rho = 7 / sqrt(9.5 * 8)."""
    params, present = _one_task_params([5.0, 5.0, 1.0, 4.0, 2.0], [1, 1, 2, 1, 3])
    rel = kappa_reliability(params, present, tasks=[(("audio",), "image")], n_bins=2)
    assert rel["A->I"]["spearman_kappa_vs_reciprocal_rank"] == pytest.approx(7 / math.sqrt(76), abs=1e-12)
    assert [b["n"] for b in rel["A->I"]["bins"]] == [3, 2]
    assert [b["R@1"] for b in rel["A->I"]["bins"]] == pytest.approx([100 / 3, 100.0])  # kappa (1, 2, 4) | (5, 5)


def test_kappa_reliability_spearman_equals_scipy_with_ties():
    gen = torch.Generator().manual_seed(0)
    n = 40
    kappa = torch.tensor([1.0, 2.0, 3.0, 5.0])[torch.randint(0, 4, (n,), generator=gen)]  # heavy ties
    wanted = torch.randint(1, 6, (n,), generator=gen).tolist()
    params, present = _one_task_params(kappa.tolist(), wanted)
    rel = kappa_reliability(params, present, tasks=[(("audio",), "image")])
    expected = spearmanr(kappa.numpy(), 1.0 / np.array(wanted, dtype=float)).statistic
    assert rel["A->I"]["spearman_kappa_vs_reciprocal_rank"] == pytest.approx(expected, abs=1e-12)
    # a constant kappa has no rank correlation
    flat, present = _one_task_params([2.0] * 6, [1, 2, 1, 3, 1, 2])
    assert math.isnan(kappa_reliability(flat, present, tasks=[(("audio",), "image")])["A->I"]
                      ["spearman_kappa_vs_reciprocal_rank"])
