"""GD (gradient descent on retain): L_r = NLL(answer | retain question), per-token mean over the batch."""

from .base import nll_sum, register_loss


@register_loss("retain", "gd", reduction="token")
def gd_loss(model, batch, ref=None, beta=0.1):
    """Keep fitting the retain answers."""
    return nll_sum(model, batch["qa"])
