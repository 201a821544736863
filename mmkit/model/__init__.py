"""Models: encoders, losses, the training configuration, the model factory, typed encodings and
the run directory (:class:`~mmkit.model.run.Run`: load a trained model and encode data without the
training loop)."""
from mmkit.model.config import ConfigError, TrainConfig
from mmkit.model.encodings import Encodings, ModalityEncoding
from mmkit.model.run import CheckpointError, Run, encode_split

__all__ = ["TrainConfig", "ConfigError", "Encodings", "ModalityEncoding", "Run", "CheckpointError", "encode_split"]
