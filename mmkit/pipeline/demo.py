"""Train the pretrained demo pair shipped in ``mmkit/app/demo_runs`` (``python -m mmkit demo-runs``).

The start-here notebook answers its first query on ``tiny`` with this pair when no trained runs
exist, so nothing of ``tiny`` may have been seen in training or model selection. The pair is trained
on the ``small`` preset's training split **without every item whose near-duplicate group occurs
anywhere in** ``tiny`` (the groups the embedded build keeps in one split,
:func:`mmkit.data.embedded.build.split_of`; both presets label each item's ``group``), and the best
epoch is chosen on ``small``'s validation split without those groups either. The test split is never
read.

Settings: those of the study's second round (:data:`mmkit.pipeline.study.FIXED_ROUND2`: heads with
hidden 256 and two layers, batch 128, up to 60 epochs with patience 8, one thread, CPU) with K*, the
κ that learns, read from ``reports/study/round2_settings.json``
(:func:`mmkit.pipeline.study.read_round2_settings`), seed 0: Proposed (λ_S = 1) and Baseline
(λ_S = 0), the methods of Nakatsuka, Hamasaki & Goto (ISMIR 2024).

Only what inference needs is shipped (:data:`mmkit.app.demo.SHIPPED_FILES`); the card
(``card.json``, ``CARD.md``) records the command, settings, data, exclusions, each run's code
version (:func:`mmkit.model.run.code_version` as the run's start recorded it), best epoch,
validation MRR, κ spread per modality and the SHA-256 of every shipped file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from mmkit.app.demo import CARD_JSON, CARD_MD, DEMO_NAMES, DEMO_RUNS, SHIPPED_FILES
from mmkit.core.io import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file
from mmkit.data.bundle import FeatureSplit
from mmkit.data.perturb import select_rows
from mmkit.model.config import TrainConfig
from mmkit.model.run import Run, data_fingerprint, encode_split, kappa_statistics
from mmkit.pipeline.study import FIXED_ROUND2, ROUND2_SETTINGS, read_round2_settings

__all__ = ["DEMO_SEED", "KAPPA_SHOWN", "excluded_groups", "without_groups", "demo_configs", "train_demo_pair", "choose_distance", "DEMO_DISTANCES",
           "DISTANCE_MARGIN", "DISTANCE_RULE",
           "card_markdown"]

#: The seed of both runs.
DEMO_SEED = 0
#: The κ statistics of :func:`mmkit.model.run.kappa_statistics` the card records per modality.
KAPPA_SHOWN = ("mean", "cv", "q05", "q95")


def _groups(split: FeatureSplit, what: str) -> np.ndarray:
    if "group" not in split.meta:
        raise ValueError(f"{what}: the split has no per-item 'group' labels (an embedded-dataset bundle has them); "
                         f"its item labels are {sorted(split.meta)}")
    return np.asarray(split.meta["group"]).astype(str)


def excluded_groups(reference: Mapping[str, FeatureSplit]) -> set[str]:
    """Every near-duplicate group that occurs in any split of ``reference``."""
    if not reference:
        raise ValueError("excluded_groups: no splits given")
    return {g for name, split in reference.items() for g in _groups(split, f"reference split {name!r}")}


def without_groups(split: FeatureSplit, groups: set[str]) -> tuple[FeatureSplit, int]:
    """``(the items of split whose group is not in groups, how many were left out)``.

    Raises
    ------
    ValueError
        Without group labels, or when nothing is left.
    """
    keep = np.flatnonzero(~np.isin(_groups(split, "without_groups"), sorted(groups)))
    if len(keep) == 0:
        raise ValueError(f"without_groups: every one of the {len(split)} items belongs to an excluded group")
    return select_rows(split, keep), len(split) - len(keep)


def demo_configs(kappa: Mapping[str, object], seed: int = DEMO_SEED,
                 epochs: int = FIXED_ROUND2["epochs"]) -> dict[str, TrainConfig]:
    """Display name -> TrainConfig of the pair: :data:`~mmkit.pipeline.study.FIXED_ROUND2` with the
    ``kappa_*`` settings ``kappa`` (K*), ``seed`` and at most ``epochs`` epochs."""
    return {name: TrainConfig.from_dict({**FIXED_ROUND2, **kappa, "method": method, "lambda_s": lam, "seed": seed,
                                         "epochs": epochs})
            for name, (_, method, lam) in DEMO_NAMES.items()}


def _bundle_record(splits: Mapping[str, FeatureSplit]) -> dict:
    """Name, SHA-256 of the manifest (which lists the SHA-256 of every split file), build key and
    :func:`~mmkit.model.run.data_fingerprint` of a loaded bundle."""
    root = next(iter(splits.values())).root
    if root is None:
        raise ValueError("the data must be a bundle loaded from disk (its manifest identifies it)")
    manifest = json.loads((Path(root) / "manifest.json").read_text())
    return {"bundle": manifest.get("name"), "manifest_sha256": sha256_file(Path(root) / "manifest.json"),
            "build_key": manifest.get("build_key"), "data_sha256": data_fingerprint(splits),
            "items": {name: len(s) for name, s in splits.items()}}


#: The ranking distances the start-here notebook may use for the shipped pair, the paper's first.
DEMO_DISTANCES = ("ssw", "kl", "elk", "cosine")
#: Another distance replaces SSW₁ only if it beats it by more than this (validation mean MRR).
DISTANCE_MARGIN = 0.005
#: The rule, fixed (2026-12-07) before any distance was compared on the shipped pair; the card repeats it.
DISTANCE_RULE = ("the distance of DEMO_DISTANCES with the highest validation mean MRR over the nine tasks, averaged "
                 "over Proposed and Baseline, on the validation items left after the exclusion; SSW (the paper's) "
                 f"unless another beats it by more than {DISTANCE_MARGIN}")


def choose_distance(run_dirs: Mapping[str, str | os.PathLike], val: FeatureSplit) -> dict:
    """The ranking distance for the shipped pair, chosen on validation by :data:`DISTANCE_RULE`.

    Parameters
    ----------
    run_dirs : display name -> run directory (the shipped Proposed and Baseline)
    val : the validation split without the excluded groups (the test split is never read)

    Returns
    -------
    dict
        ``{"chosen": distance, "rule": DISTANCE_RULE, "val_mean_mrr": {distance: mean over the
        runs of the nine-task mean MRR}}``.
    """
    from mmkit.analysis.evaluate import evaluate_run

    means = {}
    for distance in DEMO_DISTANCES:
        per_run = [np.mean([t["MRR"] for t in evaluate_run(path, split="val", distance=distance, data={"val": val},
                                                           store=False)["tasks"].values()])
                   for path in run_dirs.values()]
        means[distance] = round(float(np.mean(per_run)), 6)
    best = max(means, key=means.get)
    chosen = best if means[best] > means["ssw"] + DISTANCE_MARGIN else "ssw"
    return {"chosen": chosen, "rule": DISTANCE_RULE, "val_mean_mrr": means}


def train_demo_pair(data: Mapping[str, FeatureSplit], exclude: Mapping[str, FeatureSplit],
                    out: str | os.PathLike = DEMO_RUNS, work: str | os.PathLike = "runs/demo-runs",
                    settings: str | os.PathLike = ROUND2_SETTINGS, epochs: int = FIXED_ROUND2["epochs"],
                    command: str = "", progress: bool = True) -> dict:
    """Train the pair on ``data`` without the groups of ``exclude``; write it and its card to ``out``.

    Parameters
    ----------
    data : the splits of a bundle with ``train`` and ``val`` (``small``); ``test`` is never read
    exclude : the splits of the bundle whose groups are left out of training and selection (``tiny``)
    out : where the shipped runs and the card go (default: the package's :data:`~mmkit.app.demo.DEMO_RUNS`)
    work : the full training runs (checkpoints; re-running resumes), git-ignored
    settings : the round-2 settings file K* is read from
    epochs : the most epochs per run (early stopping with the round's patience may stop it sooner)
    command : the command line recorded in the card

    Returns
    -------
    dict
        The card, also written to ``out/card.json`` and, as Markdown, to ``out/CARD.md``.
    """
    from mmkit.training.loop import fit

    for name in ("train", "val"):
        if name not in data:
            raise ValueError(f"data must hold a {name!r} split, got {sorted(data)}")
    groups = excluded_groups(exclude)
    train, dropped_train = without_groups(data["train"], groups)
    val, dropped_val = without_groups(data["val"], groups)
    kappa = read_round2_settings(settings)["kappa"]
    configs = demo_configs(kappa, epochs=epochs)
    out, work = Path(out), Path(work)
    runs = {}
    for name, config in configs.items():
        folder = DEMO_NAMES[name][0]
        summary = fit(config, {"train": train, "val": val}, work / folder, progress=progress)
        seconds = sum(row["seconds"] for row in summary["history"])  # every epoch's, also across a resume
        for f in SHIPPED_FILES:
            atomic_write_bytes(out / folder / f, (work / folder / f).read_bytes())
        shipped = Run(out / folder)
        enc = encode_split(shipped.load_model(), val)
        spread = {m: {k: round(v, 6) for k, v in
                      kappa_statistics(enc[m].concentration[torch.from_numpy(val.present[m].copy())]).items()
                      if k in KAPPA_SHOWN} for m in enc}
        metrics = shipped.metrics
        runs[name] = {"folder": folder, "config": config.to_dict(), "best_epoch": metrics["best_epoch"],
                      "stopped_epoch": summary["stopped_epoch"], "val_mrr": round(metrics["val_score"], 6),
                      "val_mrr_by_task": {t: round(v["MRR"], 6) for t, v in metrics["val_tasks"].items()},
                      "val_kappa": spread, "seconds": round(seconds, 1),
                      "code_version": shipped.manifest["code_version"]}  # as the run's start recorded it
    card = {"what": "a pretrained Proposed (lambda_S = 1) and Baseline pair for the start-here notebook, trained "
                    "without any item of the excluded bundle's near-duplicate groups (train and validation); the "
                    "test split is not read",
            "command": command, "settings": {"file": str(settings), "kappa": kappa},
            "data": _bundle_record(data), "excluded": {**_bundle_record(exclude), "groups": len(groups)},
            "train_items": len(train), "val_items": len(val),
            "left_out_items": {"train": dropped_train, "val": dropped_val},
            "runs": runs,
            "distance": choose_distance({name: out / r["folder"] for name, r in runs.items()}, val),
            "files": {f"{r['folder']}/{f}": sha256_file(out / r["folder"] / f) for r in runs.values()
                      for f in SHIPPED_FILES}}
    atomic_write_json(out / CARD_JSON, card)
    atomic_write_text(out / CARD_MD, card_markdown(card))
    return card


def _commit(version: Mapping) -> str:
    if not version["commit"]:
        return "not in git"
    return f"commit {version['commit'][:12]}" + (" with uncommitted changes" if version["dirty"] else "")


def card_markdown(card: Mapping) -> str:
    """A few lines of Markdown saying what ``card.json`` holds."""
    data, excluded = card["data"], card["excluded"]
    first = next(iter(card["runs"].values()))
    lines = ["# The pretrained demo pair", "", f"Written by `{card['command']}`.", "",
             "Code at the start of each run (`mmkit.model.run.code_version`): " + "; ".join(
                 f"{name} {_commit(r['code_version'])}, training code SHA-256 "
                 f"{r['code_version']['training_sha256'][:16]}..." for name, r in card["runs"].items()) + ".", "",
             f"Trained on `{data['bundle']}` (manifest SHA-256 {data['manifest_sha256'][:16]}...): "
             f"{card['train_items']} training items, after leaving out the {card['left_out_items']['train']} whose "
             f"near-duplicate group is one of the {excluded['groups']} groups of `{excluded['bundle']}`; the best "
             f"epoch chosen on {card['val_items']} validation items ({card['left_out_items']['val']} left out "
             "likewise). The test split was not read.", "",
             f"Settings: the study's second round with K* ({json.dumps(card['settings']['kappa'])}), seed "
             f"{first['config']['seed']}, at most {first['config']['epochs']} epochs (patience "
             f"{first['config']['patience']}).", "",
             "| model | best epoch | epochs trained | seconds | val MRR | κ mean (CV) audio | image | text |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in card["runs"].items():
        kappa = [f"{r['val_kappa'][m]['mean']:.3g} ({r['val_kappa'][m]['cv']:.0%})" if m in r["val_kappa"] else "-"
                 for m in ("audio", "image", "text")]
        lines.append(f"| {name} | {r['best_epoch']} | {r['stopped_epoch'] + 1} | {r['seconds']:g} | "
                     f"{r['val_mrr']:.3f} | " + " | ".join(kappa) + " |")
    distance = card["distance"]
    lines += ["", "κ over the validation items; CV = standard deviation / mean.", "",
              f"Ranking distance: **{distance['chosen']}**, chosen by the rule fixed before comparing: "
              f"{distance['rule']}. Validation mean MRR: "
              + ", ".join(f"{d} {v:.3f}" for d, v in distance["val_mean_mrr"].items()) + ".", "",
              "SHA-256 of every shipped file: `card.json`, `files`."]
    return "\n".join(lines) + "\n"
