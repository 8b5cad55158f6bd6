"""The core of DualOptim: phase-aware optimizers and their factory."""

from .banked import BankedOptimizer
from .factory import (
    OptimizerInfo,
    build_optimizer,
    cosine_factor,
    get_optimizer_info,
    list_optimizers,
    phase_lambda_lr,
    register_optimizer,
)
from .lean import SGDBF16, AdamBF16, AdamWBF16, state_bytes
from .lion import Lion
from .muon import Muon
from .partially_shared_adam import PartiallySharedAdam
from .phased import PHASES, DualOptimizer, PhasedOptimizer, SharedOptimizer
from .sgd import FastSGD
from .spec import OptimSpec

__all__ = [
    "PHASES", "SGDBF16", "AdamBF16", "AdamWBF16", "BankedOptimizer", "DualOptimizer", "FastSGD", "Lion", "Muon",
    "OptimSpec", "OptimizerInfo", "PartiallySharedAdam", "PhasedOptimizer", "SharedOptimizer", "state_bytes",
    "build_optimizer", "cosine_factor", "get_optimizer_info", "list_optimizers",
    "phase_lambda_lr", "register_optimizer",
]
