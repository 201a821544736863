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
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import torch

from mmkit.analysis.study import EXPERIMENTS, VARIANTS, load_results
from mmkit.core.io import atomic_write_text
from mmkit.data.bundle import FeatureSplit
from mmkit.data.resolve import resolve_data
from mmkit.model.config import TrainConfig
from mmkit.model.run import Run, data_fingerprint, kappa_statistics
from mmkit.retrieval.tasks import complete_items, evaluate_tasks
from mmkit.training.loop import fit
from mmkit.vocab import task_name, tasks_for_method

__all__ = ["FIXED", "EXPERIMENTS", "RunSpec", "grid", "run_one", "run_grid", "load_results", "missing_runs",
           "result_path", "report", "write_verdicts", "STORE", "WORK"]

#: Where the committed per-run results and the git-ignored training runs go.
STORE = Path("reports/study")
WORK = Path("reports/runs/study")
#: The fixed settings of every run (docs/study.md §2: the quick preset's heads training).
FIXED = {"epochs": 20, "batch_size": 128, "hidden": 256, "layers": 2, "threads": 1, "device": "cpu"}
#: Retrieval settings of the evaluation (docs/study.md §2): SSW₁ with L = 32, T = 50, seed 0; μ-cosine.
EVALUATION = {"distances": ("ssw", "cosine"), "n_samples": 32, "n_projections": 50, "seed": 0, "fusion": "product"}
#: E8's descriptive ranking: SSW₁ with the reference code's sampler and circle W₁ (wrong on purpose).
PUBLISHED_DISTANCE = "ssw-as-published"
#: Steps per epoch of the few-pairs experiment: those of the full `small` training split (⌊1627 / 128⌋).
E2_STEPS = 12


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid. ``overrides`` replace fixed settings (for small test grids only)."""

    experiment: str
    level: object
    variant: str
    seed: int
    data: str = "small"
    overrides: tuple = ()

    @property
    def name(self) -> str:
        return f"{self.level}-{self.variant}-s{self.seed}"

    def config(self) -> TrainConfig:
        """The TrainConfig of this run: the fixed settings, the variant's, the level's."""
        values = {**FIXED, **VARIANTS[self.variant], "seed": self.seed}
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


def grid(experiments: Iterable[str], data: str = "small", overrides: Mapping | None = None,
         seeds: Iterable[int] | None = None) -> list[RunSpec]:
    """The runs of ``experiments`` in the protocol's order: seeds outermost, then levels, then variants,
    so that every finished seed block is a complete paired set."""
    out = []
    for name in experiments:
        if name not in EXPERIMENTS:
            raise ValueError(f"unknown experiment {name!r}; the grid has {sorted(EXPERIMENTS)}")
        e = EXPERIMENTS[name]
        for seed in (e.seeds if seeds is None else seeds):
            for level in e.levels:
                for variant in e.variants:
                    out.append(RunSpec(name, level, variant, seed, data, tuple(sorted((overrides or {}).items()))))
    return out


# ----------------------------------------------------------------------------------------------
# one run
# ----------------------------------------------------------------------------------------------
def _splits(spec: RunSpec, data: Mapping[str, FeatureSplit]) -> tuple[dict, dict, dict]:
    """(training data {train, val}, evaluation splits {name: split}, perturbation record)."""
    from mmkit.data import perturb

    train, val = data["train"], data["val"]
    evals = {"val": val, "test": data["test"]}
    record: dict = {"kind": "none"}
    e = spec.experiment
    if e == "E2":
        train, record = perturb.nested_subset(train, int(spec.level), spec.seed)
    elif e == "E3":
        train, record = perturb.swap_captions(train, float(spec.level), spec.seed)
    elif e == "E4":
        train, record = perturb.ambiguous_captions(train, float(spec.level), spec.seed)
    elif e == "E5":
        train, record = perturb.drop_modality(train, float(spec.level), spec.seed)
    elif e == "E6":
        ood, record = perturb.out_of_distribution(dict(data))
        train, val = ood["train"], ood["val"]
        evals = {"val": val, "test": ood["test"], "test_id": ood["test_id"]}
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


def _evaluate(enc, method: str, split: FeatureSplit, per_item_kappa: bool, as_published: bool = False) -> dict:
    """Both distances' metrics and per-query ranks on ``split`` (with the query rows where a task
    uses fewer than all items), κ summaries (and per-item κ). ``as_published`` (E8) adds the
    descriptive ranking with the reference code's defects, ``"ssw-as-published"`` (docs/study.md §5)."""
    present = {m: torch.from_numpy(split.present[m].copy()) for m in enc}
    out: dict = {"ids": split.ids.tolist(), "distances": {}}
    # (stored name, distance, extra score options) of each ranking
    rankings = [(distance, distance, {}) for distance in EVALUATION["distances"]]
    if as_published:
        rankings.append((PUBLISHED_DISTANCE, "ssw", {"as_published": True}))
    for stored_as, distance, options in rankings:
        tasks = evaluate_tasks(enc, present, tasks=tasks_for_method(method), distance=distance,
                               fusion=EVALUATION["fusion"], return_ranks=True, n_samples=EVALUATION["n_samples"],
                               n_projections=EVALUATION["n_projections"], seed=EVALUATION["seed"], **options)
        per_task = {}
        for query, target in tasks_for_method(method):
            name = task_name(query, target)
            if name not in tasks:
                continue
            entry = {k: v for k, v in tasks[name].items() if k != "ranks"}
            entry["ranks"] = _round(tasks[name]["ranks"].tolist())
            rows = complete_items(present, (target, *query))
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
                                   as_published=config.as_published)
                   for name, split in evals.items()}
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


def missing_runs(experiment: str, store: str | os.PathLike = STORE, data: str = "small",
                 overrides: Mapping | None = None, seeds: Iterable[int] | None = None) -> list[str]:
    """Names of the runs of ``experiment``'s grid that are not stored yet (with their configuration)."""
    return [s.name for s in grid([experiment], data, overrides, seeds) if not _is_stored(s, store)]


