"""The retrieval widget without a browser: the session's rankings against independent oracles (numpy
cosine, mpmath KL) and against mmkit.retrieval.scores for one query; every widget callback (query by id, search,
random, linked and unlinked pickers, target, distance, k, active modalities) redraws result lists that
show exactly those rankings; bad inputs give errors naming what was expected."""
import html
import json
import re

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

import oracles
from mmkit.data import load_bundle, make_synthetic_bundle
from mmkit.retrieval.tasks import evaluate_tasks
from mmkit.model.config import TrainConfig
from mmkit.model.run import Run, encode_split
from mmkit.training.loop import fit
from mmkit.app.widgets import RetrievalApp, RetrievalSession, run_slug, runs_from_json
from retrieval_oracle import expected_top_ids

RUNS = ("Proposed", "Baseline")
NO_AUDIO_FILE, NO_IMAGE = 7, 5  # rows of the test split: an item without an audio file, one without an image


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_synthetic_bundle(tmp_path_factory.mktemp("bundle") / "b", n_items=(60, 20, 40), seed=3)


@pytest.fixture
def split(bundle, tmp_path):
    """The test split (40 items) with a wav and a png per item (none for row 7) and no image for row 5."""
    part = load_bundle(bundle)["test"]
    part.root = tmp_path
    media = {"audio": [], "image": []}
    for row in range(len(part)):
        name = "" if row == NO_AUDIO_FILE else f"m{row}"
        if name:
            soundfile.write(tmp_path / f"{name}.wav", np.sin(np.arange(800) * 0.01 * (row + 1)), 8000)
            Image.fromarray(np.full((8, 16), 6 * row, dtype=np.uint8)).save(tmp_path / f"{name}.png")
        media["audio"].append(f"{name}.wav" if name else "")
        media["image"].append(f"{name}.png" if name else "")
    part.media = {m: np.array(v) for m, v in media.items()}
    part.present["image"][NO_IMAGE] = False
    return part


def _random_encodings(n: int, seed: int, d: int = 8):
    g = torch.Generator().manual_seed(seed)
    return {m: (torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1),
                1.0 + 59.0 * torch.rand(n, generator=g)) for m in ("audio", "image", "text")}


@pytest.fixture
def encodings(split):
    return {name: _random_encodings(len(split), seed) for seed, name in enumerate(RUNS)}


@pytest.fixture
def session(split, encodings):
    return RetrievalSession(split, encodings)


def _shown(app, run):
    """The attributes of the result list of ``run`` as the browser receives them."""
    attrs = dict(re.findall(r'data-mmkit-([a-z]+)="([^"]*)"', app.results[run].value))
    out = {k: html.unescape(v) for k, v in attrs.items()}
    return {**out, "ids": json.loads(out["ids"]), "query": json.loads(out["query"])}


def _fused(enc, rows: dict):
    """Product of the query vMFs in float64: (mu (d,), kappa)."""
    total = sum(enc[m][1][r].double() * enc[m][0][r].double() for m, r in rows.items())
    return (total / total.norm()).numpy(), float(total.norm())


# ----------------------------------------------------------------------------------------------
# session
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("distance", ["cosine", "kl"])
def test_rank_matches_an_independent_oracle(session, split, encodings, distance):
    enc = encodings["Proposed"]
    item = str(split.ids[3])
    r = session.rank({"text": item, "audio": item}, "image", distance, run="Proposed", k=7)
    mu, kappa = _fused(enc, {"audio": 3, "text": 3})
    gallery = np.flatnonzero(split.present["image"])
    g_mu, g_kappa = enc["image"][0].double().numpy()[gallery], enc["image"][1].double().numpy()[gallery]
    d = mu.shape[0]
    if distance == "cosine":
        truth = g_mu @ mu
    else:  # -KL(q || g) = -(log C(kq) - log C(kg) + A(kq) (kq - kg mu_g.mu_q)), at 50 digits
        truth = np.array([-(oracles.log_normalizer(d, kappa) - oracles.log_normalizer(d, float(kg))
                            + oracles.mean_resultant(d, kappa) * (kappa - kg * float(gm @ mu)))
                          for gm, kg in zip(g_mu, g_kappa)])
    best = np.argsort(-truth, kind="stable")[:7]
    assert r.ids == [str(split.ids[gallery[i]]) for i in best]
    np.testing.assert_allclose(r.scores, truth[best], rtol=1e-4, atol=1e-5)
    assert r.query_kappa == pytest.approx(kappa, rel=1e-5)
    np.testing.assert_allclose(r.kappas, g_kappa[best], rtol=1e-6)
    assert r.gallery_size == len(split) - 1  # row NO_IMAGE has no image
    assert str(split.ids[NO_IMAGE]) not in r.ids


@pytest.mark.parametrize("distance", ["ssw", "kl", "elk", "cosine"])
def test_rank_is_what_mmkit_retrieval_ranks_for_one_query(session, split, encodings, distance):
    for run in RUNS:
        for row, query in ((0, ("audio",)), (11, ("audio", "image")), (23, ("image", "text"))):
            target = next(m for m in ("text", "audio") if m not in query)
            q = {m: str(split.ids[row]) for m in query}
            got = session.rank(q, target, distance, run=run, k=10).ids
            assert got == expected_top_ids(encodings[run], split, q, target, distance, 10)


def test_true_rank_agrees_with_the_evaluation(session, split, encodings):
    """The rank of the true match equals evaluate_tasks' rank (same gallery: every item has audio and text)."""
    enc = encodings["Baseline"]
    present = {m: torch.from_numpy(split.present[m].copy()) for m in enc}
    tasks = evaluate_tasks(enc, present, tasks=[(("audio",), "text")], distance="kl", return_ranks=True)
    ranks = tasks["A->T"]["ranks"]
    for row in (0, 9, 31):
        item = str(split.ids[row])
        r = session.rank({"audio": item}, "text", "kl", run="Baseline", k=40)
        assert r.true_ranks == {item: float(ranks[row])}
        assert r.matches == [i == item for i in r.ids]


def test_a_query_mixing_two_items_marks_both(session, split):
    a, b = str(split.ids[2]), str(split.ids[8])
    r = session.rank({"audio": a, "text": b}, "image", "cosine", k=40)
    assert set(r.true_ranks) == {a, b}
    assert {i for i, hit in zip(r.ids, r.matches) if hit} == {a, b}
    assert r.query == {"audio": a, "text": b}


def test_session_errors_name_the_problem(session, split):
    item = str(split.ids[0])
    with pytest.raises(ValueError, match=r"item id 'nope' is not in the split"):
        session.rank({"audio": "nope"}, "image")
    with pytest.raises(ValueError, match=r"has no image"):
        session.rank({"image": str(split.ids[NO_IMAGE])}, "text")
    with pytest.raises(ValueError, match=r"must not use the target modality 'image'"):
        session.rank({"image": item}, "image")
    with pytest.raises(ValueError, match=r"at least one modality"):
        session.rank({}, "image")
    with pytest.raises(ValueError, match=r"distance must be one of .*got 'l2'"):
        session.rank({"audio": item}, "image", "l2")
    with pytest.raises(ValueError, match=r"target must be one of .*got 'video'"):
        session.rank({"audio": item}, "video")
    with pytest.raises(ValueError, match=r"k must be an int >= 1, got 0"):
        session.rank({"audio": item}, "image", k=0)
    with pytest.raises(ValueError, match=r"run must be one of \['Proposed', 'Baseline'\], got 'PCME'"):
        session.rank({"audio": item}, "image", run="PCME")
    with pytest.raises(ValueError, match=r"query modalities must be drawn from .*\['video'\]"):
        session.rank({"video": item}, "image")


def test_session_refuses_bad_runs(split, encodings):
    with pytest.raises(ValueError, match=r"runs: expected a non-empty mapping"):
        RetrievalSession(split, {})
    bad = {m: (loc[:-1], kappa[:-1]) for m, (loc, kappa) in encodings["Proposed"].items()}
    with pytest.raises(ValueError,
                       match=r"runs\['P'\]\['audio'\]: expected loc \(N=40, d\) and kappa \(40,\), got \(39, 8\)"):
        RetrievalSession(split, {"P": bad})
    zero = {m: (loc, torch.zeros_like(kappa)) for m, (loc, kappa) in encodings["Proposed"].items()}
    with pytest.raises(ValueError, match=r"kappa finite and > 0"):
        RetrievalSession(split, {"P": zero})
    with pytest.raises(ValueError, match=r"no modality of the split .* is encoded by every run"):
        RetrievalSession(split, {"P": {}})
    with pytest.raises(TypeError, match=r"runs\['P'\]: expected a run directory or .*got int"):
        RetrievalSession(split, {"P": 3})
    with pytest.raises(ValueError, match=r"collide once reduced to CSS classes"):
        RetrievalSession(split, {"A b": encodings["Proposed"], "a-B": encodings["Baseline"]})
    with pytest.raises(ValueError, match=r"is not a run directory \(no manifest.json\)"):
        RetrievalSession(split, {"P": str(split.root)})
    assert run_slug("Proposed (λ=1)") == "proposed-1"
    with pytest.raises(ValueError, match=r"needs at least one letter or digit"):
        run_slug("λ")
    assert runs_from_json('{"P": "runs/p"}') == {"P": "runs/p"}
    for text in ("[1]", "{}", '{"P": 3}', "runs/p"):
        with pytest.raises(ValueError, match=r"runs: expected .*JSON object"):
            runs_from_json(text)


def test_session_from_run_directories(bundle, split, tmp_path):
    data = load_bundle(bundle)
    runs = {}
    for method in ("proposed", "pcme"):
        runs[method] = tmp_path / method
        config = TrainConfig(method=method, epochs=1, batch_size=16, hidden=16, layers=1)
        fit(config, data, runs[method], progress=False)
    session = RetrievalSession(split, runs)
    model = Run(runs["proposed"]).load_model()
    direct = encode_split(model, split)
    for m in ("audio", "image", "text"):
        torch.testing.assert_close(session.encodings["proposed"][m][0], direct[m][0])
    assert session.families == {"proposed": "vmf", "pcme": "gaussian"}
    item = str(split.ids[4])
    assert session.rank({"audio": item}, "text", "ssw", run="pcme").distance == "cosine"
    assert session.rank({"audio": item}, "text", "ssw", run="proposed").distance == "ssw"
    other = make_synthetic_bundle(tmp_path / "other", n_items=(4, 4, 4), dims={"audio": 5, "image": 6, "text": 7})
    with pytest.raises(ValueError, match=r"trained on other features.*'audio': \(128, 5\)"):
        RetrievalSession(load_bundle(other)["test"], {"P": runs["proposed"]})


# ----------------------------------------------------------------------------------------------
# widget callbacks
# ----------------------------------------------------------------------------------------------
def _assert_shows(app, encodings, split, query, target, distance, k=10):
    for run in RUNS:
        shown = _shown(app, run)
        assert shown["query"] == query and shown["target"] == target and shown["distance"] == distance
        assert shown["error"] == ""
        assert shown["ids"] == expected_top_ids(encodings[run], split, query, target, distance, k)
        assert shown["version"] == str(app.version)
        assert f"mmkit-results-{run_slug(run)}" in app.results[run]._dom_classes


def test_app_starts_with_the_first_complete_item(session, split, encodings):
    app = RetrievalApp(session, target="image", distance="kl")
    first = str(split.ids[0])
    assert app.query == {"audio": first, "text": first}
    assert app.pickers["image"].use.disabled and not app.pickers["image"].use.value
    _assert_shows(app, encodings, split, app.query, "image", "kl")
    assert app.pickers["audio"].media.audio.value == (split.root / "m0.wav").read_bytes()
    assert app.pickers["image"].media.image.value == (split.root / "m0.png").read_bytes()


def test_changing_the_query_changes_the_results(session, split, encodings):
    app = RetrievalApp(session, distance="ssw")
    before = {run: _shown(app, run)["ids"] for run in RUNS}
    item = str(split.ids[17])
    app.pickers["audio"].pick.value = item  # what choosing in the dropdown does
    assert app.query == {"audio": item, "text": item}  # linked: the text picker follows
    _assert_shows(app, encodings, split, app.query, "image", "ssw")
    assert all(_shown(app, run)["ids"] != before[run] for run in RUNS)
    assert app.pickers["text"].media.caption.value.count(str(split.captions[17])) == 1


def test_search_selects_the_best_match(session, split, encodings):
    app = RetrievalApp(session, distance="cosine")
    picker = app.pickers["text"]
    picker.search.value = "item 97"  # caption words
    assert app.query == {"audio": "syn000097", "text": "syn000097"} and picker.note.value == "<i>1 match(es)</i>"
    _assert_shows(app, encodings, split, app.query, "image", "cosine")
    picker.search.value = "syn000111"  # an id
    assert picker.pick.options == ((picker.label(31), "syn000111"),) and app.query["text"] == "syn000111"
    version = app.version
    picker.search.value = "no such words"
    assert "no item with text matches" in picker.note.value
    assert app.version == version and app.query["text"] == "syn000111"
    app.select("text", "syn000092")  # an id outside the filtered options clears the search
    assert picker.search.value == "" and app.query["text"] == "syn000092"


def test_random_button_and_unlinked_pickers(session, split, encodings):
    app = RetrievalApp(session, distance="kl")
    app.linked.value = False
    start = dict(app.query)
    app.pickers["audio"].random.click()
    assert app.query["audio"] != start["audio"] and app.query["text"] == start["text"]
    _assert_shows(app, encodings, split, app.query, "image", "kl")
    r = app.rankings["Proposed"]
    assert set(r.true_ranks) == {app.query["audio"], app.query["text"]}
    app.linked.value = True  # relinking aligns every picker
    assert len(set(app.query.values())) == 1
    _assert_shows(app, encodings, split, app.query, "image", "kl")


def test_changing_the_target_and_the_active_modalities(session, split, encodings):
    app = RetrievalApp(session, distance="elk")
    app.select("audio", str(split.ids[NO_IMAGE]))  # no image: the image picker keeps its item and says why
    assert "has no image" in app.pickers["image"].note.value
    item = app.query["audio"]
    app.target.value = "audio"
    assert app.pickers["audio"].use.disabled and not app.pickers["audio"].use.value
    assert app.query == {"text": item}  # image was the target before and stays unticked
    _assert_shows(app, encodings, split, {"text": item}, "audio", "elk")
    app.pickers["image"].use.value = True
    assert set(app.query) == {"image", "text"}
    _assert_shows(app, encodings, split, app.query, "audio", "elk")
    app.distance.value, app.k.value = "cosine", 3
    _assert_shows(app, encodings, split, app.query, "audio", "cosine", k=3)
    assert all(len(_shown(app, run)["ids"]) == 3 for run in RUNS)


def test_an_empty_query_shows_the_error_instead_of_results(session, split):
    app = RetrievalApp(session)
    for m in ("audio", "text"):
        app.pickers[m].use.value = False
    for run in RUNS:
        shown = _shown(app, run)
        assert shown["ids"] == [] and "at least one modality" in shown["error"]
    assert "at least one modality" in app.status.value
    app.pickers["text"].use.value = True
    assert _shown(app, "Proposed")["error"] == "" and app.query == {"text": str(split.ids[0])}


def test_preview_and_missing_media(session, split):
    app = RetrievalApp(session, distance="cosine", k=40)
    assert app.preview_pick.options == tuple(dict.fromkeys(app.rankings["Proposed"].ids + app.rankings["Baseline"].ids))
    app.preview_pick.value = str(split.ids[NO_AUDIO_FILE])
    assert "no audio or image file" in app.preview.caption.value
    assert app.preview.audio.layout.display == "none"
    app.preview_pick.value = str(split.ids[3])
    assert app.preview.audio.value == (split.root / "m3.wav").read_bytes() and app.preview.audio.layout.display is None


def test_app_refuses_bad_settings(session):
    with pytest.raises(ValueError, match=r"target must be one of .*got 'score'"):
        RetrievalApp(session, target="score")
    with pytest.raises(ValueError, match=r"distance must be one of .*got 'euclid'"):
        RetrievalApp(session, distance="euclid")
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 50\], got 0"):
        RetrievalApp(session, k=0)
    with pytest.raises(ValueError, match=r"query: item id 'nope' is not in the split"):
        RetrievalApp(session, query="nope")
    with pytest.raises(ValueError, match=r"modality must be one of .*got 'video'"):
        RetrievalApp(session).select("video", "syn000080")
