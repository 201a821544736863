"""The study's analysis (docs/study.md §6) on synthetic stores with known truth: a variant that
is the Baseline gets "equivalent", a much better one "gain", a much worse one "harm"; Holm runs over
the whole family; κ AUROC matches a hand computation; incomplete grids are refused."""
import csv
import math

import numpy as np
import pytest

from mmkit.analysis.study import (EXPERIMENTS, FAMILIES, TASKS, _auroc, analyse, compare_experiment, decision, incomplete,
                                  kappa_auroc, verdict_table)

Q = 80


def _run(experiment, level, variant, seed, effect, kappa_gap=0.0, n_train=50, chance=False):
    """A stored run whose ranks are Baseline's (drawn per seed, shared by the variants) moved by
    ``effect``: "same" (a tiny shift on 5 % of the queries), "better" (ranks divided by 3), "worse".
    Baseline's ranks are exponential (mean ~8 of Q = 80), or with ``chance`` uniform on 1..Q."""
    base = np.random.default_rng([seed, 99])
    own = np.random.default_rng([seed, {"baseline": 0, "proposed": 1, "debiased": 2}[variant]])
    ids = [f"q{k}" for k in range(Q)]

    def tasks():
        out = {}
        for t in TASKS:
            r = (base.integers(1, Q + 1, Q).astype(float) if chance
                 else 1 + np.floor(base.exponential(8, Q)).clip(0, Q - 1))
            if effect == "same":
                moved = own.random(Q) < 0.05
                r = np.where(moved, np.clip(r + own.choice([-1, 1], Q), 1, Q), r)
            elif effect == "better":
                r = np.ceil(r / 3)
            elif effect == "worse":
                r = np.minimum(3 * r, Q)
            out[t] = {"ranks": r.tolist(), "MRR": float(np.mean(1 / r)), "R@10": float(100 * np.mean(r <= 10))}
        return out

    train_ids = [f"t{k}" for k in range(n_train)]
    perturbed = train_ids[: int(round(level * n_train))] if isinstance(level, float) else []  # E3-E5 fractions
    kappa = {m: [float(100 - kappa_gap * (i in perturbed) + own.normal()) for i in train_ids] for m in ("audio", "image", "text")}
    return {"experiment": experiment, "level": level, "variant": variant, "seed": seed, "val_score": 0.4 + 0.01 * seed,
            "perturbation": {"items": perturbed},
            "splits": {"test": {"ids": ids, "distances": {"ssw": tasks(), "cosine": tasks()}},
                       "train": {"ids": train_ids, "kappa_items": kappa,
                                 "present": {m: [1] * n_train for m in kappa}}}}


def _store(effect, kappa_gap=None, chance=False):
    e = EXPERIMENTS["E3"]
    return [_run("E3", level, v, s, effect.get(v, "base"), (kappa_gap or {}).get(v, 0.0), chance=chance)
            for s in e.seeds for level in e.levels for v in e.variants]


def test_verdicts_follow_the_truth():
    # 20,000 resamples as in the study: a family of 36 needs p-values below 0.05 / 36
    rows = compare_experiment("E3", _store({"proposed": "same", "debiased": "better"}), families=FAMILIES[:1])
    primary = [r for r in rows if r["family"] == "primary" and r["task"] != "mean9"]
    assert len(primary) == 9 * 2 * 2  # tasks x levels x variants: one Holm family
    same = [r for r in primary if r["method"] == "proposed"]
    # Baseline's ranks moved by one place on 5 % of the queries: never a gain or harm, and equivalence
    # within +-0.02 MRR is shown for most tasks (with 5 seeds the t-calibrated TOST is strict: the
    # noisiest tasks stay inconclusive)
    assert all(abs(r["difference"]) < 0.01 and r["verdict"] in ("equivalent", "inconclusive") for r in same)
    assert sum(r["verdict"] == "equivalent" for r in same) >= 14
    better = [r for r in primary if r["method"] == "debiased"]
    assert all(r["difference"] > 0.02 and r["verdict"] == "gain" for r in better)
    assert decision(rows, 0.4, "debiased") == "L_S helps" and decision(rows, 0.4, "proposed") == "no practical difference"
    worse = compare_experiment("E3", _store({"proposed": "worse", "debiased": "same"}), families=FAMILIES[:1])
    assert {r["verdict"] for r in worse if r["family"] == "primary" and r["method"] == "proposed" and r["task"] != "mean9"} == {"harm"}
    # Holm: adjusted p-values are at least the raw ones and monotone in them
    for r in rows:
        if r["task"] != "mean9":
            assert r["p_holm"] >= r["p"] - 1e-12


def test_kappa_auroc_and_the_mann_whitney_formula():
    assert _auroc(np.array([0.1, 0.4, 0.5, 0.8]), np.array([False, True, False, True])) == pytest.approx(0.75)
    assert _auroc(np.array([1.0, 1.0]), np.array([True, False])) == pytest.approx(0.5)  # a tie counts half
    results = _store({}, kappa_gap={"proposed": 50.0})
    by = {(r["method"], r["level"]): [] for r in kappa_auroc(results)}
    for r in kappa_auroc(results):
        by[(r["method"], r["level"])].append(r["auroc_mean"])
    assert min(by[("proposed", "0.4")]) == 1.0  # perturbed items have a much lower kappa: 1/kappa flags them all
    assert abs(np.mean(by[("baseline", "0.4")]) - 0.5) < 0.15


def test_analyse_refuses_an_incomplete_grid_and_writes_the_summary(tmp_path, capsys):
    import json

    results = _store({"proposed": "same", "debiased": "better"})
    store = tmp_path / "store" / "E3"
    store.mkdir(parents=True)
    for r in results[1:]:
        (store / f"{r['level']}-{r['variant']}-s{r['seed']}.json").write_text(json.dumps(r))
    with pytest.raises(ValueError, match="E3 is incomplete"):
        list(analyse("E3", tmp_path / "store", tmp_path / "tables", n_resamples=1000))
    assert incomplete("E3", results[1:]) == ["0.2-baseline-s0"]
    r = results[0]
    (store / f"{r['level']}-{r['variant']}-s{r['seed']}.json").write_text(json.dumps(r))
    from mmkit.pipeline.study import report

    lines = report("E3", tmp_path / "store", tmp_path / "tables", tmp_path / "figures", n_resamples=1000)
    assert (tmp_path / "figures" / "study_differences.pdf").is_file() and (tmp_path / "figures" / "study_kappa_auroc.png").is_file()
    lines = [line for line in lines if not line.startswith(("figure:", "verdicts of every"))]
    assert len(lines) == 1 + 1 + 4 + 4 and lines[0].startswith("E3 (wrong pairs): 30 runs")  # header, code, patterns, κ
    assert lines[1].startswith("  code versions of the compared runs") and lines[1].endswith(": 4 single")
    assert sum(line.startswith("  κ auroc_mean") for line in lines) == 4
    assert (tmp_path / "tables" / "study_kappa_tests.csv").is_file()
    verdicts = (tmp_path / "tables" / "study_verdicts.md").read_text().splitlines()[2:]  # one row per (level, variant)
    assert len(verdicts) == 4 and all(sum(map(int, v.split("|")[4:9])) == 9 for v in verdicts)
    patterns = {line.split(":")[0].strip(): line.split(":")[1].split("(")[0].strip() for line in lines[2:6]}
    assert {f"{v.split('|')[2].strip()} {v.split('|')[3].strip()}": v.split("|")[-2].strip() for v in verdicts} == patterns
    from mmkit.__main__ import main

    main(["study", "--verdicts", "E3", "--tables-dir", str(tmp_path / "tables"), "--store", str(tmp_path / "store")])
    out = capsys.readouterr().out.splitlines()
    assert out[2:6] == verdicts  # then the validation scores of the stored runs, per cell
    assert "| E3 | 0.2 | baseline | 5 | 0.420 ± 0.016 | nan |" in out  # the synthetic runs record no time
    with pytest.raises(ValueError, match="unknown experiment"):
        main(["study", "--verdicts", "E0", "--tables-dir", str(tmp_path / "tables"), "--store", str(tmp_path / "store")])
    with open(tmp_path / "tables" / "study_summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:11] == ["experiment", "level", "method", "task", "metric", "difference", "ci_low", "ci_high",
                                  "p_holm", "verdict", "n_seeds"]
    assert {row["verdict"] for row in rows if row["task"] != "mean9"} <= {"gain", "harm", "equivalent", "at floor", "inconclusive"}
    assert all(row["n_seeds"] == "5" for row in rows)
    again = list(analyse("E3", tmp_path / "store", tmp_path / "tables", n_resamples=1000))  # re-analysis reproduces, rows replaced
    assert again == lines
    with open(tmp_path / "tables" / "study_summary.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(rows)
    assert not math.isnan(float(rows[0]["difference"]))


def _e2_store(effects):
    """E2's four levels plus E1's runs (seeds 0-4) as the reference level "all"; ``effects`` maps a
    level (or "all") to the proposed variant's effect."""
    e = EXPERIMENTS["E2"]
    runs = [_run("E2", level, v, s, effects.get(level, "same") if v == "proposed" else "same" if v == "debiased" else "base")
            for s in e.seeds for level in e.levels for v in e.variants]
    e1 = [_run("E1", "clean", v, s, effects.get("all", "same") if v == "proposed" else "same" if v == "debiased" else "base")
          for s in e.seeds for v in e.variants]
    return runs, e1


def test_e2_slope_is_the_ols_slope_of_mean9_and_finds_a_gain_that_grows_as_n_falls(tmp_path):
    """H4: with a gain only at N = 100 and 200 the slope of Δ mean9 on log2 N is negative and its
    interval excludes 0; it equals np.polyfit of the five per-level mean9 differences (the "all"
    level from E1's runs); without any effect the interval covers 0. E2 is analysed only with E1's
    seeds 0-4 stored."""
    import json

    from mmkit.analysis.study import SLOPE_TASK, reference_runs

    runs, e1 = _e2_store({100: "better", 200: "better"})
    rows = compare_experiment("E2", runs + [{**r, "level": "all"} for r in e1], families=FAMILIES[:1], n_resamples=2000)
    primary = [r for r in rows if r["task"] not in ("mean9", SLOPE_TASK)]
    assert len(primary) == 9 * 2 * 4 and not any(r["level"] == "all" for r in rows)  # "all" is not in E2's family
    slope = next(r for r in rows if r["task"] == SLOPE_TASK and r["method"] == "proposed")
    nine = {r["level"]: r["difference"] for r in rows if r["task"] == "mean9" and r["method"] == "proposed"}
    by = {}
    for r in e1:
        by.setdefault(r["variant"], []).append(np.mean([np.mean(1 / np.array(t["ranks"]))
                                                        for t in r["splits"]["test"]["distances"]["ssw"].values()]))
    nine["all"] = np.mean(by["proposed"]) - np.mean(by["baseline"])
    x = np.log2([100, 200, 400, 800, 1627])
    expected = np.polyfit(x, [nine[k] for k in ("100", "200", "400", "800", "all")], 1)[0]
    assert slope["difference"] == pytest.approx(expected, rel=1e-9) and slope["ci_high"] < 0
    assert slope["verdict"] == "" and math.isnan(slope["p_holm"])
    flat_runs, flat_e1 = _e2_store({})
    flat = compare_experiment("E2", flat_runs + [{**r, "level": "all"} for r in flat_e1], families=FAMILIES[:1],
                              n_resamples=2000)
    flat_slope = next(r for r in flat if r["task"] == SLOPE_TASK and r["method"] == "proposed")
    assert flat_slope["ci_low"] < 0 < flat_slope["ci_high"]
    store = tmp_path / "store"
    for r in runs:
        (store / "E2").mkdir(parents=True, exist_ok=True)
        (store / "E2" / f"{r['level']}-{r['variant']}-s{r['seed']}.json").write_text(json.dumps(r))
    with pytest.raises(ValueError, match="all-baseline-s0"):
        list(analyse("E2", store, tmp_path / "tables", n_resamples=500))
    (store / "E1").mkdir()
    for r in e1:
        (store / "E1" / f"clean-{r['variant']}-s{r['seed']}.json").write_text(json.dumps(r))
    assert {r["level"] for r in reference_runs("E2", store)} == {"all"} and len(reference_runs("E2", store)) == 15
    lines = list(analyse("E2", store, tmp_path / "tables", n_resamples=500))
    assert lines[0].startswith("E2 (few pairs): 75 runs")


def test_kappa_tests_find_a_known_kappa_signal_and_no_false_one():
    """H12: a variant whose κ is 50 lower on the perturbed items flags them (AUROC 1 against
    Baseline's ~0.5: the Holm-adjusted test is significant), Baseline does not beat chance. H3 (E1):
    a variant with a larger mean log κ on every seed is found larger."""
    from mmkit.analysis.study import kappa_tests

    tests = kappa_tests("E3", _store({}, kappa_gap={"proposed": 50.0}), n_resamples=4000)
    h12 = {(t["level"], t["method"]): t for t in tests if t["family"] == "H12"}
    assert set(h12) == {(lv, m) for lv in ("0.2", "0.4") for m in ("proposed", "debiased")}
    assert all(h12[(lv, "proposed")]["ci_low"] > 0.3 and h12[(lv, "proposed")]["p_holm"] < 0.05 for lv in ("0.2", "0.4"))
    assert all(h12[(lv, "debiased")]["ci_low"] < 0 < h12[(lv, "debiased")]["ci_high"] for lv in ("0.2", "0.4"))
    chance = [t for t in tests if t["family"] == "chance" and t["method"] == "baseline" and t["score"] == "auroc_mean"]
    assert chance and all(t["ci_low"] < 0 < t["ci_high"] for t in chance) and all(math.isnan(t["p_holm"]) for t in chance)
    assert {t["score"] for t in tests if t["family"] == "secondary"} == {"auroc_audio", "auroc_image", "auroc_text"}
    e1 = []
    for s in range(10):
        for v, shift in (("baseline", 0.0), ("proposed", 0.3), ("debiased", 0.3), ("proposed-0.1", 0.0)):
            mean_log = {m: {"mean_log": 4.6 + shift + 0.05 * np.sin(s + k)} for k, m in enumerate(("audio", "image", "text"))}
            e1.append({"experiment": "E1", "level": "clean", "variant": v, "seed": s, "splits": {"train": {"kappa": mean_log}}})
    h3 = {t["method"]: t for t in kappa_tests("E1", e1, n_resamples=4000)}
    assert h3["proposed"]["against"] == "baseline" and h3["proposed"]["difference"] == pytest.approx(0.3)
    assert h3["proposed"]["p_holm"] < 0.05 and h3["debiased"]["difference"] == pytest.approx(0.0, abs=1e-12)


def test_backbones_are_analysed_as_exploratory_from_three_complete_seeds(tmp_path):
    """E9 (docs/study.md §5): with 3 or 4 complete seed blocks its analysis runs on those seeds
    and says it is exploratory; with fewer it is refused like any incomplete grid."""
    import json

    store = tmp_path / "store" / "E9"
    store.mkdir(parents=True)
    runs = [_run("E9", "backbones", v, s, "same" if v == "proposed" else "base") for s in range(4) for v in ("baseline", "proposed")]
    for r in runs[:-1]:  # seed 3 lacks its Proposed run
        (store / f"backbones-{r['variant']}-s{r['seed']}.json").write_text(json.dumps(r))
    lines = list(analyse("E9", tmp_path / "store", tmp_path / "tables", n_resamples=500))
    assert "EXPLORATORY: 3 of 5 seeds" in lines[0] and "[0, 1, 2]" in lines[0]
    assert lines[2].startswith("  backbones proposed: ") and "(exploratory)" in lines[2]
    with open(tmp_path / "tables" / "study_summary.csv", newline="") as fh:
        summary = list(csv.DictReader(fh))
    assert {row["n_seeds"] for row in summary} == {"3"}
    assert all(line.endswith("(exploratory) |") for line in verdict_table(summary).splitlines()[2:])
    assert "exploratory" not in verdict_table([{**row, "n_seeds": "5"} for row in summary])
    from mmkit.viz.study import study_differences_figure

    for n, title in (("3", "E9: backbones end to end\n(exploratory, 3 seeds)"), ("5", "E9: backbones end to end")):
        fig = study_differences_figure([{**row, "n_seeds": n} for row in summary])
        assert [ax.get_title() for ax in fig.axes if ax.get_title()] == [title]
    for r in runs[2:]:
        (store / f"backbones-{r['variant']}-s{r['seed']}.json").unlink(missing_ok=True)
    with pytest.raises(ValueError, match="E9 is incomplete"):
        list(analyse("E9", tmp_path / "store", tmp_path / "tables", n_resamples=500))


def test_a_baseline_at_chance_is_at_floor_never_equivalent():
    """Baseline's ranks uniform (chance MRR H_80 / 80): a variant that moves one place on 5 % of
    the queries is "at floor" on every task, where above chance it is mostly "equivalent"."""
    from mmkit.analysis.statistics import chance_level

    rows = compare_experiment("E3", _store({"proposed": "same", "debiased": "same"}, chance=True),
                              families=FAMILIES[:1], n_resamples=500)
    primary = [r for r in rows if r["task"] in TASKS]
    assert {r["verdict"] for r in primary} == {"at floor"} and {r["at_floor"] for r in primary} == {"yes"}
    assert all(r["chance"] == pytest.approx(chance_level("MRR", Q)) for r in primary)
    assert all(abs(r["baseline"] - r["chance"]) < 0.03 for r in primary)
    assert decision(rows, 0.4, "proposed") == "undetermined"
    above = compare_experiment("E3", _store({"proposed": "same", "debiased": "same"}), families=FAMILIES[:1],
                               n_resamples=500)
    assert {r["at_floor"] for r in above if r["task"] in TASKS} == {"no"}
    assert "at floor" not in {r["verdict"] for r in above}


def _git(repo, *args) -> str:
    import subprocess

    return subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout.strip()


def test_a_comparison_trained_by_different_code_is_refused_unless_declared(tmp_path):
    """Provenance (docs/study.md, deviation of 2026-12-07): runs of one comparison at two commits
    whose diff touches only analysis code are used; at two commits whose diff touches training
    code they are refused (no test, not in the Holm family, verdict "refused"), unless the
    versions are declared equivalent; different source hashes recorded at run start likewise."""
    import json

    from mmkit.analysis.study import code_version_of, provenance_status, training_code_changes

    repo = tmp_path / "repo"
    for folder in ("mmkit/core", "mmkit/analysis"):
        (repo / folder).mkdir(parents=True)
    _git(repo, "init", "-q")
    commits = []
    for path, text in (("mmkit/core/ssw.py", "x = 1\n"), ("mmkit/analysis/study.py", "y = 2\n"),
                       ("mmkit/core/ssw.py", "x = 3\n")):
        (repo / path).write_text(text)
        _git(repo, "add", "mmkit")
        _git(repo, "commit", "-q", "-m", f"change {path}")
        commits.append(_git(repo, "rev-parse", "HEAD"))
    first, analysis_only, training = commits
    assert training_code_changes(first, analysis_only, repo) == []
    assert training_code_changes(first, training, repo / "mmkit") == ["mmkit/core/ssw.py"]  # from a subfolder too
    assert training_code_changes(first, "0" * 40, repo) is None                  # git cannot tell: not "same"
    runs = _store({"proposed": "same", "debiased": "better"})
    for r in runs:
        r["git_commit"] = first
        if r["level"] == 0.4 and r["variant"] == "proposed" and r["seed"] < 2:
            r["git_commit"] = analysis_only
        if r["level"] == 0.4 and r["variant"] == "debiased" and r["seed"] == 3:
            r["git_commit"] = training
    store = repo / "store" / "E3"
    store.mkdir(parents=True)
    for r in runs:
        (store / f"{r['level']}-{r['variant']}-s{r['seed']}.json").write_text(json.dumps(r))
    lines = list(analyse("E3", repo / "store", tmp_path / "tables", n_resamples=500, declared={}))
    with open(tmp_path / "tables" / "study_provenance.csv", newline="") as fh:
        status = {(p["level"], p["method"]): p for p in csv.DictReader(fh)}
    assert status[("0.4", "proposed")]["status"] == "same training code"
    assert status[("0.4", "debiased")]["status"] == "refused"
    assert set(status[("0.4", "debiased")]["code_versions"].split("; ")) == {f"{first[:12]} x4", f"{training[:12]} x1"}
    assert {status[k]["status"] for k in status if k not in (("0.4", "proposed"), ("0.4", "debiased"))} == {"single"}
    assert any(line.startswith("  REFUSED 0.4 debiased") for line in lines)
    assert "  0.4 debiased: refused: trained by different code" in [line.split(" (mean9")[0] for line in lines]
    with open(tmp_path / "tables" / "study_summary.csv", newline="") as fh:
        summary = [r for r in csv.DictReader(fh) if r["family"] == "primary" and r["task"] in TASKS]
    refused = [r for r in summary if r["level"] == "0.4" and r["method"] == "debiased"]
    assert len(refused) == 9 and {r["verdict"] for r in refused} == {"refused"} and refused[0]["p"] == "nan"
    assert sum(r["verdict"] != "refused" for r in summary) == 27                # the Holm family without them
    with open(tmp_path / "tables" / "study_kappa_tests.csv", newline="") as fh:
        assert ("0.4", "debiased") not in {(t["level"], t["method"]) for t in csv.DictReader(fh)}
    # declared equivalent by a deviation: used, and the better variant is a gain again
    list(analyse("E3", repo / "store", tmp_path / "tables", n_resamples=500, declared={"E3": {first, training}}))
    with open(tmp_path / "tables" / "study_summary.csv", newline="") as fh:
        summary = [r for r in csv.DictReader(fh) if r["family"] == "primary" and r["task"] in TASKS]
    assert {r["verdict"] for r in summary if r["level"] == "0.4" and r["method"] == "debiased"} == {"gain"}
    # runs that record their code at start: the source hash decides
    new = [{"code_version": {"commit": first, "dirty": True, "source_sha256": h, "recorded": "start"}, "git_commit": first}
           for h in ("a" * 64, "b" * 64)]
    assert [code_version_of(r) for r in new] == ["a" * 64, "b" * 64]
    assert provenance_status([code_version_of(r) for r in new]) == "refused"
    assert provenance_status(["a" * 64, "b" * 64], declared={"a" * 64, "b" * 64}) == "declared equivalent"
    assert provenance_status(["a" * 64] * 3) == "single"


def test_runs_that_record_their_training_code_are_compared_by_it():
    """Second round (issue 24 item 4): when every run of a comparison records training_sha256, a
    change to the analysis or figures between runs (another source_sha256) does not refuse it; a
    change to the training code does; a comparison with one run lacking it falls back to the
    source hashes (today's rule)."""
    from mmkit.analysis.study import code_provenance, code_version_of

    def version(source, training):
        return {"commit": "c" * 40, "dirty": True, "source_sha256": source, "recorded": "start",
                **({"training_sha256": training} if training else {})}

    runs = _store({"proposed": "same", "debiased": "better"})
    for k, r in enumerate(runs):  # every run its own source hash (analysis code edited between all of them)
        r["code_version"] = version(f"{k:064d}", "t" * 64)
    status = {(p["level"], p["method"]): p for p in code_provenance("E3", runs, declared={})}
    assert {p["status"] for p in status.values()} == {"single"}
    assert status[("0.4", "debiased")]["code_versions"] == f"{'t' * 12} x5"
    assert code_version_of(runs[0], training=True) == "t" * 64 and code_version_of(runs[0]) == f"{0:064d}"
    changed = next(r for r in runs if r["level"] == 0.4 and r["variant"] == "debiased" and r["seed"] == 2)
    changed["code_version"] = version("s" * 64, "u" * 64)  # its training code differs
    status = {(p["level"], p["method"]): p["status"] for p in code_provenance("E3", runs, declared={})}
    assert status[("0.4", "debiased")] == "refused"
    assert {s for k, s in status.items() if k != ("0.4", "debiased")} == {"single"}
    changed["code_version"] = version("s" * 64, None)  # recorded before training_sha256: source hashes decide
    status = {(p["level"], p["method"]): p["status"] for p in code_provenance("E3", runs, declared={})}
    assert status[("0.4", "debiased")] == "refused" and status[("0.2", "debiased")] == "single"
    same_source = [r for r in runs if r["level"] == 0.2]
    for r in same_source:
        r["code_version"] = version("a" * 64, None)
    status = {(p["level"], p["method"]): p["status"] for p in code_provenance("E3", runs, declared={})}
    assert status[("0.2", "proposed")] == "single"  # no training hash anywhere: one source hash, as before
