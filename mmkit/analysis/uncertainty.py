"""Does κ know anything a point model doesn't? (issue 23, section 4)

Plain functions on arrays. Two kinds of question:

* **Does κ track a known source of uncertainty?** :func:`view_concentrations` encodes every view of
  a split (the ``-real`` presets: K renderings of each item, each with a recorded severity in
  [0, 1], and K captions of graded generality). :func:`kappa_severity` is Spearman's ρ between κ
  and the view's severity over all (item, view) pairs, with a bootstrap interval that resamples
  *items* (an item's K views stay together, since they share the item); :func:`kappa_generality`
  the same for the text κ against log generality (the number of items a caption truly describes);
  :func:`severe_auroc` how well 1/κ flags the severe views.
* **Does κ add information beyond a point model?** Selective retrieval: set aside the least
  confident queries and measure the risk (1 − accuracy) of those kept (:func:`risk_coverage`, the
  risk–coverage curve and its area AURC of Geifman & El-Yaniv, *Selective classification for deep
  neural networks*, NeurIPS 2017, and Geifman et al., *Bias-reduced uncertainty estimation for deep
  neural classifiers*, ICLR 2019). :func:`compare_confidences` sets κ against the confidence any
  point model has for free, the top-1 score margin (:func:`score_margin`), on the same queries,
  with a paired bootstrap over queries, and against their combination (the mean of their ranks):
  if the combination is no better than the margin alone, κ adds nothing a point model lacks.

References: Kendall & Gal, *What uncertainties do we need in Bayesian deep learning for computer
vision?*, NeurIPS 2017 (aleatoric uncertainty); Chun et al., *Probabilistic embeddings for
cross-modal retrieval* (PCME), CVPR 2021 (uncertainty vs. plausible matches).
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np
import torch
from scipy import stats

from mmkit.analysis.study import _auroc
from mmkit.core.metrics import r_precision
from mmkit.data.bundle import FeatureSplit
from mmkit.model.encoders import MultimodalEncoder
from mmkit.model.encodings import Encodings
from mmkit.model.run import Run, encode_split
from mmkit.retrieval.scores import cosine_scores
from mmkit.retrieval.tasks import complete_items, task_relevance

__all__ = ["view_concentrations", "view_generality", "kappa_severity", "kappa_generality", "severe_auroc",
           "score_margin", "retrieval_confidence", "risk_coverage", "compare_confidences"]


def _model(run_or_model: Run | MultimodalEncoder) -> MultimodalEncoder:
    if isinstance(run_or_model, Run):
        return run_or_model.load_model()
    if isinstance(run_or_model, MultimodalEncoder):
        return run_or_model.eval()
    raise TypeError(f"expected a Run or a MultimodalEncoder, got {type(run_or_model).__name__}")


def view_concentrations(run_or_model: Run | MultimodalEncoder, split: FeatureSplit) -> dict[str, np.ndarray]:
    """κ of every view of every item: the split encoded once per view index, the main features of each
    viewed modality replaced by that view's.

    Parameters
    ----------
    run_or_model : a trained :class:`~mmkit.model.run.Run` (its best weights) or a vMF encoder
    split : a split with views (:attr:`FeatureSplit.views`, the ``-real`` presets)

    Returns
    -------
    dict modality -> float64 array (N, K_m)
        The concentration of view ``k`` of item ``i``; NaN where the item lacks the modality.
    """
    if split.views is None:
        raise ValueError("view_concentrations needs a split with views (a -real preset or a synthetic bundle "
                         "made with views=K)")
    model = _model(run_or_model)
    if model.family != "vmf":
        raise ValueError(f"view_concentrations needs a vMF model (kappa), got the {model.family!r} family")
    viewed = [m for m in split.modalities if m in split.views.features]
    out = {m: np.full((len(split), split.views.n_views(m)), np.nan) for m in viewed}
    for k in range(max(split.views.n_views(m) for m in viewed)):
        mods = [m for m in viewed if k < split.views.n_views(m)]
        features = {**split.features, **{m: split.views.features[m][:, k] for m in mods}}
        enc = encode_split(model, dataclasses.replace(split, features=features))
        for m in mods:
            present = split.present[m]
            out[m][present, k] = enc[m].concentration.double().numpy()[present]
    return out


def view_generality(split: FeatureSplit) -> np.ndarray:
    """``(N, K_text)`` int: how many items of the split caption view ``(i, k)`` truly describes."""
    if split.views is None or split.views.text_truth is None:
        raise ValueError("view_generality needs a split whose views carry the captions' truth (text_truth)")
    return split.views.text_truth.sum(axis=-1)


def _paired(kappa, other, what: str) -> tuple[np.ndarray, np.ndarray]:
    kappa, other = np.asarray(kappa, dtype=float), np.asarray(other, dtype=float)
    if kappa.ndim != 2 or kappa.shape != other.shape:
        raise ValueError(f"{what}: expected kappa and its partner of the same shape (N, K), got {kappa.shape} and "
                         f"{other.shape}")
    if kappa.shape[0] < 3:
        raise ValueError(f"{what}: need at least 3 items, got {kappa.shape[0]}")
    return kappa, other


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return float("nan")
    return float(stats.spearmanr(x[keep], y[keep]).statistic)


def _item_bootstrap_spearman(kappa: np.ndarray, other: np.ndarray, n_resamples: int, seed: int,
                             confidence: float) -> dict:
    """Spearman ρ over all finite (item, view) pairs and a percentile interval resampling items."""
    if not (isinstance(n_resamples, int) and n_resamples >= 1 and 0 < confidence < 1):
        raise ValueError(f"need n_resamples >= 1 and 0 < confidence < 1, got {n_resamples!r}, {confidence!r}")
    rho = _spearman(kappa.ravel(), other.ravel())
    rng = np.random.default_rng(seed)
    n = kappa.shape[0]
    reps = np.array([_spearman(kappa[rows].ravel(), other[rows].ravel())
                     for rows in rng.integers(n, size=(n_resamples, n))])
    reps = reps[np.isfinite(reps)]
    tail = (1 - confidence) / 2
    low, high = (np.quantile(reps, [tail, 1 - tail]) if reps.size else (np.nan, np.nan))
    return {"rho": rho, "ci_low": float(low), "ci_high": float(high), "confidence": confidence,
            "n_items": n, "n_pairs": int((np.isfinite(kappa) & np.isfinite(other)).sum())}


def kappa_severity(kappa, severity, n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Spearman ρ between κ and view severity over all (item, view) pairs, with a bootstrap interval.

    Parameters
    ----------
    kappa : array (N, K), κ of view k of item i (NaN: missing, left out)
    severity : array (N, K) in [0, 1]
    n_resamples, seed, confidence : the item bootstrap (items resampled with replacement, each with
        its K views; percentile interval at ``confidence``)

    Returns
    -------
    dict
        ``rho`` (negative: κ falls as the view degrades, the hoped-for sign), ``ci_low``, ``ci_high``,
        ``confidence``, ``n_items``, ``n_pairs``.
    """
    kappa, severity = _paired(kappa, severity, "kappa_severity")
    finite = severity[np.isfinite(severity)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise ValueError(f"kappa_severity: severity must lie in [0, 1], got [{finite.min()}, {finite.max()}]")
    return _item_bootstrap_spearman(kappa, severity, n_resamples, seed, confidence)


def kappa_generality(kappa_text, generality, n_resamples: int = 2000, seed: int = 0,
                     confidence: float = 0.95) -> dict:
    """Spearman ρ between the text κ of each caption view and the log of its generality (the number of
    items it truly describes, >= 1); the same ρ as against the generality itself (ranks ignore the log).

    Parameters
    ----------
    kappa_text : array (N, K_text)
    generality : array (N, K_text) of ints >= 1 (:func:`view_generality`)
    n_resamples, seed, confidence : as in :func:`kappa_severity`

    Returns
    -------
    dict as :func:`kappa_severity` (negative ρ: generic captions get a lower κ, the hoped-for sign).
    """
    kappa_text, generality = _paired(kappa_text, generality, "kappa_generality")
    if (generality[np.isfinite(generality)] < 1).any():
        raise ValueError("kappa_generality: a caption describes at least its own item (generality >= 1)")
    return _item_bootstrap_spearman(kappa_text, np.log(generality), n_resamples, seed, confidence)


def severe_auroc(kappa, severity, threshold: float = 0.6) -> float:
    """AUROC of 1/κ for flagging the views of severity >= ``threshold``: the probability that a severe
    view has a lower κ than a mild one (ties count half; Mann–Whitney U). NaN views are left out;
    NaN when either class is empty.

    Parameters
    ----------
    kappa, severity : arrays (N, K) (or any equal shape)
    threshold : the severity from which a view counts as severe, in (0, 1]
    """
    kappa, severity = np.asarray(kappa, dtype=float).ravel(), np.asarray(severity, dtype=float).ravel()
    if kappa.shape != severity.shape:
        raise ValueError(f"severe_auroc: kappa and severity differ in size ({kappa.size} vs {severity.size})")
    if not 0 < threshold <= 1:
        raise ValueError(f"severe_auroc: threshold must be in (0, 1], got {threshold!r}")
    keep = np.isfinite(kappa) & np.isfinite(severity)
    if (kappa[keep] <= 0).any():
        raise ValueError("severe_auroc: concentrations must be > 0")
    return _auroc(1.0 / kappa[keep], severity[keep] >= threshold)


def score_margin(scores) -> np.ndarray:
    """A point model's confidence in its top-1 answer: top-1 minus top-2 score of each query.

    Parameters
    ----------
    scores : array or Tensor (Q, G), G >= 2, higher is closer

    Returns
    -------
    array (Q,) >= 0
    """
    s = torch.as_tensor(scores).double()
    if s.dim() != 2 or s.shape[1] < 2:
        raise ValueError(f"score_margin: expected scores (Q, G) with G >= 2, got {tuple(s.shape)}")
    top = torch.topk(s, 2, dim=1).values
    return (top[:, 0] - top[:, 1]).numpy()


def retrieval_confidence(enc: Encodings, query: str, target: str, present: Mapping[str, np.ndarray] | None = None,
                         relevant: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The queries of one single-modality task, ranked by μ-cosine: their κ, their score margin and
    their per-query accuracy.

    Parameters
    ----------
    enc : vMF encodings of a split's N items
    query, target : modalities (e.g. ``"audio"``, ``"image"``)
    present : modality -> bool (N,), the items that have it (default: all)
    relevant : bool (N, N) many-to-many truth of the captions (:attr:`FeatureSplit.relevant`) or None
        (one-to-one: each query's own item)

    Returns
    -------
    dict
        ``kappa`` (n,): the query's concentration; ``margin`` (n,): :func:`score_margin` of its cosine
        scores; ``accuracy`` (n,) in [0, 1]: its R-Precision (:func:`~mmkit.core.metrics.r_precision`,
        the top-1 hit when only its own item is relevant); ``rows`` (n,): the split rows used.
    """
    if enc.family != "vmf":
        raise ValueError(f"retrieval_confidence needs vMF encodings, got the {enc.family!r} family")
    n = enc[query].loc.shape[0]
    present = present or {}
    mask = {m: torch.as_tensor(np.asarray(present.get(m, np.ones(n, bool)), dtype=bool)) for m in (query, target)}
    idx = complete_items(mask, [query, target])
    scores = cosine_scores(enc[query].loc[idx].double(), enc[target].loc[idx].double())
    truth = task_relevance(None if relevant is None else torch.as_tensor(relevant), [query], target, idx)
    truth = torch.eye(len(idx), dtype=torch.bool) if truth is None else truth
    return {"kappa": enc[query].concentration[idx].double().numpy(), "margin": score_margin(scores),
            "accuracy": np.asarray(r_precision(scores, truth), dtype=float), "rows": idx.numpy()}


def _risk_curve(confidence: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Risk among the i most confident queries, i = 1..Q; ties in confidence are broken uniformly at
    random and the expected risk is returned (each tied query counts its tie group's mean accuracy)."""
    order = np.argsort(-confidence, kind="stable")
    conf, acc = confidence[order], accuracy[order]
    _, start, counts = np.unique(-conf, return_index=True, return_counts=True)
    group = np.repeat(np.arange(len(start)), counts)
    means = np.bincount(group, weights=acc) / counts
    expected = means[group]
    return 1.0 - np.cumsum(expected) / np.arange(1, len(acc) + 1)


def _check_scores(confidence, accuracy, what: str) -> tuple[np.ndarray, np.ndarray]:
    confidence, accuracy = np.asarray(confidence, dtype=float), np.asarray(accuracy, dtype=float)
    if confidence.ndim != 1 or confidence.shape != accuracy.shape or confidence.size < 2:
        raise ValueError(f"{what}: expected confidence and accuracy of the same shape (Q,), Q >= 2, got "
                         f"{confidence.shape} and {accuracy.shape}")
    if not (np.isfinite(confidence).all() and np.isfinite(accuracy).all()):
        raise ValueError(f"{what}: confidence and accuracy must be finite")
    if accuracy.min() < 0 or accuracy.max() > 1:
        raise ValueError(f"{what}: accuracy (bool correct, or a per-query metric) must lie in [0, 1]")
    return confidence, accuracy


def risk_coverage(confidence, accuracy) -> dict:
    """The risk–coverage curve of selective retrieval and its area (AURC).

    Keeping the ``i`` most confident of ``Q`` queries (coverage ``i / Q``), the risk is one minus their
    mean accuracy. AURC is the mean risk over the coverages ``1/Q, 2/Q, ..., 1`` (Geifman et al., ICLR
    2019); it is lowest when every correct query is more confident than every wrong one and equals
    the overall risk, in expectation, for a confidence unrelated to accuracy. Ties in confidence are
    broken at random and the expectation is returned (a constant confidence gives exactly the overall risk).

    Parameters
    ----------
    confidence : array (Q,), higher = more confident (κ, a score margin, ...)
    accuracy : array (Q,) of bool (correct) or floats in [0, 1] (a per-query metric, e.g. R-Precision)

    Returns
    -------
    dict
        ``coverage`` (Q,), ``risk`` (Q,), ``aurc``, ``oracle_aurc`` (the confidence ordering queries by
        accuracy), ``full_risk`` (the risk at coverage 1).
    """
    confidence, accuracy = _check_scores(confidence, accuracy, "risk_coverage")
    risk = _risk_curve(confidence, accuracy)
    q = len(accuracy)
    return {"coverage": np.arange(1, q + 1) / q, "risk": risk, "aurc": float(risk.mean()),
            "oracle_aurc": float(_risk_curve(accuracy, accuracy).mean()), "full_risk": float(risk[-1])}


def _ranks01(x: np.ndarray) -> np.ndarray:
    return (stats.rankdata(x) - 0.5) / len(x)


def compare_confidences(kappa_confidence, margin_confidence, accuracy, margin_accuracy=None,
                        n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict:
    """κ against a point model's confidence on the same queries: AURC of each, their difference with a
    paired bootstrap over queries, and (same model) whether combining them beats the margin alone.

    Parameters
    ----------
    kappa_confidence : array (Q,), e.g. the queries' κ (:func:`retrieval_confidence`)
    margin_confidence : array (Q,), e.g. the top-1 score margin of a point model
    accuracy : array (Q,) in [0, 1], the per-query accuracy of the model κ comes from
    margin_accuracy : array (Q,) or None: the accuracy of the point model on the same queries when it is
        another model (e.g. Baseline's margin against Proposed's κ); None = the same model. The
        combination is computed only for the same model.
    n_resamples, seed, confidence : the paired bootstrap (queries resampled with replacement, the same
        draw for both confidences; percentile interval)

    Returns
    -------
    dict
        ``aurc_kappa``, ``aurc_margin``, ``difference`` (kappa − margin; negative: κ ranks the queries
        better), ``ci_low``, ``ci_high``; with one model also ``aurc_combined`` (the mean of the two
        confidences' ranks), ``combined_minus_margin`` and its ``combined_ci_low`` / ``combined_ci_high``
        (an interval below 0: κ adds information the margin lacks); ``oracle_aurc``, ``full_risk``.
    """
    kappa_confidence, accuracy = _check_scores(kappa_confidence, accuracy, "compare_confidences")
    same = margin_accuracy is None
    margin_confidence, margin_accuracy = _check_scores(margin_confidence, accuracy if same else margin_accuracy,
                                                       "compare_confidences (margin)")
    if margin_confidence.shape != kappa_confidence.shape:
        raise ValueError("compare_confidences: both confidences must score the same queries")
    if not (isinstance(n_resamples, int) and n_resamples >= 1 and 0 < confidence < 1):
        raise ValueError(f"need n_resamples >= 1 and 0 < confidence < 1, got {n_resamples!r}, {confidence!r}")

    def aurcs(rows):
        a = _risk_curve(kappa_confidence[rows], accuracy[rows]).mean()
        b = _risk_curve(margin_confidence[rows], margin_accuracy[rows]).mean()
        if not same:
            return a, b, np.nan
        combined = _ranks01(kappa_confidence[rows]) + _ranks01(margin_confidence[rows])
        return a, b, _risk_curve(combined, accuracy[rows]).mean()

    q = len(accuracy)
    a, b, c = aurcs(np.arange(q))
    rng = np.random.default_rng(seed)
    reps = np.array([aurcs(rows) for rows in rng.integers(q, size=(n_resamples, q))])
    tail = (1 - confidence) / 2

    def interval(values):
        return [float(v) for v in np.quantile(values, [tail, 1 - tail])]

    low, high = interval(reps[:, 0] - reps[:, 1])
    out = {"aurc_kappa": float(a), "aurc_margin": float(b), "difference": float(a - b), "ci_low": low, "ci_high": high,
           "confidence": confidence, "n_queries": q, "oracle_aurc": float(_risk_curve(accuracy, accuracy).mean()),
           "full_risk": float(1 - accuracy.mean())}
    if same:
        c_low, c_high = interval(reps[:, 2] - reps[:, 1])
        out.update(aurc_combined=float(c), combined_minus_margin=float(c - b), combined_ci_low=c_low,
                   combined_ci_high=c_high)
    return out
