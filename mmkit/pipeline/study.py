"""The pre-registered study "When does L_S help?" (``docs/study.md``): its grid, a runner that
survives interruption and scales out, and the per-experiment analysis.

One **run** is (experiment, level, variant, seed). :func:`run_one` builds the level's training data
(:mod:`mmkit.data.perturb`; validation and test stay clean), trains the variant with the fixed
settings of the protocol into a git-ignored work directory, evaluates the selected model on the
clean splits with both distances (SSW₁ primary, μ-cosine secondary) and writes everything the
analysis needs — metrics, per-query ranks with the query ids, κ summaries, per-item κ where the
protocol asks for it, the perturbation record, the code version recorded when the training
started (``code_version``, :func:`mmkit.model.run.code_version`; ``git_commit`` is its commit); never weights — to
``reports/study/<experiment>/<run>.json`` (atomically). That store is committed, so a later session
on a fresh machine, or a reviewer, re-analyses without retraining; :func:`run_grid` skips every
run whose JSON exists with the same configuration.

Execution: local processes (``jobs`` at a time, one torch thread each) or a Slurm cluster through
submitit (``executor="slurm"``; ``"local"`` runs submitit's local executor, as the tests do).
The runner never prints test metrics (``docs/study.md`` §7); the analysis of an experiment
(:func:`analyse`, ``python -m mmkit study --analyse E1``) refuses an incomplete grid.

The second round (``docs/study.md`` §10, E10–E14) trains with :data:`FIXED_ROUND2` (early
stopping, one drawn view per item and epoch) and K* and PCME++'s α from
:data:`ROUND2_SETTINGS` (:func:`read_round2_settings`; no run starts without it). On data with
many-to-many truth a run also stores per-query R-Precision and mAP@R; E11's runs store what E12
and E13 analyse: the degraded-view test set (``test_degraded``, with each single-modality query's
confidence and top-1 μ-cosine margin) and the per (item, view) confidence and severity of the
test split, computed when the run ends and never summarised here.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch

from mmkit.analysis.study import EXPERIMENTS, VARIANTS, load_results
from mmkit.core.io import atomic_write_text
from mmkit.data.bundle import FeatureSplit
from mmkit.data.resolve import PRESETS, resolve_data
from mmkit.model.config import TrainConfig
from mmkit.model.run import Run, data_fingerprint, kappa_statistics
from mmkit.retrieval.scores import cosine_scores
from mmkit.retrieval.tasks import MANY_TO_MANY_METRICS, complete_items, evaluate_tasks, task_relevance
from mmkit.training.loop import fit
from mmkit.vocab import ranking_distance, task_name, tasks_for_method

__all__ = ["FIXED", "FIXED_ROUND2", "ROUND2_SETTINGS", "read_round2_settings", "EXPERIMENTS", "RunSpec", "grid", "run_one", "run_grid", "load_results", "missing_runs",
           "result_path", "report", "write_verdicts", "STORE", "WORK"]

#: Where the committed per-run results and the git-ignored training runs go.
STORE = Path("reports/study")
WORK = Path("reports/runs/study")
#: The fixed settings of every run (docs/study.md §2: the quick preset's heads training).
FIXED = {"epochs": 20, "batch_size": 128, "hidden": 256, "layers": 2, "threads": 1, "device": "cpu"}
#: The second round's changes to them (docs/study.md §10): early stopping, a drawn view per epoch.
FIXED_ROUND2 = {**FIXED, "epochs": 60, "patience": 8, "train_views": "sample"}
#: Where the second round's settings chosen on validation are recorded (:func:`read_round2_settings`).
ROUND2_SETTINGS = STORE / "round2_settings.json"
#: PCME++'s α values the amendment chooses among (docs/study.md §10).
ALPHAS = (0.01, 0.03, 0.1)
#: Retrieval settings of the evaluation (docs/study.md §2): SSW₁ with L = 32, T = 50, seed 0; μ-cosine.
EVALUATION = {"distances": ("ssw", "cosine"), "n_samples": 32, "n_projections": 50, "seed": 0, "fusion": "product"}
#: E8's descriptive ranking: SSW₁ with the reference code's sampler and circle W₁ (wrong on purpose).
PUBLISHED_DISTANCE = "ssw-as-published"
#: Steps per epoch of the few-pairs experiment: those of the full `small` training split (⌊1627 / 128⌋).
E2_STEPS = 12


def read_round2_settings(path: str | os.PathLike = ROUND2_SETTINGS) -> dict:
    """The settings of the second round chosen on validation before its runs (docs/study.md §10):
    K*, the κ that learns, and PCME++'s α, read from ONE JSON file.

    Schema (every key required, nothing else)::

        {"kappa": {"kappa_head": "log", "kappa_scale": 1.0, "kappa_lr_scale": 10.0},
         "pseudo_positive_weight": 0.1,
         "recorded_in": "docs/hyperparameters.md"}

    ``kappa``: the TrainConfig settings of K* (names starting with ``kappa_``; those left out keep
    TrainConfig's defaults), applied to Baseline, Proposed and the debiased L_S; ``pseudo_positive_weight``:
    α, one of :data:`ALPHAS`, applied to PCME++; ``recorded_in``: where the choice and its numbers are
    written (``docs/hyperparameters.md``).

    Raises
    ------
    FileNotFoundError
        Without the file: the runs of E10–E14 do not start before K* and α are chosen and recorded.
    ValueError
        A file that does not follow the schema.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: the second round (E10-E14, docs/study.md §10) starts only after K* (the kappa "
            "search) and PCME++'s alpha are chosen on validation and recorded in docs/hyperparameters.md, and then "
            f"in {path} ({{\"kappa\": {{...}}, \"pseudo_positive_weight\": ..., \"recorded_in\": "
            "\"docs/hyperparameters.md\"}; see mmkit.pipeline.study.read_round2_settings)")
    try:
        settings = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(settings, dict) or set(settings) != {"kappa", "pseudo_positive_weight", "recorded_in"}:
        raise ValueError(f"{path}: expected exactly the keys kappa, pseudo_positive_weight, recorded_in, got "
                         f"{sorted(settings) if isinstance(settings, dict) else type(settings).__name__}")
    kappa = settings["kappa"]
    fields = set(TrainConfig().to_dict())
    if not isinstance(kappa, dict) or not all(k.startswith("kappa_") and k in fields for k in kappa):
        raise ValueError(f"{path}: 'kappa' must map TrainConfig settings named kappa_* to values, got {kappa!r}")
    if settings["pseudo_positive_weight"] not in ALPHAS:
        raise ValueError(f"{path}: pseudo_positive_weight must be one of {ALPHAS} (docs/study.md §10), got "
                         f"{settings['pseudo_positive_weight']!r}")
    TrainConfig.from_dict({**kappa, "pseudo_positive_weight": settings["pseudo_positive_weight"]})  # valid values
    return settings


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid. ``overrides`` replace fixed settings (for small test grids only);
    ``settings``: the second round's settings chosen on validation (:func:`read_round2_settings`)
    as sorted (name, value) pairs, given to the variants they concern."""

    experiment: str
    level: object
    variant: str
    seed: int
    data: str = "small"
    overrides: tuple = ()
    settings: tuple = ()

    @property
    def name(self) -> str:
        return f"{self.level}-{self.variant}-s{self.seed}"

    def config(self) -> TrainConfig:
        """The TrainConfig of this run: the fixed settings, the variant's, the level's."""
        second = EXPERIMENTS[self.experiment].round == 2
        values = {**(FIXED_ROUND2 if second else FIXED), **VARIANTS[self.variant], "seed": self.seed}
        if second:  # K* for the vMF methods, alpha for PCME++ (docs/study.md §10)
            chosen = dict(self.settings)
            pcmepp = VARIANTS[self.variant]["method"] == "pcmepp"
            values.update({k: v for k, v in chosen.items() if (k == "pseudo_positive_weight") == pcmepp})
        if self.experiment == "E2":
            values.update(batch_size=min(FIXED["batch_size"], int(self.level)), steps_per_epoch=E2_STEPS)
        elif self.experiment == "E7":
            reading, batch = str(self.level).split("-b")
            values.update(contrastive=reading, batch_size=int(batch))
        elif self.experiment == "E8":
            values.update(as_published=True)
        elif self.experiment == "E9":
            values.update(encoder="backbones")
        values.update(dict(self.overrides))
        return TrainConfig.from_dict(values)


def grid(experiments: Iterable[str], data: str | None = None, overrides: Mapping | None = None,
         seeds: Iterable[int] | None = None, settings: str | os.PathLike = ROUND2_SETTINGS) -> list[RunSpec]:
    """The runs of ``experiments`` in the protocol's order: seeds outermost, then levels, then variants,
    so that every finished seed block is a complete paired set.

    ``data``: a bundle directory, or a preset, which must then be the experiment's (``small``;
    ``small-real`` for E11–E14); default the experiment's. E12 and E13 have no runs of their own
    (they analyse E11's). The second round (E10–E14) reads K* and α from ``settings``
    (:func:`read_round2_settings`) and refuses to start without it."""
    out = []
    for name in experiments:
        if name not in EXPERIMENTS:
            raise ValueError(f"unknown experiment {name!r}; the grid has {sorted(EXPERIMENTS)}")
        e = EXPERIMENTS[name]
        if e.source is not None:
            continue
        if data is not None and str(data) in PRESETS and str(data) != e.data:
            raise ValueError(f"{name} runs on the preset {e.data!r} (docs/study.md), not {data!r}: pass --data "
                             f"{e.data} (or a bundle directory)")
        chosen = ()
        if e.round == 2:
            values = read_round2_settings(settings)
            chosen = tuple(sorted({**values["kappa"], "pseudo_positive_weight": values["pseudo_positive_weight"]}.items()))
        for seed in (e.seeds if seeds is None else seeds):
            for level in e.levels:
                for variant in e.variants:
                    out.append(RunSpec(name, level, variant, seed, e.data if data is None else str(data),
                                       tuple(sorted((overrides or {}).items())), chosen))
    return out


# ----------------------------------------------------------------------------------------------
# one run
# ----------------------------------------------------------------------------------------------
def _splits(spec: RunSpec, data: Mapping[str, FeatureSplit]) -> tuple[dict, dict, dict]:
    """(training data {train, val}, evaluation splits {name: split}, perturbation record)."""
    from mmkit.data import perturb
    from mmkit.data.embedded.real import degraded_view_split

    train, val = data["train"], data["val"]
    evals = {"val": val, "test": data["test"]}
    record: dict = {"kind": "none"}
    e = spec.experiment
    if e == "E2":
        train, record = perturb.nested_subset(train, int(spec.level), spec.seed)
    elif e == "E3":
        train, record = perturb.swap_captions(train, float(spec.level), spec.seed)
    elif e == "E14":  # noisy correspondences: captions with their text views and truth, key 14 (docs/study.md §10)
        train, record = perturb.swap_captions(train, float(spec.level), spec.seed, experiment=14)
    elif e == "E4":
        train, record = perturb.ambiguous_captions(train, float(spec.level), spec.seed)
    elif e == "E5":
        train, record = perturb.drop_modality(train, float(spec.level), spec.seed)
    elif e == "E6":
        ood, record = perturb.out_of_distribution(dict(data))
        train, val = ood["train"], ood["val"]
        evals = {"val": val, "test": ood["test"], "test_id": ood["test_id"]}
    elif e == "E11":  # E13's degraded-view test set: every item's most severe view (docs/study.md §10)
        evals["test_degraded"] = degraded_view_split(data["test"])
    return {"train": train, "val": val}, evals, record


def _round(values, digits: int = 6) -> list:
    return [float(f"{v:.{digits}g}") for v in values]


def _kappa(enc, split: FeatureSplit, per_item: bool) -> dict:
    """κ summaries per modality over the items that have it (and, with ``per_item``, every item's κ)."""
    out = {"kappa": {m: kappa_statistics(enc[m].concentration[torch.from_numpy(split.present[m].copy())])
                     for m in enc if split.present[m].any()}}
    if per_item:
        out["kappa_items"] = {m: _round(enc[m].concentration.tolist(), 5) for m in enc}
        out["present"] = {m: split.present[m].astype(int).tolist() for m in enc}
    return out


def _confidence(enc, modality: str) -> torch.Tensor:
    """(N,) confidence of each item's encoding: κ for the vMF family, 1 / mean σ² for the Gaussian
    one (PCME++'s, docs/study.md §10)."""
    if enc.family == "vmf":
        return enc[modality].concentration.double()
    return 1.0 / enc.log_var[modality].double().exp().mean(dim=-1)


def _view_confidence(run: Run, split: FeatureSplit) -> dict:
    """Per (item, view) confidence (:func:`_confidence`) and severity of every viewed modality of
    ``split``, the split encoded once per view index with that view in the main features (E13's κ
    family reads them; missing items hold NaN)."""
    viewed = [m for m in split.modalities if m in split.views.features]
    confidence = {m: np.full((len(split), split.views.n_views(m)), np.nan) for m in viewed}
    for k in range(max(split.views.n_views(m) for m in viewed)):
        mods = [m for m in viewed if k < split.views.n_views(m)]
        enc = run.encode(dataclasses.replace(split, features={**split.features,
                                                              **{m: split.views.features[m][:, k] for m in mods}}))
        for m in mods:
            confidence[m][split.present[m], k] = _confidence(enc, m).numpy()[split.present[m]]
    return {"view_confidence": {m: [_round_nan(row) for row in c.tolist()] for m, c in confidence.items()},
            "view_severity": {m: [_round(row, 5) for row in split.views.severity[m].tolist()] for m in viewed}}


def _round_nan(values) -> list:
    """Like :func:`_round` (5 digits), NaN (a missing item) stored as null."""
    return [None if v != v else float(f"{v:.5g}") for v in values]


def _evaluate(enc, method: str, split: FeatureSplit, per_item_kappa: bool, as_published: bool = False,
              margins: bool = False) -> dict:
    """Both distances' metrics and per-query ranks on ``split`` (with the query rows where a task
    uses fewer than all items), κ summaries (and per-item κ). The distances are each method's
    primary ranking (SSW₁, stored as "ssw"; PCME++'s CSD, stored as "csd") and μ-cosine.
    ``as_published`` (E8) adds the descriptive ranking with the reference code's defects,
    ``"ssw-as-published"`` (docs/study.md §5). A split with many-to-many truth adds, per task with
    text, per-query R-Precision and mAP@R with their chance values (a ranking with every score tied),
    and the split's per-item ``generality``. ``margins`` (E11's degraded-view test set, E13) adds
    per query of every single-modality task its ``confidence`` (:func:`_confidence`) and
    ``margin`` (top-1 minus top-2 μ-cosine score)."""
    from mmkit.analysis.uncertainty import score_margin

    present = {m: torch.from_numpy(split.present[m].copy()) for m in enc}
    truth = split.text_relevance()
    relevance = None if truth is None else torch.from_numpy(truth)
    out: dict = {"ids": split.ids.tolist(), "distances": {}}
    if truth is not None:
        out["generality"] = split.generality().tolist()
    # (stored name, distance, extra score options) of each ranking
    rankings = [(d, d, {}) for d in (ranking_distance(method, d) if d == "ssw" else d for d in EVALUATION["distances"])]
    if as_published:
        rankings.append((PUBLISHED_DISTANCE, "ssw", {"as_published": True}))
    for stored_as, distance, options in rankings:
        params = {m: (enc[m].loc, enc.log_var[m]) for m in enc} if distance == "csd" else enc
        tasks = evaluate_tasks(params, present, tasks=tasks_for_method(method), distance=distance,
                               fusion=EVALUATION["fusion"], return_ranks=True, text_relevance=relevance,
                               n_samples=EVALUATION["n_samples"], n_projections=EVALUATION["n_projections"],
                               seed=EVALUATION["seed"], **options)
        per_task = {}
        for query, target in tasks_for_method(method):
            name = task_name(query, target)
            if name not in tasks:
                continue
            rows = complete_items(present, (target, *query))
            entry = {k: v for k, v in tasks[name].items() if k != "ranks" and not k.endswith("_per_query")}
            entry["ranks"] = _round(tasks[name]["ranks"].tolist())
            relevant = task_relevance(relevance, query, target, rows)
            if relevant is not None:
                tied = torch.zeros(relevant.shape, dtype=torch.float64)
                entry["chance"] = {k: float(fn(tied, relevant).mean()) for k, fn in MANY_TO_MANY_METRICS.items()}
                entry.update({f"{k}_per_query": _round(tasks[name][f"{k}_per_query"].tolist())
                              for k in MANY_TO_MANY_METRICS})
            if margins and len(query) == 1:
                entry["confidence"] = _round(_confidence(enc, query[0])[rows].tolist())
                entry["margin"] = _round(score_margin(cosine_scores(enc[query[0]].loc[rows].double(),
                                                                    enc[target].loc[rows].double())).tolist())
            if len(rows) != len(split):
                entry["rows"] = rows.tolist()
            per_task[name] = entry
        out["distances"][stored_as] = per_task
    return {**out, **_kappa(enc, split, per_item_kappa)}


def result_path(spec: RunSpec, store: str | os.PathLike = STORE) -> Path:
    return Path(store) / spec.experiment / f"{spec.name}.json"


def run_one(spec: RunSpec, store: str | os.PathLike = STORE, work: str | os.PathLike = WORK,
            cache: str | None = None) -> dict:
    """Train, evaluate and store one run (resuming an interrupted training); returns a short status
    (no test metrics). Skips the run when its result exists with the same configuration."""
    torch.set_num_threads(1)
    target = result_path(spec, store)
    data = resolve_data(spec.data, cache_dir=cache, progress=False)
    config = spec.config()
    if _is_stored(spec, store):
        return {"run": spec.name, "experiment": spec.experiment, "status": "stored"}
    started = time.time()
    training, evals, record = _splits(spec, data)
    out = Path(work) / spec.experiment / spec.name
    summary = fit(config, training, out, progress=False, data_spec=None)
    trained = time.time() - started
    run = Run(out)
    evaluations = {name: _evaluate(run.encode(split), config.method, split,
                                   per_item_kappa=spec.experiment == "E6" and name != "val",
                                   as_published=config.as_published, margins=name == "test_degraded")
                   for name, split in evals.items()}
    if spec.experiment == "E11":  # what E13 reads: per (item, view) confidence on the test split
        evaluations["test"].update(_view_confidence(run, evals["test"]))
    # κ of the training items as trained on (H3); per item in E3–E5: does it flag the perturbed ones?
    per_item = spec.experiment in ("E3", "E4", "E5")
    evaluations["train"] = {**({"ids": training["train"].ids.tolist()} if per_item else {}),
                            **_kappa(run.encode(training["train"]), training["train"], per_item=per_item)}
    manifest = run.manifest  # provenance as recorded when the training started (not now)
    result = {
        "experiment": spec.experiment, "level": spec.level, "variant": spec.variant, "seed": spec.seed,
        "data": spec.data, "config": config.to_dict(), "data_sha256": data_fingerprint(data),
        "train_sha256": data_fingerprint(training), "perturbation": record,
        **{k: manifest.get(k) for k in ("git_commit", "versions", "code_version")},
        **({"resumed_code_versions": manifest["resumed_code_versions"]} if "resumed_code_versions" in manifest else {}),
        "best_epoch": summary["best_epoch"], "stopped_epoch": summary["stopped_epoch"], "val_score": summary["val_score"],
        "history": [{k: v for k, v in row.items() if k in ("epoch", "loss", "L_C", "L_S", "val_score", "seconds")
                     or k.startswith("kappa_")} for row in summary["history"]],
        "seconds_train": round(trained, 1), "seconds_total": round(time.time() - started, 1),
        "evaluation": EVALUATION, "splits": evaluations,
    }
    # compact: one line per run (per-query ranks make an indented file long); sorted keys: stable diffs
    atomic_write_text(target, json.dumps(result, separators=(",", ":"), sort_keys=True) + "\n")
    return {"run": spec.name, "experiment": spec.experiment, "status": "done", "seconds": result["seconds_total"],
            "val_score": summary["val_score"]}


def _run_star(args) -> dict:
    return run_one(*args)


def run_grid(specs: list[RunSpec], store: str | os.PathLike = STORE, work: str | os.PathLike = WORK,
             jobs: int = 2, executor: str = "processes", cache: str | None = None, log=print,
             slurm: Mapping | None = None) -> list[dict]:
    """Run every spec not yet stored: ``executor`` = "processes" (``jobs`` local processes),
    "slurm" or "local" (submitit; ``slurm`` holds extra submitit parameters, e.g. partition)."""
    todo = [s for s in specs if not _is_stored(s, store)]
    log(f"study: {len(specs)} runs in the grid, {len(specs) - len(todo)} stored, {len(todo)} to run "
        f"({executor}, {jobs} at a time)")
    if not todo:
        return []
    args = [(s, str(store), str(work), cache) for s in todo]
    results = []
    if executor == "processes":
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_run_star, a): a[0] for a in args}
            for k, future in enumerate(as_completed(futures), 1):
                spec = futures[future]
                try:
                    status = future.result()
                except Exception as exc:  # noqa: BLE001 - a failed run is reported, the grid goes on
                    status = {"run": spec.name, "experiment": spec.experiment, "status": f"failed: {exc!r}"}
                results.append(status)
                log(f"[{k}/{len(todo)}] {spec.experiment}/{spec.name}: {status['status']}"
                    + (f" ({status['seconds']:.0f} s, val mean MRR {status['val_score']:.3f})" if "seconds" in status else ""))
        return results
    if executor not in ("slurm", "local"):
        raise ValueError(f"executor must be 'processes', 'slurm' or 'local', got {executor!r}")
    import submitit

    ex = submitit.AutoExecutor(folder=str(Path(work) / "submitit"), cluster=executor)
    ex.update_parameters(timeout_min=120, cpus_per_task=1, **({"slurm_array_parallelism": jobs} if executor == "slurm" else {}),
                         **dict(slurm or {}))
    submitted = ex.map_array(run_one, [a[0] for a in args], [a[1] for a in args], [a[2] for a in args],
                             [a[3] for a in args])
    for spec, job in zip(todo, submitted):
        try:
            status = job.result()
        except Exception as exc:  # noqa: BLE001
            status = {"run": spec.name, "experiment": spec.experiment, "status": f"failed: {exc!r}"}
        results.append(status)
        log(f"{spec.experiment}/{spec.name}: {status['status']}")
    return results


def _is_stored(spec: RunSpec, store) -> bool:
    """Whether ``spec``'s result exists with the same configuration. The stored config is read back
    through :meth:`TrainConfig.from_dict`, so a setting added to TrainConfig later (at a default
    that keeps the old behaviour) does not make the stored runs look different."""
    path = result_path(spec, store)
    if not path.is_file():
        return False
    try:
        stored = TrainConfig.from_dict(json.loads(path.read_text()).get("config") or {})
    except (json.JSONDecodeError, ValueError):
        return False
    # the configuration does not depend on the data except through E2's subset size
    return stored == spec.config()


def write_verdicts(tables_dir: str | os.PathLike = "reports/tables") -> Path:
    """``study_verdicts.md`` from ``study_summary.csv`` (no analysis: the table of the experiments
    analysed so far, :func:`mmkit.analysis.study.verdict_table`); returns its path."""
    import csv

    from mmkit.analysis.study import verdict_table

    tables = Path(tables_dir)
    if not (tables / "study_summary.csv").is_file():
        raise FileNotFoundError(f"{tables / 'study_summary.csv'}: no experiment analysed yet "
                                "(python -m mmkit study E1 --analyse)")
    with open(tables / "study_summary.csv", newline="") as fh:
        table = verdict_table(csv.DictReader(fh))
    atomic_write_text(tables / "study_verdicts.md", table)
    return tables / "study_verdicts.md"


def report(experiment: str, store: str | os.PathLike = STORE, tables_dir: str | os.PathLike = "reports/tables",
           figures_dir: str | os.PathLike = "reports/figures", n_resamples: int | None = None) -> list[str]:
    """Analyse a complete experiment (:func:`mmkit.analysis.study.analyse`: rows of
    ``study_summary.csv`` and ``study_kappa.csv``) and redraw the study figures from those tables
    (every experiment analysed so far). Returns the lines to print."""
    import csv

    from mmkit.analysis.study import analyse
    from mmkit.viz.study import kappa_auroc_figure, study_differences_figure
    from mmkit.viz.style import export

    lines = list(analyse(experiment, store, tables_dir, **({"n_resamples": n_resamples} if n_resamples else {})))
    tables = Path(tables_dir)
    lines.append(f"verdicts of every experiment analysed so far: {write_verdicts(tables_dir)}")
    for name, draw in (("study_summary", study_differences_figure), ("study_kappa", kappa_auroc_figure)):
        path = tables / f"{name}.csv"
        if path.is_file():
            with open(path, newline="") as fh:
                rows = list(csv.DictReader(fh))
            if rows:
                figure = {"study_summary": "study_differences", "study_kappa": "study_kappa_auroc"}[name]
                written = export(draw(rows), Path(figures_dir) / figure)
                lines.append(f"figure: {', '.join(str(p) for p in written)}")
    return lines


def missing_runs(experiment: str, store: str | os.PathLike = STORE, data: str | None = None,
                 overrides: Mapping | None = None, seeds: Iterable[int] | None = None,
                 settings: str | os.PathLike = ROUND2_SETTINGS) -> list[str]:
    """Names of the runs of ``experiment``'s grid that are not stored yet (with their configuration)."""
    return [s.name for s in grid([experiment], data, overrides, seeds, settings) if not _is_stored(s, store)]


