"""AP (answer preservation, for targeted methods), no reference model:

L_r = -(1/beta) log sigmoid(beta (NLL_sum(idk|q_r) - NLL_sum(a_r|q_r))).
"""

from .base import logsigmoid, register_loss, seq_logprob


@register_loss("retain", "ap", uses=("qa", "idk"))
def ap_loss(model, batch, ref=None, beta=0.1):
    """Prefer the true retain answer over a refusal."""
    nll_idk = -seq_logprob(model, batch["idk"])[0]
    nll_ans = -seq_logprob(model, batch["qa"])[0]
    return -(1.0 / beta) * logsigmoid(beta * (nll_idk - nll_ans))
