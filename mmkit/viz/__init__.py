"""Figures: publication style and the one export function (:mod:`~mmkit.viz.style`), result plots
(:mod:`~mmkit.viz.results`) and views of the distributions on the sphere (:mod:`~mmkit.viz.sphere`)."""
