"""Orchestration: the ``reproduce`` plan that runs the shipped notebooks in dependency order
(:mod:`~mmkit.pipeline.reproduce`) and the study runner (:mod:`~mmkit.pipeline.study`)."""
