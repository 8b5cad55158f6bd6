"""DualOptimizer under DistributedDataParallel and FSDP2 on CPU (gloo, 2 processes, loopback).

Each rank takes half of every global batch; DDP / FSDP2 average the gradients, so the
trajectory must equal one process stepping on the whole batch with the mean loss. The same
processes also run the LLM loop (``dualoptim.llm.trainer.run_llm_unlearning``) on a tiny Llama sharded
with ``dualoptim.llm.parallel.shard_model`` (FSDP2: DTensor parameters, both optimizer states
sharded), which must equal the one-process run.
"""

from __future__ import annotations

import datetime
import os
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
# gloo's TCP transport sometimes aborts a rank while the pair connects ("terminate called without an active
# exception", SIGABRT; seen 2 times in ~35 runs here; the symptom of pytorch/pytorch#188266): such a crash, and only it,
# is retried with a fresh rendezvous; a Python error, a hang or a wrong result fails at once
CRASH_RETRIES = 2
LEAN = "adam-bf16+sgd-bf16"  # bf16 states with stochastic rounding: kept per shard under FSDP2


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()


def global_batch(step: int, phase: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + (phase == "forget"))
    x = torch.randn(GLOBAL_BATCH, 6, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 3, (GLOBAL_BATCH,), generator=g)


def train(model: torch.nn.Module, params, rank: int = 0, world: int = 1, spec: str = "adam+sgd") -> None:
    opt = build_optimizer(params, spec, 1e-2, 3e-2)  # fused kernels, as users get them
    for i, phase in enumerate(SCHEDULE):
        x, y = global_batch(i, phase)
        x, y = x.chunk(world)[rank], y.chunk(world)[rank]
        ce = torch.nn.functional.cross_entropy(model(x), y)
        with opt.set_phase(phase):
            (-ce if phase == "forget" else ce).backward()
            opt.step()
            opt.zero_grad()


def _worker(rank: int, world: int, out_dir: str) -> None:
    # rendezvous through a file, not a TCP port picked in advance: no port another process can take meanwhile
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(out_dir, 'rendezvous')}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=TIMEOUT_S))
    try:
        for mode in MODES:
            _train_one(mode, rank, world, out_dir)
        _train_one("fsdp2", rank, world, out_dir, spec=LEAN)
        _train_llm(rank, world, out_dir)
        dist.barrier()  # every rank done with its collectives before any tears gloo down (teardown race: SIGABRT)
    finally:
        dist.destroy_process_group()


def _train_one(mode: str, rank: int, world: int, out_dir: str, spec: str = "adam+sgd") -> None:
    """Train under DDP or FSDP2 (each Linear and the root sharded; parameters are DTensors) and save
    the full parameters."""
    model = make_model()
    if mode == "ddp":
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
        train(wrapped, wrapped.parameters(), rank, world, spec)
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    else:
        from torch.distributed.fsdp import fully_shard

        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer)
        fully_shard(model)
        train(model, model.parameters(), rank, world, spec)
        flat = torch.cat([p.full_tensor().detach().flatten() for p in model.parameters()])
    torch.save(flat, os.path.join(out_dir, f"{mode}{'_lean' if spec == LEAN else ''}_{rank}.pt"))


def llm_setup():
    from dualoptim.llm.data import SynthConfig, generate
    from dualoptim.llm.model import ModelConfig, build_model
    from dualoptim.llm.tokenizer import DEFAULT_TEMPLATE, train_tokenizer
    from dualoptim.llm.trainer import QAData, UnlearnConfig

    data = generate(SynthConfig(n_authors=20, background_authors=1, seed=3))
    tok = train_tokenizer([r["question"] + " " + r["answer"] for r in data["full"]] + data["idk"], 400)
    forget = QAData(tok, data["forget01"][:20], data["idk"], DEFAULT_TEMPLATE, seed=0)
    retain = QAData(tok, data["retain99"][:40], data["idk"], DEFAULT_TEMPLATE, seed=1)
    # 20 forget items in global batches of 8: the last step's 4 items leave some (rank, micro-batch) slots
    # empty, which FSDP must still run (zero-weight passes keep the collectives in step)
    cfg = UnlearnConfig(method="npo+gd", scheme="dual", epochs=1, batch_size=8, grad_accum=4, forget_lr=1e-2,
                        retain_every=2)
    model = build_model(ModelConfig(hidden=16, layers=2, heads=2, intermediate=32, max_len=64), tok, seed=0)
    return model, forget, retain, cfg


def _train_llm(rank: int, world: int, out_dir: str) -> None:
    import copy

    from dualoptim.llm.parallel import full_state_dict, shard_model
    from dualoptim.llm.trainer import run_llm_unlearning

    model, forget, retain, cfg = llm_setup()
    ref = shard_model(copy.deepcopy(model).requires_grad_(False))
    shard_model(model)
    assert all(isinstance(p, torch.distributed.tensor.DTensor) for p in model.parameters())
    run_llm_unlearning(model, forget, retain, cfg, ref_model=ref, progress=False)
    state = full_state_dict(model)  # what the CLI saves: the full weights on rank 0
    assert (len(state) > 0) == (rank == 0)
    flat = torch.cat([p.full_tensor().detach().flatten() for p in model.parameters()])
    if rank == 0:
        torch.testing.assert_close(torch.cat([state[n].flatten() for n, _ in model.named_parameters()]), flat)
    torch.save(flat, os.path.join(out_dir, f"llm_fsdp2_{rank}.pt"))


def _run_two_processes(out_dir: str) -> None:
    ctx = mp.start_processes(_worker, args=(2, out_dir), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"two-process run did not finish in {TIMEOUT_S} s")


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory) -> dict[str, list[torch.Tensor]]:
    """Both modes trained by one pair of spawned processes (process start-up dominates the cost)."""
    for attempt in range(CRASH_RETRIES + 1):
        out_dir = str(tmp_path_factory.mktemp("dist"))  # a fresh rendezvous file per attempt
        try:
            _run_two_processes(out_dir)
            break
        except mp.ProcessExitedException as e:  # killed by a signal inside gloo, not a Python error or a mismatch
            if e.signal_name != "SIGABRT" or attempt == CRASH_RETRIES:
                raise
    names = (*MODES, "fsdp2_lean", "llm_fsdp2")
    return {m: [torch.load(os.path.join(out_dir, f"{m}_{r}.pt")) for r in range(2)] for m in names}


def reference(spec: str = "adam+sgd") -> torch.Tensor:
    model = make_model()
    train(model, model.parameters(), spec=spec)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
@pytest.mark.parametrize("mode", MODES)
def test_two_process_trajectory_equals_one_process(mode, two_process_results):
    ranks = two_process_results[mode]
    ref = reference()
    assert not torch.equal(ref, torch.cat([p.detach().flatten() for p in make_model().parameters()]))
    torch.testing.assert_close(ranks[0], ranks[1], rtol=0, atol=0)  # replicas agree exactly
    torch.testing.assert_close(ranks[0], ref, rtol=0, atol=1e-12)  # float64: only summation order differs


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_lean_states_under_fsdp2(two_process_results):
    """bf16 optimizer states on DTensor parameters: each rank rounds its own shard (the rounding noise
    then differs from one process only within bf16 resolution of the states)."""
    ranks = two_process_results["fsdp2_lean"]
    ref = reference(LEAN)
    start = torch.cat([p.detach().flatten() for p in make_model().parameters()])
    torch.testing.assert_close(ranks[0], ranks[1], rtol=0, atol=0)
    assert (ref - start).abs().max() > 1e-2  # the steps moved the weights
    torch.testing.assert_close(ranks[0], ref, rtol=0, atol=2e-3)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_llm_fsdp2_two_processes_equal_one_process(two_process_results):
    from dualoptim.llm.trainer import run_llm_unlearning

    torch.set_num_threads(1)
    model, forget, retain, cfg = llm_setup()
    start = torch.cat([p.detach().flatten() for p in model.parameters()])
    run_llm_unlearning(model, forget, retain, cfg, progress=False)
    ref = torch.cat([p.detach().flatten() for p in model.parameters()])
    ranks = two_process_results["llm_fsdp2"]
    assert not torch.allclose(ref, start)
    torch.testing.assert_close(ranks[0], ranks[1], rtol=0, atol=0)  # both ranks gather the same full weights
    torch.testing.assert_close(ranks[0], ref, rtol=1e-4, atol=1e-5)  # float32: summation order differs
