"""GA (gradient ascent): L_f = -NLL(answer | forget question)."""

from .base import nll, register_loss


@register_loss("forget", "ga")
def ga_loss(model, batch, ref=None, beta=0.1):
    """Gradient ascent on the true forget answers."""
    return -nll(model, batch["qa"])
