"""dualoptim: machine unlearning with decoupled forget/retain optimizers (DualOptim)."""

from .optim import (
    DualOptimizer,
    PhasedOptimizer,
    SharedOptimizer,
    build_optimizer,
    list_optimizers,
    phase_lambda_lr,
)

__version__ = "0.1.0"


def __getattr__(name: str):
    """``dualoptim.unlearn`` loads the vision package on first use (``import dualoptim`` stays light)."""
    if name == "unlearn":
        from .vision.api import unlearn

        return unlearn
    raise AttributeError(f"module 'dualoptim' has no attribute {name!r}")


__all__ = [
    "DualOptimizer", "PhasedOptimizer", "SharedOptimizer", "__version__", "build_optimizer",
    "list_optimizers", "phase_lambda_lr", "unlearn",
]
