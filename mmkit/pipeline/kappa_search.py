"""The κ search on ``small-real`` (issue 23 section 1), as declared in docs/hyperparameters.md
("The κ search on `small-real`: protocol, written before any run").

Every setting of :data:`SETTINGS` is trained with each method of :data:`METHODS` and each seed by
:func:`mmkit.training.loop.fit` (the ``quick`` heads, ``train_views = "sample"``, at most 60 epochs,
``patience = 8``) and measured on the **validation** split only (:func:`measure_run`): the mean over
the nine tasks of MRR (the model-selection score), κ's coefficient of variation over items per
modality (evaluation views), Spearman ρ between κ and view severity (audio, image;
:func:`mmkit.analysis.uncertainty.kappa_severity`) and between the text κ and log generality.
The test split is never loaded.

:func:`run_search` writes one JSON per finished run (atomically, as runs finish) and skips the runs
already stored with the same configuration, so a killed search resumes. :func:`summarise` averages
each setting over methods and seeds, applies :func:`decide` (the declared rule) when the grid is
complete and writes ``summary.md``; on a partial grid it marks the table partial and chooses nothing.
"""
from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from mmkit.analysis.uncertainty import (compare_confidences, kappa_generality, kappa_severity, retrieval_confidence,
                                        severe_auroc, view_concentrations, view_generality)
from mmkit.core.io import atomic_write_json, atomic_write_text
from mmkit.data.bundle import FeatureSplit, load_bundle
from mmkit.data.resolve import resolve_data
from mmkit.model.config import TrainConfig
from mmkit.model.run import Run, data_fingerprint, kappa_statistics
from mmkit.training.loop import fit

__all__ = ["SETTINGS", "REFERENCE", "METHODS", "SEEDS", "BASE", "SearchSpec", "grid", "load_search_data",
           "measure_run", "run_one", "run_search", "load_results", "aggregate", "decide", "summarise"]

#: Training settings shared by every run (the protocol: the quick heads, sampled views, early stopping).
BASE = {"hidden": 256, "layers": 2, "batch_size": 128, "epochs": 60, "patience": 8, "train_views": "sample",
        "threads": 1}
#: The methods: Baseline (lambda_S = 0) and Proposed (lambda_S = 1).
METHODS = {"baseline": {"method": "baseline", "lambda_s": 0.0}, "proposed": {"method": "proposed", "lambda_s": 1.0}}
SEEDS = (0, 1)
#: The reference: today's head.
REFERENCE = "reference"
#: The declared grid: the reference, the log head over scale x kappa-lr scale x kappa_0 (12), softplus at lr x10.
SETTINGS: dict[str, dict] = {
    REFERENCE: {"kappa_head": "softplus", "kappa_init": 100.0, "kappa_lr_scale": 1.0},
    **{f"log-s{s:g}-lr{lr:g}-k{k0:g}": {"kappa_head": "log", "kappa_scale": s, "kappa_lr_scale": lr,
                                        "kappa_init": k0}
       for s in (0.5, 1.0, 2.0) for lr in (1.0, 10.0) for k0 in (30.0, 100.0)},
    "softplus-lr10": {"kappa_head": "softplus", "kappa_init": 100.0, "kappa_lr_scale": 10.0},
}
#: The decision rule's constants (docs/hyperparameters.md).
MRR_TOLERANCE, MIN_CV, MIN_CV_MODALITIES, RHO_TARGET, RHO_TIE = 0.01, 0.10, 2, -0.3, 0.02
SEVERITY_MODALITIES = ("audio", "image")
_BOOTSTRAP = 1000


@dataclass(frozen=True)
class SearchSpec:
    """One run of the search: a setting of :data:`SETTINGS`, a method of :data:`METHODS`, a seed."""

    setting: str
    method: str
    seed: int
    epochs: int = BASE["epochs"]

    @property
    def name(self) -> str:
        return f"{self.setting}-{self.method}-s{self.seed}"

    def config(self) -> TrainConfig:
        return TrainConfig(**{**BASE, "epochs": self.epochs, **SETTINGS[self.setting], **METHODS[self.method],
                              "seed": self.seed})


def grid(settings: Iterable[str] | None = None, methods: Iterable[str] | None = None,
         seeds: Iterable[int] | None = None, epochs: int = BASE["epochs"]) -> list[SearchSpec]:
    """The runs of the search (default: the whole declared grid, 14 settings x 2 methods x 2 seeds)."""
    settings, methods = list(settings or SETTINGS), list(methods or METHODS)
    for what, names, known in (("setting", settings, SETTINGS), ("method", methods, METHODS)):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown {what}(s) {unknown}; choose from {list(known)}")
    seeds = list(SEEDS if seeds is None else seeds)
    if not seeds or any(not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be ints >= 0, got {seeds}")
    return [SearchSpec(s, m, seed, epochs) for s in settings for m in methods for seed in seeds]


def load_search_data(data: str, cache: str | None = None) -> dict[str, FeatureSplit]:
    """The train and validation splits of ``data`` (a bundle directory or a preset); the test split is dropped
    (a bundle's is not even read)."""
    if Path(data).is_dir():
        return load_bundle(data, splits=("train", "val"))
    splits = resolve_data(data, cache_dir=cache, progress=False)
    return {k: splits[k] for k in ("train", "val")}


def _result_path(spec: SearchSpec, out: str | os.PathLike) -> Path:
    return Path(out) / f"{spec.name}.json"


def _is_stored(spec: SearchSpec, out: str | os.PathLike) -> bool:
    path = _result_path(spec, out)
    if not path.is_file():
        return False
    try:
        return TrainConfig.from_dict(json.loads(path.read_text())["config"]) == spec.config()
    except (json.JSONDecodeError, KeyError, ValueError):
        return False


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def measure_run(run: Run, val: FeatureSplit) -> dict:
    """The declared measures of a trained run on the validation split ``val`` (with views).

    Returns
    -------
    dict
        ``val_score`` (mean MRR over the tasks, μ-cosine, of the best epoch), ``cv`` and ``kappa_mean``
        per modality (κ over items, evaluation views), ``rho_severity`` per viewed modality with severity
        and ``rho_generality`` (text, with many-to-many truth), each ``{rho, ci_low, ci_high, ...}``,
        ``auroc_severe`` per modality (1/κ flagging views of severity >= 0.6); beyond the protocol (it
        decides nothing), ``selective``: per single-modality task, the query κ against the top-1 cosine margin
        as confidences for selective retrieval (:func:`~mmkit.analysis.uncertainty.compare_confidences`).
    """
    enc = run.encode(val)
    cv, mean = {}, {}
    for m in val.modalities:
        stats = kappa_statistics(enc[m].concentration[torch.from_numpy(val.present[m].copy())])
        cv[m], mean[m] = stats["cv"], stats["mean"]
    out = {"val_score": run.metrics["val_score"], "cv": cv, "kappa_mean": mean, "rho_severity": {},
           "auroc_severe": {}, "rho_generality": None, "selective": {}}
    for query in val.modalities:
        for target in val.modalities:
            if query != target:
                conf = retrieval_confidence(enc, query, target, val.present, val.relevant)
                out["selective"][f"{query}->{target}"] = compare_confidences(
                    conf["kappa"], conf["margin"], conf["accuracy"], n_resamples=_BOOTSTRAP // 2)
    if val.views is not None:
        kappa = view_concentrations(run, val)
        for m in SEVERITY_MODALITIES:
            if m in kappa:
                out["rho_severity"][m] = kappa_severity(kappa[m], val.views.severity[m], n_resamples=_BOOTSTRAP)
                out["auroc_severe"][m] = _finite(severe_auroc(kappa[m], val.views.severity[m]))
        if "text" in kappa and val.views.text_truth is not None:
            out["rho_generality"] = kappa_generality(kappa["text"], view_generality(val), n_resamples=_BOOTSTRAP)
    return out


def run_one(spec: SearchSpec, data: str, out: str | os.PathLike, runs_dir: str | os.PathLike,
            cache: str | None = None) -> dict:
    """Train (or resume) and measure one run, write ``<out>/<name>.json`` atomically; a short status back."""
    torch.set_num_threads(1)
    if _is_stored(spec, out):
        return {"run": spec.name, "status": "stored"}
    started = time.time()
    splits = load_search_data(data, cache)
    config = spec.config()
    run_path = Path(runs_dir) / spec.name
    summary = fit(config, splits, run_path, progress=False, data_spec=str(Path(data).resolve())
                  if Path(data).is_dir() else data)
    run = Run(run_path)
    manifest = run.manifest  # provenance recorded when the training started
    result = {"setting": spec.setting, "method": spec.method, "seed": spec.seed, "data": data,
              "config": config.to_dict(), "data_sha256": data_fingerprint(splits),
              **{k: manifest.get(k) for k in ("code_version", "versions")},
              **({"resumed_code_versions": manifest["resumed_code_versions"]}
                 if "resumed_code_versions" in manifest else {}),
              "best_epoch": summary["best_epoch"], "stopped_epoch": summary["stopped_epoch"],
              "history": [{k: v for k, v in row.items() if k in ("epoch", "val_score", "seconds")
                           or k.startswith("kappa_")} for row in summary["history"]],
              "split": "val", **measure_run(run, splits["val"]), "seconds": round(time.time() - started, 1)}
    atomic_write_json(_result_path(spec, out), result)
    return {"run": spec.name, "status": "done", "seconds": result["seconds"], "val_score": result["val_score"]}


def _run_star(args) -> dict:
    return run_one(*args)


def run_search(specs: Sequence[SearchSpec], data: str, out: str | os.PathLike = "reports/kappa_search",
               runs_dir: str | os.PathLike = "runs/kappa_search", jobs: int = 2, cache: str | None = None,
               log=print) -> list[dict]:
    """Run every spec not yet stored in ``out``: ``jobs`` spawned processes of one thread each (``jobs``
    = 1: in this process). A failed run is logged and the others go on."""
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    todo = [s for s in specs if not _is_stored(s, out)]
    log(f"kappa search: {len(specs)} runs, {len(specs) - len(todo)} stored, {len(todo)} to run ({jobs} at a time)")
    Path(out).mkdir(parents=True, exist_ok=True)
    args = [(s, data, str(out), str(runs_dir), cache) for s in todo]
    results = []

    def report(k, spec, status):
        results.append(status)
        log(f"[{k}/{len(todo)}] {spec.name}: {status['status']}"
            + (f" ({status['seconds']:.0f} s, val mean MRR {status['val_score']:.3f})" if "seconds" in status else ""))

    if jobs == 1:
        for k, a in enumerate(args, 1):
            report(k, a[0], run_one(*a))
        return results
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_run_star, a): a[0] for a in args}
        for k, future in enumerate(as_completed(futures), 1):
            try:
                status = future.result()
            except Exception as exc:  # noqa: BLE001 - a failed run is reported, the search goes on
                status = {"run": futures[future].name, "status": f"failed: {exc!r}"}
            report(k, futures[future], status)
    return results


def load_results(out: str | os.PathLike) -> list[dict]:
    """Every stored run result under ``out`` (``*.json`` with a setting of the grid)."""
    results = []
    for path in sorted(Path(out).glob("*.json")):
        record = json.loads(path.read_text())
        if isinstance(record, dict) and record.get("setting") in SETTINGS:
            results.append(record)
    return results


def _rho(entry) -> float:
    return entry["rho"] if entry and entry.get("rho") is not None and math.isfinite(entry["rho"]) else math.nan


def aggregate(results: Sequence[Mapping]) -> list[dict]:
    """One row per setting (grid order): the means over its runs (methods and seeds) of ``val_score``,
    ``cv`` per modality, ``rho_<m>`` (κ vs severity) and ``rho_text`` (text κ vs log generality), and ``runs``."""
    rows = []
    for name in SETTINGS:
        mine = [r for r in results if r["setting"] == name]
        if not mine:
            continue
        modalities = sorted({m for r in mine for m in r["cv"]})
        row = {"setting": name, "runs": len(mine), "val_score": float(np.mean([r["val_score"] for r in mine])),
               "cv": {m: float(np.mean([r["cv"][m] for r in mine if m in r["cv"]])) for m in modalities}}
        for m in SEVERITY_MODALITIES:
            row[f"rho_{m}"] = float(np.nanmean([_rho(r["rho_severity"].get(m)) for r in mine]))
        row["rho_text"] = float(np.nanmean([_rho(r.get("rho_generality")) for r in mine]))
        rows.append(row)
    return rows


def decide(rows: Sequence[Mapping]) -> dict:
    """The declared decision rule on the per-setting means (:func:`aggregate`).

    Admissible: ``val_score`` >= the reference's − 0.01 and κ's CV >= 0.10 in at least two modalities.
    Among admissible settings, the most negative mean of ρ(κ, severity) over audio and image; settings
    within 0.02 of it tie, and the tie goes to the higher ``val_score``. A finding instead of a choice
    (the reference stays the default) when no setting is admissible or no admissible one reaches
    ρ <= −0.3 in at least one modality.

    Returns
    -------
    dict
        ``admissible`` (setting -> bool), ``chosen`` (a setting, or None), ``finding`` (None, or why
        nothing was chosen), ``default`` (the setting that stays or becomes the default).
    """
    by_name = {r["setting"]: r for r in rows}
    if REFERENCE not in by_name:
        raise ValueError("decide: the reference setting has no results")
    floor = by_name[REFERENCE]["val_score"] - MRR_TOLERANCE
    admissible = {r["setting"]: bool(r["val_score"] >= floor
                                     and sum(cv >= MIN_CV for cv in r["cv"].values()) >= MIN_CV_MODALITIES)
                  for r in rows}

    def mean_rho(r):
        return float(np.nanmean([r[f"rho_{m}"] for m in SEVERITY_MODALITIES]))

    ok = [r for r in rows if admissible[r["setting"]] and math.isfinite(mean_rho(r))]
    if not ok:
        return {"admissible": admissible, "chosen": None, "default": REFERENCE,
                "finding": "no setting is admissible (validation MRR within 0.01 of the reference and CV >= 10 % "
                           "in two modalities)"}
    best = min(mean_rho(r) for r in ok)
    chosen = max((r for r in ok if mean_rho(r) <= best + RHO_TIE), key=lambda r: r["val_score"])["setting"]
    if not any(min(r[f"rho_{m}"] for m in SEVERITY_MODALITIES) <= RHO_TARGET for r in ok):
        return {"admissible": admissible, "chosen": None, "default": REFERENCE,
                "finding": f"no admissible setting reaches rho(kappa, severity) <= {RHO_TARGET} in a modality "
                           f"(the rule's pick would have been {chosen})"}
    return {"admissible": admissible, "chosen": chosen, "default": chosen, "finding": None}


def _fmt(x) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3f}"


def _selective_lines(results: Sequence[Mapping]) -> list[str]:
    """The table beyond the protocol (it decides nothing): per setting, over its runs and the six
    single-modality tasks, the mean AURC of the query κ and of the top-1 margin, the mean AURC difference
    of their combination against the margin alone, and in how many (run, task) pairs that difference's
    95 % interval lies below 0 (κ adds information the margin lacks)."""
    lines = ["", "Beyond the protocol (decides nothing): selective retrieval on validation, query κ vs the top-1 "
                 "cosine margin, means over runs and single-modality tasks (AURC: lower is better).", "",
             "| setting | AURC κ | AURC margin | AURC combined − margin | (run, task) with combined better |",
             "|---|---|---|---|---|"]
    for name in SETTINGS:
        cells = [c for r in results if r["setting"] == name for c in r.get("selective", {}).values()]
        if cells:
            better = sum(c["combined_ci_high"] < 0 for c in cells)
            lines.append(f"| {name} | {_fmt(float(np.mean([c['aurc_kappa'] for c in cells])))} | "
                         f"{_fmt(float(np.mean([c['aurc_margin'] for c in cells])))} | "
                         f"{float(np.mean([c['combined_minus_margin'] for c in cells])):+.4f} | {better} of {len(cells)} |")
    return lines if len(lines) > 5 else []


def summarise(out: str | os.PathLike = "reports/kappa_search") -> Path:
    """Write ``<out>/summary.md``: every setting's means, admissible or not, the choice. Partial (provisional
    admissibility, nothing chosen) until every setting of the declared grid has all its runs (methods x seeds)."""
    results = load_results(out)
    if not results:
        raise ValueError(f"{out}: no search results to summarise")
    rows = aggregate(results)
    expected, per_setting = len(grid()), len(METHODS) * len(SEEDS)
    complete = len(rows) == len(SETTINGS) and all(r["runs"] >= per_setting for r in rows)
    decision = decide(rows) if any(r["setting"] == REFERENCE for r in rows) else None
    modalities = sorted({m for r in rows for m in r["cv"]})
    seconds = [r["seconds"] for r in results if "seconds" in r]
    lines = ["# The κ search on validation (docs/hyperparameters.md, issue 23 section 1)", "",
             f"{len(results)} of {expected} runs stored; mean time per run {np.mean(seconds) / 60:.1f} min "
             f"(one thread). Means over methods (Baseline, Proposed λ_S = 1) and seeds; validation split only.", ""]
    if not complete:
        lines += ["**PARTIAL: the grid is not complete. The admissibility column is provisional and nothing is "
                  "chosen; the decision rule applies only to the complete grid.**", ""]
    lines += ["| setting | runs | val MRR | " + " | ".join(f"CV {m}" for m in modalities)
              + " | ρ audio | ρ image | ρ text–generality | admissible? | chosen |",
              "|" + "---|" * (7 + len(modalities) + 1)]
    for r in rows:
        adm = "—" if decision is None else ("yes" if decision["admissible"][r["setting"]] else "no")
        chosen = "**yes**" if complete and decision and decision["chosen"] == r["setting"] else ""
        lines.append(f"| {r['setting']} | {r['runs']} | {_fmt(r['val_score'])} | "
                     + " | ".join(_fmt(r["cv"].get(m)) for m in modalities)
                     + f" | {_fmt(r['rho_audio'])} | {_fmt(r['rho_image'])} | {_fmt(r['rho_text'])} | {adm} | {chosen} |")
    lines.append("")
    if complete and decision is not None:
        lines.append(f"Decision: {decision['chosen']}." if decision["chosen"] else
                     f"Finding: {decision['finding']}; the reference stays the default.")
    lines += _selective_lines(results)
    path = Path(out) / "summary.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
