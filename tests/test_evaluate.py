"""Evaluation of runs, aggregation over seeds, chance levels and the paired bootstrap."""
import csv
import math
import subprocess
import sys

import pytest
import torch

from mmkit.data import load_bundle, make_synthetic_bundle
from mmkit.analysis.evaluate import aggregate, compare_methods, evaluate_run
from mmkit.vocab import tasks_for_method
from mmkit.core.metrics import (aggregate_over_seeds, chance_level, paired_bootstrap, ranks_from_scores, summarize_ranks)
from mmkit.model.config import TrainConfig
from mmkit.model.run import Run
from mmkit.training.loop import fit

FAST = dict(epochs=2, batch_size=64, hidden=32, dim=8, n_samples=8, n_projections=10)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ev")
    bundle = make_synthetic_bundle(root / "b", n_items=(256, 64, 64), dims={"audio": 16, "image": 20, "text": 12}, seed=5)
    data = load_bundle(bundle)
    out = {}
    for method in ("proposed", "baseline", "pcme", "mpc"):
        for seed in (0, 1):
            fit(TrainConfig(method=method, seed=seed, **FAST), data, root / f"{method}{seed}", progress=False,
                data_spec=str(bundle))
            out[(method, seed)] = root / f"{method}{seed}"
    return out


def test_chance_level_matches_a_random_ranking():
    c = chance_level(50)
    g = torch.Generator().manual_seed(0)
    ranks = ranks_from_scores(torch.rand(2000, 50, generator=g), targets=torch.randint(0, 50, (2000,), generator=g))
    s = summarize_ranks(ranks)
    assert abs(s["R@10"] - c["R@10"]) < 3.0 and abs(s["MRR"] - c["MRR"]) < 0.01 and abs(s["MR"] - c["MR"]) <= 3


def test_aggregate_over_seeds_and_bootstrap():
    assert aggregate_over_seeds([1.0, 3.0]) == (2.0, math.sqrt(2.0), 2)
    assert aggregate_over_seeds([5.0]) == (5.0, 0.0, 1)
    better = torch.tensor([1.0, 1.0, 2.0, 1.0] * 25, dtype=torch.float64)
    worse = torch.tensor([3.0, 8.0, 5.0, 2.0] * 25, dtype=torch.float64)
    out = paired_bootstrap(better, worse, "MRR", n_resamples=2000)
    assert out["difference"] > 0 and out["ci_low"] > 0 and out["p_value"] < 0.01
    same = paired_bootstrap(better, better, "R@1", n_resamples=500)
    assert same["difference"] == 0 and same["p_value"] == 1.0
    with pytest.raises(ValueError, match="same queries"):
        paired_bootstrap(better, worse[:10])


def test_evaluate_runs_and_aggregate(runs):
    results = [evaluate_run(runs[(m, s)], distance="kl") for m in ("proposed", "baseline") for s in (0, 1)]
    results += [evaluate_run(runs[(m, s)]) for m in ("pcme", "mpc") for s in (0, 1)]
    assert set(results[0]["tasks"]) == {"A->I", "T->I", "A&T->I", "A->T", "I->T", "A&I->T", "I->A", "T->A", "I&T->A"}
    assert set(results[-1]["tasks"]) == {"T->I", "I->T", "A&T->I", "A&I->T", "I&T->A"}
    assert set(results[-3]["tasks"]) == {"T->I", "I->T"}
    assert results[0]["tasks"]["A->I"]["chance"]["R@10"] == pytest.approx(100 * 10 / 64)
    rows = aggregate(results)
    first = [r for r in rows if r["method"] == "proposed" and r["task"] == "A->I" and r["metric"] == "MRR"]
    assert len(first) == 1 and first[0]["n_seeds"] == 2 and first[0]["lambda_s"] == "1" and first[0]["distance"] == "kl"
    per_seed = [res["tasks"]["A->I"]["MRR"] for res in results[:2]]
    assert first[0]["mean"] == pytest.approx(sum(per_seed) / 2)
    pcme = [r for r in rows if r["method"] == "pcme"]
    assert pcme and all(r["lambda_s"] == "" and r["distance"] == "cosine" for r in pcme)
    assert tasks_for_method("baseline")[0] == (("audio",), "image")


def test_evaluate_cli_writes_csv(runs, tmp_path):
    out = tmp_path / "eval.csv"
    cmd = [sys.executable, "-m", "mmkit", "evaluate", "--runs", str(runs[("proposed", 0)]), str(runs[("proposed", 1)]),
           "--samples", "8", "--projections", "10", "--csv", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "A&T->I" in done.stdout
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["dataset", "method", "task", "metric", "lambda_s", "distance", "mean", "std", "n_seeds"]
    assert {r["metric"] for r in rows} == {"R@1", "R@5", "R@10", "R@15", "MRR", "MR"}
    assert all(r["n_seeds"] == "2" and r["distance"] == "ssw" for r in rows)


def test_stored_results_are_reused_only_for_the_same_weights_and_settings(runs, monkeypatch):
    run = runs[("proposed", 0)]
    first = evaluate_run(run, distance="kl", seed=7)
    stored = list((run / "eval").glob("*.json"))
    assert stored
    calls = []
    monkeypatch.setattr(Run, "load_model", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(AssertionError))
    again = evaluate_run(run, distance="kl", seed=7)  # read back: the model is not loaded
    assert not calls and again["tasks"]["A->I"]["MRR"] == first["tasks"]["A->I"]["MRR"]
    assert list(again["tasks"]) == list(first["tasks"])  # same task order (tables keep their row order)
    assert torch.equal(again["tasks"]["A->I"]["ranks"], first["tasks"]["A->I"]["ranks"])
    with pytest.raises(AssertionError):  # another setting ranks again
        evaluate_run(run, distance="cosine", seed=7)
    with pytest.raises(ValueError, match="split must be one of"):
        evaluate_run(run, split="dev")


def test_compare_methods_pairs_seeds_and_pools_queries(runs):
    a = [evaluate_run(runs[("proposed", s)], distance="kl") for s in (0, 1)]
    b = [evaluate_run(runs[("baseline", s)], distance="kl") for s in (0, 1)]
    out = compare_methods(a, b, "MRR", n_resamples=500)
    assert set(out) == set(a[0]["tasks"]) and out["A->I"]["n_queries"] == 2 * a[0]["tasks"]["A->I"]["n"]
    want = torch.cat([1 / r["tasks"]["A->I"]["ranks"] for r in a]).mean() - torch.cat(
        [1 / r["tasks"]["A->I"]["ranks"] for r in b]).mean()
    assert out["A->I"]["difference"] == pytest.approx(float(want))
    same = compare_methods(a, a, "R@10", n_resamples=100)
    assert all(v["difference"] == 0 and v["p_value"] == 1.0 for v in same.values())
    with pytest.raises(ValueError, match="no common training seeds"):
        compare_methods(a[:1], b[1:])


def test_many_to_many_truth_adds_rp_and_map_at_r_and_nothing_else_changes(runs, tmp_path):
    import dataclasses

    # the runs' seed and feature sizes (the same feature maps), captions with a known many-to-many
    # truth (generic captions: every item of their group)
    data = load_bundle(make_synthetic_bundle(tmp_path / "t", n_items=(64, 32, 64),
                                             dims={"audio": 16, "image": 20, "text": 12}, seed=5, truth=True))
    truth = data["test"].text_relevance()
    assert truth is not None and (truth.sum(1) > 1).any()
    plain = {k: dataclasses.replace(v, relevant=None) for k, v in data.items()}
    run = runs[("proposed", 0)]
    with_truth = evaluate_run(run, distance="kl", data=data)
    without = evaluate_run(run, distance="kl", data=plain)
    text_tasks = {"T->I", "A&T->I", "A->T", "I->T", "A&I->T", "T->A", "I&T->A"}
    for task, metrics in with_truth["tasks"].items():
        assert ("RP" in metrics) == (task in text_tasks) and ("mAP@R" in metrics) == (task in text_tasks)
        assert set(without["tasks"][task]) == {"R@1", "R@5", "R@10", "R@15", "MRR", "MR", "n", "ranks", "chance"}
        for key in ("R@1", "R@10", "MRR", "MR", "n"):  # the one-to-one metrics do not change
            assert metrics[key] == without["tasks"][task][key]
    t2i = with_truth["tasks"]["T->I"]
    assert 0.0 <= t2i["mAP@R"] <= t2i["RP"] <= 1.0  # precision at i <= 1 before the last hit: mAP@R <= R-P
    assert t2i["RP"] == pytest.approx(float(t2i["RP_per_query"].mean()))
    assert t2i["chance"]["RP"] == pytest.approx(float((truth.sum(1) / truth.shape[1]).mean()))  # R / G
    assert t2i["RP"] > t2i["chance"]["RP"]  # a trained model beats chance on captions
    # read back from the stored file: same values, per-query values as tensors
    again = evaluate_run(run, distance="kl", data=data)
    assert torch.equal(again["tasks"]["I->T"]["mAP@R_per_query"], with_truth["tasks"]["I->T"]["mAP@R_per_query"])
    assert again["settings"]["truth_sha256"] and "truth_sha256" not in without["settings"]
    rows = aggregate([with_truth])
    assert {(r["task"], r["metric"]) for r in rows if r["metric"] in ("RP", "mAP@R")} == {
        (t, m) for t in text_tasks for m in ("RP", "mAP@R")}
    assert {r["metric"] for r in aggregate([without])} == {"R@1", "R@5", "R@10", "R@15", "MRR", "MR"}
    # which differences are real, on the per-query values: only the tasks with text
    other = evaluate_run(runs[("baseline", 0)], distance="kl", data=data)
    out = compare_methods([with_truth], [other], "mAP@R", n_resamples=200)
    assert set(out) == text_tasks and out["T->I"]["n_queries"] == t2i["n"]
    assert out["T->I"]["difference"] == pytest.approx(t2i["mAP@R"] - other["tasks"]["T->I"]["mAP@R"])
    assert compare_methods([with_truth], [without], "RP", n_resamples=10) == {}  # no truth on one side
