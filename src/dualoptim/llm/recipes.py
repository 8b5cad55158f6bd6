"""The paper's unlearning recipes as presets (``dualoptim llm unlearn --preset paper-phi``).

Values come from the DualOptim paper's setting and its public LLM code's configs
(``LLM/config/phi1-5_tofu.yaml``, ``llama_tofu.yaml``, ``scripts/tofu/dualoptim.sh``): 5 epochs,
lr 1e-5 for both phases, per-device batch 5 x accumulation 4 x 2 GPUs = 40 examples per step,
one forget step per 5 retain steps, AdamW weight decay 0.01, bf16, max length 500, 1 epoch
linear warm-up then linear decay, LoRA r 8 / alpha 32 / dropout 0.05 when LoRA is used.
Any flag given on the command line overrides the preset. The paper's Table 12 tunes the lr per
method (down to 1.25e-6 full-parameter); those per-method values are not reproduced here --
pass ``--forget-lr``/``--retain-lr`` (docs/llm.md lists this with the other departures).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    """Defaults a preset puts under the command-line flags (``None`` = the flag's own default)."""

    template: str | None = None
    dtype: str = "fp32"
    max_length: int = 500
    unlearn_epochs: int = 5
    global_batch: int = 16
    grad_accum: int = 1
    forget_lr: float = 1e-4
    retain_lr: float | None = None
    retain_every: int = 1
    warmup_epochs: float = 0.0
    schedule: str = "constant"
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.0


_PAPER = dict(dtype="bf16", max_length=500, unlearn_epochs=5, global_batch=40, grad_accum=4, forget_lr=1e-5,
              retain_lr=1e-5, retain_every=5, warmup_epochs=1.0, schedule="linear", lora_r=8, lora_alpha=32,
              lora_dropout=0.05)
RECIPES = {
    "default": Recipe(),  # the library's defaults (tuned for the small synthetic benchmark)
    "paper-phi": Recipe(template="qa", **_PAPER),  # Phi-1.5: "Question: {q}\nAnswer: {a}"
    "paper-llama2": Recipe(template="llama2", **_PAPER),  # Llama-2: "[INST] {q} [/INST]{a}"
}


def resolve(preset: str, given: dict[str, Any]) -> dict[str, Any]:
    """The preset's values with every non-``None`` entry of ``given`` (explicit flags) on top."""
    if preset not in RECIPES:
        raise ConfigError(f"unknown preset {preset!r}; valid: {', '.join(RECIPES)}")
    values = asdict(RECIPES[preset])
    values.update({k: v for k, v in given.items() if v is not None and k in values})
    return values
