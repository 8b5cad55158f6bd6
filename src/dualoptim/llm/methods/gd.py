"""GD (gradient descent on retain): L_r = NLL(answer | retain question)."""

from .base import nll, register_loss


@register_loss("retain", "gd")
def gd_loss(model, batch, ref=None, beta=0.1):
    """Keep fitting the retain answers."""
    return nll(model, batch["qa"])
