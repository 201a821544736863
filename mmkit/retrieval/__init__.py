"""Retrieval: distributional scores and query fusion (:mod:`~mmkit.retrieval.scores`), the paper's
tasks (:mod:`~mmkit.retrieval.tasks`) and an ANN index for large galleries (:mod:`~mmkit.retrieval.index`)."""
from mmkit.retrieval.index import GalleryIndex
from mmkit.retrieval.scores import cosine_scores, elk_scores, fuse_vmf_product, kl_scores, score, ssw_scores
from mmkit.retrieval.tasks import complete_items, evaluate_tasks

__all__ = ["score", "fuse_vmf_product", "cosine_scores", "kl_scores", "elk_scores", "ssw_scores", "evaluate_tasks",
           "complete_items", "GalleryIndex"]
