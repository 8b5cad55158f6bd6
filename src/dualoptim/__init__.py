"""dualoptim: machine unlearning with decoupled forget/retain optimizers (DualOptim)."""

import os

# OpenMP threads that spin while waiting make 2-thread CPU training 4-10x slower whenever the cores are
# shared with any other process (measured, docs/benchmarks.md). It only takes effect if set before torch
# is first imported; an explicit user setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .optim import (  # noqa: E402
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
