"""KL retain term: KL(p_ref || p_theta) on retain answer positions, p_ref = frozen original model."""

import torch

from .base import register_loss, token_logprobs


@register_loss("retain", "kl", needs_ref=True)
def kl_loss(model, batch, ref=None, beta=0.1):
    """Stay close to the original model's predictions on retain data."""
    _, mask, logits = token_logprobs(model, batch["qa"])
    with torch.no_grad():
        ref_logits = token_logprobs(ref, batch["qa"])[2]
    ref_logp, logp = torch.log_softmax(ref_logits, -1), torch.log_softmax(logits, -1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1)
    return (kl * mask).sum(1) / mask.sum(1).clamp_min(1)
