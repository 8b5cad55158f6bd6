"""IDK: L_f = NLL(random refusal | forget question)."""

from .base import nll, register_loss


@register_loss("forget", "idk")
def idk_loss(model, batch, ref=None, beta=0.1):
    """Teach a refusal on forget questions."""
    return nll(model, batch["idk"])
