"""Full-parameter DualOptim on several GPUs: FSDP2 (``torch.distributed.fsdp.fully_shard``).

Every transformer block (the classes a Hugging Face model lists in ``_no_split_modules``) and
then the root are sharded, so parameters, gradients and *both* optimizer states (the optimizers
are built over the sharded DTensor parameters) are split over the ranks. :func:`trainer.run_llm_unlearning`
sees DTensor parameters and lets FSDP reduce-scatter the gradients; the plan gives every rank the
same phase and the same number of micro-batches per step.

Launch (one process per GPU)::

    torchrun --nproc_per_node 2 --no-python dualoptim llm unlearn --fsdp --device cuda --dtype bf16 ...
    accelerate launch --num_processes 2 --no_python dualoptim llm unlearn --fsdp ...
"""

from __future__ import annotations

from typing import Any

import torch


def init_single_process(device: torch.device) -> None:
    """A one-process group (NCCL on a GPU, else gloo) on a free local port: FSDP on one device needs one."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                         init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)


def block_classes(model: torch.nn.Module) -> set[type]:
    """The transformer-block classes to shard one by one (HF's ``_no_split_modules``, else none)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    return {type(m) for m in model.modules() if type(m).__name__ in names}


def shard_model(model: torch.nn.Module, mesh: Any = None) -> torch.nn.Module:
    """``fully_shard`` each transformer block, then the root (in place; returns ``model``).

    Needs an initialised process group (``init_distributed``, :func:`init_single_process` or
    ``torch.distributed.init_process_group``); one process is fine (FSDP2 on one GPU).
    """
    from torch.distributed.fsdp import fully_shard

    if not torch.distributed.is_initialized():
        raise RuntimeError("FSDP needs a process group: launch with torchrun/accelerate or call init_process_group")
    blocks = block_classes(model)
    for m in list(model.modules()):
        if type(m) in blocks:
            fully_shard(m, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded parameters and buffers on the CPU of rank 0 (other ranks get ``{}``); a collective: call
    it on every rank."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
