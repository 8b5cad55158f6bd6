"""DualOptim cost at LLM scale on one GPU: a ~1B-parameter Llama-config model, tokens/s and peak memory.

    python benchmarks/gpu_llama_1b.py                          # ~1.1B params, bf16 then amp: a few min on one H100
    python benchmarks/gpu_llama_1b.py --size tiny --device cpu # seconds: smoke test anywhere

Needs only torch; uses ``transformers.LlamaForCausalLM`` when transformers is importable
(``--impl own`` forces the small built-in Llama below). One unlearning iteration = one
forget step (gradient ascent) + one retain step (cross-entropy), each forward + backward +
optimizer step, on random tokens. Each optimizer configuration is measured on its own
(fresh optimizer, ``torch.cuda.reset_peak_memory_stats``) after ``--warmup`` iterations.

Precision (``--precision``, default both in turn):
* ``bf16``: parameters, gradients and torch's Adam states all in bf16 (torch rounds the states
  to nearest; the lean variants use stochastic rounding at the same 2 bytes per value).
* ``amp``: fp32 parameters/states with bf16 autocast -- the usual full-parameter setup,
  and the one where the lean (bf16 stochastic-rounding) states halve the optimizer memory.

Printed next to the paper's Table 5 (LLaMA-2 7B, full parameters: DualOptim 1.47x time,
1.44x memory of one Adam). Writes JSON to ``--out`` (default ``$OUT/gpu_llama_1b.json``
when ``$OUT`` is set).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without install

from dualoptim.io import atomic_write_text  # noqa: E402
from dualoptim.optim import build_optimizer, state_bytes  # noqa: E402

SIZES = {  # hidden, layers, heads, kv_heads, intermediate, vocab
    "1b": (2048, 16, 32, 8, 8192, 32000),    # ~1.1B parameters (Llama-3.2-1B shape, Llama-2 vocabulary)
    "100m": (768, 12, 12, 12, 2048, 8192),
    "tiny": (64, 2, 4, 2, 128, 256),
}
CONFIGS = {  # name -> build_optimizer spec
    "shared adamw": "adamw",
    "dual adamw+adamw": "adamw+adamw",
    "dual adamw+sgd": "adamw+sgd",
    "lean adamw-bf16+adamw-bf16": "adamw-bf16+adamw-bf16",
    "lean adamw-bf16+sgd-bf16": "adamw-bf16+sgd-bf16",
}
PAPER_TABLE5 = {"time": 1.47, "memory": 1.44}


class _Block(nn.Module):
    """Pre-norm Llama block: RMSNorm, grouped-query attention with RoPE, SwiGLU MLP."""

    def __init__(self, d: int, heads: int, kv: int, inter: int) -> None:
        super().__init__()
        self.heads, self.kv, self.hd = heads, kv, d // heads
        self.n1, self.n2 = nn.RMSNorm(d, eps=1e-5), nn.RMSNorm(d, eps=1e-5)
        self.q, self.o = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.k, self.v = nn.Linear(d, kv * self.hd, bias=False), nn.Linear(d, kv * self.hd, bias=False)
        self.gate, self.up = nn.Linear(d, inter, bias=False), nn.Linear(d, inter, bias=False)
        self.down = nn.Linear(inter, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        h = self.n1(x)
        q = self.q(h).view(b, t, self.heads, self.hd).transpose(1, 2)
        k = self.k(h).view(b, t, self.kv, self.hd).transpose(1, 2)
        v = self.v(h).view(b, t, self.kv, self.hd).transpose(1, 2)

        def rope(z: torch.Tensor) -> torch.Tensor:
            z1, z2 = z.chunk(2, dim=-1)
            return z * cos + torch.cat([-z2, z1], dim=-1) * sin

        a = nn.functional.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True,
                                                       enable_gqa=self.kv != self.heads)
        x = x + self.o(a.transpose(1, 2).reshape(b, t, -1))
        h = self.n2(x)
        return x + self.down(nn.functional.silu(self.gate(h)) * self.up(h))


class OwnLlama(nn.Module):
    """A minimal Llama (for machines without transformers): ``forward(ids) -> next-token loss``."""

    def __init__(self, d: int, layers: int, heads: int, kv: int, inter: int, vocab: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(_Block(d, heads, kv, inter) for _ in range(layers))
        self.norm, self.head = nn.RMSNorm(d, eps=1e-5), nn.Linear(d, vocab, bias=False)
        self.hd = d // heads

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        inv = 1.0 / (10000 ** (torch.arange(0, self.hd, 2, device=ids.device).float() / self.hd))
        ang = torch.outer(torch.arange(t, device=ids.device).float(), inv)
        ang = torch.cat([ang, ang], dim=-1)
        x = self.embed(ids)
        cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
        for blk in self.blocks:
            x = blk(x, cos, sin)
        logits = self.head(self.norm(x))[:, :-1].float()
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def build_model(size: str, impl: str) -> tuple[nn.Module, str]:
    d, layers, heads, kv, inter, vocab = SIZES[size]
    if impl in ("auto", "hf"):
        try:
            from transformers import LlamaConfig, LlamaForCausalLM
        except ImportError:
            if impl == "hf":
                raise
        else:
            cfg = LlamaConfig(vocab_size=vocab, hidden_size=d, intermediate_size=inter, num_hidden_layers=layers,
                              num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=4096,
                              tie_word_embeddings=False, attn_implementation="sdpa")
            hf = LlamaForCausalLM(cfg)

            class Wrapped(nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.lm = hf

                def forward(self, ids: torch.Tensor) -> torch.Tensor:
                    return self.lm(input_ids=ids, labels=ids).loss

            return Wrapped(), "transformers LlamaForCausalLM"
    return OwnLlama(d, layers, heads, kv, inter, vocab), "built-in Llama"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_config(model: nn.Module, spec: str, batches: list[torch.Tensor], args: argparse.Namespace,
               device: torch.device) -> dict[str, float]:
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "amp")
    opt = build_optimizer(model.parameters(), spec, 1e-6, 1e-6)

    def iteration(i: int) -> None:
        for phase, sign, ids in (("forget", -1.0, batches[(2 * i) % len(batches)]),
                                 ("retain", 1.0, batches[(2 * i + 1) % len(batches)])):
            opt.set_phase(phase)
            with autocast:
                loss = model(ids)
            (sign * loss).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    for i in range(args.warmup):
        iteration(i)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(args.iters):
        t0 = time.perf_counter()
        iteration(i)
        sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    n = sum(p.numel() for p in model.parameters())
    out = {"iter_s": med, "tokens_per_s": 2 * args.batch * args.seq / med,
           "state_bytes_per_param": state_bytes(opt) / n,
           "peak_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else float("nan")}
    return out  # the optimizer (and its state) is freed with this frame


def measure(args: argparse.Namespace, configs: list[str], device: torch.device) -> dict:
    """All ``configs`` at ``args.precision``: prints the table, returns header + results."""
    torch.manual_seed(0)
    with device:  # initialise on the target device: a 1B model's CPU init would take longer than the benchmark
        model, impl = build_model(args.size, args.impl)
    model = model.to(device=device, dtype=torch.bfloat16 if args.precision == "bf16" else torch.float32)
    n = sum(p.numel() for p in model.parameters())
    vocab = SIZES[args.size][-1]
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, vocab, (args.batch, args.seq), generator=g).to(device) for _ in range(4)]
    header = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "impl": impl, "params": n, "precision": args.precision,
              "batch": args.batch, "seq": args.seq, "iters": args.iters, "command": " ".join(sys.argv)}
    print(json.dumps(header), flush=True)
    results = {}
    for name in configs:
        t0 = time.perf_counter()
        results[name] = run_config(model, CONFIGS[name], batches, args, device)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(f"{name}: {json.dumps(results[name])} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    base = results["shared adamw"]
    print(f"\nprecision {args.precision}:\n| configuration | tokens/s | time ratio | peak GiB | memory ratio | "
          "state bytes/param | paper Table 5 (7B, full) |\n|---|---|---|---|---|---|---|")
    for name, r in results.items():
        r["time_ratio"] = r["iter_s"] / base["iter_s"]
        r["memory_ratio"] = r["peak_bytes"] / base["peak_bytes"] if not math.isnan(base["peak_bytes"]) else None
        mem = "n/a" if r["memory_ratio"] is None else f"{r['memory_ratio']:.2f}x"
        paper = "1.00x / 1.00x" if name == "shared adamw" else (
            f"{PAPER_TABLE5['time']:.2f}x / {PAPER_TABLE5['memory']:.2f}x" if name.startswith("dual adamw+adamw")
            else "-")
        print(f"| {name} | {r['tokens_per_s']:.0f} | {r['time_ratio']:.3f}x | {r['peak_bytes'] / 2**30:.2f} | "
              f"{mem} | {r['state_bytes_per_param']:.1f} | {paper} |", flush=True)
    del model, batches
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {**header, "results": results}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="1b")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default="bf16,amp", help="comma list of bf16, amp (each measured in turn)")
    ap.add_argument("--impl", choices=("auto", "hf", "own"), default="auto")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma list of: " + ", ".join(CONFIGS))
    ap.add_argument("--out", default=os.environ.get("OUT") and os.path.join(os.environ["OUT"], "gpu_llama_1b.json"),
                    help="JSON report (default: $OUT/gpu_llama_1b.json when $OUT is set)")
    args = ap.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",")]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown or "shared adamw" not in configs:
        raise SystemExit(f"--configs must include 'shared adamw'; unknown: {unknown}; valid: {list(CONFIGS)}")
    precisions = [p.strip() for p in args.precision.split(",")]
    if not precisions or set(precisions) - {"bf16", "amp"}:
        raise SystemExit(f"--precision: comma list of bf16, amp; got {args.precision!r}")
    report = {"paper_table5": PAPER_TABLE5, "runs": []}
    for precision in precisions:
        args.precision = precision
        report["runs"].append(measure(args, configs, torch.device(args.device)))
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=1))  # never half-written; NaN kept as measured
    return report


if __name__ == "__main__":
    main()
