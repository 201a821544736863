"""A trained run used on new material (audio files, score files, text), gallery search, export,
and the kappa-reliability analysis."""
import numpy as np
import pytest
import torch

from mmkit.analysis.new_material import (encode_features, export_embeddings, features_from_audio_file, features_from_score_file, features_from_text)
from mmkit.analysis.evaluate import kappa_reliability
from mmkit.retrieval.scores import score
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
    assert s.shape == (1, len(tiny["data"]["test"])) and torch.isfinite(s).all()
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
    assert -1.0 <= rel["A->I"]["spearman_kappa_vs_reciprocal_rank"] <= 1.0
