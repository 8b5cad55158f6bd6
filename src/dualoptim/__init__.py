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

__all__ = [
    "DualOptimizer", "PhasedOptimizer", "SharedOptimizer", "__version__", "build_optimizer",
    "list_optimizers", "phase_lambda_lr",
]
