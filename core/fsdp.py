"""Fully sharded data parallelism (PyTorch FSDP2, `torch.distributed.fsdp.fully_shard`) for the trainer.

`train.strategy: fsdp` under torchrun shards every parameter, gradient and optimizer state across the ranks
instead of replicating them (DDP): each block of a `blocks` ModuleList (the DiT's) is one unit that is
gathered just before its forward and backward and freed after; everything else (encoders, aggregators,
codec, the backbone's stem and final layer) is the root unit, gathered for the whole step. The maths is DDP's:
gradients are averaged over ranks, the loss re-weighting of `Trainer.train_step` holds unchanged, so FSDP
and DDP reach the same weights up to floating-point reduction order.

Options (the recipe's `train` section): `precision: bf16` on GPU computes in bf16 with float32 master
weights and float32 gradient reduction (FSDP's MixedPrecisionPolicy, beside the usual autocast);
`activation_checkpointing: true` recomputes each block's activations in the backward pass instead of storing
them (any strategy). Checkpoints are sharded: `vssflow.core.sharded_checkpoint`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


def sharding_units(module: nn.Module) -> list[nn.Module]:
    """The modules sharded (and checkpointed) one by one: the members of every ModuleList named `blocks`."""
    units: list[nn.Module] = []
    for name, child in module.named_modules():
        if isinstance(child, nn.ModuleList) and name.rsplit(".", 1)[-1] == "blocks":
            units.extend(child)
    return units


def checkpoint_activations(module: nn.Module) -> int:
    """Recompute each unit's activations in the backward pass (non-reentrant torch.utils.checkpoint); returns
    how many units. Parameter names are unchanged, so checkpoints are the same with or without it."""
    from torch.utils.checkpoint import checkpoint

    units = sharding_units(module)
    for unit in units:
        forward = unit.forward

        def run(*args: Any, _forward: Any = forward, **kwargs: Any) -> Any:
            if not torch.is_grad_enabled():  # sampling: nothing to recompute
                return _forward(*args, **kwargs)
            return checkpoint(_forward, *args, use_reentrant=False, **kwargs)

        unit.forward = run
    return len(units)


def shard(root: nn.Module, world: int, device: torch.device, *, bf16: bool, find_unused: bool) -> nn.Module:
    """fully_shard every unit, then `root` (the module whose forward computes the loss); returns root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world,))
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16
              else MixedPrecisionPolicy())
    for unit in sharding_units(root):
        fully_shard(unit, mesh=mesh, mp_policy=policy)
    fully_shard(root, mesh=mesh, mp_policy=policy)
    if find_unused:  # a condition absent from one rank's batch: its parameters still take part in the reduction
        root.set_reduce_scatter_unused_params(True)
    return root


def is_sharded(tensor: Any) -> bool:
    """Whether `tensor` is a DTensor (a parameter or state managed by FSDP)."""
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """clip_grad_norm_ over sharded gradients: the norm of the whole (global) gradient, the same on every rank."""
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.nn.utils.get_total_norm(grads, 2.0)
    if is_sharded(total):
        total = total.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total


def all_finite(params: list[nn.Parameter]) -> bool:
    """Whether every element of the (sharded) parameters is finite, agreed over all ranks."""
    import torch.distributed as dist

    local = all(bool(torch.isfinite(p.to_local() if is_sharded(p) else p).all()) for p in params)
    flag = torch.tensor([0.0 if local else 1.0])
    if dist.is_initialized():
        flag = flag.to(_comm_device(params))
        dist.all_reduce(flag)
    return float(flag) == 0.0


def _comm_device(params: list[nn.Parameter]) -> torch.device:
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


@contextlib.contextmanager
def gathered(root: nn.Module) -> Iterator[None]:
    """The root unit's parameters as plain tensors for the duration, for sampling outside the loss forward
    (validation); the units gather themselves around their forwards. Every rank must enter it and run the same
    forwards, so that the units' all-gathers pair up."""
    root.unshard()
    try:
        yield
    finally:
        root.reshard()


def like(full: torch.Tensor, reference: Any) -> torch.Tensor:
    """A whole tensor laid out as `reference`: this rank's rows as a DTensor when `reference` is sharded
    (computed locally, no communication), else `full` itself."""
    if not is_sharded(reference):
        return full
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full.to(device=reference.device, dtype=reference.dtype), reference.device_mesh, reference.placements,
                             src_data_rank=None)
