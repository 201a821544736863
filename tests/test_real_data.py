"""The -real presets' pieces: views with recorded nuisance (factors, severity), captions at graded
specificity and their many-to-many truth, and a small build through the real code path."""
import json

import numpy as np
import pytest

from mmkit.data.embedded import truth, views

ATTRS = [
    {"collection": "essenFolksong", "genre": "folk", "key": "G major", "mode": "major", "meter": "3/4",
     "tempo_class": "slow", "instrument": "violin", "instrument_family": "a bowed string instrument", "kind": "song"},
    {"collection": "essenFolksong", "genre": "folk", "key": "G major", "mode": "major", "meter": "4/4",
     "tempo_class": "slow", "instrument": "flute", "instrument_family": "a flute-like wind instrument", "kind": "song"},
    {"collection": "bach", "genre": "art", "key": "D minor", "mode": "minor", "meter": "4/4", "tempo_class": "fast",
     "instrument": "violin", "instrument_family": "a bowed string instrument", "composer": "J. S. Bach", "kind": "chorale"},
    {"collection": "oneills1850", "genre": "folk", "meter": "6/8", "tempo_class": "slow", "instrument": "cello",
     "instrument_family": "a bowed string instrument", "kind": "jig"},  # no key: the analysis failed
]


def test_truth_matrix_by_hand():
    claims = [{"genre": "folk", "tempo_class": "slow"}, {"key": "G major"}, {"instrument_family": "a bowed string instrument",
              "meter": "4/4"}, {}, {"key": "D minor", "genre": "folk"}]
    expected = [[1, 1, 0, 1], [1, 1, 0, 0], [0, 0, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]]
    assert (truth.truth_matrix(claims, ATTRS) == np.array(expected, dtype=bool)).all()


def test_truth_matrix_against_brute_force():
    rng = np.random.default_rng(0)
    values = {"a": ["x", "y", "z"], "b": ["p", "q"], "c": ["u", "v", "w", "t"]}
    items = [{k: str(rng.choice(v)) for k, v in values.items() if rng.random() < 0.85} for _ in range(40)]
    claims = [{k: str(rng.choice(v)) for k, v in values.items() if rng.random() < 0.5} for _ in range(60)]
    brute = np.array([[all(it.get(k) == v for k, v in c.items()) for it in items] for c in claims])
    assert (truth.truth_matrix(claims, items) == brute).all()


@pytest.mark.parametrize("level", range(4))
def test_captions_assert_only_what_the_item_has_and_say_it(level):
    for i, attrs in enumerate(ATTRS):
        text, asserted = truth.caption_for(attrs, level, key=f"k{i}")
        assert set(asserted) == set(truth.LEVELS[level]) & set(attrs)
        assert all(attrs[k] == v for k, v in asserted.items())
        for k, v in asserted.items():
            if k in ("key", "meter", "instrument", "tempo_class", "composer"):
                assert str(v).lower() in text.lower(), (k, v, text)
        assert truth.truth_matrix([asserted], [attrs])[0, 0]  # a caption is true of its own item


def test_generality_grows_with_level():
    rng = np.random.default_rng(1)
    items = [{**ATTRS[int(rng.integers(4))], "first_note": str(rng.choice(list("ABCDEFG"))),
              "contour": str(rng.choice(["rising", "falling", "arched"]))} for _ in range(60)]
    general = [truth.truth_matrix([truth.caption_for(a, lv, f"k{i}")[1] for i, a in enumerate(items)], items).sum(1).mean()
               for lv in range(4)]
    assert general == sorted(general) and general[3] > 3 * general[0]


def test_tempo_class_bounds():
    assert [truth.tempo_class(x) for x in (0.5, 2.4, 3.6, 3.61)] == ["slow", "moderate", "moderate", "fast"]
    with pytest.raises(ValueError):
        truth.tempo_class(float("nan"))


def test_view_zero_is_clean_and_others_are_graded():
    assert views.audio_severity(views.audio_factors(views.view_rng("w", "audio", 0), 0)) == 0.0
    assert views.image_severity(views.image_factors(views.view_rng("w", "image", 0), 0)) == 0.0
    fa = [views.audio_factors(views.view_rng(f"w{i}", "audio", 1), 1) for i in range(400)]
    fi = [views.image_factors(views.view_rng(f"w{i}", "image", 1), 1) for i in range(400)]
    sa, si = np.array([views.audio_severity(f) for f in fa]), np.array([views.image_severity(f) for f in fi])
    assert 0 <= sa.min() and sa.max() <= 1 and 0 <= si.min() and si.max() <= 1
    assert (sa > 0.6).mean() > 0.1 and (si > 0.6).mean() > 0.05 and (sa < 0.2).mean() > 0.1
    snr = np.array([f["snr_db"] for f in fa if f["snr_db"] is not None])
    assert snr.min() <= 5 and snr.max() <= 30  # the range includes severe noise
    assert {f["soundfont"] for f in fa} == set(views.SOUNDFONTS) and len({f["font"] for f in fi}) >= 3
    tempo = np.array([f["tempo"] for f in fa])
    assert 0.8 <= tempo.min() < 0.85 and 1.2 < tempo.max() <= 1.25
    assert views.audio_factors(views.view_rng("w3", "audio", 2), 2) == views.audio_factors(views.view_rng("w3", "audio", 2), 2)


def test_instruments_span_five_families():
    families = {views.instrument_of(f"work{i}")[2] for i in range(300)}
    gm_families = {p // 8 for p in views.INSTRUMENTS}
    assert len(families) >= 5 and len(gm_families) >= 5


def test_add_noise_hits_the_requested_snr():
    rng = np.random.default_rng(0)
    clean = np.sin(np.linspace(0, 200, 16000)).astype(np.float32)
    for snr in (0.0, 5.0, 20.0):
        noisy = views.add_noise(clean, snr, np.random.default_rng(1))
        measured = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean((noisy - clean) ** 2))
        assert measured == pytest.approx(snr, abs=1e-6)
    del rng


def test_degradation_is_seeded_and_stronger_views_move_further():
    img = np.full((128, 512), 255, np.uint8)
    img[40:88:8, 20:500] = 0  # staff lines
    img[50:70, 100:104] = 0
    clean = views.image_factors(views.view_rng("x", "image", 0), 0)
    weak = {**clean, "blur": 0.3, "noise": 0.02, "jpeg": 90}
    strong = {**clean, "rotate": 2.5, "perspective": 0.03, "blur": 1.1, "bleed": 3, "noise": 0.09, "jpeg": 25}
    a, b = views.degrade(img, strong, seed=5), views.degrade(img, strong, seed=5)
    assert np.array_equal(a, b) and np.array_equal(views.degrade(img, clean, seed=5), img)
    move = [np.abs(views.degrade(img, f, seed=5).astype(float) - img).mean() for f in (weak, strong)]
    assert 0 < move[0] < move[1]
    assert views.image_severity(weak) < views.image_severity(strong)


def test_missing_soundfont_names_the_debian_package(monkeypatch):
    monkeypatch.setitem(views.SOUNDFONTS, "fluidr3mono", ("/nowhere/FluidR3Mono_GM.sf3", "fluidr3mono-gm-soundfont"))
    with pytest.raises(FileNotFoundError, match="apt-get install fluidr3mono-gm-soundfont"):
        views.soundfont_file("fluidr3mono")


def test_silent_pairs_are_named(monkeypatch):
    from mmkit.data import render

    monkeypatch.setattr(render, "synthesize", lambda midi, seconds=8.0, soundfont=None, program=0:
                        np.zeros(16000, np.float32) if program == 11 else np.ones(16000, np.float32))
    with pytest.raises(RuntimeError, match=r"timgm6mb x program 11 \(vibraphone\)"):
        views.check_soundfonts(soundfonts=("timgm6mb",))


@pytest.mark.slow
def test_a_small_real_build_has_views_truth_and_resumes(tmp_path, monkeypatch):
    """Twelve works through build_real_dataset (one worker): views, factors, severities, truth and
    the card; then a corrupt cached item is re-rendered and nothing else."""
    from mmkit.data.bundle import load_bundle
    from mmkit.data.embedded import build, real

    works = build.select_works("tiny", 0)[:12]
    monkeypatch.setattr(real, "select_works", lambda preset, seed: works)
    monkeypatch.setitem(build.PRESET_SPECS, "tiny", build.PresetSpec(12, {}, (0.4, 0.3, 0.3)))
    card = tmp_path / "card.md"
    summary = real.build_real_dataset("tiny-real", cache=tmp_path / "c", workers=1, progress=False, card=card)
    assert summary["rendered"] == 12 and summary["items"] + summary["skipped"] == 12
    data = load_bundle(summary["bundle"])
    for split in data.values():
        v = split.views
        assert set(v.features) == {"audio", "image", "text"} and v.n_views("audio") == 4
        assert (v.severity["audio"][:, 0] == 0).all() and (v.severity["image"][:, 0] == 0).all()
        assert np.array_equal(v.features["audio"][:, 0], split.features["audio"])
        assert json.loads(v.factors["audio"][0, 1])["soundfont"] in views.SOUNDFONTS
        assert split.relevant is not None and split.relevant.diagonal().all()
        assert (v.text_truth[:, 0] == split.relevant).all()
        levels = {json.loads(f)["level"] for f in v.factors["text"].ravel()}
        assert levels == {0, 1, 2, 3}
        degraded = real.degraded_view_split(split)
        assert (np.abs(degraded.features["image"] - split.features["image"]).sum(1) > 0).all()
    text = card.read_text()
    assert "severity" in text and "Generality" in text and "4 views" in text
    item = next(p for p in (tmp_path / "c" / "real-items").rglob("ok.json")).parent
    (item / "image.png").write_bytes(b"corrupt")
    again = real.build_real_dataset("tiny-real", cache=tmp_path / "c", workers=1, progress=False)
    assert again["rendered"] == 1 and again["items"] == summary["items"]


def test_training_draws_one_view_per_item_per_epoch(tmp_path):
    """draw_views picks, per item and modality, one of its stored views (seeded); fit with
    train_views='sample' trains on views, 'eval' on view 0 only, and the two differ."""
    from mmkit.data import load_bundle, make_synthetic_bundle
    from mmkit.data.datasets import draw_views
    from mmkit.model.config import TrainConfig
    from mmkit.training.loop import fit

    data = load_bundle(make_synthetic_bundle(tmp_path / "b", n_items=(64, 32, 32), truth=True, views=3, seed=1))
    train = data["train"]
    drawn = draw_views(train, seed=7)
    for m in ("audio", "image", "text"):
        match = (drawn.features[m][:, None, :] == train.views.features[m]).all(-1)  # (N, K)
        assert (match.sum(1) >= 1).all() and match[:, 1:].any()                      # a stored view, not always view 0
    assert np.array_equal(draw_views(train, seed=7).features["audio"], drawn.features["audio"])
    common = dict(method="baseline", epochs=2, batch_size=16, hidden=32, layers=1, dim=8, seed=0)
    sample = fit(TrainConfig(**common), data, tmp_path / "sample", progress=False)
    evalv = fit(TrainConfig(**common, train_views="eval"), data, tmp_path / "eval", progress=False)
    assert sample["history"][-1]["loss"] != evalv["history"][-1]["loss"]


def test_specific_captions_keep_note_names_and_articles():
    attrs = {**ATTRS[0], "first_note": "A", "opening": "a whole tone up", "contour": "arched", "country": "Germany"}
    text, asserted = truth.caption_for(attrs, 0, key="k")
    assert "It begins on A with a whole tone up; the melody has an arched contour." in text
    assert "played on the violin" in text and asserted["first_note"] == "A"
