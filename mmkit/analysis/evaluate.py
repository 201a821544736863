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
"""
from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable

import torch

from mmkit.core.io import atomic_write_json, sha256_file
from mmkit.core.metrics import aggregate_over_seeds, chance_level, paired_bootstrap
from mmkit.model.run import Run, data_fingerprint
from mmkit.retrieval.scores import fuse_vmf_product
from mmkit.retrieval.tasks import complete_items, evaluate_tasks
from mmkit.vocab import PAPER_TASKS, ranking_distance, task_name, tasks_for_method

__all__ = ["METRICS", "evaluate_run", "compare_methods", "aggregate", "kappa_reliability"]

METRICS = ("R@1", "R@5", "R@10", "R@15", "MRR", "MR")


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
    stored = run.path / "eval" / (hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16] + ".json")
    if store and stored.is_file():
        result = json.loads(stored.read_text())
        if result.get("settings") == settings:
            for metrics in result["tasks"].values():
                metrics["ranks"] = torch.tensor(metrics["ranks"], dtype=torch.float64)
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
    tasks = evaluate_tasks(params, present, tasks=tasks_for_method(config.method), distance=dist, fusion=fusion,
                           return_ranks=True, n_samples=n_samples, n_projections=n_projections, seed=seed)
    for name, metrics in tasks.items():
        metrics["chance"] = chance_level(metrics["n"])
    result = {"run": str(run.path), "method": config.method, "seed": config.seed,
              "lambda_s": None if config.family == "gaussian" else config.lambda_s, "distance": dist,
              "dataset": dataset_name or str(manifest.get("data") or "unknown"), "split": split, "tasks": tasks,
              "settings": settings}
    if store:
        atomic_write_json(stored, {**result, "tasks": {name: {**m, "ranks": m["ranks"].tolist()}
                                                       for name, m in tasks.items()}})
    return result


def compare_methods(results_a: Iterable[dict], results_b: Iterable[dict], metric: str = "MRR",
                    n_resamples: int = 10_000, seed: int = 0) -> dict[str, dict]:
    """Which differences are real: paired bootstrap of ``metric(a) - metric(b)`` per task.

    ``results_a`` and ``results_b`` are :func:`evaluate_run` results of two methods, one per
    training seed; runs are paired by seed and the queries of all seeds pooled (the same test
    queries under both methods), then resampled with replacement
    (:func:`mmkit.core.metrics.paired_bootstrap`). Returns ``{task: {"difference", "ci_low", "ci_high",
    "p_value", "n_queries", "seeds"}}`` for the tasks both sides answer.
    """
    by_seed_a = {r["seed"]: r for r in results_a}
    by_seed_b = {r["seed"]: r for r in results_b}
    seeds = sorted(set(by_seed_a) & set(by_seed_b))
    if not seeds:
        raise ValueError(f"no common training seeds: {sorted(by_seed_a)} vs {sorted(by_seed_b)}")
    out = {}
    for task in by_seed_a[seeds[0]]["tasks"]:
        if not all(task in by_seed_a[s]["tasks"] and task in by_seed_b[s]["tasks"] for s in seeds):
            continue
        ra = torch.cat([torch.as_tensor(by_seed_a[s]["tasks"][task]["ranks"]) for s in seeds])
        rb = torch.cat([torch.as_tensor(by_seed_b[s]["tasks"][task]["ranks"]) for s in seeds])
        out[task] = {**paired_bootstrap(ra, rb, metric=metric, n_resamples=n_resamples, seed=seed),
                     "n_queries": int(ra.numel()), "seeds": seeds}
    return out


def aggregate(results: Iterable[dict]) -> list[dict]:
    """Long-format rows over seeds: one per (dataset, method, lambda_s, distance, task, metric)."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in results:
        lam = r["lambda_s"]
        lam_key = "" if lam is None else ("inf" if lam == math.inf else f"{lam:g}")
        for task, metrics in r["tasks"].items():
            for metric in METRICS:
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
