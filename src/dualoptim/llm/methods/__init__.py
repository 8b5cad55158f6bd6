"""LLM unlearning losses, one file each, registered by name where defined.

Forget: ``ga``, ``npo``, ``me``, ``dpo``, ``idk``. Retain: ``gd``, ``ap``, ``kl``.
A method is ``"<forget>+<retain>"``; the paper's five are GA+GD, NPO+GD, ME+GD, DPO+GD, IDK+AP.
"""

from . import ap, dpo, ga, gd, idk, kl, me, npo  # noqa: F401  (registration)
from .base import LOSSES, LossInfo, get_loss, list_losses, register_loss, seq_logprob, token_logprobs

PAPER_METHODS = ("ga+gd", "npo+gd", "me+gd", "dpo+gd", "idk+ap")
# (c_f, c_r) from the paper where stated (ME+GD 0.1/1.0, IDK+AP 1.0/1.0); 1/1 otherwise.
DEFAULT_COEFS = {"me+gd": (0.1, 1.0)}

__all__ = ["DEFAULT_COEFS", "LOSSES", "PAPER_METHODS", "LossInfo", "get_loss", "list_losses", "register_loss",
           "seq_logprob", "token_logprobs"]
