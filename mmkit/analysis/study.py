"""The study "When does L_S help?" (``docs/study.md``): its grid and the analysis of its stored runs.

The grid (:data:`EXPERIMENTS`, :data:`VARIANTS`) is defined here and run by
:mod:`mmkit.pipeline.study`, which stores one JSON per run in ``reports/study/<experiment>/``.
:func:`analyse` turns a complete experiment into verdicts, exactly as §6 of the protocol says:

* per (level, variant, task): the variant minus Baseline in per-query test scores (MRR's
  reciprocal ranks, R@10's hits), paired by training seed and query item; the decisions from the
  analytic crossed seeds x queries test :func:`mmkit.analysis.statistics.crossed_t_test` (deviation
  of 2026-12-07), the reported 95 % and 90 % intervals from the two-level bootstrap of
  :func:`mmkit.analysis.statistics.hierarchical_bootstrap`, the same bootstrap seed for every
  comparison (common random numbers);
* per family (one experiment's tests of one (metric, distance); the primary family is MRR under
  SSW₁), :func:`mmkit.analysis.statistics.decide_family`: Holm (1979) over the p-values and over
  the TOST p-values against the margins fixed in advance (±0.02 MRR, ±3 R@10 points); the one
  verdict rule :func:`mmkit.analysis.statistics.verdict` (**equivalent** if the adjusted TOST
  p < 0.05 and Baseline is above chance, else **gain** / **harm** if the adjusted p < 0.05, else
  **at floor** if Baseline's interval reaches chance, else **inconclusive**), reported with its
  minimum detectable effect at the strictest Holm step;
* ``mean9``, the difference of the mean over the nine tasks, outside the Holm families, feeds the
  decision pattern of each (level, variant);
* κ: AUROC of 1/κ for flagging the perturbed training items (E3–E5) or the out-of-distribution
  test items (E6), per seed, for each variant against Baseline's.

Rows go to ``reports/tables/study_summary.csv`` (one file for all experiments; an experiment's
rows are replaced when it is analysed again, which must reproduce the same numbers).

The second round (§10, Amendment 1: E10–E14) compares Baseline, Proposed, the debiased L_S and
PCME++ (Chun et al., *Improved probabilistic image-text representations*, ICLR 2024), each ranked
by its primary distance (SSW₁; CSD for PCME++) and μ-cosine. Its families (:func:`families_of`)
add R-Precision and mAP@R on the seven tasks with text (margin ±0.02, ``mean7`` rows); E12 and E13
have no runs of their own and analyse E11's (E12: mAP@R primary, plus descriptive rows by caption
generality, :func:`generality_rows`; E13: the degraded-view test set and the κ family of
:func:`kappa_view_tests`). Its runs record ``training_sha256`` and are compared by it
(:func:`code_provenance`).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
from scipy import stats

from mmkit.analysis.statistics import (at_floor, chance_level, crossed_t_test, decide_family, equivalence,
                                       hierarchical_bootstrap, holm, per_query_scores, seed_bootstrap, seed_t_test)
from mmkit.core.io import atomic_write_text
from mmkit.vocab import PAPER_TASKS, ranking_distance, task_name

__all__ = ["NOT_TRAINING_CODE", "CODE_EQUIVALENCE", "PROVENANCE_COLUMNS", "code_version_of", "kappa_table", "training_code_changes",
           "provenance_status", "code_provenance", "Experiment", "EXPERIMENTS", "VARIANTS", "MARGINS", "FAMILIES", "DESCRIPTIVE", "SUMMARY_COLUMNS", "load_results",
           "incomplete", "reference_runs", "ROUND2_VARIANTS", "TEXT_METRICS", "TEXT_TASKS", "MEAN_TASKS",
           "EXPERIMENT_FAMILIES", "families_of", "tasks_of", "GENERALITY_STRATA", "generality_rows", "SEVERE", "AURC_TASKS",
           "kappa_view_tests", "E2_ALL", "SLOPE_TASK", "EXPLORATORY_MIN_SEEDS", "is_exploratory", "KAPPA_TEST_COLUMNS", "analyse", "compare_experiment", "kappa_auroc", "kappa_tests", "decision", "verdict_table", "validation_table"]


@dataclass(frozen=True)
class Experiment:
    """One experiment of the protocol: its levels, the variants compared, the seeds."""

    name: str
    title: str
    number: int
    levels: tuple
    variants: tuple[str, ...]
    seeds: tuple[int, ...]
    #: the data it trains on (a preset name; tests pass a bundle path to the runner instead)
    data: str = "small"
    #: an experiment with no runs of its own analyses those of ``source`` (E12, E13: E11's)
    source: str | None = None
    #: the evaluation split its comparisons read (E13: E11's runs on the degraded-view test set)
    split: str = "test"

    @property
    def round(self) -> int:
        """1 for E1–E9, 2 for the second round (docs/study.md §10, Amendment 1: E10–E14)."""
        return 2 if self.number >= 10 else 1


#: The methods compared (docs/study.md §3), as TrainConfig settings; every comparison is against "baseline".
VARIANTS = {
    "baseline": {"method": "baseline"},
    "proposed": {"method": "proposed", "lambda_s": 1.0},
    "debiased": {"method": "proposed", "lambda_s": 1.0, "debiased_ssw": True},
    "proposed-0.1": {"method": "proposed", "lambda_s": 0.1},
    # PCME++ (Chun et al., ICLR 2024), second round only; its α comes from the round's settings file
    "pcmepp": {"method": "pcmepp"},
}
#: The second round's methods (docs/study.md §10): B, P, P-deb, PCME++.
ROUND2_VARIANTS = ("baseline", "proposed", "debiased", "pcmepp")
EXPERIMENTS = {e.name: e for e in (
    Experiment("E1", "main", 1, ("clean",), ("baseline", "proposed", "debiased", "proposed-0.1"), tuple(range(10))),
    Experiment("E2", "few pairs", 2, (100, 200, 400, 800), ("baseline", "proposed", "debiased"), tuple(range(5))),
    Experiment("E3", "wrong pairs", 3, (0.2, 0.4), ("baseline", "proposed", "debiased"), tuple(range(5))),
    Experiment("E4", "ambiguous captions", 4, (0.2, 0.4), ("baseline", "proposed", "debiased"), tuple(range(5))),
    Experiment("E5", "missing modality", 5, (0.3, 0.6), ("baseline", "proposed", "debiased"), tuple(range(5))),
    Experiment("E6", "out of distribution", 6, ("folk-to-art",), ("baseline", "proposed", "debiased"), tuple(range(5))),
    Experiment("E7", "weak contrastive term", 7, ("pcme-b128", "pcme-b32", "infonce-b32"),
               ("baseline", "proposed", "debiased"), tuple(range(5))),
    Experiment("E8", "as published", 8, ("as-published",), ("baseline", "proposed"), tuple(range(5))),
    Experiment("E9", "backbones end to end", 9, ("backbones",), ("baseline", "proposed"), tuple(range(5))),
    Experiment("E10", "clean, kappa moving", 10, ("clean",), ROUND2_VARIANTS, tuple(range(10))),
    Experiment("E11", "realistic", 11, ("real",), ROUND2_VARIANTS, tuple(range(10)), data="small-real"),
    Experiment("E12", "many-to-many", 12, ("real",), ROUND2_VARIANTS, tuple(range(10)), data="small-real",
               source="E11"),
    Experiment("E13", "degraded views", 13, ("real",), ROUND2_VARIANTS, tuple(range(10)), data="small-real",
               source="E11", split="test_degraded"),
    Experiment("E14", "noisy correspondences", 14, (0.2, 0.5), ROUND2_VARIANTS, tuple(range(5)), data="small-real"),
)}
#: Equivalence margins, fixed in advance (docs/study.md §6; R-Precision and mAP@R: §10).
MARGINS = {"MRR": 0.02, "R@10": 3.0, "RP": 0.02, "mAP@R": 0.02}
#: The Holm families of an experiment: (metric, distance); the first is the primary one. The
#: distance "ssw" is each method's primary ranking: SSW₁ for the vMF methods, PCME++'s closed-form
#: sampled distance (CSD) for PCME++ (:func:`mmkit.vocab.ranking_distance`); "cosine" is μ-cosine for all.
FAMILIES = (("MRR", "ssw"), ("R@10", "ssw"), ("MRR", "cosine"), ("R@10", "cosine"))
#: Metrics of the many-to-many truth (R-Precision, mAP@R), defined on the tasks with text only.
TEXT_METRICS = ("RP", "mAP@R")
_TEXT_FAMILIES = (("RP", "ssw"), ("mAP@R", "ssw"), ("RP", "cosine"), ("mAP@R", "cosine"))
#: The families of the experiments whose families differ from :data:`FAMILIES` (docs/study.md §10):
#: R-Precision and mAP@R secondary in E11 and E14; E12's primary family mAP@R, R-Precision secondary.
EXPERIMENT_FAMILIES = {"E11": FAMILIES + _TEXT_FAMILIES, "E14": FAMILIES + _TEXT_FAMILIES,
                       "E12": (("mAP@R", "ssw"), ("RP", "ssw"), ("mAP@R", "cosine"), ("RP", "cosine"))}
#: Rankings reported descriptively (no test, no verdict): E8's ranking with the reference code's
#: defects (docs/study.md §5), stored by the runner as the distance "ssw-as-published".
DESCRIPTIVE = {"E8": (("MRR", "ssw-as-published"),)}
SUMMARY_COLUMNS = ["experiment", "level", "method", "task", "metric", "difference", "ci_low", "ci_high", "p_holm",
                   "verdict", "n_seeds", "distance", "family", "p", "ci90_low", "ci90_high", "p_tost_holm", "mde",
                   "se", "df", "seed_share", "p_tost", "baseline", "chance", "at_floor"]
BOOTSTRAP = {"n_resamples": 20_000, "seed": 20261201}
ALPHA = 0.05
TASKS = tuple(task_name(q, t) for q, t in PAPER_TASKS)
#: The seven tasks with text on either side, where R-Precision and mAP@R are defined.
TEXT_TASKS = tuple(t for t in TASKS if "T" in t)
#: The name of the mean-over-tasks row: nine tasks, or the seven with text.
MEAN_TASKS = ("mean9", "mean7")
#: Experiments reported with fewer seeds than the protocol's, as exploratory, once this many seed
#: blocks are complete (docs/study.md §5: E9 with >= 3 seeds).
EXPLORATORY_MIN_SEEDS = {"E9": 3}
#: E2's reference level: E1's runs, N = 1,627 training items (docs/study.md §4).
E2_ALL = ("all", 1627)
#: The task name of E2's slope rows (H4): Δ mean9 per doubling of N.
SLOPE_TASK = "slope_log2N"


def families_of(experiment: str) -> tuple:
    """The Holm families of ``experiment``, primary first (:data:`EXPERIMENT_FAMILIES`, else :data:`FAMILIES`)."""
    return EXPERIMENT_FAMILIES.get(experiment, FAMILIES)


def tasks_of(metric: str) -> tuple[str, ...]:
    """The tasks ``metric`` is defined on: the seven with text for R-Precision and mAP@R, else all nine."""
    return TEXT_TASKS if metric in TEXT_METRICS else TASKS


def _mean_task(metric: str) -> str:
    return MEAN_TASKS[1] if metric in TEXT_METRICS else MEAN_TASKS[0]


def load_results(experiment: str, store: str | os.PathLike) -> list[dict]:
    """Every stored run of ``experiment`` (``<store>/<experiment>/*.json``)."""
    folder = Path(store) / experiment
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def _key(level) -> str:
    return str(level)


def _all_levels(experiment: str) -> tuple:
    """The experiment's levels, with E2's reference level "all" (E1's runs) last."""
    e = EXPERIMENTS[experiment]
    return e.levels + ((E2_ALL[0],) if experiment == "E2" else ())


def reference_runs(experiment: str, store: str | os.PathLike) -> list[dict]:
    """Runs another experiment lends: E2's level "all" is E1's runs of E2's seeds and variants
    (docs/study.md §4: the same configuration, not retrained), relabelled ``level = "all"``."""
    if experiment != "E2":
        return []
    e = EXPERIMENTS["E2"]
    return [{**r, "level": E2_ALL[0]} for r in load_results("E1", store) if r["seed"] in e.seeds
            and r["variant"] in e.variants]


def incomplete(experiment: str, results: list[dict]) -> list[str]:
    """The (level, variant, seed) cells of the protocol's grid that have no stored run (for E2,
    with :func:`reference_runs` among ``results``, including its level "all")."""
    e = EXPERIMENTS[experiment]
    have = {(_key(r["level"]), r["variant"], r["seed"]) for r in results}
    return [f"{level}-{v}-s{s}" for s in e.seeds for level in _all_levels(experiment) for v in e.variants
            if (_key(level), v, s) not in have]


def _scores(run: dict, split: str, distance: str, task: str, metric: str) -> tuple[list[str], np.ndarray]:
    """(query ids, per-query scores) of one task of one run."""
    entry, ids = _entry(run, split, distance, task)
    if metric in TEXT_METRICS:
        return ids, np.asarray(entry[f"{metric}_per_query"], dtype=np.float64)
    return ids, per_query_scores(np.asarray(entry["ranks"], dtype=np.float64), metric)


def _entry(run: dict, split: str, distance: str, task: str) -> tuple[dict, list[str]]:
    """(stored entry, query ids) of one task of one run under the ranking ``distance``: "ssw" reads
    the method's primary ranking (CSD for PCME++), "cosine" μ-cosine."""
    part = run["splits"][split]
    stored = ranking_distance(run["config"]["method"], distance) if distance == "ssw" and "config" in run else distance
    entry = part["distances"][stored][task]
    rows = entry.get("rows", range(len(part["ids"])))
    return entry, [part["ids"][r] for r in rows]


def _paired(runs_a: dict[int, dict], runs_b: dict[int, dict], split: str, distance: str, task: str,
            metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(S, Q) arrays of the two variants' per-query scores, seeds sorted, queries aligned by id."""
    seeds = sorted(runs_a)
    if seeds != sorted(runs_b):
        raise ValueError(f"the two variants have different seeds: {seeds} vs {sorted(runs_b)}")
    a_rows, b_rows, ids0 = [], [], None
    for s in seeds:
        ids_a, sa = _scores(runs_a[s], split, distance, task, metric)
        ids_b, sb = _scores(runs_b[s], split, distance, task, metric)
        if ids_a != ids_b or (ids0 is not None and ids_a != ids0):
            raise ValueError(f"{task}: the runs were evaluated on different query items (seed {s})")
        ids0 = ids_a
        a_rows.append(sa)
        b_rows.append(sb)
    return np.stack(a_rows), np.stack(b_rows)


def _gallery_size(runs: dict[int, dict], split: str) -> int:
    """The number of items each query ranks: the split's items (the same in every run of a cell)."""
    sizes = {len(r["splits"][split]["ids"]) for r in runs.values()}
    if len(sizes) != 1:
        raise ValueError(f"the runs were evaluated on {split} splits of different sizes: {sorted(sizes)}")
    return sizes.pop()


@dataclass(frozen=True)
class _Fit:
    """One comparison: the bootstrap (intervals), the analytic test (decisions), Baseline's mean
    metric, its chance value and whether Baseline is at that floor."""

    boot: object
    test: object
    baseline: float
    chance: float
    floor: bool


def compare_experiment(experiment: str, results: list[dict], split: str | None = None,
                       n_resamples: int = BOOTSTRAP["n_resamples"], families=None,
                       refused: Iterable[tuple[str, str]] = ()) -> list[dict]:
    """Every comparison of ``experiment`` (variants against Baseline, per level, task, metric and
    distance), decided per family by :func:`mmkit.analysis.statistics.decide_family` (Holm over
    the analytic tests and over their TOSTs, the MDE at the strictest Holm step, the one verdict
    rule, a Baseline at chance reported "at floor"), with the two-level bootstrap's intervals;
    plus the rows of the mean over the tasks (``mean9``; ``mean7`` for R-Precision and mAP@R, which
    live on the seven tasks with text). ``split`` defaults to the experiment's (E13: the
    degraded-view test set). ``families`` defaults to :func:`families_of` and the experiment's
    :data:`DESCRIPTIVE` rankings, whose rows carry differences and intervals but no p_holm and no
    verdict; E12 adds its descriptive rows by caption generality (:func:`generality_rows`).
    ``refused``: (level, variant) comparisons whose runs were trained by different code
    (:func:`code_provenance`): not tested, not in the Holm families, their rows say "refused"."""
    e = EXPERIMENTS[experiment]
    split = e.split if split is None else split
    refused = {(_key(level), variant) for level, variant in refused}
    tested_families = families_of(experiment)
    if families is None:
        families = tested_families + DESCRIPTIVE.get(experiment, ())
    by = {}
    for r in results:
        by.setdefault((_key(r["level"]), r["variant"]), {})[r["seed"]] = r
    rows = []
    for metric, distance in families:
        family, means = [], []
        tasks = tasks_of(metric)
        for level in e.levels:
            base = by[(_key(level), "baseline")]
            for variant in e.variants:
                if variant == "baseline":
                    continue
                if (_key(level), variant) in refused:
                    rows.extend(_refused_row(experiment, level, variant, task, metric, distance, len(base))
                                for task in tasks + (_mean_task(metric),))
                    continue
                other = by[(_key(level), variant)]
                for task in tasks:
                    a, b = _paired(other, base, split, distance, task, metric)
                    chance = _chance(base, split, distance, task, metric)
                    family.append((level, variant, task, _fit(a, b, n_resamples, chance, at_floor(b, chance))))
                a9, b9 = _mean_over_tasks(other, base, split, distance, metric)
                chance9 = float(np.mean([_chance(base, split, distance, t, metric) for t in tasks]))
                means.append((level, variant, _mean_task(metric), _fit(a9, b9, n_resamples, chance9, False)))
        margin = MARGINS[metric]
        tested = (metric, distance) in tested_families
        decided = (decide_family([fit.test for *_, fit in family], margin, [fit.floor for *_, fit in family],
                                 alpha=ALPHA) if tested else [None] * len(family))
        for (level, variant, task, fit), dec in zip(family, decided):
            rows.append(_row(experiment, level, variant, task, metric, distance, fit, dec))
        for level, variant, task, fit in means:
            tost9 = equivalence(fit.test, margin)["p_tost"]
            rows.append(_row(experiment, level, variant, task, metric, distance, fit,
                             {"p_tost": tost9, "p_tost_holm": tost9, "mde": fit.test.mde(ALPHA)}))
        if experiment == "E2":
            rows.extend(_slope_rows(by, split, metric, distance, n_resamples, refused))
        if experiment == "E12" and (metric, distance) == tested_families[0]:
            rows.extend(generality_rows(experiment, by, split, metric, distance, n_resamples, refused))
    return rows


def _chance(runs: dict[int, dict], split: str, distance: str, task: str, metric: str) -> float:
    """The chance value of ``metric`` on one task: MRR and R@k from the gallery size
    (:func:`~mmkit.analysis.statistics.chance_level`); R-Precision and mAP@R as stored by the
    runner (a ranking with every score tied, under the split's truth)."""
    if metric in TEXT_METRICS:
        values = {float(_entry(r, split, distance, task)[0]["chance"][metric]) for r in runs.values()}
        if len(values) != 1:
            raise ValueError(f"{task}: the runs store different chance values of {metric}: {sorted(values)}")
        return values.pop()
    return chance_level(metric, _gallery_size(runs, split))


#: The strata of E12's descriptive rows: queries whose item's evaluation caption truly describes
#: one item ("specific") or more than one ("general"; docs/study.md §10).
GENERALITY_STRATA = ("specific", "general")


def generality_rows(experiment: str, by: Mapping, split: str, metric: str, distance: str, n_resamples: int,
                    refused=frozenset()) -> list[dict]:
    """E12 by caption generality, descriptively (differences and intervals, no test in a family, no
    verdict): per level, variant and task with text, the comparison restricted to the queries whose
    item's evaluation caption describes one item (``"<task> [specific]"``) or more than one
    (``"<task> [general]"``), from the per-item ``generality`` the runner stores with each split."""
    e = EXPERIMENTS[experiment]
    rows = []
    for level in e.levels:
        base = by[(_key(level), "baseline")]
        for variant in e.variants:
            if variant == "baseline" or (_key(level), variant) in refused:
                continue
            other = by[(_key(level), variant)]
            for task in tasks_of(metric):
                a, b = _paired(other, base, split, distance, task, metric)
                part = base[min(base)]["splits"][split]
                generality = dict(zip(part["ids"], part["generality"]))
                general = np.array([generality[i] > 1 for i in _entry(base[min(base)], split, distance, task)[1]])
                for name, mask in zip(GENERALITY_STRATA, (~general, general)):
                    if mask.sum() < 2:
                        continue
                    fit = _fit(a[:, mask], b[:, mask], n_resamples, math.nan, False)
                    row = _row(experiment, level, variant, f"{task} [{name}]", metric, distance, fit, None)
                    rows.append({**row, "family": "descriptive"})
    return rows


def _refused_row(experiment, level, variant, task, metric, distance, n_seeds: int) -> dict:
    """A row of a comparison refused for its code versions: no numbers, verdict "refused"."""
    row = dict.fromkeys(SUMMARY_COLUMNS, math.nan)
    family = _family_name(experiment, metric, distance)
    row.update(experiment=experiment, level=_key(level), method=variant, task=task, metric=metric, distance=distance,
               family=family, n_seeds=n_seeds, verdict="refused", at_floor="")
    return row


def _fit(a: np.ndarray, b: np.ndarray, n_resamples: int, chance: float, floor: bool) -> _Fit:
    return _Fit(hierarchical_bootstrap(a, b, n_resamples=n_resamples, seed=BOOTSTRAP["seed"]), crossed_t_test(a, b),
                float(b.mean()), chance, floor)


def _mean_over_tasks(runs_a: dict[int, dict], runs_b: dict[int, dict], split: str, distance: str,
                     metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(S, Q) per-query scores averaged over the metric's tasks (:func:`tasks_of`), for the two variants."""
    tasks = tasks_of(metric)
    pairs = [_paired(runs_a, runs_b, split, distance, task, metric) for task in tasks]
    return sum(a for a, _ in pairs) / len(tasks), sum(b for _, b in pairs) / len(tasks)


def _slope_rows(by: dict, split: str, metric: str, distance: str, n_resamples: int, refused=frozenset()) -> list[dict]:
    """H4 (docs/study.md §6): the OLS slope of the mean9 difference on log2 N over E2's five levels
    (100, 200, 400, 800 and "all" from E1). The slope is linear in the per-(seed, query) scores, so
    ``sum_l w_l mean9_l`` per method, bootstrapped like any difference, is the slope computed inside
    every replicate (the same seed and query draw for all levels). Outside the Holm families: p and
    interval, no verdict."""
    e = EXPERIMENTS["E2"]
    levels = _all_levels("E2")
    x = np.log2([E2_ALL[1] if level == E2_ALL[0] else float(level) for level in levels])
    w = (x - x.mean()) / float(((x - x.mean()) ** 2).sum())
    rows = []
    for variant in e.variants:
        if variant == "baseline":
            continue
        if any((_key(level), variant) in refused for level in levels):
            rows.append(_refused_row("E2", "all levels", variant, SLOPE_TASK, metric, distance, len(e.seeds)))
            continue
        parts = [_mean_over_tasks(by[(_key(level), variant)], by[(_key(level), "baseline")], split, distance, metric)
                 for level in levels]
        a = sum(wl * pa for wl, (pa, _) in zip(w, parts))
        b = sum(wl * pb for wl, (_, pb) in zip(w, parts))
        rows.append(_row("E2", "all levels", variant, SLOPE_TASK, metric, distance,
                         _fit(a, b, n_resamples, math.nan, False), None))
    return rows


def _family_name(experiment: str, metric: str, distance: str) -> str:
    families = families_of(experiment)
    return "primary" if (metric, distance) == families[0] else "secondary" if (metric, distance) in families \
        else "descriptive"


def _row(experiment, level, variant, task, metric, distance, fit: _Fit, decided: dict | None) -> dict:
    """One row of ``study_summary.csv``. ``decided``: the row's entry of
    :func:`~mmkit.analysis.statistics.decide_family` (Holm-family rows), the TOST and MDE alone
    (``mean9``) or ``None`` (descriptive rows and E2's slope)."""
    decided = decided or {}
    res, test = fit.boot, fit.test
    return {"experiment": experiment, "level": _key(level), "method": variant, "task": task, "metric": metric,
            "difference": res.difference, "ci_low": res.ci_low, "ci_high": res.ci_high,
            "p_holm": decided.get("p_holm", math.nan), "verdict": decided.get("verdict", ""), "n_seeds": res.n_seeds,
            "distance": distance,
            "family": _family_name(experiment, metric, distance), "p": test.p_value,
            "ci90_low": res.ci90_low, "ci90_high": res.ci90_high, "p_tost_holm": decided.get("p_tost_holm", math.nan),
            "mde": decided.get("mde", math.nan), "se": test.se, "df": test.df, "seed_share": test.seed_share,
            "p_tost": decided.get("p_tost", math.nan), "baseline": fit.baseline, "chance": fit.chance,
            "at_floor": ("yes" if fit.floor else "no") if task in TASKS else ""}


def decision(rows: list[dict], level, variant: str, experiment: str | None = None) -> str:
    """The protocol's pattern for one (level, variant) from its nine primary verdicts and mean9
    (``experiment`` picks one experiment's rows from a table holding several). The patterns name
    what the variant adds to Baseline: "L_S helps" / "L_S hurts", or "PCME++ helps" / "PCME++ hurts"
    for the PCME++ variant of the second round (a different method, not an added L_S)."""
    added = "PCME++" if VARIANTS.get(variant, {}).get("method") == "pcmepp" else "L_S"
    primary = [r for r in rows if r["family"] == "primary" and r["level"] == _key(level) and r["method"] == variant
               and (experiment is None or r["experiment"] == experiment)]
    verdicts = [r["verdict"] for r in primary if r["task"] not in MEAN_TASKS]
    if "refused" in verdicts:
        return "refused: trained by different code"
    nine = next(r for r in primary if r["task"] in MEAN_TASKS)
    margin = MARGINS[nine["metric"]]
    gains, harms, equal = verdicts.count("gain"), verdicts.count("harm"), verdicts.count("equivalent")
    if gains >= 3 and not harms and nine["ci_low"] > 0:
        return f"{added} helps"
    if harms >= 3 and not gains and nine["ci_high"] < 0:
        return f"{added} hurts"
    if equal >= 7 and not gains and not harms and -margin < nine["ci90_low"] and nine["ci90_high"] < margin:
        return "no practical difference"
    if gains and harms:
        return "mixed"
    return "undetermined"


def _numeric(row: Mapping) -> dict:
    """A summary row as :mod:`csv` reads it (strings) with its numeric fields as floats."""
    out = dict(row)
    for key in ("difference", "ci_low", "ci_high", "p_holm", "p", "ci90_low", "ci90_high", "p_tost_holm", "mde", "se",
                "df", "seed_share", "p_tost", "baseline", "chance"):
        if isinstance(out.get(key), str):
            out[key] = float(out[key]) if out[key] not in ("", "nan") else math.nan
    return out


def is_exploratory(experiment: str, n_seeds: int) -> bool:
    """Whether ``experiment``, analysed on ``n_seeds`` seeds, is exploratory: one of
    :data:`EXPLORATORY_MIN_SEEDS` with fewer seeds than its grid (docs/study.md §5: its pattern does
    not enter the decision rule)."""
    return experiment in EXPLORATORY_MIN_SEEDS and int(n_seeds) < len(EXPERIMENTS[experiment].seeds)


def verdict_table(rows: Iterable[Mapping]) -> str:
    """Markdown table of the primary family: per experiment, level and variant, the count of each
    verdict (:data:`~mmkit.analysis.statistics.VERDICTS`) over the family's tasks (nine; seven for
    R-Precision and mAP@R), the mean difference over those tasks (``mean9`` / ``mean7``, named with
    its metric) with its 95 % interval, the number of seeds and the protocol's pattern
    (:func:`decision`). ``rows``: ``study_summary.csv``'s rows."""
    rows = [_numeric(r) for r in rows]
    lines = ["| experiment | level | variant − Baseline | gain | harm | equivalent | at floor | inconclusive "
             "| mean Δ over the tasks [95 %] | seeds | pattern |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    experiments = sorted({r["experiment"] for r in rows}, key=lambda e: EXPERIMENTS[e].number if e in EXPERIMENTS else 99)
    for experiment in experiments:
        mine = [r for r in rows if r["experiment"] == experiment and r["family"] == "primary"]
        for level, variant in dict.fromkeys((r["level"], r["method"]) for r in mine if r["task"] in TASKS + MEAN_TASKS):
            cell = [r for r in mine if r["level"] == level and r["method"] == variant]
            counts = [sum(r["verdict"] == v for r in cell if r["task"] in TASKS)
                      for v in ("gain", "harm", "equivalent", "at floor", "inconclusive")]
            nine = next(r for r in cell if r["task"] in MEAN_TASKS)
            lines.append(f"| {experiment} | {level} | {variant} | " + " | ".join(map(str, counts))
                         + f" | {nine['task']} Δ{nine['metric']} {nine['difference']:+.4f} "
                         f"[{nine['ci_low']:+.4f}, {nine['ci_high']:+.4f}] "
                         f"| {nine['n_seeds']} | {decision(rows, level, variant, experiment)}"
                         f"{' (exploratory)' if is_exploratory(experiment, nine['n_seeds']) else ''} |")
    return "\n".join(lines) + "\n"


def validation_table(store: str | os.PathLike, experiments: Iterable[str] | None = None) -> str:
    """Markdown table of the selection score of the stored runs (validation mean MRR over the nine
    tasks under μ-cosine at the selected epoch, docs/study.md §2): mean ± SD over seeds per
    experiment, level and variant, with the mean wall-clock seconds of a run (training and
    evaluation, one thread, on whatever machine ran it). Validation only: it may be shown for
    incomplete grids too."""
    lines = ["| experiment | level | variant | runs | validation mean MRR (mean ± SD over seeds) | seconds per run |",
             "|---|---|---|---|---|---|"]
    for experiment in experiments or EXPERIMENTS:
        if experiment not in EXPERIMENTS:
            raise ValueError(f"unknown experiment {experiment!r}; the grid has {sorted(EXPERIMENTS)}")
        cells: dict = {}
        for r in load_results(experiment, store):
            cells.setdefault((_key(r["level"]), r["variant"]), []).append(
                (float(r["val_score"]), float(r.get("seconds_total", math.nan))))
        e = EXPERIMENTS[experiment]
        for level in e.levels:
            for variant in e.variants:
                if (_key(level), variant) not in cells:
                    continue
                values, seconds = np.array(cells[(_key(level), variant)]).T
                sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
                lines.append(f"| {experiment} | {level} | {variant} | {len(values)} | {np.mean(values):.3f} ± {sd:.3f} "
                             f"| {np.mean(seconds):.0f} |")
    return "\n".join(lines) + "\n"


def kappa_table(store: str | os.PathLike, experiments: Iterable[str] | None = None, split: str = "val") -> str:
    """Markdown table of the learned concentrations of the stored runs on ``split`` (default the
    validation split, so it may be shown before an analysis): per experiment, level, variant and
    modality, over the seeds, the mean of each run's mean κ, median κ and coefficient of variation
    across items, and how many runs have their median κ at the upper bound ``kappa_max`` of the log
    head (where κ gets no gradient: a "spread" there partly separates the items at the bound from
    the rest). Runs without these summaries on ``split`` (the first round's stored no quantiles)
    are left out."""
    lines = ["| experiment | level | variant | modality | runs | mean κ | median κ | CV of κ | runs with median κ at "
             "kappa_max |", "|---|---|---|---|---|---|---|---|---|"]
    for experiment in experiments or EXPERIMENTS:
        if experiment not in EXPERIMENTS:
            raise ValueError(f"unknown experiment {experiment!r}; the grid has {sorted(EXPERIMENTS)}")
        cells: dict = {}
        for r in load_results(experiment, store):
            kappa = (r.get("splits", {}).get(split) or {}).get("kappa")
            if not kappa or not all({"mean", "q50", "cv"} <= set(k) for k in kappa.values()):
                continue
            config = r.get("config", {})
            cap = float(config["kappa_max"]) if config.get("kappa_head") == "log" else math.inf
            for m, k in kappa.items():
                cells.setdefault((_key(r["level"]), r["variant"], m), []).append(
                    (float(k["mean"]), float(k["q50"]), float(k["cv"]), float(k["q50"]) >= cap))
        e = EXPERIMENTS[experiment]
        for level in e.levels:
            for variant in e.variants:
                for m in sorted({key[2] for key in cells if key[:2] == (_key(level), variant)}):
                    mean, median, cv, capped = np.array(cells[(_key(level), variant, m)]).T
                    lines.append(f"| {experiment} | {level} | {variant} | {m} | {len(mean)} | {np.mean(mean):.1f} "
                                 f"| {np.mean(median):.1f} | {100 * np.mean(cv):.1f} % | {int(capped.sum())} |")
    return "\n".join(lines) + "\n"


def kappa_auroc(results: list[dict]) -> list[dict]:
    """Per run: AUROC of 1/κ (mean over the item's present modalities, and per modality) for flagging
    the perturbed training items (E3–E5; positives = perturbed) or the out-of-distribution test items
    (E6; positives = OOD, negatives = in-distribution). Mann-Whitney with average ranks for ties."""
    out = []
    for r in results:
        if r["experiment"] in ("E3", "E4", "E5"):
            part = r["splits"]["train"]
            flagged = set(r["perturbation"]["items"])
            labels = np.array([i in flagged for i in part["ids"]])
            kappa, present = part["kappa_items"], part["present"]
        elif r["experiment"] == "E6":
            ood, ind = r["splits"]["test"], r["splits"]["test_id"]
            labels = np.array([True] * len(ood["ids"]) + [False] * len(ind["ids"]))
            kappa = {m: ood["kappa_items"][m] + ind["kappa_items"][m] for m in ood["kappa_items"]}
            present = {m: ood["present"][m] + ind["present"][m] for m in ood["present"]}
        else:
            continue
        k = {m: np.asarray(v, dtype=np.float64) for m, v in kappa.items()}
        p = {m: np.asarray(v, dtype=bool) for m, v in present.items()}
        inv = np.stack([np.where(p[m], 1.0 / k[m], np.nan) for m in k])
        score = np.nanmean(inv, axis=0)
        entry = {"experiment": r["experiment"], "level": _key(r["level"]), "method": r["variant"], "seed": r["seed"],
                 "auroc_mean": _auroc(score, labels)}
        for m in k:
            entry[f"auroc_{m}"] = _auroc(1.0 / k[m][p[m]], labels[p[m]])
        out.append(entry)
    return out


KAPPA_TEST_COLUMNS = ["experiment", "level", "score", "method", "against", "difference", "ci_low", "ci_high", "p",
                      "p_holm", "n_seeds", "family"]


def _seed_test(experiment, level, score, method, against, a, b, family: str, n_resamples: int) -> dict:
    """One row of ``study_kappa_tests.csv``: ``a - b`` over seeds, p from the paired t-test
    (:func:`~mmkit.analysis.statistics.seed_t_test`), interval from
    :func:`~mmkit.analysis.statistics.seed_bootstrap`; ``p_holm`` filled in by the family."""
    res = seed_bootstrap(np.asarray(a), np.asarray(b), n_resamples=n_resamples, seed=BOOTSTRAP["seed"])
    return {"experiment": experiment, "level": _key(level), "score": score, "method": method, "against": against,
            "difference": res.difference, "ci_low": res.ci_low, "ci_high": res.ci_high, "p": seed_t_test(a, b).p_value,
            "p_holm": math.nan, "n_seeds": res.n_seeds, "family": family}


def kappa_tests(experiment: str, results: list[dict], n_resamples: int = BOOTSTRAP["n_resamples"],
                refused: Iterable[tuple[str, str]] = ()) -> list[dict]:
    """The κ tests of docs/study.md §6 (H3, H12) over the seeds: p-values by the paired t-test
    :func:`~mmkit.analysis.statistics.seed_t_test` (deviation of 2026-12-07), intervals by
    :func:`~mmkit.analysis.statistics.seed_bootstrap`.

    * E3–E6 (H12): per level, each variant's AUROC of 1/κ against Baseline's (``against =
      "baseline"``; Holm over levels × variants, one family per score: ``auroc_mean`` primary,
      the per-modality AUROCs secondary), and every method's AUROC against chance (``against =
      "0.5"``, descriptive: "κ flags X" when the interval lies above 0.5).
    * E1 (H3): the per-seed mean log κ over the training split and the three modalities, Proposed
      against Baseline and the debiased L_S against Proposed (one Holm family of two).
    """
    e = EXPERIMENTS[experiment]
    refused = {(_key(level), variant) for level, variant in refused}
    rows: list[dict] = []

    def add(family: list, level, score, method, against, a, b, name):
        family.append(_seed_test(experiment, level, score, method, against, a, b, name, n_resamples))

    def close(family: list, test: bool) -> None:
        if test and family:
            for row, ph in zip(family, holm([r["p"] for r in family])):
                row["p_holm"] = float(ph)
        rows.extend(family)

    if experiment == "E1":
        by = {(r["variant"], r["seed"]): float(np.mean([k["mean_log"] for k in r["splits"]["train"]["kappa"].values()]))
              for r in results}
        family: list = []
        for method, against in (("proposed", "baseline"), ("debiased", "proposed")):
            if {("clean", method), ("clean", against)} & refused:
                continue
            add(family, "clean", "mean_log_kappa", method, against, [by[(method, s)] for s in e.seeds],
                [by[(against, s)] for s in e.seeds], "H3")
        close(family, True)
        return rows
    per_run = kappa_auroc(results)
    if not per_run:
        return rows
    table = {(r["level"], r["method"], r["seed"]): r for r in per_run}
    for score in [k for k in per_run[0] if k.startswith("auroc_")]:
        versus, chance = [], []
        for level in e.levels:
            for method in e.variants:
                values = [table[(_key(level), method, s)][score] for s in e.seeds]
                if any(math.isnan(v) for v in values) or (_key(level), method) in refused:
                    continue
                add(chance, level, score, method, "0.5", values, [0.5] * len(values), "chance")
                if method != "baseline":
                    add(versus, level, score, method, "baseline", values,
                        [table[(_key(level), "baseline", s)][score] for s in e.seeds],
                        "H12" if score == "auroc_mean" else "secondary")
        close(versus, True)
        close(chance, False)
    return rows


#: E13's κ family (docs/study.md §10): severity threshold of the AUROC, and the tasks of the
#: risk–coverage comparison with their query modality.
SEVERE = 0.6
AURC_TASKS = (("A->T", "audio"), ("I->T", "image"))


def kappa_view_tests(experiment: str, results: list[dict], n_resamples: int = BOOTSTRAP["n_resamples"],
                     refused: Iterable[tuple[str, str]] = ()) -> list[dict]:
    """E13's κ family (docs/study.md §10, H16), from the per-(item, view) confidences on the test
    split and the per-query confidences and margins on the degraded-view test set that the runner
    stores with E11's runs; the confidence is κ for the vMF methods and 1 / mean σ² for PCME++.

    Per method and modality, one number per seed (computed with :mod:`mmkit.analysis.uncertainty`),
    tested over the seeds like the κ tests (:func:`~mmkit.analysis.statistics.seed_t_test` for p,
    :func:`~mmkit.analysis.statistics.seed_bootstrap` for the interval), Holm within each family:

    * ``rho_severity`` (family ``H16-rho``): Spearman ρ(κ, severity) over all test (item, view)
      pairs (:func:`~mmkit.analysis.uncertainty.kappa_severity`), against 0 ("κ tracks severity"
      when the interval lies below 0); and each vMF variant's ρ against Baseline's
      (``H16-rho-vs-baseline``: P's ρ more negative than B's).
    * ``auroc_severe`` (``H16-auroc``): AUROC of 1/κ for views of severity >= :data:`SEVERE`
      (:func:`~mmkit.analysis.uncertainty.severe_auroc`), against 0.5.
    * ``aurc_minus_margin`` (``H16-aurc``): per query modality (A→T audio, I→T image queries of the
      degraded-view test set), the area under the risk–coverage curve
      (:func:`~mmkit.analysis.uncertainty.risk_coverage`, reciprocal rank of the primary ranking
      as accuracy) with the method's query confidence, minus that with Baseline's top-1 cosine
      margin and Baseline's reciprocal ranks on the same queries, paired by seed (the queries
      enter through each seed's AURC), against 0 (below 0: κ ranks the queries better).

    A score undefined for some seed (no view of severity >= :data:`SEVERE`, a constant
    confidence) is left out of its family. Returns rows of ``study_kappa_tests.csv``
    (:data:`KAPPA_TEST_COLUMNS`).
    """
    from mmkit.analysis.uncertainty import kappa_severity, risk_coverage, severe_auroc

    e = EXPERIMENTS[experiment]
    refused = {(_key(level), variant) for level, variant in refused}
    by = {(_key(r["level"]), r["variant"], r["seed"]): r for r in results}
    rows: list[dict] = []

    def add(family: list, level, score, method, against, a, b, name):
        # undefined for some seed (no view of that severity, a constant κ): not tested, not in the family
        if np.isfinite(np.asarray(a, dtype=float)).all() and np.isfinite(np.asarray(b, dtype=float)).all():
            family.append(_seed_test(experiment, level, score, method, against, a, b, name, n_resamples))

    def per_seed(level, method, fn) -> list[float]:
        return [fn(by[(_key(level), method, s)]) for s in e.seeds]

    def views(run, m):
        part = run["splits"]["test"]
        return np.asarray(part["view_confidence"][m], dtype=float), np.asarray(part["view_severity"][m], dtype=float)

    def aurc(run, base, task):
        mine = _entry(run, e.split, "ssw", task)[0]
        theirs = _entry(base, e.split, "ssw", task)[0]
        accuracy = 1.0 / np.asarray(mine["ranks"], dtype=float)
        return (risk_coverage(np.asarray(mine["confidence"]), accuracy)["aurc"]
                - risk_coverage(np.asarray(theirs["margin"]), 1.0 / np.asarray(theirs["ranks"], dtype=float))["aurc"])

    families: dict[str, list] = {"H16-rho": [], "H16-rho-vs-baseline": [], "H16-auroc": [], "H16-aurc": []}
    for level in e.levels:
        methods = [v for v in e.variants if (_key(level), v) not in refused]
        modalities = sorted(by[(_key(level), "baseline", e.seeds[0])]["splits"]["test"]["view_confidence"])
        rho = {(v, m): per_seed(level, v, lambda r, m=m: kappa_severity(*views(r, m), n_resamples=1)["rho"])
               for v in methods for m in modalities}
        for v in methods:
            for m in modalities:
                add(families["H16-rho"], level, f"rho_severity_{m}", v, "0", rho[(v, m)], [0.0] * len(e.seeds),
                    "H16-rho")
                if v != "baseline" and VARIANTS[v]["method"] != "pcmepp":
                    add(families["H16-rho-vs-baseline"], level, f"rho_severity_{m}", v, "baseline", rho[(v, m)],
                        rho[("baseline", m)], "H16-rho-vs-baseline")
                add(families["H16-auroc"], level, f"auroc_severe_{m}", v, "0.5",
                    per_seed(level, v, lambda r, m=m: severe_auroc(*views(r, m), threshold=SEVERE)),
                    [0.5] * len(e.seeds), "H16-auroc")
            for task, m in AURC_TASKS:
                add(families["H16-aurc"], level, f"aurc_minus_margin_{m}", v, "baseline margin",
                    [aurc(by[(_key(level), v, s)], by[(_key(level), "baseline", s)], task) for s in e.seeds],
                    [0.0] * len(e.seeds), "H16-aurc")
    for family in families.values():
        for row, ph in zip(family, holm([r["p"] for r in family]) if family else []):
            row["p_holm"] = float(ph)
        rows.extend(family)
    return rows


def _auroc(score: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + ties / 2, by the Mann-Whitney U statistic."""
    pos, neg = int(labels.sum()), int((~labels).sum())
    if not pos or not neg:
        return math.nan
    ranks = stats.rankdata(score)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def _write_csv(path: Path, rows: list[dict], columns: list[str], replace_experiment: str) -> None:
    kept = []
    if path.is_file():
        with open(path, newline="") as fh:
            kept = [r for r in csv.DictReader(fh) if r["experiment"] != replace_experiment]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in kept + [{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows]:
        writer.writerow(row)
    atomic_write_text(path, buf.getvalue())


# --------------------------------------------------------------------------------------------
# provenance: which code trained the runs of a comparison (docs/study.md, deviation of 2026-12-07)

#: The parts of ``mmkit/`` whose changes cannot alter a stored run (the analysis of stored runs,
#: figures, widgets, notebooks, the CLI); a change anywhere else in ``mmkit/`` is a change of the
#: training (or evaluation) code.
NOT_TRAINING_CODE = ("mmkit/analysis/", "mmkit/viz/", "mmkit/app/", "mmkit/notebooks/", "mmkit/__main__.py")
#: Code versions declared equivalent by a deviation of docs/study.md, per experiment: the runs of
#: a comparison whose versions all lie in its experiment's set are used although the training code
#: changed between them. Every commit here is named in the deviation "2026-12-07 ... provenance".
_E1_COMMITS = ("c0d1506e60c3a0e308eec23a315dcab60943518a", "7362b10d1ed5ef3ee83b5996a521659e14232abd",
               "5ccd43fbd8b1dd47c7ca21fb4cfc82b58e2455f5", "9082a4c57fab3be3289c67eac02c4b769dcb02f3")
CODE_EQUIVALENCE = {
    "E1": frozenset(_E1_COMMITS),
    "E2": frozenset(_E1_COMMITS + ("bb1294add3907814713c7cfe4c9a1fb80ac4e4e4", "353b0f630e047a0828b86f8886b852719392e103",
                                   "5b4f59a1035ddb4063303c2ab3f7c9ee40981e77", "a60789b98903deec1ca755772b83b2452f82ab5b",
                                   "968cfa5e351fa0b9715af84b46da59caee9b6104", "9d7023dacb98046d59578aa69ddf41d295221d77")),
    "E5": frozenset(("8c64ed3398c3d69e733709288e0980c3a2f3daa6", "e3a5bc53eadd689675a37b3c98f9e05214737161",
                     "c2229ae9e3412b88b7dcd33d001771f3df3c94f2", "bb1294add3907814713c7cfe4c9a1fb80ac4e4e4")),
    "E7": frozenset(("fa5f469f06f0a9df97ac5f2fb8c95a3a212aac44", "0f2364cf1139e808f6f88fc1fc1c43b76f2f9716",
                     "089fc5813d1b204e4a360210d5dc8f1f6e712d2d", "4f9bc700687eda14159c4198a86775ea51c87c93")),
    "E9": frozenset(("fa9104340c6cba7e4061d6728ed0a00b5889b41e", "034edb4b91f9cd0bd02a7c64cbca5ea8d29d32cc",
                     "b26e9eedf86587370751b4d5552d2eaccd8f7ab0", "ba4f907b148dc12fd2db5902da5b9c8990105d7f",
                     "999a65c292f8401509b1bab4bf2add219a32994a")),
}
PROVENANCE_COLUMNS = ["experiment", "level", "method", "runs", "code_versions", "compared_with_baseline", "status"]


def code_version_of(run: Mapping, training: bool = False) -> str:
    """The code version that trained ``run``: with ``training``, the SHA-256 of only its training
    code recorded at its start (``code_version.training_sha256``, :func:`mmkit.model.run.code_version`);
    else (or for runs without it) the SHA-256 of the ``mmkit`` sources recorded at its start
    (``code_version.source_sha256``), else, for runs stored before that was recorded, the git
    commit read when its result was written (``git_commit``); ``"unknown"`` without either."""
    recorded = run.get("code_version") or {}
    if training and recorded.get("training_sha256"):
        return str(recorded["training_sha256"])
    if recorded.get("source_sha256"):
        return str(recorded["source_sha256"])
    return str(run.get("git_commit") or "unknown")


def _is_commit(version: str) -> bool:
    return len(version) == 40 and all(c in "0123456789abcdef" for c in version)


def training_code_changes(first: str, second: str, repo: str | os.PathLike = ".") -> list[str] | None:
    """The files of training code (``mmkit/`` outside :data:`NOT_TRAINING_CODE`) that differ
    between two git commits (``git diff --name-only``), or ``None`` when git cannot tell (not a
    repository, unknown commit)."""
    import subprocess

    try:
        out = subprocess.run(["git", "diff", "--name-only", first, second, "--", ":(top)mmkit/"], cwd=repo,
                             capture_output=True, text=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [f for f in out.split() if not f.startswith(NOT_TRAINING_CODE)]


def provenance_status(versions: Iterable[str], declared: Iterable[str] = (), repo: str | os.PathLike = ".") -> str:
    """Whether the runs of one comparison, trained by ``versions``, may be compared.

    ``"single"``: one version. ``"same training code"``: several git commits (runs stored before
    the start-of-run record) whose diffs touch no training code (:func:`training_code_changes`).
    ``"declared equivalent"``: otherwise, when every version is in ``declared`` (a deviation of
    docs/study.md). ``"refused"``: otherwise — different source hashes, or commits between which
    training code changed (or git cannot tell), with no declaration.
    """
    versions = sorted(set(versions))
    if len(versions) == 1:
        return "single"
    if all(_is_commit(v) for v in versions) and all(
            training_code_changes(versions[0], v, repo) == [] for v in versions[1:]):
        return "same training code"
    if set(versions) <= set(declared):
        return "declared equivalent"
    return "refused"


def _by_training_code(runs: list[Mapping]) -> bool:
    """Whether every run records ``training_sha256`` (the second round): then runs are compared by
    their training code alone, so a change to the analysis or figures between them does not count."""
    return bool(runs) and all((r.get("code_version") or {}).get("training_sha256") for r in runs)


def _versions_text(runs: list[Mapping], training: bool) -> str:
    counts: dict[str, int] = {}
    for r in runs:
        version = code_version_of(r, training)
        counts[version] = counts.get(version, 0) + 1
    return "; ".join(f"{v[:12]} x{n}" for v, n in sorted(counts.items()))


def code_provenance(experiment: str, results: list[dict], repo: str | os.PathLike = ".",
                    declared: Mapping[str, Iterable[str]] | None = None) -> list[dict]:
    """One row per (level, variant) cell of ``experiment``: its runs' code versions, and the
    :func:`provenance_status` of the comparison it enters (the cell with its level's Baseline
    cell; Baseline's own row: the Baseline cell alone). When every run of the comparison records
    ``training_sha256`` the versions are those (the code that determines a trained model and its
    stored evaluation, :data:`mmkit.model.run.TRAINING_CODE`), else today's rules: source hashes,
    then git commits. ``declared`` defaults to :data:`CODE_EQUIVALENCE`."""
    declared_here = (CODE_EQUIVALENCE if declared is None else declared).get(experiment, ())
    e = EXPERIMENTS[experiment]
    cells: dict = {}
    for r in results:
        cells.setdefault((_key(r["level"]), r["variant"]), []).append(r)
    rows = []
    for level in _all_levels(experiment):
        for variant in e.variants:
            runs = cells.get((_key(level), variant), [])
            if not runs:
                continue
            base = cells.get((_key(level), "baseline"), []) if variant != "baseline" else []
            training = _by_training_code(runs + base)
            rows.append({"experiment": experiment, "level": _key(level), "method": variant, "runs": len(runs),
                         "code_versions": _versions_text(runs, training),
                         "compared_with_baseline": _versions_text(runs + base, training) if base else "",
                         "status": provenance_status([code_version_of(r, training) for r in runs + base],
                                                     declared_here, repo)})
    return rows


def analyse(experiment: str, store: str | os.PathLike = "reports/study", tables_dir: str | os.PathLike = "reports/tables",
            n_resamples: int = BOOTSTRAP["n_resamples"], repo: str | os.PathLike | None = None,
            declared: Mapping[str, Iterable[str]] | None = None) -> Iterable[str]:
    """Analyse one complete experiment: write its rows of ``study_summary.csv`` (and κ AUROCs to
    ``study_kappa.csv``, the code versions of each cell to ``study_provenance.csv``) and yield a
    line per (level, variant) with its decision pattern. An experiment of
    :data:`EXPLORATORY_MIN_SEEDS` with enough complete seed blocks is analysed on those, and said
    to be exploratory. A comparison whose runs were trained by different code and not declared
    equivalent (:func:`code_provenance`, with ``declared`` and the git repository ``repo``,
    default the one holding ``store``) is refused."""
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; the grid has {sorted(EXPERIMENTS)}")
    e = EXPERIMENTS[experiment]
    results = load_results(e.source or experiment, store) + reference_runs(experiment, store)
    missing = incomplete(experiment, results)
    complete = [s for s in e.seeds if not any(m.endswith(f"-s{s}") for m in missing)]
    exploratory = bool(missing) and len(complete) >= EXPLORATORY_MIN_SEEDS.get(experiment, math.inf)
    if exploratory:  # docs/study.md §5: the complete seed blocks only, verdicts outside the decision rule
        results = [r for r in results if r["seed"] in complete]
    elif missing:
        raise ValueError(f"{experiment} is incomplete ({len(missing)} of its runs are not stored, e.g. {missing[:3]}); "
                         "the protocol analyses an experiment once, after all its runs (python -m mmkit study "
                         f"{experiment})")
    provenance = code_provenance(experiment, results, store if repo is None else repo, declared)
    refused = [(p["level"], p["method"]) for p in provenance if p["status"] == "refused"]
    rows = compare_experiment(experiment, results, n_resamples=n_resamples, refused=refused)
    tables = Path(tables_dir)
    _write_csv(tables / "study_summary.csv", rows, SUMMARY_COLUMNS, experiment)
    _write_csv(tables / "study_provenance.csv", provenance, PROVENANCE_COLUMNS, experiment)
    kappa = kappa_auroc(results)
    if kappa:
        _write_csv(tables / "study_kappa.csv", kappa, list(kappa[0]), experiment)
    tests = kappa_tests(experiment, results, n_resamples=n_resamples, refused=refused)
    if experiment == "E13":
        tests = tests + kappa_view_tests(experiment, results, n_resamples=n_resamples, refused=refused)
    if tests:
        _write_csv(tables / "study_kappa_tests.csv", tests, KAPPA_TEST_COLUMNS, experiment)
    yield (f"{experiment} ({e.title}): {len(results)} runs, {len(rows)} comparison rows -> {tables / 'study_summary.csv'}"
           + (f" — EXPLORATORY: {len(complete)} of {len(e.seeds)} seeds (complete seed blocks {complete}); its verdicts "
              "do not enter the decision rule" if exploratory else ""))
    statuses = [p["status"] for p in provenance if p["method"] != "baseline"]
    yield (f"  code versions of the compared runs ({tables / 'study_provenance.csv'}): "
           + ", ".join(f"{statuses.count(k)} {k}" for k in dict.fromkeys(statuses)))
    for p in provenance:
        if p["status"] == "refused":
            yield f"  REFUSED {p['level']} {p['method']}: trained by different code ({p['compared_with_baseline']})"
    for level in e.levels:
        for variant in e.variants:
            if variant != "baseline":
                nine = next(r for r in rows if r["family"] == "primary" and r["level"] == _key(level)
                            and r["method"] == variant and r["task"] in MEAN_TASKS)
                yield (f"  {level} {variant}: {decision(rows, level, variant)}{' (exploratory)' if exploratory else ''} ({nine['task']} Δ{nine['metric']} {nine['difference']:+.4f}, "
                       f"95 % CI [{nine['ci_low']:+.4f}, {nine['ci_high']:+.4f}])")
    for t in tests:
        if t["family"] in ("H3", "H12", "H16-rho", "H16-aurc"):
            yield (f"  κ {t['score']} {t['level']} {t['method']} − {t['against']}: {t['difference']:+.3f} "
                   f"[{t['ci_low']:+.3f}, {t['ci_high']:+.3f}], Holm p {t['p_holm']:.3g}")
