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
>>> ranking_distance("pcmepp", "ssw"), ranking_distance("mpc", "ssw"), ranking_distance("proposed", "kl")
('csd', 'cosine', 'kl')
"""
from __future__ import annotations

from typing import Sequence

__all__ = ["MODALITIES", "MODALITY_PAIRS", "SPLITS", "VMF_METHODS", "GAUSSIAN_METHODS", "METHODS", "METHOD_LABELS",
           "FAMILIES", "DISTANCES", "GAUSSIAN_DISTANCES", "FUSIONS", "CONTRASTIVE_READINGS", "PAPER_TASKS",
           "MULTIMODAL_TASKS", "family", "check_method", "task_name", "parse_task", "tasks_for_method",
           "ranking_distance"]

#: The three modalities, in the order every table and array uses.
MODALITIES: tuple[str, ...] = ("audio", "image", "text")
#: The modality pairs of L_S (Eq. 7): a-i, i-t, t-a.
MODALITY_PAIRS: tuple[tuple[str, str], ...] = (("audio", "image"), ("image", "text"), ("text", "audio"))
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: Methods with von Mises-Fisher embeddings (the paper's Proposed, its Baseline with lambda_S = 0,
#: and L_S alone) and with diagonal Gaussian embeddings (the paper's competitors PCME and MPC, and
#: PCME++, Chun ICLR 2024, the probabilistic anchor of the study's second round).
VMF_METHODS: tuple[str, ...] = ("proposed", "baseline", "ls_only")
GAUSSIAN_METHODS: tuple[str, ...] = ("pcme", "mpc", "pcmepp")
#: Every method, in the order of the paper's tables (PCME++, not in the paper, after its competitors).
METHODS: tuple[str, ...] = ("pcme", "mpc", "pcmepp", "baseline", "proposed", "ls_only")
METHOD_LABELS = {"pcme": "PCME", "mpc": "MPC", "pcmepp": "PCME++", "baseline": "Baseline", "proposed": "Proposed",
                 "ls_only": "L_S only"}
FAMILIES: tuple[str, ...] = ("vmf", "gaussian")

#: Retrieval scores between vMF encodings (mmkit.retrieval.scores) and multimodal query fusions.
DISTANCES: tuple[str, ...] = ("ssw", "kl", "elk", "cosine")
#: Retrieval scores between diagonal Gaussian encodings: PCME++'s closed-form sampled distance
#: ``E||z_q - z_g||^2`` and the mean-cosine of PCME and MPC.
GAUSSIAN_DISTANCES: tuple[str, ...] = ("csd", "cosine")
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
    and MPC T<->I plus the composed queries; PCME++ all nine (trained on the three modality pairs
    like the vMF methods, and answering a composed query, as they do, by a product of the query
    densities formed at retrieval time: ``docs/method.md``)."""
    if family(method) == "vmf" or method == "pcmepp":
        return PAPER_TASKS
    return _TEXT_IMAGE if method == "pcme" else _TEXT_IMAGE + _COMPOSED


def ranking_distance(method: str, requested: str) -> str:
    """The distance a method's encodings are ranked by when ``requested`` is asked for: the vMF
    methods ``requested`` (one of :data:`DISTANCES`); PCME++ its closed-form sampled distance
    ``"csd"``; PCME and MPC the mean-cosine (how the paper ranks them)."""
    if family(method) == "vmf":
        if requested not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {requested!r}")
        return requested
    return "csd" if method == "pcmepp" else "cosine"
