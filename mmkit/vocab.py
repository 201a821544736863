"""mmkit's names, in one place: modalities, splits, methods and their families, distances,
query fusions, and the paper's nine retrieval tasks.

Every other module imports these instead of spelling them out, so adding a method or a distance
is a change here plus its implementation. This module imports nothing from mmkit.

Examples
--------
>>> task_name(("audio", "text"), "image")
'A&T->I'
>>> parse_task("I&T->A")
(('image', 'text'), 'audio')
>>> family("mpc"), [task_name(*t) for t in tasks_for_method("pcme")]
('gaussian', ['T->I', 'I->T'])
"""
from __future__ import annotations

from typing import Sequence

__all__ = ["MODALITIES", "MODALITY_PAIRS", "SPLITS", "VMF_METHODS", "GAUSSIAN_METHODS", "METHODS", "METHOD_LABELS",
           "FAMILIES", "DISTANCES", "FUSIONS", "CONTRASTIVE_READINGS", "PAPER_TASKS", "MULTIMODAL_TASKS",
           "family", "check_method", "task_name", "parse_task", "tasks_for_method"]

#: The three modalities, in the order every table and array uses.
MODALITIES: tuple[str, ...] = ("audio", "image", "text")
#: The modality pairs of L_S (Eq. 7): a-i, i-t, t-a.
MODALITY_PAIRS: tuple[tuple[str, str], ...] = (("audio", "image"), ("image", "text"), ("text", "audio"))
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: Methods with von Mises-Fisher embeddings (the paper's Proposed, its Baseline with lambda_S = 0,
#: and L_S alone) and with Gaussian embeddings (the competitors PCME and MPC).
VMF_METHODS: tuple[str, ...] = ("proposed", "baseline", "ls_only")
GAUSSIAN_METHODS: tuple[str, ...] = ("pcme", "mpc")
#: Every method, in the order of the paper's tables.
METHODS: tuple[str, ...] = ("pcme", "mpc", "baseline", "proposed", "ls_only")
METHOD_LABELS = {"pcme": "PCME", "mpc": "MPC", "baseline": "Baseline", "proposed": "Proposed", "ls_only": "L_S only"}
FAMILIES: tuple[str, ...] = ("vmf", "gaussian")

#: Retrieval scores between distributions (mmkit.retrieval.scores) and multimodal query fusions.
DISTANCES: tuple[str, ...] = ("ssw", "kl", "elk", "cosine")
FUSIONS: tuple[str, ...] = ("product", "pooled")
#: The two readings of the paper's contrastive loss L_C (docs/method.md).
CONTRASTIVE_READINGS: tuple[str, ...] = ("infonce", "pcme")

_ABBREV = {"audio": "A", "image": "I", "text": "T"}
_FULL = {v: k for k, v in _ABBREV.items()}

#: The nine tasks of the paper: (query modalities, target modality).
PAPER_TASKS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("audio",), "image"), (("text",), "image"), (("audio", "text"), "image"),
    (("audio",), "text"), (("image",), "text"), (("audio", "image"), "text"),
    (("image",), "audio"), (("text",), "audio"), (("image", "text"), "audio"),
)
#: The composed (two-modality) queries among them.
MULTIMODAL_TASKS: tuple[str, ...] = ("A&T->I", "A&I->T", "I&T->A")


def check_method(method: str) -> str:
    """``method`` itself, or a ValueError naming the valid methods."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    return method


def family(method: str) -> str:
    """``"vmf"`` or ``"gaussian"``: the kind of distribution ``method`` embeds items as."""
    return "vmf" if check_method(method) in VMF_METHODS else "gaussian"


def task_name(query: Sequence[str], target: str) -> str:
    """``("audio", "text"), "image"`` -> ``"A&T->I"``."""
    return "&".join(_ABBREV[m] for m in query) + "->" + _ABBREV[target]


def parse_task(name: str) -> tuple[tuple[str, ...], str]:
    """``"A&T->I"`` -> ``(("audio", "text"), "image")``."""
    try:
        left, right = name.split("->")
        return tuple(_FULL[x] for x in left.split("&")), _FULL[right]
    except (ValueError, KeyError):
        raise ValueError(f"task {name!r} is not of the form 'A&T->I' over A, I, T") from None


_TEXT_IMAGE = tuple(parse_task(t) for t in ("T->I", "I->T"))
_COMPOSED = tuple(parse_task(t) for t in MULTIMODAL_TASKS)


def tasks_for_method(method: str) -> tuple[tuple[tuple[str, ...], str], ...]:
    """The tasks a method is evaluated on: the vMF methods all nine; as in the paper, PCME T<->I
    and MPC T<->I plus the composed queries."""
    if family(method) == "vmf":
        return PAPER_TASKS
    return _TEXT_IMAGE if method == "pcme" else _TEXT_IMAGE + _COMPOSED
