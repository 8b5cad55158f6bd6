"""GA (gradient ascent): L_f = -NLL(answer | forget question), per-token mean over the batch (HF ``loss``)."""

from .base import nll_sum, register_loss


@register_loss("forget", "ga", reduction="token")
def ga_loss(model, batch, ref=None, beta=0.1):
    """Gradient ascent on the true forget answers."""
    return -nll_sum(model, batch["qa"])
