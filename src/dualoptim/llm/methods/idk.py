"""IDK: L_f = NLL(random refusal | forget question), per-token mean over the batch."""

from .base import nll_sum, register_loss


@register_loss("forget", "idk", reduction="token", tokens=("idk", "answer"), uses=("idk",))
def idk_loss(model, batch, ref=None, beta=0.1):
    """Teach a refusal on forget questions."""
    return nll_sum(model, batch["idk"])
