"""Measure the default Fashion-MNIST original-model recipe: wall time of training and test accuracy.

    .venv/bin/python benchmarks/train_default.py                      # the default (what `dualoptim train` does)
    .venv/bin/python benchmarks/train_default.py --model resnet8 --epochs 5
    .venv/bin/python benchmarks/train_default.py --probe      # train-step throughput of candidate models

Runs ``dualoptim train`` exactly as a user would (same code path, same defaults), then reads the checkpoint's
metadata. Records hardware, torch version, threads and the load average (the CPU may be shared: a load
above the core count means the timing is pessimistic). Appends one JSON line per run to ``--log``.
"""

from __future__ import annotations

import os

# libgomp's default spin-waiting makes 2-thread training ~10x slower when the cores are shared (measured
# here); passive waiting costs little on an idle machine. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


PROBE = (("cnn", {"width": 16}, False), ("cnn", {"width": 32}, False), ("resnet8", {"width": 16}, False),
         ("cnn", {"width": 16}, True))


def probe(steps: int = 40, warmup: int = 5, fp32_only: bool = False) -> None:
    """Training-step throughput (img/s, batch 128, channels_last) of candidate models on Fashion-MNIST images."""
    import torch

    from dualoptim.vision.data import TensorLoader, load_dataset
    from dualoptim.vision.models import create_model
    from dualoptim.vision.train import TrainConfig, make_sgd

    data = load_dataset("fashion-mnist")
    n = 128 * (steps + warmup)
    for name, options, bf16 in PROBE:
        if bf16 and fp32_only:
            continue
        torch.manual_seed(0)
        model = create_model(name, 10, 1, 28, **options).to(memory_format=torch.channels_last).train()
        opt = make_sgd(model.parameters(), TrainConfig())
        loader = TensorLoader(data.train_x[:n], data.train_y[:n], 128, shuffle=True, seed=0, channels_last=True)
        for i, (x, y) in enumerate(loader):
            if i == warmup:
                start, cpu = time.perf_counter(), time.process_time()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        print(json.dumps({"model": name, "options": options, "bf16": bf16, "img_per_s": round(128 * steps / wall),
                          "img_per_cpu_s": round(128 * steps / cpu), "threads": torch.get_num_threads(),
                          "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                          "loadavg": [round(x, 2) for x in os.getloadavg()]}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="default: the dataset's default model")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None, help="default: the dataset's default epochs")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--out", default="runs/bench/fmnist-original")
    p.add_argument("--log", default="runs/bench/train_default.jsonl")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--probe", action="store_true", help="only measure train-step throughput of candidate models")
    p.add_argument("--probe-steps", type=int, default=40, help="timed steps per model in --probe")
    p.add_argument("--probe-fp32-only", action="store_true", help="skip the bf16 entry of --probe")
    args = p.parse_args()
    if args.probe:
        return probe(args.probe_steps, fp32_only=args.probe_fp32_only)

    import torch

    from dualoptim.cli import main as dualoptim_main
    from dualoptim.vision.checkpoint import load_classifier

    argv = ["train", "--dataset", "fashion-mnist", "--out", args.out, "--overwrite", "--seed", str(args.seed)]
    for flag, value in (("--model", args.model), ("--width", args.width), ("--epochs", args.epochs),
                        ("--threads", args.threads), ("--train-subset", args.train_subset)):
        if value is not None:
            argv += [flag, str(value)]
    if not args.progress:
        argv.append("--no-progress")
    load_before = os.getloadavg()
    start = time.perf_counter()
    rc = dualoptim_main(argv)
    total = time.perf_counter() - start
    if rc != 0:
        raise SystemExit(rc)
    _, meta, _ = load_classifier(args.out)
    record = {
        "command": "dualoptim " + " ".join(argv), "model": meta.model, "model_options": meta.model_options,
        "epochs": meta.recipe["epochs"], "train_images": 60000 if meta.train_subset is None else meta.train_subset,
        "train_s": meta.timings["train_s"], "train_cpu_s": meta.timings["train_cpu_s"],
        "images_per_s": meta.timings["images_per_s"], "command_s": round(total, 1),
        "test_acc": round(meta.metrics["TA"], 2), "train_acc": round(meta.metrics["train_acc"], 2),
        "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    with open(args.log, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
