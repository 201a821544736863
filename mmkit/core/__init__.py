"""Numerics and safe files, the bottom layer (imports torch, numpy and the standard library only).

:mod:`~mmkit.core.special` (log-Bessel functions), :mod:`~mmkit.core.distributions` (von Mises-Fisher,
hyperspherical uniform, Power Spherical), :mod:`~mmkit.core.ssw` (circle optimal transport and the
spherical sliced-Wasserstein distance), :mod:`~mmkit.core.metrics` (ranks, R@k, MRR, MR),
:mod:`~mmkit.core.io` (atomic writes, checksums) and :mod:`~mmkit.core.faults` (fault injection for
the reliability tests).
"""
