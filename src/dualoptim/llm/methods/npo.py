"""NPO: L_f = -(2/beta) log sigmoid(-beta (log pi(a|q) - log pi_ref(a|q))), summed answer log-probs."""

from .base import logsigmoid, ref_seq_logprob, register_loss, seq_logprob


@register_loss("forget", "npo", needs_ref=True)
def npo_loss(model, batch, ref=None, beta=0.1):
    """Negative preference optimisation against the frozen original model."""
    ratio = seq_logprob(model, batch["qa"])[0] - ref_seq_logprob(ref, batch["qa"])
    return -(2.0 / beta) * logsigmoid(-beta * ratio)
