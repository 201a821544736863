"""The pretrained demo pair shipped with the package: a Proposed (λ_S = 1) and a Baseline run that
answer a first query in seconds on a fresh install, before any training.

::

    mmkit/app/demo_runs/
      proposed/, baseline/   each a read-only run directory (config.json, manifest.json, metrics.json,
                             best.pt): what :class:`mmkit.model.run.Run` needs to load and encode
      card.json              how they were trained (command, settings, data, exclusions, code
                             version, best epoch, validation MRR, κ spread) and the SHA-256 of
                             every shipped file
      CARD.md                the same in a few lines

They are written by ``python -m mmkit demo-runs`` (:mod:`mmkit.pipeline.demo`), which trains them on
the ``small`` preset without any tune whose near-duplicate group occurs in ``tiny``, so the tunes of
``tiny`` (the start-here notebook's data) and their near-duplicates are never seen in training.
Reading them never imports the training loop.
"""
from __future__ import annotations

import json
from pathlib import Path

from mmkit.core.io import sha256_file

__all__ = ["DEMO_RUNS", "DEMO_NAMES", "CARD_JSON", "CARD_MD", "SHIPPED_FILES", "demo_runs", "demo_card",
           "demo_summary", "demo_distance", "verify_demo_runs"]

#: The folder of the shipped pair (package data).
DEMO_RUNS = Path(__file__).resolve().with_name("demo_runs")
#: Display name -> (sub-folder, method, λ_S) of each shipped run.
DEMO_NAMES = {"Proposed": ("proposed", "proposed", 1.0), "Baseline": ("baseline", "baseline", 0.0)}
#: The card's file names in :data:`DEMO_RUNS`.
CARD_JSON, CARD_MD = "card.json", "CARD.md"
#: The files of a run directory that are shipped (inference only: never the optimiser's checkpoints).
SHIPPED_FILES = ("config.json", "manifest.json", "metrics.json", "best.pt")


def demo_runs(root: str | Path = DEMO_RUNS) -> dict[str, str]:
    """``{"Proposed": run dir, "Baseline": run dir}`` of the shipped pair (in ``root``).

    Raises
    ------
    FileNotFoundError
        A run's files are missing (a checkout in which ``python -m mmkit demo-runs`` has not written them).
    """
    root = Path(root)
    runs = {name: root / folder for name, (folder, _, _) in DEMO_NAMES.items()}
    missing = [str(path / f) for path in runs.values() for f in SHIPPED_FILES if not (path / f).is_file()]
    if missing or not (root / CARD_JSON).is_file():
        raise FileNotFoundError(f"the pretrained demo pair is incomplete in {root} (missing {missing or [CARD_JSON]}); "
                                "write it with: python -m mmkit demo-runs")
    return {name: str(path) for name, path in runs.items()}


def demo_card(root: str | Path = DEMO_RUNS) -> dict:
    """The pair's ``card.json`` (see :mod:`mmkit.pipeline.demo` for its fields)."""
    path = Path(root) / CARD_JSON
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing; write it with: python -m mmkit demo-runs") from None


def demo_distance(root: str | Path = DEMO_RUNS) -> str:
    """The ranking distance the shipped pair is used with: the card's, chosen on validation by the
    rule the card states (:func:`mmkit.pipeline.demo.choose_distance`)."""
    return str(demo_card(root)["distance"]["chosen"])


def verify_demo_runs(root: str | Path = DEMO_RUNS) -> dict[str, str]:
    """Check every shipped file against the SHA-256 the card records: ``{relative path: sha256}``.

    Raises
    ------
    ValueError
        A file differs from the card, or the card lists other files than those shipped.
    """
    root = Path(root)
    recorded = demo_card(root)["files"]
    expected = {f"{folder}/{f}" for folder, _, _ in DEMO_NAMES.values() for f in SHIPPED_FILES}
    if set(recorded) != expected:
        raise ValueError(f"{root / CARD_JSON}: lists {sorted(recorded)}, expected {sorted(expected)}")
    wrong = [rel for rel, digest in recorded.items() if sha256_file(root / rel) != digest]
    if wrong:
        raise ValueError(f"{root}: {wrong} differ from the SHA-256 recorded in {CARD_JSON}")
    return recorded


def demo_summary(root: str | Path = DEMO_RUNS) -> str:
    """What the shipped pair is, in a few lines from its card (the start-here notebook prints it)."""
    card = demo_card(root)
    runs = "\n".join(f"  {name}: best epoch {r['best_epoch']} of {r['stopped_epoch'] + 1} trained "
                     f"({r['seconds']:.0f} s on one CPU thread), validation MRR {r['val_mrr']:.3f}"
                     for name, r in card["runs"].items())
    return (f"the pretrained demo pair shipped with mmkit, trained on {card['train_items']} items of "
            f"{card['data']['bundle']}, without the items of the {card['excluded']['groups']} near-duplicate groups "
            f"of {card['excluded']['bundle']} (none of these tunes was seen in training)\n{runs}\n"
            f"  ranked by {card['distance']['chosen']} (chosen on validation; the rule is in the card)\n"
            f"  card: {Path(root) / CARD_MD}")
