"""Training: the loop (:func:`~mmkit.training.loop.fit`) and data-parallel execution under torchrun
(:mod:`~mmkit.training.distributed`). Nothing below this layer imports it: inference loads runs
through :class:`mmkit.model.run.Run`."""
from mmkit.training.loop import NonFiniteLossError, fit

__all__ = ["fit", "NonFiniteLossError"]
