"""The core of DualOptim: phase-aware optimizers and their factory."""

from .extra import Lion, Muon, PartiallySharedAdam
from .factory import (
    OptimizerInfo,
    build_optimizer,
    cosine_factor,
    get_optimizer_info,
    list_optimizers,
    phase_lambda_lr,
    register_optimizer,
)
from .phased import PHASES, DualOptimizer, PhasedOptimizer, SharedOptimizer

__all__ = [
    "PHASES", "DualOptimizer", "Lion", "Muon", "OptimizerInfo", "PartiallySharedAdam", "PhasedOptimizer",
    "SharedOptimizer", "build_optimizer", "cosine_factor", "get_optimizer_info", "list_optimizers",
    "phase_lambda_lr", "register_optimizer",
]
