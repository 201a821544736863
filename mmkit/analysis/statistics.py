"""Comparing two retrieval methods over training seeds and test queries.

Plain functions on arrays (numpy, scipy and statsmodels only). The data of one comparison (one
task, one metric) are two arrays ``a`` and ``b`` of shape ``(S, Q)``: the per-query scores of
methods A and B on the same ``Q`` test queries under each of ``S`` training seeds, seed ``s`` of
A paired with seed ``s`` of B (see :func:`per_query_scores`). The statistic is the mean over
seeds and queries of ``a - b``, i.e. the difference of the metric averaged over seeds.

Two sources of variation make that difference uncertain: the training seeds (a new seed gives a
different model) and the test queries (a new test set gives different items). Seeds and queries
are *crossed*, not nested: the same queries are scored under every seed, so a query on which A
beats B tends to do so under every seed. :func:`hierarchical_bootstrap` resamples both;
:func:`pooled_bootstrap` (the repository's earlier method) resamples the ``S * Q`` (seed, query)
cells as if independent, which ignores both kinds of sharing and is anticonservative.

Decisions (docs/study.md §6, deviation of 2026-12-07) come from an analytic test whose tails
are right with few seeds, :func:`crossed_t_test` (variance components of the crossed design,
Satterthwaite degrees of freedom; :func:`seed_t_test` for one number per seed); the bootstrap
gives the reported 95 % and 90 % intervals, where it is calibrated. Decision helpers: :func:`holm`
(family-wise adjustment), :func:`equivalence` (TOST), :func:`minimum_detectable_effect`,
:func:`at_floor` (Baseline not above chance, :func:`chance_level`) and the one :func:`verdict`
rule; :func:`decide_family` chains them over a Holm family, for the study
(:mod:`mmkit.analysis.study`) and for :func:`compare` and :func:`compare_family` alike.
"""
from __future__ import annotations

import functools
import math
import numbers
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Mapping

import numpy as np
from scipy import optimize, special, stats
from statsmodels.stats.multitest import multipletests

__all__ = ["BootstrapResult", "TTestResult", "VERDICTS", "per_query_scores", "hierarchical_bootstrap", "pooled_bootstrap",
           "seed_bootstrap", "crossed_t_test", "seed_t_test", "chance_level", "at_floor", "holm", "equivalence",
           "minimum_detectable_effect", "verdict", "decide_family", "compare", "compare_family"]

_CHUNK_CELLS = 1 << 22  # resampling weights/indices held at once (about 32 MiB of float64)


@dataclass(frozen=True)
class BootstrapResult:
    """Outcome of one bootstrap comparison of ``a - b`` (see :func:`hierarchical_bootstrap`).

    Attributes
    ----------
    difference : float
        Observed mean of ``a - b`` over seeds and queries.
    ci_low, ci_high : float
        Two-sided interval at ``confidence``.
    ci90_low, ci90_high : float
        Two-sided 90 % interval (the two one-sided 95 % bounds used by :func:`equivalence`).
    p_value : float
        Two-sided p-value of ``H0: true difference = 0``, by inversion of the interval.
    se : float
        Bootstrap standard error (standard deviation of the replicates).
    n_seeds, n_queries : int
        ``S`` and ``Q``.
    confidence : float
        Level of ``ci_low, ci_high``.
    df : float
        Degrees of freedom of the Student-t calibration; ``inf`` where none is applied.
    method : str
        ``"hierarchical"``, ``"hierarchical-percentile"`` or ``"pooled"``.
    replicates : ndarray, shape (n_resamples,)
        Sorted bootstrap replicates of the difference (kept for :func:`equivalence`).
    """

    difference: float
    ci_low: float
    ci_high: float
    ci90_low: float
    ci90_high: float
    p_value: float
    se: float
    n_seeds: int
    n_queries: int
    confidence: float
    df: float
    method: str
    replicates: np.ndarray = field(repr=False, compare=False)

    def to_dict(self) -> dict:
        """All fields but ``replicates``, as plain Python numbers."""
        out = asdict(self)
        del out["replicates"]
        return out


# --------------------------------------------------------------------------------------------
# per-query scores


def per_query_scores(ranks, metric: str) -> np.ndarray:
    """Per-query contributions to a retrieval metric, whose mean over queries is the metric.

    Parameters
    ----------
    ranks : array_like, shape (..., Q)
        1-based rank of each query's true item (half-integers from ties are fine).
    metric : str
        ``"MRR"`` (contribution ``1 / rank``) or ``"R@k"`` with an integer ``k >= 1``
        (contribution ``100 * (rank <= k)``, so the mean is a percentage).

    Returns
    -------
    ndarray, shape (..., Q), float64

    Raises
    ------
    ValueError
        For an unknown metric, or ranks that are not finite numbers ``>= 1``.

    References
    ----------
    .. [1] Manning, C. D., Raghavan, P., & Schuetze, H. (2008). *Introduction to Information
       Retrieval*, ch. 8. Cambridge University Press.

    Examples
    --------
    >>> per_query_scores([1, 2, 4], "MRR")
    array([1.  , 0.5 , 0.25])
    >>> per_query_scores([[1, 5], [6, 2]], "R@5")
    array([[100., 100.],
           [  0., 100.]])
    """
    if not isinstance(metric, str):
        raise ValueError(f"metric must be 'MRR' or 'R@k' (k an integer >= 1), got {metric!r}")
    r = np.asarray(ranks, dtype=np.float64)
    if r.ndim == 0 or r.shape[-1] == 0:
        raise ValueError(f"ranks must have shape (..., Q) with Q >= 1, got shape {r.shape}")
    if not np.isfinite(r).all():
        raise ValueError("ranks contain NaN or inf")
    if (r < 1).any():
        raise ValueError(f"ranks are 1-based and must be >= 1, got a minimum of {r.min():g}")
    if metric == "MRR":
        return 1.0 / r
    m = re.fullmatch(r"R@([1-9][0-9]*)", metric)
    if m is None:
        raise ValueError(f"metric must be 'MRR' or 'R@k' (k an integer >= 1), got {metric!r}")
    return 100.0 * (r <= int(m.group(1)))


# --------------------------------------------------------------------------------------------
# bootstrap machinery


def _check_pair(a, b, batch: bool = False) -> np.ndarray:
    """Validated ``a - b`` as float64 (S, Q), or (..., S, Q) with ``batch``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape (S seeds, Q queries), got {a.shape} and {b.shape}")
    if a.ndim != 2 and not (batch and a.ndim > 2):
        raise ValueError(f"a and b must have shape (S seeds, Q queries), got {a.ndim}-d arrays of shape {a.shape};"
                         " for a single seed pass a[None, :]")
    s, q = a.shape[-2:]
    if s < 1 or q < 2:
        raise ValueError(f"need at least 1 seed and 2 queries, got shape {a.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("a and b must not contain NaN or inf (drop or impute missing queries first)")
    return a - b


def _check_options(n_resamples, confidence) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 2:
        raise ValueError(f"n_resamples must be an integer >= 2, got {n_resamples!r}")
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")


def _chunks(n: int, width: int):
    """Yield (start, stop) blocks of the ``n`` replicates so that a block holds about
    ``_CHUNK_CELLS`` resampling weights or indices of ``width`` columns each."""
    step = max(1, _CHUNK_CELLS // max(1, width))
    for start in range(0, n, step):
        yield start, min(n, start + step)


def _counts(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """How often each of ``n`` units is drawn in ``size`` resamples of ``n`` with replacement,
    shape (size, n)."""
    idx = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
    return np.bincount(idx.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)


def _t_over_z(gamma: float, df: float) -> float:
    """Ratio of the upper-``gamma`` quantiles of Student's t (``df``) and the standard normal;
    its limit ``phi(0) / f_t(0)`` at ``gamma = 1/2``; 1 for ``df = inf``."""
    if math.isinf(df):
        return 1.0
    if abs(gamma - 0.5) < 1e-4:  # phi(0) / f_t(0); the ratio is flat (quadratic) there
        return math.sqrt(df / 2.0) * math.exp(special.gammaln(df / 2.0) - special.gammaln((df + 1.0) / 2.0))
    return float(special.stdtrit(df, gamma) / special.ndtri(gamma))


class _Calibrated:
    """Interval endpoints and p-values from sorted replicates, optionally widened by t/z.

    ``lower(g)`` is the lower end of the one-sided ``1 - g`` interval,
    ``T + k(g) * (quantile_g(T*) - T)`` with ``k(g) = t_{df, 1-g} / z_{1-g}`` (``k = 1`` without
    calibration: the percentile interval). The upper end of the one-sided ``1 - g`` interval is
    ``lower(1 - g)``. It increases with ``g``, so each interval and p-value is one inversion of it:
    ``p_greater(x)`` is the ``g`` at which ``lower(g) = x`` (the one-sided p-value of
    ``H0: delta <= x``). Quantiles interpolate linearly between order statistics, so the
    inversion is continuous; one-sided p-values are kept within ``[1, n_resamples] /
    (n_resamples + 1)``, as a Monte Carlo p-value is never 0 (Davison & Hinkley 1997, eq. 4.11).
    """

    def __init__(self, observed: float, replicates: np.ndarray, df: float):
        self.t = float(observed)
        self.r = np.sort(replicates)
        self.df = float(df)
        self.n = len(self.r)
        self.g_min = 1.0 / (self.n + 1)

    def quantile(self, g: float) -> float:
        pos = g * (self.n - 1)
        i = min(int(math.floor(pos)), self.n - 2) if self.n > 1 else 0
        if self.n == 1:
            return float(self.r[0])
        frac = pos - i
        return float(self.r[i] + frac * (self.r[i + 1] - self.r[i]))

    def lower(self, g: float) -> float:
        return self.t + _t_over_z(g, self.df) * (self.quantile(g) - self.t)

    def interval(self, level: float) -> tuple[float, float]:
        g = (1.0 - level) / 2.0
        return self.lower(g), self.lower(1.0 - g)

    def p_greater(self, x: float) -> float:
        lo, hi = self.g_min, 1.0 - self.g_min
        f_lo, f_hi = self.lower(lo) - x, self.lower(hi) - x
        if f_lo >= 0:
            return lo
        if f_hi <= 0:
            return hi
        return float(optimize.brentq(lambda g: self.lower(g) - x, lo, hi, xtol=1e-10, rtol=1e-10))

    def p_two_sided(self, x: float = 0.0) -> float:
        g = self.p_greater(x)
        return min(1.0, 2.0 * min(g, 1.0 - g))


def _result(observed, replicates, df, confidence, s, q, method) -> BootstrapResult:
    cal = _Calibrated(observed, replicates, df)
    if np.ptp(cal.r) == 0.0 and cal.r[0] == observed:  # no variability at all (e.g. a == b)
        lo = hi = lo90 = hi90 = float(observed)
        p = 1.0 if observed == 0.0 else 0.0
    else:
        lo, hi = cal.interval(confidence)
        lo90, hi90 = cal.interval(0.90)
        p = cal.p_two_sided(0.0)
    return BootstrapResult(difference=float(observed), ci_low=float(lo), ci_high=float(hi), ci90_low=float(lo90),
                           ci90_high=float(hi90), p_value=float(p), se=float(np.std(cal.r, ddof=1)), n_seeds=s,
                           n_queries=q, confidence=float(confidence), df=float(df), method=method,
                           replicates=cal.r)


def _mean_squares(d: np.ndarray):
    """Two-way (seed x query) mean squares of ``d``, shape (..., S, Q), over its last two axes.

    Returns ``(T, ms_seed, ms_query, ms_error)``, each of shape (...): the grand mean and the mean
    squares of the additive decomposition ``d = T + alpha[s] + beta[q] + residual`` (seed and
    error mean squares are 0 for ``S = 1``).
    """
    s, q = d.shape[-2:]
    t = d.mean(axis=(-2, -1))
    seed_means = d.mean(axis=-1)
    query_means = d.mean(axis=-2)
    ms_query = s * np.sum((query_means - t[..., None]) ** 2, axis=-1) / (q - 1)
    if s == 1:
        zero = np.zeros_like(t)
        return t, zero, ms_query, zero
    ms_seed = q * np.sum((seed_means - t[..., None]) ** 2, axis=-1) / (s - 1)
    resid = d - seed_means[..., :, None] - query_means[..., None, :] + t[..., None, None]
    ms_error = np.sum(resid * resid, axis=(-2, -1)) / ((s - 1) * (q - 1))
    return t, ms_seed, ms_query, ms_error


def _variance_of_mean(s: int, q: int, ms_seed, ms_query, ms_error):
    """Variance-component estimate of the variance of the grand mean and its Satterthwaite df.

    ``var = (MS_seed + max(MS_query - MS_error, 0)) / (S Q)`` estimates ``sigma_seed^2 / S +
    sigma_mq^2 / Q + sigma_e^2 / (S Q)`` of the crossed random-effects model; its degrees of
    freedom are ``(sum_i c_i MS_i)^2 / sum_i (c_i MS_i)^2 / df_i`` over the mean squares that enter
    (Satterthwaite 1946). For ``S = 1``: ``MS_query / Q`` with ``Q - 1`` df. Elementwise over (...).
    """
    ms_seed, ms_query, ms_error = (np.asarray(x, dtype=np.float64) for x in (ms_seed, ms_query, ms_error))
    if s == 1:
        return ms_query / q, np.full(ms_query.shape, float(q - 1))
    extra = np.maximum(ms_query - ms_error, 0.0)  # S * sigma_mq^2 (the method x query interaction)
    var = (ms_seed + extra) / (s * q)
    den = ms_seed ** 2 / (s - 1) + np.where(extra > 0, ms_query ** 2 / (q - 1) + ms_error ** 2 / ((s - 1) * (q - 1)),
                                            0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(den > 0, (ms_seed + extra) ** 2 / np.where(den > 0, den, 1.0), np.inf)
    return var, df


def _variance_components(d: np.ndarray):
    """:func:`_mean_squares` and :func:`_variance_of_mean` of one (S, Q) array, with the effects.

    Returns ``(T, alpha, beta, ms_seed, ms_query, ms_error, var_mean, df)`` as Python floats and
    the seed and query effects ``alpha`` (S,), ``beta`` (Q,) used by the bootstrap.
    """
    s, q = d.shape
    t, ms_seed, ms_query, ms_error = (float(x) for x in _mean_squares(d))
    var, df = (float(x) for x in _variance_of_mean(s, q, ms_seed, ms_query, ms_error))
    return t, d.mean(axis=1) - t, d.mean(axis=0) - t, ms_seed, ms_query, ms_error, var, df


# --------------------------------------------------------------------------------------------
# the two bootstraps


def hierarchical_bootstrap(a, b, n_resamples: int = 10_000, seed: int = 0, confidence: float = 0.95,
                           calibrate: bool = True) -> BootstrapResult:
    """Two-level paired bootstrap of the mean difference ``a - b`` over seeds and queries.

    Each replicate draws ``S`` training seeds with replacement and ``Q`` test queries with
    replacement, the same query indices for every drawn seed and for both methods (A and B stay
    paired: seed ``s`` of A with seed ``s`` of B, query ``q`` with query ``q``), and records the
    mean of ``a - b`` over the drawn (seed, query) grid.

    Query indices are shared across the drawn seeds (rather than drawn anew per seed) because
    seeds and queries are crossed: every seed scores the same test queries, so a query on which A
    does better tends to favour A under every seed. Redrawing queries per seed would average that
    method x query interaction out over seeds and understate its variance; shared indices keep it
    (the "pigeonhole" bootstrap of a crossed array, Owen 2007).

    Calibration (``calibrate=True``, the default). The plain percentile interval of this
    resampling is not valid for the few seeds of a benchmark: resampling ``S`` seeds gives the
    seed-level variance a factor ``(S - 1) / S`` too small and normal tails where a mean of ``S``
    seeds has Student-t tails, and resampling both levels counts the seed x query noise two or
    three times (Davison & Hinkley 1997, sec. 3.8; Owen 2007). In simulations with ``S = 5``
    seeds and ``Q = 150`` queries (tests/test_statistics.py) the plain interval rejected a true
    null at the 5 % level in 13 % of experiments when seed effects made up ~96 % of the variance
    of the mean, and in 0.4 % when there were no seed effects; the calibrated one in 4.4-5.5 %
    across those and other settings. The calibrated replicate is instead

        ``T + c_seed * mean(alpha[drawn seeds]) + c_query * mean(beta[drawn queries])``

    from the same draws, with ``d = T + alpha[s] + beta[q] + residual`` the two-way
    decomposition of ``d = a - b``, ``c_seed = sqrt(S / (S - 1))`` and
    ``c_query = sqrt(Q / (Q - 1) * max(MS_q - MS_e, 0) / MS_q)`` (mean squares of the two-way
    ANOVA). Its variance is the variance-component estimate of the variance of the mean (unbiased
    but for the truncation at 0), ``(MS_s + max(MS_q - MS_e, 0)) / (S Q)``: the variance of the
    mean of the ``S`` seed means
    (which already includes the per-query noise) plus the method x query interaction shared by all
    seeds. The residual is left out because the seed means already carry it (the crossed
    analogue of the adjusted two-stage bootstrap of Davison & Hinkley 1997, sec. 3.8). Intervals
    are then widened about ``T`` by ``t_{df} / z`` at each level, ``df`` the Satterthwaite (1946)
    degrees of freedom of that variance estimate: about ``S - 1`` whenever the seed means carry
    the variance, which includes per-query noise that changes from seed to seed (with 5 seeds the
    interval is then about 1.4 times as wide as a normal one), more when the method x query
    interaction contributes, ``Q - 1`` for a single seed. This is the expanded percentile
    interval of Hesterberg (2015), applied by scaling rather than by reading more extreme
    percentiles, so that small p-values stay resolvable with a finite number of resamples. With
    ``calibrate=False`` the replicates are the plain two-level resamples of the raw data and the
    interval is their percentile interval.

    The p-value is obtained by test inversion: it is the smallest ``alpha`` whose ``1 - alpha``
    interval (constructed as above, equal-tailed) excludes 0, so that ``p < 1 - confidence``
    exactly when the interval excludes 0. It is never below ``2 / (n_resamples + 1)``.

    A single seed (``S = 1``) is accepted: the seed-to-seed variance cannot be estimated, the
    method becomes a query-level bootstrap and the result is conditional on that training run.

    Parameters
    ----------
    a, b : array_like, shape (S, Q)
        Per-query scores of methods A and B (see :func:`per_query_scores`), seeds paired by row,
        queries by column. Finite values; ``S >= 1``, ``Q >= 2``.
    n_resamples : int, default 10_000
        Number of bootstrap replicates (drawn in chunks, memory bounded).
    seed : int, default 0
        Seed of the NumPy generator; results are deterministic given it.
    confidence : float, default 0.95
        Level of ``ci_low, ci_high``.
    calibrate : bool, default True
        Apply the variance and Student-t calibration described above.

    Returns
    -------
    BootstrapResult
        ``difference``, ``ci_low``, ``ci_high``, ``ci90_low``, ``ci90_high``, ``p_value``,
        ``se`` (standard deviation of the replicates), ``n_seeds``, ``n_queries``, ``confidence``,
        ``df``, ``method`` and ``replicates`` (shape ``(n_resamples,)``).

    Raises
    ------
    ValueError
        Different shapes, not 2-d, fewer than 2 queries, NaN or inf, bad options.

    References
    ----------
    .. [1] Bouthillier, X., Delaunay, P., Bronzi, M., et al. (2021). Accounting for variance in
       machine learning benchmarks. *Proceedings of Machine Learning and Systems 3* (MLSys 2021).
    .. [2] Davison, A. C., & Hinkley, D. V. (1997). *Bootstrap Methods and their Application*,
       sec. 3.8 (hierarchical data) and eq. 4.11. Cambridge University Press.
    .. [3] Owen, A. B. (2007). The pigeonhole bootstrap. *Annals of Applied Statistics* 1(2),
       386-411.
    .. [4] Satterthwaite, F. E. (1946). An approximate distribution of estimates of variance
       components. *Biometrics Bulletin* 2(6), 110-114.
    .. [5] Hesterberg, T. C. (2015). What teachers should know about the bootstrap: resampling in
       the undergraduate statistics curriculum. *The American Statistician* 69(4), 371-386.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> b = rng.normal(0.5, 0.1, size=(5, 40))
    >>> a = b + 0.05 + rng.normal(0.0, 0.01, size=(5, 1))   # A better by 0.05, seed effects
    >>> res = hierarchical_bootstrap(a, b, n_resamples=2000, seed=1)
    >>> round(res.difference, 3), res.n_seeds, res.n_queries
    (0.047, 5, 40)
    >>> bool(res.ci_low > 0), bool(res.p_value < 0.05)
    (True, True)
    """
    _check_options(n_resamples, confidence)
    d = _check_pair(a, b)
    s, q = d.shape
    rng = np.random.default_rng(seed)
    t, alpha, beta, ms_seed, ms_query, ms_error, _, df = _variance_components(d)
    reps = np.empty(n_resamples)
    if calibrate:
        c_seed = math.sqrt(s / (s - 1)) if s > 1 else 0.0
        if s == 1:
            c_query = math.sqrt(q / (q - 1))
        else:
            c_query = math.sqrt(q / (q - 1) * max(ms_query - ms_error, 0.0) / ms_query) if ms_query > 0 else 0.0
        for lo, hi in _chunks(n_resamples, s + q):
            ws, wq = _counts(rng, s, hi - lo), _counts(rng, q, hi - lo)
            reps[lo:hi] = t + c_seed * (ws @ alpha) / s + c_query * (wq @ beta) / q
        method = "hierarchical"
    else:
        df = math.inf
        for lo, hi in _chunks(n_resamples, s + 2 * q):
            ws, wq = _counts(rng, s, hi - lo), _counts(rng, q, hi - lo)
            reps[lo:hi] = np.einsum("rq,rq->r", ws @ d, wq) / (s * q)
        method = "hierarchical-percentile"
    return _result(t, reps, df, confidence, s, q, method)


def pooled_bootstrap(a, b, n_resamples: int = 10_000, seed: int = 0, confidence: float = 0.95) -> BootstrapResult:
    """Paired bootstrap that pools the ``S * Q`` (seed, query) cells as independent units.

    The repository's earlier method, kept for comparison: all cells of ``a - b`` are resampled with
    replacement as one flat sample and the percentile interval of the mean is reported. It ignores
    that cells of one seed share that seed's training run and that cells of one query share that
    query, so its interval is too narrow whenever seeds or queries matter (anticonservative); it
    is the right bootstrap only for ``S = 1`` with independent queries.

    Parameters
    ----------
    a, b : array_like, shape (S, Q)
        As for :func:`hierarchical_bootstrap`.
    n_resamples : int, default 10_000
    seed : int, default 0
    confidence : float, default 0.95

    Returns
    -------
    BootstrapResult
        Same fields as :func:`hierarchical_bootstrap`, ``df = inf`` (no calibration), ``method =
        "pooled"``; the p-value inverts the percentile interval.

    References
    ----------
    .. [1] Efron, B., & Tibshirani, R. J. (1993). *An Introduction to the Bootstrap*, ch. 13 and
       16. Chapman & Hall.

    Examples
    --------
    >>> a = np.array([[0.5, 1.0, 0.25, 1.0], [1.0, 0.5, 0.5, 1.0]])
    >>> b = np.array([[0.5, 0.5, 0.25, 1.0], [0.5, 0.5, 0.5, 1.0]])
    >>> res = pooled_bootstrap(a, b, n_resamples=1000, seed=0)
    >>> res.difference, res.method, res.n_seeds * res.n_queries
    (0.125, 'pooled', 8)
    """
    _check_options(n_resamples, confidence)
    d = _check_pair(a, b)
    s, q = d.shape
    flat = d.ravel()
    n = flat.size
    rng = np.random.default_rng(seed)
    reps = np.empty(n_resamples)
    for lo, hi in _chunks(n_resamples, n):
        reps[lo:hi] = flat[rng.integers(0, n, size=(hi - lo, n))].mean(axis=1)
    return _result(float(flat.mean()), reps, math.inf, confidence, s, q, "pooled")


def seed_bootstrap(a, b, n_resamples: int = 10_000, seed: int = 0, confidence: float = 0.95) -> BootstrapResult:
    """Paired bootstrap over training seeds of one number per seed (e.g. an AUROC, a mean log κ).

    The seed level of :func:`hierarchical_bootstrap` alone, with its calibration: seeds are
    resampled with replacement, the replicates are rescaled by ``sqrt(S / (S - 1))`` and the
    interval widened by ``t_{S-1} / z``, so that it approximates the paired Student-t interval
    where the percentile interval of a few seeds is too narrow (Davison & Hinkley 1997, sec. 3.8).
    Computed as :func:`hierarchical_bootstrap` of ``(S, 2)`` arrays with two identical query
    columns (no query variance; Satterthwaite's df is then ``S - 1``).

    Parameters
    ----------
    a, b : array_like, shape (S,)
        Per-seed values of methods A and B, paired by position; finite, ``S >= 2``.
    n_resamples, seed, confidence
        As for :func:`hierarchical_bootstrap`.

    Returns
    -------
    BootstrapResult
        As :func:`hierarchical_bootstrap`, with ``n_queries = 1`` and ``method = "seed"``.

    Examples
    --------
    >>> a, b = np.array([0.61, 0.58, 0.64, 0.60, 0.62]), np.array([0.50, 0.52, 0.49, 0.51, 0.50])
    >>> res = seed_bootstrap(a, b, n_resamples=4000, seed=0)
    >>> round(res.difference, 3), res.n_seeds, bool(res.ci_low > 0)
    (0.106, 5, True)
    """
    a, b = (np.asarray(x, dtype=np.float64) for x in (a, b))
    if a.ndim != 1 or a.shape != b.shape or a.size < 2:
        raise ValueError(f"seed_bootstrap needs two 1-d arrays of the same length >= 2 (one value per seed), got "
                         f"shapes {a.shape} and {b.shape}")
    res = hierarchical_bootstrap(np.repeat(a[:, None], 2, axis=1), np.repeat(b[:, None], 2, axis=1),
                                 n_resamples=n_resamples, seed=seed, confidence=confidence)
    return replace(res, n_queries=1, method="seed")


# --------------------------------------------------------------------------------------------
# decisions


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order.

    The ``m`` p-values are sorted, the ``i``-th smallest (``i = 1..m``) multiplied by
    ``m - i + 1``, a running maximum taken and the result capped at 1 (computed by
    ``statsmodels.stats.multitest.multipletests(method="holm")``). Rejecting where the adjusted
    value is below ``alpha`` controls the family-wise error rate at ``alpha`` under any
    dependence.

    NaN entries (comparisons that could not be made) are not part of the family: they stay NaN and
    ``m`` counts the finite entries only.

    Parameters
    ----------
    p_values : array_like, shape (m,)
        Unadjusted p-values in [0, 1], or NaN.

    Returns
    -------
    ndarray, shape (m,), float64

    Raises
    ------
    ValueError
        For a value outside [0, 1] (NaN excepted) or input that is not 1-d.

    References
    ----------
    .. [1] Holm, S. (1979). A simple sequentially rejective multiple test procedure.
       *Scandinavian Journal of Statistics* 6(2), 65-70.

    Examples
    --------
    >>> holm([0.01, 0.04, 0.03, 0.005])
    array([0.03, 0.06, 0.06, 0.02])
    >>> holm([0.01, float("nan"), 0.02])
    array([0.02,  nan, 0.02])
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_values must be 1-d, got shape {p.shape}")
    finite = ~np.isnan(p)
    if ((p[finite] < 0) | (p[finite] > 1)).any():
        raise ValueError(f"p-values must lie in [0, 1], got {p[finite][(p[finite] < 0) | (p[finite] > 1)]}")
    out = np.full(p.shape, np.nan)
    if finite.any():
        out[finite] = multipletests(p[finite], method="holm")[1]
    return out


# --------------------------------------------------------------------------------------------
# the analytic tests (decisions)


@dataclass(frozen=True)
class TTestResult:
    """Outcome of an analytic test of the mean difference ``a - b`` (one comparison or a batch).

    The studentised difference ``(T - delta) / se`` is referred to the distribution of
    ``Z / sqrt(w / V + 1 - w)``, ``Z`` standard normal and ``V ~ chi2_k / k`` independent: the
    Behrens-Fisher (fiducial) distribution of a mean whose variance is the sum of a part estimated
    with ``k`` degrees of freedom (share ``w`` of the estimate) and a part estimated so precisely
    that it is taken as known (Fisher 1935; see :func:`crossed_t_test`). ``w = 1`` is Student's t
    with ``k`` df exactly, ``w = 0`` the normal.

    Fields are Python floats for one comparison, or arrays of the batch shape ``(...)`` when the
    inputs had leading batch dimensions (:func:`crossed_t_test` on ``(..., S, Q)`` arrays).

    Attributes
    ----------
    difference : float or ndarray
        Observed mean of ``a - b``.
    se : float or ndarray
        Estimated standard error of ``difference`` (0 when ``a - b`` does not vary).
    seed_share : float or ndarray
        ``w``, the share of ``se**2`` estimated with ``seed_df`` degrees of freedom.
    seed_df : int
        ``k``: ``S - 1``, or ``Q - 1`` for a single seed (then ``w = 1``).
    df : float or ndarray
        Satterthwaite's approximate degrees of freedom of ``se**2``, reported for reading (a t with
        this df approximates the reference distribution; the tests do not use it).
    p_value : float or ndarray
        Two-sided p-value of ``H0: true difference = 0``.
    n_seeds, n_queries : int
        ``S`` and ``Q`` (``Q = 1`` for :func:`seed_t_test`).
    method : str
        ``"crossed"`` (:func:`crossed_t_test`) or ``"seed"`` (:func:`seed_t_test`).
    """

    difference: float | np.ndarray
    se: float | np.ndarray
    seed_share: float | np.ndarray
    seed_df: int
    df: float | np.ndarray
    p_value: float | np.ndarray
    n_seeds: int
    n_queries: int
    method: str

    def _stat(self, x: float, sign: float):
        """``sign * (T - x) / se``; for ``se = 0``, ``+inf`` where that is positive, else ``-inf``."""
        diff, se = (np.asarray(v, dtype=np.float64) for v in (self.difference, self.se))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(se > 0, sign * (diff - x) / np.where(se > 0, se, 1.0),
                            np.where(sign * (diff - x) > 0, np.inf, -np.inf))

    def p_above(self, x: float = 0.0):
        """One-sided p-value of ``H0: delta <= x`` against ``delta > x`` (with ``se = 0``: 0 when
        ``T > x``, else 1)."""
        return _plain(_tail(self._stat(x, 1.0), self.seed_share, self.seed_df))

    def p_below(self, x: float = 0.0):
        """One-sided p-value of ``H0: delta >= x`` against ``delta < x`` (with ``se = 0``: 0 when
        ``T < x``, else 1)."""
        return _plain(_tail(self._stat(x, -1.0), self.seed_share, self.seed_df))

    def quantile(self, g: float):
        """The upper-``g`` quantile ``c`` of the reference distribution: ``P(stat > c) = g``."""
        if not 0.0 < g < 1.0:
            raise ValueError(f"g must lie strictly between 0 and 1, got {g!r}")
        return _plain(_quantile(g, self.seed_share, self.seed_df))

    def interval(self, level: float = 0.95) -> tuple:
        """Two-sided ``level`` interval ``T -+ c_{(1 - level) / 2} se``: the values ``x`` that the
        two-sided test of ``H0: delta = x`` does not reject at ``1 - level``."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must lie strictly between 0 and 1, got {level!r}")
        half = np.asarray(self.quantile((1.0 - level) / 2.0)) * np.asarray(self.se)
        return _plain(np.asarray(self.difference) - half), _plain(np.asarray(self.difference) + half)

    def mde(self, alpha: float = 0.05, power: float = 0.8):
        """Smallest true difference the two-sided level-``alpha`` test detects with ``power``, in
        the metric's units: ``lam * se`` with ``lam`` solving ``power = P(|Z + lam| > c sqrt(w V +
        1 - w))``, ``c`` this test's critical value (for ``w = 1`` the noncentral t power of
        Student's test with ``seed_df`` df, exact; the shortcut ``(t_{alpha/2} + t_{power}) se`` of
        :func:`minimum_detectable_effect` falls short of it with few df: 71 % power instead of
        80 % at 4 df and ``alpha = 0.05 / 27``)."""
        if not (0 < alpha < 1 and 0 < power < 1):
            raise ValueError(f"alpha and power must lie in (0, 1), got {alpha!r} and {power!r}")
        c = np.asarray(self.quantile(alpha / 2.0))
        w = np.broadcast_to(np.asarray(self.seed_share, dtype=np.float64), c.shape)
        lo = np.zeros(c.shape)
        hi = c * math.sqrt(_nodes(int(self.seed_df))[0][-1]) + 10.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            enough = _power(c, mid, w, self.seed_df) >= power
            lo, hi = np.where(enough, lo, mid), np.where(enough, mid, hi)
        return _plain(0.5 * (lo + hi) * np.asarray(self.se))

    def to_dict(self) -> dict:
        """The fields as plain Python values (one comparison) or arrays (a batch)."""
        return asdict(self)


#: Gauss-Legendre nodes over log V: tail probabilities within ~1e-8 relative of Student's t down to 1e-10.
_QUAD_NODES = 200


@functools.lru_cache(maxsize=64)
def _nodes(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``v`` and weights of ``E[f(V)]``, ``V ~ chi2_k / k``: Gauss-Legendre in ``log V``
    between the ``1e-13`` and ``1 - 1e-13`` quantiles of ``V``."""
    lo, hi = (math.log(stats.chi2.ppf(g, k) / k) for g in (1e-13, 1.0 - 1e-13))
    x, weights = np.polynomial.legendre.leggauss(_QUAD_NODES)
    v = np.exp(lo + (hi - lo) * (x + 1.0) / 2.0)
    return v, stats.chi2.pdf(v * k, k) * k * v * (hi - lo) / 2.0 * weights


def _tail(z, w, k: int):
    """``P(Z / sqrt(w / V + 1 - w) > z)``, ``V ~ chi2_k / k``, elementwise over ``z`` and ``w``.

    ``w = 1``: Student's t (``scipy.special.stdtr``); ``w = 0``: the normal; in between the
    integral over ``V`` by quadrature (:func:`_nodes`).
    """
    z, w = np.broadcast_arrays(np.asarray(z, dtype=np.float64), np.asarray(w, dtype=np.float64))
    out = np.where(w >= 1.0, special.stdtr(float(k), -z), special.ndtr(-z))
    mid = (w > 0.0) & (w < 1.0) & np.isfinite(z)
    if mid.any():
        v, dens = _nodes(int(k))
        zm, wm = z[mid][:, None], w[mid][:, None]
        out = out.copy()
        out[mid] = special.ndtr(-zm / np.sqrt(wm / v + 1.0 - wm)) @ dens
    return out


def _power(c, lam, w, k: int):
    """Probability that the two-sided test with critical value ``c`` rejects when the true
    difference is ``lam`` standard errors: the studentised difference is ``(Z + lam) / sqrt(w V +
    1 - w)`` (the seed part of the variance estimated with ``k`` df; noncentral t for ``w = 1``)."""
    v, dens = _nodes(int(k))
    c, lam, w = (np.asarray(x, dtype=np.float64)[..., None] for x in (c, lam, w))
    scale = c * np.sqrt(w * v + 1.0 - w)
    return (special.ndtr(lam - scale) + special.ndtr(-scale - lam)) @ dens


def _quantile(g: float, w, k: int):
    """The ``z`` with ``_tail(z, w, k) = g``, elementwise over ``w`` (bisection between the normal
    and the Student-t quantiles, which bracket it)."""
    w = np.asarray(w, dtype=np.float64)
    a, b = float(special.ndtri(1.0 - g)), float(special.stdtrit(float(k), 1.0 - g))
    lo, hi = np.full(w.shape, min(a, b)), np.full(w.shape, max(a, b))
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        above = _tail(mid, w, k) > g
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    return 0.5 * (lo + hi)


def _plain(x):
    """A 0-d array as a Python float, any other array unchanged."""
    x = np.asarray(x, dtype=np.float64)
    return float(x) if x.ndim == 0 else x


def _t_result(diff, var, share, k: int, df, s: int, q: int, method: str) -> TTestResult:
    diff, var, share, df = (np.asarray(v, dtype=np.float64) for v in (diff, var, share, df))
    se = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = np.where(se > 0, np.abs(diff) / np.where(se > 0, se, 1.0), np.where(diff != 0, np.inf, 0.0))
    p = np.minimum(1.0, 2.0 * _tail(stat, share, k))
    return TTestResult(difference=_plain(diff), se=_plain(se), seed_share=_plain(share), seed_df=int(k), df=_plain(df),
                       p_value=_plain(p), n_seeds=s, n_queries=q, method=method)


def crossed_t_test(a, b) -> TTestResult:
    """Analytic test of the mean difference ``a - b`` over crossed seeds and queries.

    The decisions of the study (differences, Holm, TOST) come from this test. Model: ``d[s, q] =
    a - b = delta + u_s + v_q + e_sq`` with independent random seed effects ``u_s`` (a training run
    is better or worse overall), query effects ``v_q`` (the method x query interaction shared by
    every seed: a query on which A beats B does so under every seed) and residuals ``e_sq``. The
    grand mean ``T`` has variance ``sigma_u^2 / S + sigma_v^2 / Q + sigma_e^2 / (S Q)``, estimated
    by ``se^2 = A + B`` from the two-way ANOVA mean squares (Searle et al. 1992): ``A = MS_seed /
    (S Q)``, which carries the seed effects and the residuals and has ``k = S - 1`` degrees of
    freedom, and ``B = max(MS_query - MS_error, 0) / (S Q)``, the interaction's part, estimated
    from about ``(S - 1)(Q - 1)`` and ``Q - 1`` degrees of freedom (hundreds), so precisely that it
    is treated as known.

    Reference distribution. ``(T - delta) / se`` is referred to ``Z / sqrt(w / V + 1 - w)`` with
    ``w = A / (A + B)`` and ``V ~ chi2_k / k``: the Behrens-Fisher distribution in Fisher's
    fiducial form (Fisher 1935; Sukhatme 1938) for a sum of two variance parts, one with ``k`` df
    and one known. It is Student's t with ``S - 1`` df when the seed part carries the whole
    variance (no interaction: ``T / se`` is then the one-sample t-test on the ``S`` seed means,
    exact under normal seed effects), and tends to the normal as the interaction dominates.

    Why this and not the alternatives (simulations with ``S = 5``, ``Q = 209``, 50,000 null data
    sets each; tests/test_statistics.py reruns smaller versions):

    * the bootstrap's p-value: resampling 5 seeds gives bounded tails, too small p-values exactly
      where Holm's thresholds decide (issue 24: 0.35 % rejections at ``0.05 / 27``, nominal
      0.19 %; 0.30 % at ``0.05 / 54``, nominal 0.09 %);
    * Student's t with Satterthwaite's (1946) plug-in degrees of freedom: exact when the seeds
      dominate, but liberal with a method x query interaction, because the estimated df is large
      exactly when the seed mean square, and so ``se``, came out small (measured 0.38 % at
      ``0.05 / 54``, four times nominal, with an interaction of 22 % of the variance);
    * a seed-level t-test (one mean per seed, ``S - 1`` df): exact for this test set's difference,
      but leaves out the interaction's variance ``sigma_v^2 / Q`` when inference is about new
      queries, as the protocol's two-level bootstrap intends;
    * Student's t with ``S - 1`` df on ``se``: valid but far too conservative when the interaction
      carries much of the variance (0.03 % at ``0.05 / 9``).

    This test measured 0.560 / 0.200 / 0.094 % (seeds dominant) and 0.442 / 0.134 / 0.070 % (with
    an interaction) at ``0.05 / 9``, ``/ 27``, ``/ 54`` (nominal 0.556 / 0.185 / 0.093 %), and at
    most slightly conservative in the other regimes (table in tests/test_statistics.py). The two-level bootstrap
    (:func:`hierarchical_bootstrap`) is kept for the reported 95 % and 90 % intervals, where it is
    calibrated. :attr:`TTestResult.df` reports Satterthwaite's df for reading.

    Parameters
    ----------
    a, b : array_like, shape (..., S, Q)
        Per-query scores of methods A and B, seeds paired by row, queries by column; finite,
        ``S >= 1``, ``Q >= 2``. Leading dimensions are a batch of independent comparisons
        (vectorised simulations). With ``S = 1`` the test is the paired t-test over queries
        (``Q - 1`` df), conditional on that one training run.

    Returns
    -------
    TTestResult
        ``method = "crossed"``; fields of the batch shape.

    Raises
    ------
    ValueError
        Different shapes, fewer than 2 dimensions, fewer than 2 queries, NaN or inf.

    References
    ----------
    .. [1] Fisher, R. A. (1935). The fiducial argument in statistical inference. *Annals of
       Eugenics* 6(4), 391-398.
    .. [2] Sukhatme, P. V. (1938). On Fisher and Behrens' test of significance for the difference
       in means of two normal samples. *Sankhya* 4(1), 39-48.
    .. [3] Satterthwaite, F. E. (1946). An approximate distribution of estimates of variance
       components. *Biometrics Bulletin* 2(6), 110-114.
    .. [4] Searle, S. R., Casella, G., & McCulloch, C. E. (1992). *Variance Components*, ch. 4
       (balanced crossed classifications). Wiley.
    .. [5] Judd, C. M., Westfall, J., & Kenny, D. A. (2012). Treating stimuli as a random factor in
       social psychology. *Journal of Personality and Social Psychology* 103(1), 54-69.

    Examples
    --------
    Seed effects only: the test is the one-sample t-test on the seed means.

    >>> d = np.repeat(np.array([[0.02], [0.05], [0.01], [0.04], [0.03]]), 10, axis=1)
    >>> res = crossed_t_test(d, np.zeros_like(d))
    >>> round(res.difference, 3), res.seed_share, res.seed_df, round(res.p_value, 4)
    (0.03, 1.0, 4, 0.0132)
    >>> from scipy import stats
    >>> round(float(stats.ttest_1samp(d[:, 0], 0.0).pvalue), 4)
    0.0132
    """
    d = _check_pair(a, b, batch=True)
    s, q = d.shape[-2:]
    t, ms_seed, ms_query, ms_error = _mean_squares(d)
    var, df = _variance_of_mean(s, q, ms_seed, ms_query, ms_error)
    if s == 1:  # the query-level t-test of one run
        return _t_result(t, var, np.ones_like(var), q - 1, df, s, q, "crossed")
    seed_part = ms_seed / (s * q)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(var > 0, seed_part / np.where(var > 0, var, 1.0), 1.0)
    return _t_result(t, var, np.clip(share, 0.0, 1.0), s - 1, df, s, q, "crossed")


def seed_t_test(a, b) -> TTestResult:
    """Paired Student t-test over training seeds of one number per seed (an AUROC, a mean log κ).

    ``t = mean(d) / (sd(d) / sqrt(S))`` with ``S - 1`` degrees of freedom, ``d = a - b``; the
    decisions of the κ tests (docs/study.md §6), whose intervals come from :func:`seed_bootstrap`.

    Parameters
    ----------
    a, b : array_like, shape (..., S)
        Per-seed values, paired by position; finite, ``S >= 2``.

    Returns
    -------
    TTestResult
        ``method = "seed"``, ``n_queries = 1``.

    References
    ----------
    .. [1] Student (1908). The probable error of a mean. *Biometrika* 6(1), 1-25.

    Examples
    --------
    >>> res = seed_t_test([0.61, 0.58, 0.64, 0.60, 0.62], [0.50, 0.52, 0.49, 0.51, 0.50])
    >>> round(res.difference, 3), res.seed_df, bool(res.p_value < 0.01)
    (0.106, 4, True)
    """
    a, b = (np.asarray(x, dtype=np.float64) for x in (a, b))
    if a.shape != b.shape or a.ndim < 1 or a.shape[-1] < 2:
        raise ValueError(f"seed_t_test needs two arrays of the same shape (..., S), S >= 2 (one value per seed), got "
                         f"shapes {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("a and b must not contain NaN or inf")
    d = a - b
    s = d.shape[-1]
    return _t_result(d.mean(axis=-1), d.var(axis=-1, ddof=1) / s, np.ones(d.shape[:-1]), s - 1,
                     np.full(d.shape[:-1], float(s - 1)), s, 1, "seed")


def chance_level(metric: str, gallery_size: int) -> float:
    """Expected value of a retrieval metric when the true item's rank is uniform on ``1..N``.

    ``MRR``: ``H_N / N`` (the harmonic number over ``N``); ``R@k``: ``100 min(k, N) / N``.

    Parameters
    ----------
    metric : str
        ``"MRR"`` or ``"R@k"`` as for :func:`per_query_scores`.
    gallery_size : int
        ``N >= 1``, the number of candidates each query ranks.

    Returns
    -------
    float

    Examples
    --------
    >>> round(chance_level("MRR", 259), 4), chance_level("R@10", 200)
    (0.0237, 5.0)
    """
    if isinstance(gallery_size, bool) or not isinstance(gallery_size, (int, np.integer)) or gallery_size < 1:
        raise ValueError(f"gallery_size must be an integer >= 1, got {gallery_size!r}")
    ranks = np.arange(1, int(gallery_size) + 1, dtype=np.float64)
    return float(per_query_scores(ranks, metric).mean())


def at_floor(b, chance: float, confidence: float = 0.95) -> bool:
    """Whether Baseline's mean metric is not shown above chance: the lower end of its
    ``confidence`` interval (:func:`crossed_t_test` of ``b`` against the constant ``chance``) is
    at or below ``chance``.

    A comparison of two models at the floor says nothing about the methods: both are at chance
    and any two such models are "equivalent". Its verdict is therefore "at floor", never
    "equivalent" (:func:`verdict`).

    Parameters
    ----------
    b : array_like, shape (S, Q)
        Baseline's per-query scores.
    chance : float
        The metric's chance value (:func:`chance_level`).
    confidence : float, default 0.95

    Returns
    -------
    bool

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ranks = rng.integers(1, 260, size=(5, 259))             # uniform ranks: a model at chance
    >>> at_floor(per_query_scores(ranks, "MRR"), chance_level("MRR", 259))
    True
    >>> at_floor(per_query_scores(np.ceil(ranks / 10), "MRR"), chance_level("MRR", 259))
    False
    """
    b = np.asarray(b, dtype=np.float64)
    low, _ = crossed_t_test(b, np.full_like(b, float(chance))).interval(confidence)
    return bool(low <= 0.0)


def _check_margin(margin) -> float:
    if isinstance(margin, bool) or not isinstance(margin, (int, float, np.floating, np.integer)) \
            or not (margin > 0 and math.isfinite(margin)):
        raise ValueError(f"margin must be a finite number > 0, got {margin!r}")
    return float(margin)


def equivalence(test: TTestResult, margin: float, alpha: float = 0.05) -> dict:
    """Equivalence by two one-sided t-tests (TOST) within ``(-margin, +margin)``.

    ``p_lower`` tests ``H0: delta <= -margin`` and ``p_upper`` tests ``H0: delta >= +margin``,
    both by the analytic test ``test`` (:func:`crossed_t_test` or :func:`seed_t_test`); the TOST
    p-value is the larger. ``p_tost < alpha`` exactly when the ``1 - 2 alpha`` t interval lies
    inside the margin. Within a family the TOST p-values are Holm-adjusted before the verdict
    (:func:`decide_family`).

    Parameters
    ----------
    test : TTestResult
        One comparison (scalar fields).
    margin : float
        Smallest difference that matters (metric units: MRR units, or percentage points for R@k).
    alpha : float, default 0.05

    Returns
    -------
    dict
        ``{"equivalent": bool, "p_tost": float, "p_lower": float, "p_upper": float,
        "interval": (low, high), "margin": float}``; ``interval`` is the ``1 - 2 alpha`` t interval.

    References
    ----------
    .. [1] Schuirmann, D. J. (1987). A comparison of the two one-sided tests procedure and the
       power approach for assessing the equivalence of average bioavailability. *Journal of
       Pharmacokinetics and Biopharmaceutics* 15(6), 657-680.
    .. [2] Lakens, D. (2017). Equivalence tests: a practical primer for t tests, correlations,
       and meta-analyses. *Social Psychological and Personality Science* 8(4), 355-362.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> b = rng.normal(0.5, 0.1, size=(4, 200))
    >>> a = b + rng.normal(0.0, 0.01, size=(4, 200))          # same method up to noise
    >>> eq = equivalence(crossed_t_test(a, b), margin=0.01)
    >>> eq["equivalent"], bool(eq["p_tost"] < 0.05)
    (True, True)
    >>> equivalence(crossed_t_test(a, b), margin=0.0001)["equivalent"]
    False
    """
    margin = _check_margin(margin)
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must lie in (0, 0.5), got {alpha!r}")
    p_lower, p_upper = float(test.p_above(-margin)), float(test.p_below(margin))
    p_tost = max(p_lower, p_upper)
    lo, hi = test.interval(1.0 - 2.0 * alpha)
    return {"equivalent": bool(p_tost < alpha), "p_tost": p_tost, "p_lower": p_lower, "p_upper": p_upper,
            "interval": (float(lo), float(hi)), "margin": margin}


def minimum_detectable_effect(se: float, alpha: float = 0.05, power: float = 0.8, df: float | None = None) -> float:
    """Smallest true difference a two-sided level-``alpha`` test detects with the given power.

    ``MDE = (z_{1 - alpha/2} + z_{power}) * se`` (normal approximation); with ``df`` the
    Student-t quantiles replace the normal ones, ``(t_{df, 1 - alpha/2} + t_{df, power}) * se``,
    which is larger for few degrees of freedom (about 3.7 se instead of 2.8 se at ``df = 4``).
    A true difference of this size is found significant in ``power`` of repeated experiments
    (e.g. 80 %); smaller ones are likely to come out "inconclusive" rather than "equivalent".

    Parameters
    ----------
    se : float or array_like
        Standard error of the difference (e.g. ``BootstrapResult.se``), >= 0.
    alpha : float, default 0.05
    power : float, default 0.8
    df : float, optional
        Degrees of freedom for the t version (``None`` or ``inf``: normal).

    Returns
    -------
    float or ndarray, same shape as ``se``

    References
    ----------
    .. [1] Cohen, J. (1988). *Statistical Power Analysis for the Behavioral Sciences*, 2nd ed.,
       ch. 2. Lawrence Erlbaum.

    Examples
    --------
    >>> round(minimum_detectable_effect(1.0), 4)
    2.8016
    >>> round(minimum_detectable_effect(0.5, alpha=0.05, power=0.9), 4)
    1.6208
    >>> round(minimum_detectable_effect(1.0, df=4), 4)
    3.7174
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    if not 0 < power < 1:
        raise ValueError(f"power must lie in (0, 1), got {power!r}")
    se_arr = np.asarray(se, dtype=np.float64)
    if np.isnan(se_arr).any() or (se_arr < 0).any():
        raise ValueError(f"se must be >= 0, got {se!r}")
    if df is None or math.isinf(df):
        mult = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    else:
        if not df > 0:
            raise ValueError(f"df must be > 0, got {df!r}")
        mult = stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)
    out = mult * se_arr
    return float(out) if out.ndim == 0 else out


VERDICTS = ("equivalent", "gain", "harm", "at floor", "inconclusive")


def verdict(difference: float, p_holm: float, p_tost_holm: float, alpha: float = 0.05, floor: bool = False) -> str:
    """The verdict of one comparison, by the rules of docs/study.md §6 (the first that applies).

    1. ``"equivalent"``: the Holm-adjusted TOST p-value is below ``alpha`` and Baseline is not at
       the floor. A difference that is also significant is still "equivalent" (a trivial one).
    2. ``"gain"`` / ``"harm"``: the Holm-adjusted p-value of the difference is below ``alpha``
       (sign of ``difference``).
    3. ``"at floor"``: Baseline is not shown above chance (:func:`at_floor`): two models at chance
       are alike whatever the methods, so this is never reported as "equivalent".
    4. ``"inconclusive"``: otherwise.

    The study (:mod:`mmkit.analysis.study`) and :func:`compare` / :func:`compare_family` decide with
    this one function, through :func:`decide_family`. NaN p-values count as not significant.

    Parameters
    ----------
    difference : float
        The observed mean difference A - B.
    p_holm, p_tost_holm : float
        The p-values of the difference (:func:`crossed_t_test`) and of the TOST
        (:func:`equivalence`), each Holm-adjusted over the family (:func:`holm`).
    alpha : float, default 0.05
    floor : bool, default False
        Baseline (B) is at the floor (:func:`at_floor`).

    Returns
    -------
    str
        One of :data:`VERDICTS`.

    References
    ----------
    .. [1] Lakens, D., Scheel, A. M., & Isager, P. M. (2018). Equivalence testing for
       psychological research: a tutorial. *Advances in Methods and Practices in Psychological
       Science* 1(2), 259-269.

    Examples
    --------
    >>> verdict(0.004, p_holm=0.001, p_tost_holm=0.01)
    'equivalent'
    >>> verdict(0.004, p_holm=0.001, p_tost_holm=0.01, floor=True)
    'gain'
    >>> verdict(-0.001, p_holm=0.9, p_tost_holm=0.01, floor=True)
    'at floor'
    """
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must lie in (0, 0.5), got {alpha!r}")

    def below(p) -> bool:
        return p is not None and not math.isnan(p) and p < alpha

    if below(p_tost_holm) and not floor:
        return "equivalent"
    if below(p_holm) and difference != 0:
        return "gain" if difference > 0 else "harm"
    return "at floor" if floor else "inconclusive"


def decide_family(tests, margins, floors=None, alpha: float = 0.05, power: float = 0.8) -> list[dict]:
    """Holm over one family of analytic tests, the TOST of each, its MDE and its :func:`verdict`.

    The p-values of the differences are Holm-adjusted together, and so are the TOST p-values
    (docs/study.md §6). The minimum detectable effect is taken at the strictest Holm step,
    ``alpha / m`` two-sided, with Student-t quantiles at each test's degrees of freedom
    (:func:`minimum_detectable_effect`).

    Parameters
    ----------
    tests : sequence of TTestResult
        The ``m`` comparisons of the family (scalar fields).
    margins : float or sequence of float
        One equivalence margin for all, or one per test.
    floors : sequence of bool, optional
        Whether each comparison's Baseline is at the floor (:func:`at_floor`); default none.
    alpha, power : float

    Returns
    -------
    list of dict
        Per test: ``p``, ``p_holm``, ``p_tost``, ``p_tost_holm``, ``mde``, ``at_floor`` and ``verdict``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> b = rng.normal(0.5, 0.1, size=(5, 200))
    >>> out = decide_family([crossed_t_test(b + 0.05, b), crossed_t_test(b, b)], margins=0.01)
    >>> [o["verdict"] for o in out]
    ['gain', 'equivalent']
    """
    tests = list(tests)
    m = len(tests)
    if not m:
        raise ValueError("a family needs at least one test")
    margin_of = list(margins) if np.ndim(margins) else [margins] * m
    floors = [False] * m if floors is None else [bool(f) for f in floors]
    if len(margin_of) != m or len(floors) != m:
        raise ValueError(f"need one margin and one floor flag per test ({m}), got {len(margin_of)} and {len(floors)}")
    p = np.array([float(t.p_value) for t in tests])
    p_tost = np.array([equivalence(t, mg, alpha=alpha)["p_tost"] for t, mg in zip(tests, margin_of)])
    p_holm, p_tost_holm = holm(p), holm(p_tost)
    out = []
    for i, t in enumerate(tests):
        out.append({"p": float(p[i]), "p_holm": float(p_holm[i]), "p_tost": float(p_tost[i]),
                    "p_tost_holm": float(p_tost_holm[i]),
                    "mde": t.mde(alpha=alpha / m, power=power),
                    "at_floor": floors[i],
                    "verdict": verdict(float(t.difference), p_holm[i], p_tost_holm[i], alpha=alpha, floor=floors[i])})
    return out


def compare(a, b, margin: float, n_resamples: int = 10_000, seed: int = 0, confidence: float = 0.95,
            alpha: float = 0.05, power: float = 0.8, chance: float | None = None) -> dict:
    """Everything about one comparison of A against B: a family of one (:func:`compare_family`).

    Parameters
    ----------
    a, b : array_like, shape (S, Q)
    margin : float
        Equivalence margin in the metric's units.
    n_resamples, seed, confidence
        Passed to :func:`hierarchical_bootstrap` (the reported intervals).
    alpha : float, default 0.05
        Level of the tests (difference and TOST).
    power : float, default 0.8
        For the minimum detectable effect.
    chance : float, optional
        The metric's chance value (:func:`chance_level`): with it, a Baseline ``b`` at the floor
        (:func:`at_floor`) gives the verdict "at floor" instead of "equivalent" or "inconclusive".

    Returns
    -------
    dict
        As each value of :func:`compare_family`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> b = rng.normal(0.5, 0.1, size=(4, 200))
    >>> out = compare(b - 0.05, b, margin=0.01, n_resamples=1000)
    >>> out["verdict"], round(out["difference"], 3)
    ('harm', -0.05)
    """
    return compare_family({"": (a, b)}, margin, n_resamples=n_resamples, seed=seed, confidence=confidence, alpha=alpha,
                          power=power, chance=chance)[""]


def compare_family(results: Mapping[str, tuple], margins, n_resamples: int = 10_000, seed: int = 0,
                   confidence: float = 0.95, alpha: float = 0.05, power: float = 0.8,
                   chance: float | Mapping[str, float] | None = None) -> dict[str, dict]:
    """Every comparison of one family, decided as the study decides (:func:`decide_family`).

    Per comparison: the analytic test (:func:`crossed_t_test`) for the p-value and the TOST, the
    two-level bootstrap (:func:`hierarchical_bootstrap`, the same ``seed`` for each) for the
    reported 95 % and 90 % intervals; Holm over the family for both the differences and the TOSTs;
    the MDE at the strictest Holm step; the :func:`verdict`.

    Parameters
    ----------
    results : mapping of str to (a, b)
        Name of each comparison -> its two ``(S, Q)`` score arrays.
    margins : float or mapping of str to float
        One equivalence margin for all, or one per name.
    n_resamples, seed, confidence, alpha, power
        As for :func:`compare`.
    chance : float or mapping of str to float, optional
        Chance value of the metric (one for all or one per name), for the floor check.

    Returns
    -------
    dict of str to dict
        In the order of ``results``. Each: ``difference``, ``se``, ``df``, ``p_value`` (the
        analytic test's), ``n_seeds``, ``n_queries``; the bootstrap's ``ci_low``, ``ci_high``,
        ``ci90_low``, ``ci90_high``, ``confidence`` and ``p_bootstrap``; ``margin``, ``p_holm``,
        ``p_tost``, ``p_tost_holm``, ``equivalent`` (Holm-adjusted TOST below ``alpha``), ``mde``,
        ``at_floor`` and ``verdict``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> b = rng.normal(0.5, 0.1, size=(4, 200))
    >>> fam = compare_family({"up": (b + 0.05, b), "same": (b, b)}, margins=0.01, n_resamples=1000)
    >>> {name: out["verdict"] for name, out in fam.items()}
    {'up': 'gain', 'same': 'equivalent'}
    """
    if not results:
        raise ValueError("results must name at least one comparison")
    names = list(results)

    def per_name(value, what):
        if isinstance(value, Mapping):
            missing = [n for n in names if n not in value]
            if missing:
                raise ValueError(f"no {what} for {missing}")
            return [value[n] for n in names]
        return [value] * len(names)

    margin_of = [_check_margin(m) for m in per_name(margins, "margin")]
    chance_of = per_name(chance, "chance")
    tests, boots, floors = [], [], []
    for n, c in zip(names, chance_of):
        pair = results[n]
        if len(pair) != 2:
            raise ValueError(f"results[{n!r}] must be a pair (a, b)")
        tests.append(crossed_t_test(*pair))
        boots.append(hierarchical_bootstrap(*pair, n_resamples=n_resamples, seed=seed, confidence=confidence))
        floors.append(c is not None and at_floor(pair[1], c))
    decided = decide_family(tests, margin_of, floors, alpha=alpha, power=power)
    out = {}
    for n, t, boot, mg, dec in zip(names, tests, boots, margin_of, decided):
        row = t.to_dict()
        del row["method"]
        row.update(ci_low=boot.ci_low, ci_high=boot.ci_high, ci90_low=boot.ci90_low, ci90_high=boot.ci90_high,
                   confidence=boot.confidence, p_bootstrap=boot.p_value, margin=mg,
                   equivalent=dec["p_tost_holm"] < alpha, **{k: v for k, v in dec.items() if k != "p"})
        out[n] = row
    return out
