"""ME (maximising entropy, untargeted): per answer position, KL(Uniform || p_theta(.|x_<t)).

KL(U || p) = -log V - (1/V) sum_v log p_v, averaged over the answer tokens of the global batch
(per-token mean; the prompt is masked). It is 0 exactly when the prediction is uniform.
"""

import math

import torch

from .base import register_loss, token_logprobs


@register_loss("forget", "me", reduction="token")
def me_loss(model, batch, ref=None, beta=0.1):
    """Push answer-position predictions towards uniform."""
    _, mask, logits = token_logprobs(model, batch["qa"])
    logp = torch.log_softmax(logits, -1)
    kl = -math.log(logp.shape[-1]) - logp.mean(-1)
    return (kl * mask).sum(1)
