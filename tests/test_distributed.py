"""DualOptimizer under DistributedDataParallel and FSDP2 on CPU (gloo, 2 processes, loopback).

Each rank takes half of every global batch; DDP / FSDP2 average the gradients, so the
trajectory must equal one process stepping on the whole batch with the mean loss.
"""

from __future__ import annotations

import datetime
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dualoptim.optim import build_optimizer

SCHEDULE = ["forget", "retain", "retain", "forget", "retain", "retain", "forget", "retain"]
GLOBAL_BATCH = 16
TIMEOUT_S = 120  # a hang bound, not the expected time (~20-40 s on 2 shared cores, mostly process start-up)
MODES = ("ddp", "fsdp2")


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()


def global_batch(step: int, phase: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + (phase == "forget"))
    x = torch.randn(GLOBAL_BATCH, 6, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 3, (GLOBAL_BATCH,), generator=g)


def train(model: torch.nn.Module, params, rank: int = 0, world: int = 1) -> None:
    opt = build_optimizer(params, "adam+sgd", 1e-2, 3e-2)  # fused kernels, as users get them
    for i, phase in enumerate(SCHEDULE):
        x, y = global_batch(i, phase)
        x, y = x.chunk(world)[rank], y.chunk(world)[rank]
        ce = torch.nn.functional.cross_entropy(model(x), y)
        with opt.set_phase(phase):
            (-ce if phase == "forget" else ce).backward()
            opt.step()
            opt.zero_grad()


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=TIMEOUT_S))
    try:
        for mode in MODES:
            _train_one(mode, rank, world, out_dir)
    finally:
        dist.destroy_process_group()


def _train_one(mode: str, rank: int, world: int, out_dir: str) -> None:
    """Train under DDP or FSDP2 (each Linear and the root sharded; parameters are DTensors) and save
    the full parameters."""
    model = make_model()
    if mode == "ddp":
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
        train(wrapped, wrapped.parameters(), rank, world)
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    else:
        from torch.distributed.fsdp import fully_shard

        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer)
        fully_shard(model)
        train(model, model.parameters(), rank, world)
        flat = torch.cat([p.full_tensor().detach().flatten() for p in model.parameters()])
    torch.save(flat, os.path.join(out_dir, f"{mode}_{rank}.pt"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory) -> dict[str, list[torch.Tensor]]:
    """Both modes trained by one pair of spawned processes (process start-up dominates the cost)."""
    out_dir = str(tmp_path_factory.mktemp("dist"))
    ctx = mp.start_processes(_worker, args=(2, free_port(), out_dir), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"two-process run did not finish in {TIMEOUT_S} s")
    return {m: [torch.load(os.path.join(out_dir, f"{m}_{r}.pt")) for r in range(2)] for m in MODES}


def reference() -> torch.Tensor:
    model = make_model()
    train(model, model.parameters())
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
@pytest.mark.parametrize("mode", MODES)
def test_two_process_trajectory_equals_one_process(mode, two_process_results):
    ranks = two_process_results[mode]
    ref = reference()
    assert not torch.equal(ref, torch.cat([p.detach().flatten() for p in make_model().parameters()]))
    torch.testing.assert_close(ranks[0], ranks[1], rtol=0, atol=0)  # replicas agree exactly
    torch.testing.assert_close(ranks[0], ref, rtol=0, atol=1e-12)  # float64: only summation order differs
