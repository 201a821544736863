"""Training objectives: the SSW loss L_S, the two readings of the probabilistic contrastive loss
L_C, and the competitors' objectives (PCME, MPC, PCME++).

Everything is batched over a mini-batch of B items, each with up to three modalities
(``audio``, ``image``, ``text``). Modality pairs follow the paper's order
``(audio, image), (image, text), (text, audio)``.

* :func:`ssw_loss` — Algorithm 2 of the paper's supplement: L samples from each modality's vMF,
  SSW_1 (Bonet et al. 2023) between the positive pairs of all three modality pairs, averaged.
  Optional *debiased* variant (the idea of Sinkhorn divergences, Feydy et al. AISTATS 2019):
  with independent sample sets X, X' of P and Y, Y' of Q, all of size L,
  ``D = SSW(X, Y) - SSW(X, X')/2 - SSW(Y, Y')/2``, whose expectation vanishes for P = Q at any
  kappa, removing the noise floor that otherwise rewards large kappa.
* :func:`soft_contrastive_loss` — reading (a) of L_C: PCME's match probability
  ``p = mean_{k,l} sigmoid(-a ||z_k - z'_l|| + b)`` over J x J sample pairs, binary
  cross-entropy over all positive and negative pairs of the batch (Chun et al. CVPR 2021).
* :func:`sampled_infonce_loss` — reading (b) of L_C: InfoNCE on sampled embeddings with a
  learned inverse temperature, symmetric, averaged over samples (MCInfoNCE, Kirchhof et al.
  ICML 2023).
* :func:`pcmepp_loss` — PCME++ (Chun, ICLR 2024): the closed-form sampled distance
  :func:`closed_form_sampled_distance` between diagonal Gaussians, the match probability
  ``sigmoid(-a CSD + b)``, binary cross-entropy over all pairs of the batch in both retrieval
  directions, and pseudo-positives (:func:`pseudo_positive_targets`) with weight alpha.

The paper's exact L_C ("multimodal probabilistic contrastive loss") is defined in its main text,
which is not public; both readings are **reconstructions** and the choice is a documented,
switchable option (``contrastive="infonce" | "pcme"``).
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from mmkit.core.distributions import VonMisesFisher
from mmkit.core.published import PublishedVonMisesFisher
from mmkit.core.ssw import random_stiefel_projections, sliced_wasserstein_sphere
from mmkit.vocab import METHODS, MODALITIES, MODALITY_PAIRS, family

__all__ = [
    "ssw_loss",
    "soft_contrastive_loss",
    "sampled_infonce_loss",
    "gaussian_kl_to_standard",
    "product_of_gaussians",
    "closed_form_sampled_distance",
    "pseudo_positive_targets",
    "pcmepp_loss",
    "pairwise_mean",
]

def _check_samples(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a tensor of shape (B, J, d), got {shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one item and one sample, got shape {tuple(x.shape)}")


def _check_pair(x: Tensor, y: Tensor) -> None:
    _check_samples("x", x)
    _check_samples("y", y)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"x and y must share the embedding dimension, got {tuple(x.shape)} and {tuple(y.shape)}")


def _check_modalities(name: str, mapping: Mapping) -> None:
    unknown = sorted(set(mapping) - set(MODALITIES))
    if unknown or len(mapping) < 2:
        raise ValueError(f"{name} must map at least two of {MODALITIES} to tensors, got keys {sorted(mapping)}")


def pairwise_mean(per_pair: Mapping[tuple[str, str], Tensor]) -> Tensor:
    """Mean of the per-modality-pair losses that exist (pairs with no complete item are absent)."""
    if not per_pair:
        raise ValueError("no modality pair has an item with both modalities present")
    return torch.stack(list(per_pair.values())).mean()


def _pair_indices(present: Mapping[str, Tensor] | None, a: str, b: str, batch: int, device) -> Tensor | None:
    """Indices of items that have both modalities (None: all items)."""
    if present is None:
        return None
    both = present[a].to(torch.bool) & present[b].to(torch.bool)
    if both.shape != (batch,):
        raise ValueError(f"present masks must have shape ({batch},), got {tuple(both.shape)}")
    return both.nonzero().squeeze(-1).to(device)


# ----------------------------------------------------------------------------------------------
# L_S
# ----------------------------------------------------------------------------------------------
def ssw_loss(samples: Mapping[str, Tensor], n_projections: int = 100, present: Mapping[str, Tensor] | None = None,
             independent: Mapping[str, Tensor] | None = None, generator: torch.Generator | None = None,
             projections: Tensor | None = None, reduction: str = "mean", as_published: bool = False) -> Tensor | dict:
    r"""L_S of Eq. 7 / Algorithm 2: ``[SSW_1(a,i) + SSW_1(i,t) + SSW_1(t,a)] / 3`` over positive pairs.

    Parameters
    ----------
    samples : mapping modality -> Tensor, shape (B, L, d)
        L samples per item from each modality's vMF (``VonMisesFisher(mu, kappa).rsample((L,))``
        transposed to batch-first).
    n_projections : int
        T, the number of great circles (shared by all pairs of the step).
    present : mapping modality -> bool Tensor (B,), optional
        Which items have the modality; a pair's SSW is averaged over items that have both.
    independent : mapping modality -> Tensor (B, L, d), optional
        A second sample set of each distribution, drawn independently of ``samples`` and of the
        same size. Given, L_S is the **debiased** ``SSW(X, Y) - SSW(X, X')/2 - SSW(Y, Y')/2`` per
        positive pair (X = ``samples[a]``, X' = ``independent[a]``, ...), whose expectation is 0
        when the two distributions are equal, whatever their concentration (not in the paper;
        the self-terms use the same projections as the cross term).
    generator, projections
        Randomness for, or explicit, projections ``(T, d, 2)``.
    reduction : "mean" | "pairs"
        ``"pairs"`` returns the per-modality-pair values as a dict.
    as_published : bool
        **Wrong on purpose** (the study's E8 only): every circle ``W_1`` as the reference code
        computes it, from the smallest sample (:func:`mmkit.core.ssw.sliced_wasserstein_sphere`).

    Returns
    -------
    Tensor (scalar) or dict[(str, str), Tensor]
    """
    _check_modalities("samples", samples)
    first_name, first = next(iter(samples.items()))
    for m, x in samples.items():
        _check_samples(f"samples[{m!r}]", x)
        if (x.shape[0], x.shape[-1]) != (first.shape[0], first.shape[-1]):
            raise ValueError(f"samples[{m!r}] of shape {tuple(x.shape)} must hold the same B items in the same d "
                             f"as samples[{first_name!r}] of shape {tuple(first.shape)}")
    batch, n, d = first.shape
    if independent is not None:
        for m, x in samples.items():
            other = independent.get(m)
            if other is None or other.shape != x.shape:
                raise ValueError(f"debiased L_S: independent[{m!r}] must be a second sample set of the shape of "
                                 f"samples[{m!r}] {tuple(x.shape)}, got "
                                 f"{None if other is None else tuple(other.shape)}")
    if projections is None:
        projections = random_stiefel_projections(d, n_projections, generator=generator, dtype=first.dtype,
                                                 device=first.device)
    per_pair = {}
    for a, b in MODALITY_PAIRS:
        if a not in samples or b not in samples:
            continue
        idx = _pair_indices(present, a, b, batch, first.device)
        if idx is not None and idx.numel() == 0:
            continue

        def rows(t: Tensor) -> Tensor:
            return t if idx is None else t[idx]

        def ssw(p: Tensor, q: Tensor) -> Tensor:
            return sliced_wasserstein_sphere(p, q, projections=projections, as_published=as_published)

        x, y = rows(samples[a]), rows(samples[b])
        value = ssw(x, y)
        if independent is not None:
            value = value - 0.5 * (ssw(x, rows(independent[a])) + ssw(y, rows(independent[b])))
        per_pair[(a, b)] = value.mean()
    if reduction == "pairs":
        return per_pair
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'pairs', got {reduction!r}")
    return pairwise_mean(per_pair)


# ----------------------------------------------------------------------------------------------
# L_C, reading (a): PCME soft contrastive loss on sampled match probabilities
# ----------------------------------------------------------------------------------------------
def match_log_probabilities(x: Tensor, y: Tensor, scale: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
    r"""PCME match probability between every item of ``x`` and every item of ``y``.

    ``p(m | x_i, y_j) = 1/(J J') sum_{k,l} sigmoid(-scale ||x_ik - y_jl|| + shift)``.

    Parameters
    ----------
    x : Tensor, shape (B, J, d); y : Tensor, shape (B', J', d)
        Samples (on the sphere for the vMF model, in R^d for Gaussian embeddings).
    scale : Tensor, scalar, > 0; shift : Tensor, scalar

    Returns
    -------
    log_p, log_not_p : Tensor, shape (B, B')
        ``log p`` and ``log (1 - p)``, computed as log-mean-exp of log-sigmoids (stable).
    """
    _check_pair(x, y)
    dist = torch.cdist(x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]))  # (B J, B' J')
    logits = (-scale * dist + shift).reshape(x.shape[0], x.shape[1], y.shape[0], y.shape[1])
    count = math.log(x.shape[1] * y.shape[1])
    log_p = torch.logsumexp(F.logsigmoid(logits), dim=(1, 3)) - count
    log_not_p = torch.logsumexp(F.logsigmoid(-logits), dim=(1, 3)) - count
    return log_p, log_not_p


def soft_contrastive_loss(x: Tensor, y: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    r"""Reading (a) of L_C for one modality pair: binary cross-entropy of the PCME match
    probability over all B x B pairs of the batch (positives on the diagonal).

    Parameters
    ----------
    x, y : Tensor, shape (B, J, d)
        Samples of the two modalities for the same B items (row i of x matches row i of y).
    scale, shift : Tensor, scalars (``scale > 0``)

    Returns
    -------
    Tensor, scalar: ``-mean_{ij} [1{i=j} log p_ij + 1{i!=j} log(1 - p_ij)]``.

    References: Chun et al., "Probabilistic embeddings for cross-modal retrieval", CVPR 2021.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same items, got batch sizes {x.shape[0]} and {y.shape[0]}")
    log_p, log_not_p = match_log_probabilities(x, y, scale, shift)
    eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    return -torch.where(eye, log_p, log_not_p).mean()


# ----------------------------------------------------------------------------------------------
# L_C, reading (b): sampled InfoNCE
# ----------------------------------------------------------------------------------------------
def sampled_infonce_loss(x: Tensor, y: Tensor, inverse_temperature: Tensor) -> Tensor:
    r"""Reading (b) of L_C for one modality pair: symmetric InfoNCE on sampled embeddings.

    For each sample index k, logits ``tau * x_ik^T y_jk`` (B x B), cross-entropy with targets on
    the diagonal in both directions; averaged over the J samples.

    Parameters
    ----------
    x, y : Tensor, shape (B, J, d)
        Samples of the two modalities for the same B items.
    inverse_temperature : Tensor, scalar, > 0

    References: Kirchhof et al., "Probabilistic contrastive learning recovers the correct
    aleatoric uncertainty of ambiguous inputs", ICML 2023 (MCInfoNCE).
    """
    _check_pair(x, y)
    if x.shape[:2] != y.shape[:2]:
        raise ValueError(f"x and y must have the same (B, J), got {tuple(x.shape)} and {tuple(y.shape)}")
    b, j, _ = x.shape
    logits = inverse_temperature * torch.einsum("bkd,ckd->kbc", x, y)  # (J, B, B)
    target = torch.arange(b, device=x.device).repeat(j)
    flat = logits.reshape(j * b, b)
    flat_t = logits.transpose(1, 2).reshape(j * b, b)
    return 0.5 * (F.cross_entropy(flat, target) + F.cross_entropy(flat_t, target))


# ----------------------------------------------------------------------------------------------
# Gaussian embeddings (PCME, MPC)
# ----------------------------------------------------------------------------------------------
def gaussian_kl_to_standard(mean: Tensor, log_var: Tensor) -> Tensor:
    """``KL(N(mean, diag exp(log_var)) || N(0, I))`` per item; mean, log_var (B, d) -> (B,).

    PCME's variational-information-bottleneck regulariser (Chun et al. 2021, Eq. 6)."""
    return 0.5 * (log_var.exp() + mean * mean - 1.0 - log_var).sum(-1)


def product_of_gaussians(means: list[Tensor], log_vars: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Normalised product of diagonal Gaussians: precision-weighted mean, summed precisions.

    MPC's composer (Neculai et al., "Probabilistic compositional embeddings for multimodal
    image retrieval", CVPR-W 2022). Each entry (B, d); returns (mean, log_var), each (B, d).
    """
    if not means or len(means) != len(log_vars):
        raise ValueError("product_of_gaussians needs as many means as log-variances (at least one)")
    shapes = {tuple(t.shape) for t in (*means, *log_vars)}
    if len(shapes) != 1:
        raise ValueError(f"product_of_gaussians: every mean and log-variance must have the same shape (B, d), "
                         f"got {sorted(shapes)}")
    precisions = [torch.exp(-lv) for lv in log_vars]
    total = torch.stack(precisions).sum(0)
    mean = torch.stack([p * m for p, m in zip(precisions, means)]).sum(0) / total
    return mean, -torch.log(total)


def _check_gaussians(name: str, mean: Tensor, log_var: Tensor) -> None:
    if not (isinstance(mean, Tensor) and isinstance(log_var, Tensor)) or mean.dim() != 2 or mean.shape != log_var.shape:
        shapes = [tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in (mean, log_var)]
        raise ValueError(f"{name}: expected mean and log_var of the same shape (N, d), got {shapes[0]} and {shapes[1]}")
    if mean.shape[0] == 0:
        raise ValueError(f"{name}: needs at least one item, got shape {tuple(mean.shape)}")


def closed_form_sampled_distance(mean_x: Tensor, log_var_x: Tensor, mean_y: Tensor, log_var_y: Tensor,
                                 chunk: int = 4096) -> Tensor:
    r"""PCME++'s closed-form sampled distance (CSD) between every x and every y.

    For independent ``z_x ~ N(mu_x, diag sigma_x^2)`` and ``z_y ~ N(mu_y, diag sigma_y^2)``,
    ``CSD = E ||z_x - z_y||^2 = ||mu_x - mu_y||^2 + ||sigma_x^2 + sigma_y^2||_1`` (Chun 2024, Eq. 1).

    Parameters
    ----------
    mean_x, log_var_x : Tensor, shape (N, d)
    mean_y, log_var_y : Tensor, shape (M, d)
    chunk : int
        Rows of x per step (memory stays O(chunk M) for any gallery size).

    Returns
    -------
    Tensor, shape (N, M), >= 0.

    References
    ----------
    .. [1] S. Chun, "Improved probabilistic image-text representations", ICLR 2024.

    Examples
    --------
    Means 3 apart with unit variances in d = 2: ``9 + (1 + 1) * 2 = 13``.

    >>> import torch
    >>> closed_form_sampled_distance(torch.tensor([[0.0, 0.0]]), torch.zeros(1, 2),
    ...                              torch.tensor([[3.0, 0.0]]), torch.zeros(1, 2))
    tensor([[13.]])
    """
    _check_gaussians("closed_form_sampled_distance: x", mean_x, log_var_x)
    _check_gaussians("closed_form_sampled_distance: y", mean_y, log_var_y)
    if mean_x.shape[1] != mean_y.shape[1]:
        raise ValueError(f"closed_form_sampled_distance: x and y must share d, got {mean_x.shape[1]} and "
                         f"{mean_y.shape[1]}")
    sq_y, var_y = (mean_y * mean_y).sum(-1), log_var_y.exp().sum(-1)
    rows = []
    for s in range(0, mean_x.shape[0], chunk):
        mx = mean_x[s:s + chunk]
        sq = ((mx * mx).sum(-1)[:, None] + sq_y[None] - 2.0 * mx @ mean_y.T).clamp_min(0.0)
        rows.append(sq + log_var_x[s:s + chunk].exp().sum(-1)[:, None] + var_y[None])
    return torch.cat(rows)


def pseudo_positive_targets(distance: Tensor) -> Tensor:
    """Match targets with PCME++'s pseudo-positives, row by row (Chun 2024, Sec. 2.3).

    Row i's positive is column i; every column j whose distance is no larger than the positive's,
    ``distance[i, j] <= distance[i, i]``, is a pseudo-positive: its target becomes 1.

    Parameters
    ----------
    distance : Tensor, shape (B, B)
        Distances of B queries (rows) to their B candidates; the positive pairs on the diagonal.

    Returns
    -------
    Tensor, shape (B, B), of the dtype of ``distance``: 1 on the diagonal and at the
    pseudo-positives, 0 elsewhere (no gradient).

    Examples
    --------
    >>> import torch
    >>> pseudo_positive_targets(torch.tensor([[2.0, 1.0, 3.0], [0.5, 1.0, 2.0], [4.0, 4.0, 4.0]]))
    tensor([[1., 1., 0.],
            [1., 1., 0.],
            [1., 1., 1.]])
    """
    if not isinstance(distance, Tensor) or distance.dim() != 2 or distance.shape[0] != distance.shape[1]:
        raise ValueError(f"distance must be a square (B, B) tensor, got {getattr(distance, 'shape', distance)!r}")
    d = distance.detach()
    return (d <= d.diagonal()[:, None]).to(distance.dtype)


def pcmepp_loss(mean_x: Tensor, log_var_x: Tensor, mean_y: Tensor, log_var_y: Tensor, scale: Tensor,
                shift: Tensor, pseudo_positive_weight: float = 0.1) -> Tensor:
    r"""PCME++'s matching objective for one modality pair (without the VIB term).

    With ``D = CSD(x_i, y_j)`` (:func:`closed_form_sampled_distance`) and logits
    ``l_ij = -scale D_ij + shift`` (match probability ``sigmoid(l_ij)``),

    ``L = sum_{dir in (x->y, y->x)} [BCE(l_dir, I) + alpha BCE(l_dir, T_dir)]``,

    where BCE is the binary cross-entropy with logits averaged over all B x B pairs,
    ``l_{x->y} = l``, ``l_{y->x} = l^T``, I the identity (the positives) and ``T_dir``
    :func:`pseudo_positive_targets` of the distances in that direction. The two directions of the
    plain term are equal (CSD is symmetric); both are counted, as in the paper.

    Parameters
    ----------
    mean_x, log_var_x, mean_y, log_var_y : Tensor, shape (B, d)
        Diagonal Gaussians of the same B items in two modalities (row i of x matches row i of y).
    scale : Tensor, scalar, > 0
        ``a``.
    shift : Tensor, scalar
        ``b``.
    pseudo_positive_weight : float >= 0
        ``alpha`` (0: no pseudo-positives).

    Returns
    -------
    Tensor, scalar.

    References
    ----------
    .. [1] S. Chun, "Improved probabilistic image-text representations", ICLR 2024, Sec. 2.2-2.3.
    """
    if mean_x.shape[0] != mean_y.shape[0]:
        raise ValueError(f"x and y must hold the same items, got batch sizes {mean_x.shape[0]} and {mean_y.shape[0]}")
    if not (isinstance(pseudo_positive_weight, (int, float)) and 0 <= pseudo_positive_weight < math.inf):
        raise ValueError(f"pseudo_positive_weight must be a finite number >= 0, got {pseudo_positive_weight!r}")
    distance = closed_form_sampled_distance(mean_x, log_var_x, mean_y, log_var_y)
    logits = -scale * distance + shift
    eye = torch.eye(distance.shape[0], dtype=logits.dtype, device=logits.device)
    loss = 2.0 * F.binary_cross_entropy_with_logits(logits, eye)
    if pseudo_positive_weight:
        loss = loss + pseudo_positive_weight * (
            F.binary_cross_entropy_with_logits(logits, pseudo_positive_targets(distance))
            + F.binary_cross_entropy_with_logits(logits.T, pseudo_positive_targets(distance.T)))
    return loss


# ----------------------------------------------------------------------------------------------
# the full objective per method
# ----------------------------------------------------------------------------------------------
class TrainingObjective(torch.nn.Module):
    r"""``L = L_C + lambda_S L_S`` (vMF methods) or the PCME / MPC / PCME++ objectives (Gaussian methods).

    Parameters
    ----------
    method : "proposed" | "baseline" | "ls_only" | "pcme" | "mpc" | "pcmepp"
        ``baseline`` is ``proposed`` with ``lambda_s = 0`` (L_S is then not computed at all);
        ``ls_only`` trains on L_S alone (the paper's lambda_S -> inf limit).
    lambda_s : float
        Weight of L_S for ``proposed``.
    contrastive : "infonce" | "pcme"
        Reading of L_C for the vMF methods (see the module docstring).
    n_samples : int
        L, samples per vMF (used by L_S and by the sampled InfoNCE).
    n_projections : int
        T, great circles per step for L_S.
    match_samples : int
        J, samples per embedding for the PCME match probability (PCME uses 7).
    vib_weight : float
        Weight of the KL-to-N(0, I) regulariser of the Gaussian methods (the VIB term of PCME and PCME++).
    debiased_ssw : bool
        Use the debiased L_S (:func:`ssw_loss` with ``independent``): each vMF draws a second,
        independent set of L samples for the self-terms; L_C uses the first set as without it.
    as_published : bool
        **Wrong on purpose** (the study's E8, ``docs/study.md``): the vMF methods sample with the
        reference code's sampler (:class:`mmkit.core.published.PublishedVonMisesFisher`) and L_S
        uses its circle ``W_1`` (``ssw_loss(as_published=True)``).
    pseudo_positive_weight : float
        PCME++'s alpha, the weight of the pseudo-positive term (:func:`pcmepp_loss`; PCME++ only).

    Learnable scalars: the InfoNCE inverse temperature (init 10) and the match probability's
    ``a > 0`` and ``b``: init 10 and 5 for PCME, 5 and 5 for PCME++ (the values of its
    released configuration).
    """

    def __init__(self, method: str = "proposed", lambda_s: float = 1.0, contrastive: str = "infonce",
                 n_samples: int = 16, n_projections: int = 50, match_samples: int = 7, vib_weight: float = 1e-4,
                 debiased_ssw: bool = False, as_published: bool = False, pseudo_positive_weight: float = 0.1):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if contrastive not in ("infonce", "pcme"):
            raise ValueError(f"contrastive must be 'infonce' or 'pcme', got {contrastive!r}")
        self.method, self.contrastive = method, contrastive
        self.lambda_s = 0.0 if method == "baseline" else float(lambda_s)
        self.n_samples, self.n_projections = int(n_samples), int(n_projections)
        self.match_samples, self.vib_weight, self.debiased_ssw = int(match_samples), float(vib_weight), debiased_ssw
        self.as_published = bool(as_published)
        if not (isinstance(pseudo_positive_weight, (int, float)) and 0 <= pseudo_positive_weight < math.inf):
            raise ValueError(f"pseudo_positive_weight must be a finite number >= 0, got {pseudo_positive_weight!r}")
        self.pseudo_positive_weight = float(pseudo_positive_weight)
        self.log_inverse_temperature = torch.nn.Parameter(torch.tensor(math.log(10.0)))
        scale = 5.0 if method == "pcmepp" else 10.0
        self.match_scale_raw = torch.nn.Parameter(torch.tensor(math.log(math.expm1(scale))))
        self.match_shift = torch.nn.Parameter(torch.tensor(5.0))

    @property
    def family(self) -> str:
        return family(self.method)

    def _contrastive(self, x: Tensor, y: Tensor, kind: str) -> Tensor:
        if kind == "infonce":
            return sampled_infonce_loss(x, y, self.log_inverse_temperature.exp())
        j = self.match_samples
        return soft_contrastive_loss(x[:, :j], y[:, :j], F.softplus(self.match_scale_raw), self.match_shift)

    @staticmethod
    def _per_pair(values: Mapping[str, tuple[Tensor, ...]], present: Mapping[str, Tensor], loss) -> dict:
        """``loss(values[a] rows, values[b] rows)`` for each modality pair over its complete items."""
        batch = next(iter(values.values()))[0].shape[0]
        terms = {}
        for a, b in MODALITY_PAIRS:
            if a in values and b in values:
                idx = _pair_indices(present, a, b, batch, values[a][0].device)
                if idx.numel():
                    terms[(a, b)] = loss(tuple(t[idx] for t in values[a]), tuple(t[idx] for t in values[b]))
        return terms

    def _pairwise_contrastive(self, samples: Mapping[str, Tensor], present: Mapping[str, Tensor], kind: str) -> dict:
        return self._per_pair({m: (x,) for m, x in samples.items()}, present,
                              lambda x, y: self._contrastive(x[0], y[0], kind))

    def forward(self, outputs: Mapping[str, tuple[Tensor, Tensor]], present: Mapping[str, Tensor],
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Loss terms for one batch.

        Parameters
        ----------
        outputs : modality -> (loc (B, d), kappa (B,)) for vMF methods, or (mean (B, d), log_var (B, d))
        present : modality -> bool (B,)
        generator : torch.Generator for the SSW projections

        Returns
        -------
        dict with ``loss`` (the total) and its parts ``L_C``, ``L_S``, ``VIB`` (those that apply).
        """
        _check_modalities("outputs", outputs)
        missing = sorted(set(outputs) - set(present))
        if missing:
            raise ValueError(f"present must hold a (B,) mask for every modality of outputs, missing {missing}")
        if self.family == "vmf":
            return self._vmf_terms(outputs, present, generator)
        return self._gaussian_terms(outputs, present)

    def _vmf_terms(self, outputs, present, generator) -> dict[str, Tensor]:
        uses_ls = self.method == "ls_only" or self.lambda_s > 0
        # the debiased L_S needs a second, independent sample set of the full size L
        draws = 2 * self.n_samples if uses_ls and self.debiased_ssw else self.n_samples
        sampler = PublishedVonMisesFisher if self.as_published else VonMisesFisher
        drawn = {m: sampler(loc, kappa, validate_args=False).rsample((draws,)).transpose(0, 1)
                 for m, (loc, kappa) in outputs.items()}
        samples = {m: x[:, :self.n_samples] for m, x in drawn.items()}
        independent = {m: x[:, self.n_samples:] for m, x in drawn.items()} if draws > self.n_samples else None
        terms: dict[str, Tensor] = {}
        if self.method != "ls_only":
            terms["L_C"] = pairwise_mean(self._pairwise_contrastive(samples, present, self.contrastive))
        if uses_ls:
            terms["L_S"] = ssw_loss(samples, self.n_projections, present=present, independent=independent,
                                    generator=generator, as_published=self.as_published)
        if self.method == "ls_only":
            terms["loss"] = terms["L_S"]
        else:
            terms["loss"] = terms["L_C"] + self.lambda_s * terms["L_S"] if "L_S" in terms else terms["L_C"]
        return terms

    def _pcmepp_pair(self, x: tuple[Tensor, Tensor], y: tuple[Tensor, Tensor]) -> Tensor:
        return pcmepp_loss(*x, *y, F.softplus(self.match_scale_raw), self.match_shift, self.pseudo_positive_weight)

    def _gaussian_terms(self, outputs, present) -> dict[str, Tensor]:
        if self.method == "pcmepp":  # closed form: no samples
            pair_terms = self._per_pair(outputs, present, self._pcmepp_pair)
        else:
            pair_terms = self._sampled_gaussian_terms(outputs, present)
        vib = torch.stack([gaussian_kl_to_standard(*p)[present[m].to(torch.bool)].mean()
                           for m, p in outputs.items() if present[m].any()]).mean()
        l_c = pairwise_mean(pair_terms)
        return {"L_C": l_c, "VIB": vib, "loss": l_c + self.vib_weight * vib}

    def _sampled_gaussian_terms(self, outputs, present) -> dict:
        """PCME's and MPC's per-pair terms on J samples of each Gaussian."""
        j = self.match_samples

        def draw(mean, log_var):
            eps = torch.randn(mean.shape[0], j, mean.shape[1], dtype=mean.dtype, device=mean.device)
            return mean.unsqueeze(1) + (0.5 * log_var).exp().unsqueeze(1) * eps

        samples = {m: draw(*p) for m, p in outputs.items()}
        pair_terms = self._pairwise_contrastive(samples, present, "pcme")
        if self.method == "mpc":  # composed queries: product of the two other modalities' Gaussians
            batch = next(iter(outputs.values()))[0].shape[0]
            for target in outputs:
                query = [m for m in outputs if m != target]
                if len(query) < 2:
                    continue
                keep = present[target].to(torch.bool).clone()
                for m in query:
                    keep &= present[m].to(torch.bool)
                idx = keep.nonzero().squeeze(-1)
                if idx.numel() == 0 or keep.shape != (batch,):
                    continue
                mean, log_var = product_of_gaussians([outputs[m][0][idx] for m in query],
                                                     [outputs[m][1][idx] for m in query])
                pair_terms[(tuple(query), target)] = self._contrastive(draw(mean, log_var), samples[target][idx], "pcme")
        return pair_terms
