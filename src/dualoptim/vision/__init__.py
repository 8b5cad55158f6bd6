"""Image-classification unlearning: data, forget sets, models, training, metrics, checkpoints, CLI.

Submodules (import what you need; heavy optional stacks load lazily):

- ``data``: ``load_dataset``, ``list_datasets``, ``ImageData``, ``TensorLoader``, ``make_augment``
- ``forget``: ``make_forget_split``, ``ForgetSplit``
- ``models``: ``create_model``, ``list_models``
- ``train``: ``TrainConfig``, ``train_classifier``, ``seed_everything``
- ``metrics``: ``evaluate``, ``accuracy``, ``mia_entropy_lr``, ``mia_svc_confidence``
- ``checkpoint``: ``save_classifier``, ``load_classifier``, ``ClassifierMeta``, ``dataset_for``
- ``cli``: ``register(subparsers)`` adds ``train``, ``retrain``, ``eval`` to the ``dualoptim`` command
"""

from .data import ImageData, TensorLoader, list_datasets, load_dataset, make_augment
from .forget import ForgetSplit, make_forget_split
from .models import create_model, list_models
from .train import TrainConfig, seed_everything, train_classifier

__all__ = [
    "ForgetSplit", "ImageData", "TensorLoader", "TrainConfig", "create_model", "list_datasets", "list_models",
    "load_dataset", "make_augment", "make_forget_split", "seed_everything", "train_classifier",
]
