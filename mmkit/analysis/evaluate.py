"""Evaluate trained runs on the retrieval tasks and aggregate over seeds.

One run = one method and one seed. :func:`evaluate_run` encodes the chosen split with the run's
best model and ranks every task the method supports; :func:`aggregate` turns several runs into
long-format rows ``dataset, method, task, metric, lambda_s, distance, mean, std, n_seeds`` (the
layout of every table in ``reports/tables``).

Which tasks a method answers: the vMF methods (proposed, baseline, ls_only) all nine paper tasks
with the chosen distributional distance; PCME and MPC (Gaussian embeddings) T->I and I->T, and MPC
also the composed queries, ranked by mean-cosine with precision-weighted fusion (the product of
isotropic Gaussians) — as in the paper, where the competitors appear on T<->I only. PCME++ (not in
the paper) all nine, ranked by its closed-form sampled distance ``"csd"`` on ``(mean, log_var)``.

A split with many-to-many truth (``FeatureSplit.text_relevance()``) adds R-Precision ("RP") and
mAP@R to every task with text on either side (:func:`mmkit.retrieval.tasks.task_relevance`); a split
without it gets exactly the metrics, stored results and rows it always had.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from mmkit.core.io import atomic_write_json, sha256_bytes, sha256_file
from mmkit.core.metrics import aggregate_over_seeds, bootstrap_difference, chance_level, paired_bootstrap
from mmkit.model.run import Run, data_fingerprint
from mmkit.retrieval.scores import fuse_vmf_product
from mmkit.retrieval.tasks import MANY_TO_MANY_METRICS, complete_items, evaluate_tasks, task_relevance
from mmkit.vocab import PAPER_TASKS, ranking_distance, task_name, tasks_for_method

__all__ = ["METRICS", "evaluate_run", "compare_methods", "aggregate", "kappa_reliability"]

METRICS = ("R@1", "R@5", "R@10", "R@15", "MRR", "MR")
#: Per-query values kept with a stored result (lists in the JSON file, float64 tensors in memory).
_PER_QUERY = ("ranks", *(f"{m}_per_query" for m in MANY_TO_MANY_METRICS))


def evaluate_run(run: str | Path, split: str = "test", distance: str = "ssw", fusion: str = "product",
                 data=None, dataset_name: str | None = None, n_samples: int = 32, n_projections: int = 50,
                 seed: int = 0, store: bool = True) -> dict:
    """Metrics (and per-query ranks) of one run on ``split``.

    ``data`` (a mapping of splits) defaults to the data recorded in the run's manifest, whose hash
    must match the one the run was trained on.

    With ``store`` the result (metrics and per-query ranks) is kept in ``<run>/eval/<key>.json``,
    keyed by the SHA-256 of ``best.pt``, the data hash and every evaluation setting; a later call
    with the same key reads it back instead of ranking again (the per-seed results the tables are
    written from).

    When ``data[split]`` holds many-to-many truth, the tasks with text also get "RP" and "mAP@R"
    (means over queries, in [0, 1]), their per-query values ("RP_per_query", "mAP@R_per_query")
    and their chance levels (a ranking with every score tied); the truth's hash joins the key.
    """
    run = Run(run)
    manifest = run.manifest
    if data is None:
        data = run.load_data()
    fingerprint = data_fingerprint(data)
    if split not in data:
        raise ValueError(f"split must be one of {sorted(data)}, got {split!r}")
    settings = {"split": split, "distance": distance, "fusion": fusion, "n_samples": n_samples,
                "n_projections": n_projections, "seed": seed, "dataset": dataset_name,
                "weights_sha256": sha256_file(run.path / "best.pt") if (run.path / "best.pt").is_file() else None,
                "data_sha256": fingerprint}
    truth = data[split].text_relevance()
    if truth is not None:  # only then: the keys of stored results without truth stay as they were
        settings["truth_sha256"] = sha256_bytes(np.packbits(truth).tobytes() + str(truth.shape).encode())
    stored = run.path / "eval" / (hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16] + ".json")
    if store and stored.is_file():
        result = json.loads(stored.read_text())
        if result.get("settings") == settings:
            for metrics in result["tasks"].values():
                for key in _PER_QUERY:
                    if key in metrics:
                        metrics[key] = torch.tensor(metrics[key], dtype=torch.float64)
            # the JSON file holds its keys sorted: restore the task order of a fresh evaluation
            order = [task_name(q, t) for q, t in tasks_for_method(result["method"])]
            result["tasks"] = {k: result["tasks"][k] for k in order if k in result["tasks"]}
            return result
    config, part = run.config, data[split]
    params = run.encode(part)
    present = {m: torch.from_numpy(part.present[m].copy()) for m in params}
    dist = ranking_distance(config.method, distance)
    if dist == "csd":  # ranked on the Gaussians themselves, not on (mean, mean precision)
        params = {m: (params[m].loc, params.log_var[m]) for m in params}
    relevance = None if truth is None else torch.from_numpy(truth)
    tasks = evaluate_tasks(params, present, tasks=tasks_for_method(config.method), distance=dist, fusion=fusion,
                           return_ranks=True, text_relevance=relevance, n_samples=n_samples,
                           n_projections=n_projections, seed=seed)
    for query, target in tasks_for_method(config.method):
        metrics = tasks.get(task_name(query, target))
        if metrics is None:
            continue
        metrics["chance"] = chance_level(metrics["n"])
        relevant = task_relevance(relevance, query, target, complete_items(present, (target, *query)))
        if relevant is not None:
            tied = torch.zeros(relevant.shape, dtype=torch.float64)
            metrics["chance"].update({name: float(fn(tied, relevant).mean())
                                      for name, fn in MANY_TO_MANY_METRICS.items()})
    result = {"run": str(run.path), "method": config.method, "seed": config.seed,
              "lambda_s": None if config.family == "gaussian" else config.lambda_s, "distance": dist,
              "dataset": dataset_name or str(manifest.get("data") or "unknown"), "split": split, "tasks": tasks,
              "settings": settings}
    if store:
        atomic_write_json(stored, {**result, "tasks": {name: {**m, **{k: m[k].tolist() for k in _PER_QUERY if k in m}}
                                                       for name, m in tasks.items()}})
    return result


def compare_methods(results_a: Iterable[dict], results_b: Iterable[dict], metric: str = "MRR",
                    n_resamples: int = 10_000, seed: int = 0) -> dict[str, dict]:
    """Which differences are real: paired bootstrap of ``metric(a) - metric(b)`` per task.

    ``results_a`` and ``results_b`` are :func:`evaluate_run` results of two methods, one per
    training seed; runs are paired by seed and the queries of all seeds pooled (the same test
    queries under both methods), then resampled with replacement
    (:func:`mmkit.core.metrics.paired_bootstrap`). ``metric`` is "MRR", "R@k", or "RP" / "mAP@R" (the
    stored per-query values of results on data with many-to-many truth;
    :func:`mmkit.core.metrics.bootstrap_difference`). Returns ``{task: {"difference", "ci_low", "ci_high",
    "p_value", "n_queries", "seeds"}}`` for the tasks both sides answer (with that metric).
    """
    by_seed_a = {r["seed"]: r for r in results_a}
    by_seed_b = {r["seed"]: r for r in results_b}
    seeds = sorted(set(by_seed_a) & set(by_seed_b))
    if not seeds:
        raise ValueError(f"no common training seeds: {sorted(by_seed_a)} vs {sorted(by_seed_b)}")
    key = f"{metric}_per_query" if metric in MANY_TO_MANY_METRICS else "ranks"
    out = {}
    for task in by_seed_a[seeds[0]]["tasks"]:
        if not all(key in r["tasks"].get(task, {}) for s in seeds for r in (by_seed_a[s], by_seed_b[s])):
            continue
        ra = torch.cat([torch.as_tensor(by_seed_a[s]["tasks"][task][key]) for s in seeds])
        rb = torch.cat([torch.as_tensor(by_seed_b[s]["tasks"][task][key]) for s in seeds])
        test = (bootstrap_difference(ra, rb, n_resamples=n_resamples, seed=seed) if key != "ranks" else
                paired_bootstrap(ra, rb, metric=metric, n_resamples=n_resamples, seed=seed))
        out[task] = {**test, "n_queries": int(ra.numel()), "seeds": seeds}
    return out


def aggregate(results: Iterable[dict]) -> list[dict]:
    """Long-format rows over seeds: one per (dataset, method, lambda_s, distance, task, metric); "RP" and
    "mAP@R" rows only for the tasks whose results carry them (splits with many-to-many truth)."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in results:
        lam = r["lambda_s"]
        lam_key = "" if lam is None else ("inf" if lam == math.inf else f"{lam:g}")
        for task, metrics in r["tasks"].items():
            for metric in (*METRICS, *(m for m in MANY_TO_MANY_METRICS if m in metrics)):
                groups[(r["dataset"], r["method"], task, metric, lam_key, r["distance"])].append(metrics[metric])
    rows = []
    for (dataset, method, task, metric, lam, distance), values in sorted(groups.items()):
        mean, std, n = aggregate_over_seeds(values)
        rows.append({"dataset": dataset, "method": method, "task": task, "metric": metric, "lambda_s": lam,
                     "distance": distance, "mean": mean, "std": std, "n_seeds": n})
    return rows


def kappa_reliability(params, present, tasks=PAPER_TASKS, n_bins: int = 5, distance: str = "cosine",
                      **score_kwargs) -> dict[str, dict]:
    """Does the learned concentration predict retrieval success? (beyond the paper)

    For each task, queries are binned by the quantiles of their (fused) kappa; returns per bin the
    kappa range, the number of queries and R@1 (%), and the Spearman correlation between kappa and
    the reciprocal rank over all queries (positive: confident queries are retrieved better; tied
    values get their average rank, as in ``scipy.stats.spearmanr``; NaN when kappa or the ranks
    are constant or there are fewer than 3 queries).
    """
    out = {}
    ranked = evaluate_tasks(params, present, tasks=tasks, distance=distance, return_ranks=True, **score_kwargs)
    for query, target in tasks:
        name = task_name(query, target)
        if name not in ranked:
            continue
        idx = complete_items(present, (target, *query))
        _, kappa = fuse_vmf_product([params[m][0][idx] for m in query], [params[m][1][idx] for m in query])
        ranks = ranked[name]["ranks"]
        order = torch.argsort(kappa)
        bins = []
        for chunk in torch.tensor_split(order, n_bins):
            if chunk.numel():
                bins.append({"kappa_min": float(kappa[chunk].min()), "kappa_max": float(kappa[chunk].max()),
                             "n": int(chunk.numel()), "R@1": 100.0 * float((ranks[chunk] <= 1).double().mean())})
        rho = _spearman(kappa, 1.0 / ranks)
        out[name] = {"bins": bins, "spearman_kappa_vs_reciprocal_rank": rho}
    return out


def _spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman's rank correlation of two (n,) tensors, ties given their average rank (as
    ``scipy.stats.spearmanr``); NaN for fewer than 3 values or a constant input."""
    from scipy.stats import spearmanr

    a, b = x.detach().double().cpu().numpy(), y.detach().double().cpu().numpy()
    if len(a) < 3 or a.min() == a.max() or b.min() == b.max():
        return math.nan
    return float(spearmanr(a, b).statistic)
