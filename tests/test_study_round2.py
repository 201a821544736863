"""The study's second round (docs/study.md §10, Amendment 1: E10–E14): the grid as declared, the
refusal to start before K* and α are recorded, what E11's runs store for E12 and E13, and their
analyses, checked against oracles computed independently from the stored numbers (scipy's
Spearman, a brute-force risk–coverage area, per-stratum means) on a synthetic bundle with truth
and views."""
import csv
import dataclasses
import json

import numpy as np
import pytest
from scipy import stats

from mmkit.analysis import study as analysis
from mmkit.analysis.uncertainty import view_concentrations
from mmkit.data import load_bundle, make_synthetic_bundle
from mmkit.data.embedded.real import degraded_view_split
from mmkit.data.perturb import chosen, perturbation_order
from mmkit.model.run import Run
from mmkit.pipeline import study
from mmkit.pipeline.study import grid, read_round2_settings, result_path, run_one

SMALL = {"epochs": 1, "batch_size": 16, "hidden": 16, "layers": 1, "n_samples": 4, "n_projections": 8}
SETTINGS = {"kappa": {"kappa_head": "log", "kappa_lr_scale": 10.0}, "pseudo_positive_weight": 0.03,
            "recorded_in": "docs/hyperparameters.md"}


def _settings(path, values=SETTINGS):
    path.write_text(json.dumps(values))
    return path


def test_the_second_round_grid_follows_the_amendment_and_refuses_to_start_without_its_settings(tmp_path):
    missing = tmp_path / "round2_settings.json"
    for name in ("E10", "E11", "E14"):
        with pytest.raises(FileNotFoundError, match="docs/hyperparameters.md"):
            grid([name], settings=missing)
    assert study.ROUND2_SETTINGS.as_posix() == "reports/study/round2_settings.json"
    for bad, match in (({**SETTINGS, "pseudo_positive_weight": 0.5}, "one of"),
                       ({**SETTINGS, "kappa": {"lr": 1.0}}, "kappa_"),
                       ({"kappa": {}, "pseudo_positive_weight": 0.1}, "exactly the keys")):
        with pytest.raises(ValueError, match=match):
            read_round2_settings(_settings(missing, bad))
    path = _settings(tmp_path / "s.json")
    sizes = {name: len(grid([name], settings=path)) for name in ("E10", "E11", "E12", "E13", "E14")}
    assert sizes == {"E10": 40, "E11": 40, "E12": 0, "E13": 0, "E14": 40}  # E12, E13: E11's runs
    e11 = grid(["E11"], settings=path, seeds=[3])
    assert [s.variant for s in e11] == ["baseline", "proposed", "debiased", "pcmepp"] and {s.data for s in e11} == {"small-real"}
    configs = {s.variant: s.config() for s in e11}
    assert all(c.epochs == 60 and c.patience == 8 and c.train_views == "sample" and c.seed == 3 and c.hidden == 256
               for c in configs.values())
    for variant in ("baseline", "proposed", "debiased"):  # K* for the vMF methods, α untouched
        assert (configs[variant].kappa_head, configs[variant].kappa_lr_scale) == ("log", 10.0)
        assert configs[variant].pseudo_positive_weight == 0.1
    assert configs["pcmepp"].method == "pcmepp" and configs["pcmepp"].pseudo_positive_weight == 0.03
    assert configs["pcmepp"].kappa_head == "softplus"
    assert (configs["baseline"].lambda_s, configs["proposed"].lambda_s) == (0, 1) and configs["debiased"].debiased_ssw
    assert {s.data for s in grid(["E10"], settings=path)} == {"small"}
    assert sorted({s.level for s in grid(["E14"], settings=path)}) == [0.2, 0.5]
    assert {s.seed for s in grid(["E14"], settings=path)} == set(range(5))
    with pytest.raises(ValueError, match="--data small-real"):
        grid(["E11"], data="small", settings=path)
    assert grid(["E1"], settings=missing)[0].config().epochs == 20  # the first round needs no settings


@pytest.fixture(scope="module")
def e11(tmp_path_factory):
    """E11's four runs of seed 0 on a synthetic bundle with many-to-many truth and 4 views."""
    tmp = tmp_path_factory.mktemp("round2")
    bundle = make_synthetic_bundle(tmp / "bundle", n_items=(96, 30, 30), dims={"audio": 12, "image": 10, "text": 8},
                                   truth=True, views=4, seed=5)
    specs = grid(["E11"], data=str(bundle), overrides=SMALL, seeds=[0], settings=_settings(tmp / "s.json"))
    for spec in specs:
        assert run_one(spec, store=tmp / "store", work=tmp / "work")["status"] == "done"
    return {"specs": specs, "tmp": tmp, "data": load_bundle(bundle),
            "runs": {s.variant: json.loads(result_path(s, tmp / "store").read_text()) for s in specs}}


def test_e11_runs_store_what_e12_and_e13_need(e11):
    data, runs = e11["data"], e11["runs"]
    test = data["test"]
    for variant, r in runs.items():
        assert set(r["splits"]) == {"train", "val", "test", "test_degraded"}
        primary = "csd" if variant == "pcmepp" else "ssw"
        assert sorted(r["splits"]["test"]["distances"]) == sorted([primary, "cosine"])
        assert r["splits"]["test"]["generality"] == test.relevant.sum(axis=1).tolist()
        for split in ("test", "test_degraded"):
            tasks = r["splits"][split]["distances"][primary]
            assert len(tasks) == 9
            for name, entry in tasks.items():
                ranks = np.asarray(entry["ranks"])
                assert entry["MRR"] == pytest.approx(np.mean(1 / ranks), rel=1e-5)
                if name in analysis.TEXT_TASKS:  # per-query R-Precision and mAP@R reproduce their means
                    assert np.mean(entry["RP_per_query"]) == pytest.approx(entry["RP"], abs=1e-5)
                    assert np.mean(entry["mAP@R_per_query"]) == pytest.approx(entry["mAP@R"], abs=1e-5)
                    assert 0 < entry["chance"]["RP"] < 1 and 0 < entry["chance"]["mAP@R"] < 1  # a tied ranking's
                else:
                    assert "RP_per_query" not in entry
        degraded = r["splits"]["test_degraded"]["distances"][primary]["A->T"]
        assert len(degraded["confidence"]) == len(degraded["margin"]) == len(test)
    # the degraded-view test set: each item's most severe view (checked on the audio of Baseline)
    base_run = Run(e11["tmp"] / "work" / "E11" / e11["specs"][0].name)
    kappa = view_concentrations(base_run, test)  # the uncertainty module's own encoding of every view
    stored = runs["baseline"]["splits"]["test"]
    for m in ("audio", "image", "text"):
        np.testing.assert_allclose(np.array(stored["view_confidence"][m], dtype=float), kappa[m], rtol=1e-4)
        np.testing.assert_allclose(stored["view_severity"][m], test.views.severity[m], atol=1e-5)
    worst = np.take_along_axis(kappa["audio"], test.views.severity["audio"].argmax(axis=1)[:, None], 1)[:, 0]
    np.testing.assert_allclose(runs["baseline"]["splits"]["test_degraded"]["distances"]["ssw"]["A->T"]["confidence"],
                               worst, rtol=1e-4)
    # Baseline's margin: top-1 minus top-2 cosine of the degraded audio against the texts, by brute force
    enc = base_run.encode(degraded_view_split(test))
    a, t = (enc[m].loc.double().numpy() for m in ("audio", "text"))
    cos = (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (t / np.linalg.norm(t, axis=1, keepdims=True)).T
    top = np.sort(cos, axis=1)[:, -2:]
    margin = runs["baseline"]["splits"]["test_degraded"]["distances"]["ssw"]["A->T"]["margin"]
    np.testing.assert_allclose(margin, top[:, 1] - top[:, 0], rtol=1e-4, atol=1e-6)
    pcme = runs["pcmepp"]["splits"]["test"]["view_confidence"]["audio"]  # 1 / mean sigma^2: positive
    assert np.nanmin(np.array(pcme, dtype=float)) > 0


def test_e14_swaps_captions_with_their_views_under_its_own_key(e11, tmp_path):
    data = e11["data"]
    spec = next(s for s in grid(["E14"], data=str(data["train"].root), overrides=SMALL, seeds=[2],
                                settings=_settings(tmp_path / "s.json")) if s.level == 0.5)
    training, evals, record = study._splits(spec, data)
    train = data["train"]
    rows = chosen(perturbation_order(len(train), 14, 2), 0.5)
    assert record["kind"] == "swap_captions" and record["items"] == train.ids[rows].tolist()
    assert rows.tolist() != chosen(perturbation_order(len(train), 3, 2), 0.5).tolist()  # not E3's draw
    moved = training["train"]
    source = [list(train.ids).index(i) for i in record["caption_from"]]
    np.testing.assert_array_equal(moved.features["text"][rows], train.features["text"][source])
    np.testing.assert_array_equal(moved.views.features["text"][rows], train.views.features["text"][source])
    assert evals["test"] is data["test"] and training["val"] is data["val"]  # validation and test clean


def _seeds(runs: dict, n: int) -> list[dict]:
    """E11's seed-0 runs copied to seeds 0..n-1, seeds > 0 with their per-query numbers perturbed
    (seed effects for the tests over seeds); the analysis is checked against the stored numbers."""
    out = []
    for seed in range(n):
        rng = np.random.default_rng(seed)
        for variant, run in runs.items():
            r = json.loads(json.dumps(run))
            r["seed"] = seed
            if seed:
                for split in ("test", "test_degraded"):
                    part = r["splits"][split]
                    for tasks in part["distances"].values():
                        for entry in tasks.values():
                            n_q = len(entry["ranks"])
                            entry["ranks"] = np.maximum(1, np.asarray(entry["ranks"]) + rng.integers(0, 3, n_q)).tolist()
                            for key in ("RP_per_query", "mAP@R_per_query"):
                                if key in entry:
                                    entry[key] = np.clip(np.asarray(entry[key]) + rng.normal(0, 0.1, n_q), 0, 1).tolist()
                            for key in ("confidence", "margin"):
                                if key in entry:
                                    entry[key] = (np.asarray(entry[key]) * rng.uniform(0.5, 1.5, n_q)).tolist()
                    for m, values in part.get("view_confidence", {}).items():
                        v = np.array(values, dtype=float)
                        part["view_confidence"][m] = (v * rng.uniform(0.5, 1.5, v.shape)).tolist()
            out.append(r)
    return out


@pytest.fixture
def three_seeds(e11, monkeypatch, tmp_path):
    for name in ("E11", "E12", "E13"):
        monkeypatch.setitem(analysis.EXPERIMENTS, name, dataclasses.replace(analysis.EXPERIMENTS[name], seeds=(0, 1, 2)))
    store = tmp_path / "store" / "E11"
    store.mkdir(parents=True)
    runs = _seeds(e11["runs"], 3)
    for r in runs:
        (store / f"real-{r['variant']}-s{r['seed']}.json").write_text(json.dumps(r))
    return tmp_path, runs


def _read(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_e11_and_e12_families_margins_and_generality_strata(three_seeds):
    tmp, runs = three_seeds
    assert analysis.families_of("E11") == analysis.families_of("E14") == (
        ("MRR", "ssw"), ("R@10", "ssw"), ("MRR", "cosine"), ("R@10", "cosine"), ("RP", "ssw"), ("mAP@R", "ssw"),
        ("RP", "cosine"), ("mAP@R", "cosine"))
    assert analysis.families_of("E10") == analysis.families_of("E13") == analysis.FAMILIES
    assert analysis.MARGINS["RP"] == analysis.MARGINS["mAP@R"] == analysis.MARGINS["MRR"] == 0.02
    # E11: its primary family and one of R-Precision (the full analysis is E12's below: same code)
    e11 = analysis.compare_experiment("E11", runs, n_resamples=200, families=(("MRR", "ssw"), ("RP", "ssw")))
    assert {(r["metric"], r["family"]) for r in e11} == {("MRR", "primary"), ("RP", "secondary")}
    primary = [r for r in e11 if r["family"] == "primary" and r["task"] in analysis.TASKS]
    assert len(primary) == 27 and {r["method"] for r in primary} == {"proposed", "debiased", "pcmepp"}
    assert all(r["verdict"] in ("gain", "harm", "equivalent", "inconclusive", "at floor") for r in primary)
    assert {r["task"] for r in e11 if r["metric"] == "RP"} == set(analysis.TEXT_TASKS) | {"mean7"}
    lines = list(analysis.analyse("E12", tmp / "store", tmp / "tables", n_resamples=200, repo=tmp))
    assert lines[0].startswith("E12 (many-to-many): 12 runs")
    rows = _read(tmp / "tables" / "study_summary.csv")
    e12 = [r for r in rows if r["experiment"] == "E12"]
    primary12 = [r for r in e12 if r["family"] == "primary" and r["task"] in analysis.TASKS]
    assert len(primary12) == 21 and {r["metric"] for r in primary12} == {"mAP@R"}
    assert {(r["metric"], r["distance"], r["family"]) for r in e12 if r["family"] != "descriptive"} == {
        ("mAP@R", "ssw", "primary"), ("RP", "ssw", "secondary"), ("mAP@R", "cosine", "secondary"),
        ("RP", "cosine", "secondary")}
    # PCME++'s primary ranking is its CSD: the difference is CSD's mAP@R minus Baseline's SSW's
    by = {(r["variant"], r["seed"]): r for r in runs}

    def stored(variant, seed, task, key="mAP@R_per_query"):
        dist = "csd" if variant == "pcmepp" else "ssw"
        return np.asarray(by[(variant, seed)]["splits"]["test"]["distances"][dist][task][key])

    row = next(r for r in primary12 if r["method"] == "pcmepp" and r["task"] == "T->I")
    truth = np.mean([stored("pcmepp", s, "T->I") - stored("baseline", s, "T->I") for s in range(3)])
    assert float(row["difference"]) == pytest.approx(truth, abs=1e-5)
    assert float(row["chance"]) == pytest.approx(by[("baseline", 0)]["splits"]["test"]["distances"]["ssw"]["T->I"]
                                                  ["chance"]["mAP@R"], rel=1e-5)
    # by caption generality: descriptive rows, no verdict, the difference over that stratum's queries
    general = np.asarray(by[("baseline", 0)]["splits"]["test"]["generality"]) > 1
    assert general.any() and (~general).any()
    strata = {(r["method"], r["task"]): r for r in e12 if r["family"] == "descriptive"}
    for name, mask in (("general", general), ("specific", ~general)):
        r = strata[("proposed", f"I&T->A [{name}]")]
        truth = np.mean([(stored("proposed", s, "I&T->A") - stored("baseline", s, "I&T->A"))[mask] for s in range(3)])
        assert float(r["difference"]) == pytest.approx(truth, abs=1e-5) and r["verdict"] == "" and r["p_holm"] == "nan"
    assert "| E12 | real | pcmepp |" in analysis.verdict_table(rows)


@pytest.mark.slow
def test_e13_kappa_family_against_independent_oracles(three_seeds):
    tmp, runs = three_seeds
    lines = list(analysis.analyse("E13", tmp / "store", tmp / "tables", n_resamples=200, repo=tmp))
    rows = [r for r in _read(tmp / "tables" / "study_summary.csv") if r["experiment"] == "E13"]
    assert len([r for r in rows if r["family"] == "primary" and r["task"] in analysis.TASKS]) == 27
    by = {(r["variant"], r["seed"]): r for r in runs}
    row = next(r for r in rows if r["family"] == "primary" and r["method"] == "proposed" and r["task"] == "A->I")
    degraded = [1 / np.asarray(by[(v, s)]["splits"]["test_degraded"]["distances"]["ssw"]["A->I"]["ranks"])
                for v in ("proposed", "baseline") for s in range(3)]
    assert float(row["difference"]) == pytest.approx(np.mean(degraded[:3]) - np.mean(degraded[3:]), abs=1e-5)
    tests = [t for t in _read(tmp / "tables" / "study_kappa_tests.csv") if t["experiment"] == "E13"]
    assert {t["family"] for t in tests} == {"H16-rho", "H16-rho-vs-baseline", "H16-auroc", "H16-aurc"}
    assert len([t for t in tests if t["family"] == "H16-rho"]) == 4 * 3  # methods x modalities, one Holm family
    assert {t["method"] for t in tests if t["family"] == "H16-rho-vs-baseline"} == {"proposed", "debiased"}

    def rho(variant, seed, m):  # scipy's Spearman over the finite (item, view) pairs
        part = by[(variant, seed)]["splits"]["test"]
        k, sev = np.array(part["view_confidence"][m], dtype=float).ravel(), np.array(part["view_severity"][m]).ravel()
        keep = np.isfinite(k)
        return stats.spearmanr(k[keep], sev[keep]).statistic

    t = next(t for t in tests if t["family"] == "H16-rho" and t["method"] == "debiased" and t["score"] == "rho_severity_image")
    values = [rho("debiased", s, "image") for s in range(3)]
    assert float(t["difference"]) == pytest.approx(np.mean(values), abs=1e-5)
    assert float(t["p"]) == pytest.approx(stats.ttest_1samp(values, 0).pvalue, rel=1e-4)

    def aurc(confidence, accuracy):  # brute force: mean risk of the i most confident, i = 1..Q (no ties here)
        order = np.argsort(-np.asarray(confidence), kind="stable")
        acc = np.asarray(accuracy)[order]
        return np.mean([1 - acc[:i].mean() for i in range(1, len(acc) + 1)])

    t = next(t for t in tests if t["family"] == "H16-aurc" and t["method"] == "pcmepp" and t["score"] == "aurc_minus_margin_image")
    diffs = []
    for s in range(3):
        mine = by[("pcmepp", s)]["splits"]["test_degraded"]["distances"]["csd"]["I->T"]
        base = by[("baseline", s)]["splits"]["test_degraded"]["distances"]["ssw"]["I->T"]
        diffs.append(aurc(mine["confidence"], 1 / np.asarray(mine["ranks"]))
                     - aurc(base["margin"], 1 / np.asarray(base["ranks"])))
    assert float(t["difference"]) == pytest.approx(np.mean(diffs), abs=1e-5)
    holm = [float(t["p_holm"]) for t in tests if t["family"] == "H16-aurc"]
    assert all(ph >= float(t["p"]) - 1e-12 for ph, t in zip(holm, [t for t in tests if t["family"] == "H16-aurc"]))
    assert any(line.startswith("  κ rho_severity_audio real proposed − 0") for line in lines)


def test_kappa_table_counts_runs_whose_median_kappa_sits_at_the_log_heads_bound(tmp_path):
    """Known answer: two seeds of one cell, one with its median κ at kappa_max; first-round runs
    (no quantiles) and softplus runs (no bound) are handled."""
    def store(name, variant, seed, q50, head="log", quantiles=True):
        kappa = {"mean": q50 - 1.0, "q50": q50, "cv": 0.2} if quantiles else {"mean": 101.0, "mean_log": 4.6}
        run = {"level": "real", "variant": variant, "seed": seed,
               "config": {"kappa_head": head, "kappa_max": 100.0}, "splits": {"val": {"kappa": {"audio": kappa}}}}
        (tmp_path / "E11").mkdir(exist_ok=True)
        (tmp_path / "E11" / f"{name}.json").write_text(json.dumps(run))

    store("b0", "baseline", 0, 100.0)
    store("b1", "baseline", 1, 50.0)
    store("p0", "proposed", 0, 100.0, head="softplus")
    store("d0", "debiased", 0, 0.0, quantiles=False)
    lines = analysis.kappa_table(tmp_path, ["E11"]).splitlines()
    assert "| E11 | real | baseline | audio | 2 | 74.0 | 75.0 | 20.0 % | 1 |" in lines
    assert "| E11 | real | proposed | audio | 1 | 99.0 | 100.0 | 20.0 % | 0 |" in lines
    assert not any("debiased" in line for line in lines)
    with pytest.raises(ValueError, match="unknown experiment"):
        analysis.kappa_table(tmp_path, ["E99"])


def test_the_pattern_names_what_the_variant_adds():
    """Three gains, no harm, a mean above 0: "L_S helps" for an L_S variant, "PCME++ helps" for PCME++."""
    tasks = list(analysis.TASKS)
    for variant, expected in (("proposed", "L_S helps"), ("pcmepp", "PCME++ helps")):
        rows = [{"family": "primary", "level": "clean", "method": variant, "task": t, "metric": "MRR",
                 "verdict": "gain" if i < 3 else "inconclusive"} for i, t in enumerate(tasks)]
        rows.append({"family": "primary", "level": "clean", "method": variant, "task": "mean9", "metric": "MRR",
                     "verdict": "", "ci_low": 0.01, "ci_high": 0.03, "ci90_low": 0.012, "ci90_high": 0.028})
        assert analysis.decision(rows, "clean", variant) == expected
