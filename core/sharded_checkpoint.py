"""Sharded checkpoints of FSDP runs: one safetensors file per rank and kind, JSON beside them, nothing pickled.

torch.distributed.checkpoint's file format keeps its index (`.metadata`) as a pickle and would have every
reader unpickle it, which vssflow never does with files it did not just make; so an FSDP step folder holds

    model.rank00000-of-00004.safetensors      rank 0's rows of every sharded weight, plus the unsharded ones
    model.rank00001-of-00004.safetensors      (buffers, replicated tensors) in rank 0's file only
    ema.rankNNNNN-of-WWWWW.safetensors        the same for the EMA weights
    optimizer.rankNNNNN-of-WWWWW.safetensors  the same for the optimizer state; optimizer.json its structure
    shards.json                               every tensor's global shape, dtype and whether it is split
    rng.safetensors, trainer_state.json, recipe.yaml, meta.json (written last, with "sharded": {"world": W})

FSDP2 splits a tensor along its first dimension in rank order (torch.chunk), so a tensor is the concatenation
of its ranks' rows. Reading (`full_state`) concatenates them, whatever world size reads it: a run resumes on
another number of processes, `vssflow.load_pipeline` and `Checkpoint.model_state` read sharded folders, and
`vssflow checkpoint consolidate` writes the plain single-file checkpoint (which DDP runs resume from too).

A step folder is written like a plain one: into a hidden temporary folder beside its final name (every rank
writes its files, then rank 0 writes the shared ones and meta.json last and renames the folder into place),
so a kill leaves either no step folder or a complete one. The folder must be on a file system every rank
sees (one machine, or a shared file system for several nodes).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from .checkpoint import shard_name
from .errors import CheckpointError


def _split(state: dict[str, torch.Tensor], rank: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """This rank's part of a state ({key: tensor or DTensor}) and its layout {key: shape, dtype, split}."""
    from .fsdp import is_sharded

    local, layout = {}, {}
    for key, value in state.items():
        split = is_sharded(value)
        layout[key] = {"shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch."), "split": split}
        if split:
            local[key] = value.to_local().detach().cpu().contiguous()
        elif rank == 0:
            local[key] = value.detach().cpu().contiguous()
    return local, layout


def _optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state as {f"state.{i}.{slot}": tensor or DTensor} plus the JSON structure of
    `checkpoint.optimizer_to_tensors` (the plain format: consolidation gives a plain optimizer file)."""
    from .checkpoint import optimizer_to_tensors

    return optimizer_to_tensors(optimizer)


def save_sharded(
    final: Path,
    rank: int,
    world: int,
    model_state: dict[str, torch.Tensor],
    meta: dict[str, Any],
    *,
    ema_state: dict[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer | None,
    trainer_state: dict[str, Any],
    recipe_yaml: str | None,
) -> Path:
    """Write a sharded step folder; every rank calls it with its DTensor state (collective: barriers)."""
    import torch.distributed as dist

    from .checkpoint import FORMAT_VERSION, _save_tensors, _write_json, _write_text, rng_state
    from .files import apply_umask, fsync_dir, write_error

    tmp = final.parent / f".{final.name}.tmp-sharded"
    failed, error = torch.zeros(1), None
    try:
        if rank == 0:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            apply_umask(tmp, directory=True)
    except OSError as exc:
        failed += 1
        error = exc
    _agree(failed, error, final, "prepare")
    layouts: dict[str, Any] = {}
    structure = None
    try:
        states: dict[str, dict[str, torch.Tensor]] = {"model": model_state}
        if ema_state is not None:
            states["ema"] = ema_state
        if optimizer is not None:
            states["optimizer"], structure = _optimizer_state(optimizer)
        for kind, state in states.items():
            local, layouts[kind] = _split(state, rank)
            _save_tensors(tmp / shard_name(kind, rank, world), local)
    except OSError as exc:
        failed += 1
        error = exc
    _agree(failed, error, final, "write")
    if rank == 0:
        try:
            _write_json(tmp / "shards.json", {"world": world, "tensors": layouts})
            if structure is not None:
                _write_json(tmp / "optimizer.json", structure)
            rng_tensors, rng_meta = rng_state()
            _save_tensors(tmp / "rng.safetensors", rng_tensors)
            _write_json(tmp / "trainer_state.json", {**trainer_state, "rng": rng_meta})
            if recipe_yaml is not None:
                _write_text(tmp / "recipe.yaml", recipe_yaml)
            _write_json(tmp / "meta.json", {"format_version": FORMAT_VERSION, **meta,
                                            "sharded": {"world": world, "layout": "fsdp-dim0"}})
            fsync_dir(tmp)
            os.replace(tmp, final)
            fsync_dir(final.parent)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(str(write_error(final, exc, "write the checkpoint"))) from None
    if dist.is_initialized():
        dist.barrier()
    return final


def _agree(failed: torch.Tensor, error: OSError | None, final: Path, what: str) -> None:
    """Every rank learns whether any rank failed (then all raise), instead of some waiting forever."""
    import torch.distributed as dist

    from .files import write_error

    if dist.is_initialized():
        flag = failed.clone()
        if dist.get_backend() == "nccl":
            flag = flag.cuda()
        dist.all_reduce(flag)
        failed = flag.cpu()
    if error is not None:
        raise CheckpointError(str(write_error(final, error, "write the checkpoint"))) from None
    if float(failed) > 0:
        raise CheckpointError(f"a rank could not {what} its part of the sharded checkpoint (disk full or read-only "
                              "folder?); the previous checkpoint is kept")


def consolidate(source: str | Path, out: str | Path) -> Path:
    """Write the plain checkpoint (model/ema/optimizer.safetensors, ...) equal to a sharded one."""
    from .checkpoint import Checkpoint, _read_json, full_state, has_state, save_checkpoint, sharded_world

    ckpt = Checkpoint(source)
    if sharded_world(ckpt.meta) is None:
        raise CheckpointError(f"{ckpt.path}: already a plain checkpoint (no sharded files); nothing to consolidate")
    if Path(out).resolve() == ckpt.path.resolve():
        raise CheckpointError(f"{out}: --out is the sharded checkpoint itself; choose another folder")
    src = ckpt.path
    meta = {k: v for k, v in ckpt.meta.items() if k not in ("format_version", "sharded")}
    state = ckpt.trainer_state()
    rng_meta = state.pop("rng", None)
    extra = {}
    optimizer_json = None
    if has_state(src, "optimizer") and (src / "optimizer.json").is_file():
        extra["optimizer"] = full_state(src, "optimizer")
        optimizer_json = _read_json(src / "optimizer.json")
    if ckpt.has("rng.safetensors"):
        extra["rng"] = ckpt.tensors("rng")
        if rng_meta is not None:
            state["rng"] = rng_meta
    final = save_checkpoint(
        out, full_state(src, "model"), meta,
        ema_state=full_state(src, "ema") if has_state(src, "ema") else None,
        trainer_state=state, recipe_yaml=ckpt.recipe_yaml() if ckpt.has("recipe.yaml") else None,
        extra_tensors=extra, include_rng=False,
        extra_json={"optimizer": optimizer_json} if optimizer_json is not None else None,
    )
    return final
