"""DPO (targeted): preferred = a refusal, rejected = the true answer, frozen reference model.

L_f = -(2/beta) log sigmoid(beta [(log pi - log pi_ref)(idk|q) - (log pi - log pi_ref)(a|q)]).
"""

from .base import logsigmoid, ref_seq_logprob, register_loss, seq_logprob


@register_loss("forget", "dpo", needs_ref=True, uses=("qa", "idk"))
def dpo_loss(model, batch, ref=None, beta=0.1):
    """Prefer the refusal over the true answer (DPO)."""
    win = seq_logprob(model, batch["idk"])[0] - ref_seq_logprob(ref, batch["idk"])
    lose = seq_logprob(model, batch["qa"])[0] - ref_seq_logprob(ref, batch["qa"])
    return -(2.0 / beta) * logsigmoid(beta * (win - lose))
