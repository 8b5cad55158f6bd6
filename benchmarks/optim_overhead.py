"""What DualOptim costs on CPU: time per unlearning iteration, peak memory, optimizer-state bytes.

    .venv/bin/python -m benchmarks.optim_overhead                 # ResNet-18 and a ~100M Llama, a few minutes
    .venv/bin/python -m benchmarks.optim_overhead --models tiny   # seconds: smoke test

One *unlearning iteration* is Algorithm 1 with T_f = T_r = 1: a forget step (gradient ascent
on a forget batch) then a retain step (cross-entropy on a retain batch), each forward +
backward + ``opt.step()`` + ``zero_grad``. Compared side by side on the same model and batches:

* ``shared adam``      one fused Adam state for both phases (the baseline, 8 bytes/param)
* ``dual adam+sgd``    DualOptimizer, fused Adam(F) + fused SGD-momentum(R) (12 bytes/param)
* ``dual adam+adam``   DualOptimizer, two fused Adams (16 bytes/param)
* ``lean bf16``        DualOptimizer, ``adam-bf16+sgd-bf16`` (bf16 states, stochastic rounding, 6 bytes/param)
* ``banked adam+sgd``  BankedOptimizer, the single-object form of ``dual adam+sgd``

Timing: all configurations live in one process and are timed round-robin (iteration i of
every configuration before iteration i+1 of any), so load from other processes on a shared
CPU hits all of them alike; medians over ``--repeats``. The forward/backward work is
identical for every configuration, so besides the raw ratio we report a decomposed ratio,
``(fb + step_config) / (fb + step_shared)`` with ``fb`` the median forward+backward time
pooled over all configurations: the same quantity with far less noise.

Memory: torch has no CPU allocator statistics, and tracemalloc does not see torch's
allocations, so each configuration runs in a fresh subprocess that reads the kernel's
peak resident set (``VmHWM``): we report peak RSS during two iterations minus the RSS
after the model and batches are built (so: optimizer state + gradients + activations +
temporaries). Exact optimizer-state bytes per parameter are counted from the tensors.

The optimizer step alone (fused vs foreach vs the default for-loop, and the lean
variants) is timed on the model's parameters with random gradients.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads distort timings on shared cores
import torch  # noqa: E402

from dualoptim.optim import BankedOptimizer, build_optimizer, state_bytes  # noqa: E402

CONFIGS: dict[str, str] = {
    "shared adam": "adam",
    "dual adam+sgd": "adam+sgd",
    "dual adam+adam": "adam+adam",
    "lean bf16": "adam-bf16+sgd-bf16",
    "banked adam+sgd": "banked:adam+sgd",
}
FORGET_LR, RETAIN_LR = 1e-5, 1e-4  # small: a random-init model must not diverge while we time it


@dataclass
class Workload:
    """A model and the two batches of one unlearning iteration."""

    name: str
    model: torch.nn.Module
    forget: tuple[torch.Tensor, torch.Tensor]
    retain: tuple[torch.Tensor, torch.Tensor]
    loss: Callable[[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]], torch.Tensor]
    note: str


def _ce(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(model(batch[0]), batch[1])


def _lm(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return model(input_ids=batch[0], labels=batch[1]).loss


def make_workload(name: str, batch: int | None = None) -> Workload:
    """``resnet18`` (CIFAR-style, 11.2M params), ``llama100m`` (~98M params) or ``tiny`` (smoke test)."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if name in ("resnet18", "tiny"):
        if name == "resnet18":
            from dualoptim.vision.models import create_model

            model, b, size = create_model("resnet18", 10, 3, 32), batch or 128, 32
        else:
            model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                        torch.nn.Linear(8 * 14 * 14, 10))
            b, size = batch or 32, 16
        model = model.to(memory_format=torch.channels_last)

        def images() -> tuple[torch.Tensor, torch.Tensor]:
            x = torch.randn(b, 3, size, size, generator=g).contiguous(memory_format=torch.channels_last)
            return x, torch.randint(0, 10, (b,), generator=g)

        return Workload(name, model, images(), images(), _ce, f"batch {b} of 3x{size}x{size}, channels_last")
    if name == "llama100m":
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(vocab_size=8192, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                          num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=512,
                          tie_word_embeddings=False)
        model = LlamaForCausalLM(cfg).float()
        b, t = (batch or 1), 128

        def tokens() -> tuple[torch.Tensor, torch.Tensor]:
            ids = torch.randint(0, cfg.vocab_size, (b, t), generator=g)
            return ids, ids

        return Workload(name, model, tokens(), tokens(), _lm, f"Llama config 12x768, vocab 8192, {b}x{t} tokens")
    raise ValueError(f"unknown model {name!r}; valid: resnet18, llama100m, tiny")


def make_optimizer(model: torch.nn.Module, spec: str) -> torch.optim.Optimizer:
    if spec.startswith("banked:"):
        forget, retain = spec.removeprefix("banked:").split("+")
        return BankedOptimizer(model.parameters(), forget, retain, FORGET_LR, RETAIN_LR)
    return build_optimizer(model.parameters(), spec, FORGET_LR, RETAIN_LR)


def iteration(w: Workload, opt: torch.optim.Optimizer) -> tuple[float, float]:
    """One forget step + one retain step; returns (forward+backward seconds, step seconds)."""
    fb = st = 0.0
    for phase, batch, sign in (("forget", w.forget, -1.0), ("retain", w.retain, 1.0)):
        opt.set_phase(phase)
        t0 = time.perf_counter()
        (sign * w.loss(w.model, batch)).backward()
        t1 = time.perf_counter()
        opt.step()
        opt.zero_grad()
        t2 = time.perf_counter()
        fb, st = fb + t1 - t0, st + t2 - t1
    return fb, st


def time_iterations(w: Workload, repeats: int, configs: list[str]) -> dict[str, dict[str, float]]:
    opts = {name: make_optimizer(w.model, CONFIGS[name]) for name in configs}
    n = sum(p.numel() for p in w.model.parameters())
    for opt in opts.values():  # warm-up: creates the states, first-call overheads
        iteration(w, opt)
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in opts}
    for _ in range(repeats):
        for name, opt in opts.items():
            samples[name].append(iteration(w, opt))
    fb_pooled = statistics.median(fb for s in samples.values() for fb, _ in s)
    out = {}
    for name, s in samples.items():
        total = [fb + st for fb, st in s]
        out[name] = {"iter_s": statistics.median(total), "iter_min_s": min(total), "iter_max_s": max(total),
                     "step_s": statistics.median(st for _, st in s), "fb_pooled_s": fb_pooled,
                     "state_bytes_per_param": state_bytes(opts[name]) / n}
    base = out["shared adam"]
    for r in out.values():
        r["ratio_raw"] = r["iter_s"] / base["iter_s"]
        r["ratio_decomposed"] = (fb_pooled + r["step_s"]) / (fb_pooled + base["step_s"])
    return out


def _vm(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def memory_probe(model: str, config: str, batch: int | None) -> dict[str, float]:
    """Run in a fresh process: peak RSS over two iterations above the RSS with model and batches built."""
    w = make_workload(model, batch)
    base = _vm("VmRSS")
    opt = make_optimizer(w.model, CONFIGS[config])
    for _ in range(2):
        iteration(w, opt)
    n = sum(p.numel() for p in w.model.parameters())
    return {"peak_delta_bytes": _vm("VmHWM") - base, "param_bytes": 4 * n,
            "state_bytes": state_bytes(opt), "params": n}


def measure_memory(model: str, batch: int | None, configs: list[str]) -> dict[str, dict[str, float]]:
    out = {}
    for config in configs:
        cmd = [sys.executable, "-m", "benchmarks.optim_overhead", "--probe", model, config,
               "--threads", str(torch.get_num_threads())]
        if batch:
            cmd += ["--batch", str(batch)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[config] = json.loads(res.stdout.strip().splitlines()[-1])
    base = out["shared adam"]["peak_delta_bytes"]
    for r in out.values():
        r["peak_ratio"] = r["peak_delta_bytes"] / base
    return out


def time_steps(w: Workload, repeats: int) -> dict[str, float]:
    """Median seconds of ``opt.step()`` alone on copies of the model's parameters with random gradients."""
    params = [torch.nn.Parameter(p.detach().clone()) for p in w.model.parameters()]
    g = torch.Generator().manual_seed(1)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    variants: dict[str, Callable[[], torch.optim.Optimizer]] = {}
    for name, cls, kw in (("adam", torch.optim.Adam, {}), ("sgd", torch.optim.SGD, {"momentum": 0.9})):
        modes = (("fused", {"fused": True}), ("foreach", {"foreach": True}), ("default", {"foreach": False}))
        for mode, flags in modes:
            variants[f"{name} {mode}"] = lambda cls=cls, kw=kw, flags=flags: cls(params, lr=1e-6, **kw, **flags)
    variants["adam-bf16 (lean)"] = lambda: build_optimizer(params, "adam-bf16", 1e-6).optimizer
    variants["sgd-bf16 (lean)"] = lambda: build_optimizer(params, "sgd-bf16", 1e-6).optimizer

    def dual_forget() -> torch.optim.Optimizer:
        opt = build_optimizer(params, "adam+sgd", 1e-6)
        opt.set_phase("forget")
        return opt

    variants["DualOptimizer adam+sgd, forget step (fused Adam inside)"] = dual_forget
    out = {}
    for name, make in variants.items():
        opt = make()
        opt.step()
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            opt.step()
            ts.append(time.perf_counter() - t0)
        out[name] = statistics.median(ts)
        del opt
    return out


def report(results: dict) -> str:
    lines = []
    for model, r in results["models"].items():
        n = r["params"]
        lines += [f"\n### {model} ({n / 1e6:.1f}M parameters; {r['note']})\n",
                  "| configuration | iteration s (median) | min-max | ratio raw | ratio decomposed | step s "
                  "| state bytes/param | peak memory delta MiB | peak ratio |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, t in r["iterations"].items():
            m = r["memory"].get(name, {})
            peak = f"{m['peak_delta_bytes'] / 2**20:.0f}" if m else "-"
            pr = f"{m['peak_ratio']:.2f}" if m else "-"
            lines.append(f"| {name} | {t['iter_s']:.3f} | {t['iter_min_s']:.3f}-{t['iter_max_s']:.3f} | "
                         f"{t['ratio_raw']:.3f} | {t['ratio_decomposed']:.3f} | {t['step_s'] * 1e3:.1f} ms | "
                         f"{t['state_bytes_per_param']:.1f} | {peak} | {pr} |")
        lines += ["", "| optimizer step alone | median ms |", "|---|---|"]
        lines += [f"| {k} | {v * 1e3:.1f} |" for k, v in r["steps"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,llama100m", help="comma list of resnet18, llama100m, tiny")
    ap.add_argument("--repeats", type=int, default=5, help="timed iterations per configuration")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: 128 images / 1x128 tokens)")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-configuration memory subprocesses")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma list (must include 'shared adam') of: "
                    + ", ".join(CONFIGS))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", default="benchmarks/results/optim_overhead.json", help="JSON results file")
    ap.add_argument("--probe", nargs=2, metavar=("MODEL", "CONFIG"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.probe:
        print(json.dumps(memory_probe(args.probe[0], args.probe[1], args.batch)))
        return
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    configs = [c.strip() for c in args.configs.split(",")]
    if "shared adam" not in configs or not set(configs) <= set(CONFIGS):
        raise SystemExit(f"--configs must include 'shared adam' and only names from {list(CONFIGS)}")
    results = {"command": "python -m benchmarks.optim_overhead " + " ".join(argv or sys.argv[1:]),
               "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor(),
               "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(), "models": {}}
    for model in args.models.split(","):
        t0 = time.perf_counter()
        w = make_workload(model, args.batch)
        r = {"params": sum(p.numel() for p in w.model.parameters()), "note": w.note}
        r["iterations"] = time_iterations(w, args.repeats, configs)
        r["steps"] = time_steps(w, max(3, args.repeats))
        del w
        r["memory"] = {} if args.no_memory else measure_memory(model, args.batch, configs)
        r["wall_s"] = time.perf_counter() - t0
        results["models"][model] = r
        print(f"{model}: done in {r['wall_s']:.0f} s", file=sys.stderr)
    results["loadavg_end"] = os.getloadavg()
    table = report(results)
    print(table)
    from dualoptim.io import atomic_write_json

    atomic_write_json(args.out, {**results, "table": table})
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
