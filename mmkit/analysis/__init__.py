"""Analysis of trained runs: evaluation on the retrieval tasks (:mod:`~mmkit.analysis.evaluate`),
statistics for comparing methods (:mod:`~mmkit.analysis.statistics`), the paper's tables
(:mod:`~mmkit.analysis.reports`), training-time measurement (:mod:`~mmkit.analysis.runtime`) and
encoding new audio, scores and text (:mod:`~mmkit.analysis.new_material`)."""
