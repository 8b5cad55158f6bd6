"""KL retain term: KL(p_ref || p_theta) over the whole retain sequence, p_ref = frozen original model.

As TOFU / open-unlearning: every position of prompt and answer counts (per-token mean over the
global batch). Declared difference: padding positions are excluded (the references' ``batchmean``
over the padded tensor also averages over padding, so their value depends on the batch's padding).
"""

import torch

from .base import register_loss


def _logits(model, enc):
    return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[:, :-1].float()


@register_loss("retain", "kl", needs_ref=True, reduction="token", tokens=("qa", "sequence"))
def kl_loss(model, batch, ref=None, beta=0.1):
    """Stay close to the original model's predictions on retain data."""
    enc = batch["qa"]
    logp = torch.log_softmax(_logits(model, enc), -1)
    with torch.no_grad():
        ref_logp = torch.log_softmax(_logits(ref, enc), -1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1)
    return (kl * enc["attention_mask"][:, 1:]).sum(1)
