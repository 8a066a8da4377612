"""Splitting a list of clips across the processes of a torchrun job (feature extraction, generation, scoring).

Every process of `torchrun --nproc_per_node=N [--nnodes=M] -m vssflow ...` reads the whole manifest and takes
its share: blocks of `block` consecutive items are dealt round-robin, block k to rank k % world. With `block`
equal to the batch size each rank's batches are exactly the batches a single process would form, so encoders
and the sampler see the same inputs batch for batch and the outputs are bit-identical to a one-process run.

The split is computed from what is still missing, so a rerun after a kill (any rank, any world size) does
only the missing clips. Ranks write their own files; nothing is shared but the output folder.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

# how long the end-of-job barrier waits for the slowest rank: shards finish at different times
BARRIER_TIMEOUT = datetime.timedelta(days=7)


@dataclass(frozen=True)
class Shard:
    """This process's rank among `world` (0 of 1 outside torchrun)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> Shard:
        """From torchrun's RANK and WORLD_SIZE."""
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"RANK={rank} WORLD_SIZE={world}: not a valid torchrun environment")
        return cls(rank, world)

    @property
    def is_main(self) -> bool:
        """Rank 0: merges the ranks' records and prints summaries."""
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        """More than one process."""
        return self.world > 1

    def take(self, items: Sequence[T], block: int = 1) -> list[T]:
        """This rank's items: blocks of `block` consecutive items, block k to rank k % world, in order."""
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        return [item for i, item in enumerate(items) if (i // block) % self.world == self.rank]

    def tag(self) -> str:
        """`rank00003-of-00008`: names this rank's files."""
        return f"rank{self.rank:05d}-of-{self.world:05d}"


@contextmanager
def process_group(shard: Shard) -> Iterator[bool]:
    """A gloo process group for the end-of-job barrier when sharded (and none is up); yields whether one is up.

    gloo on every device: the group only synchronises, it never moves tensors, and it does not tie a rank to a
    GPU. The barrier timeout is long because shards finish at different times."""
    if not shard.sharded:
        yield False
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        yield True
        return
    dist.init_process_group(backend="gloo", timeout=BARRIER_TIMEOUT)
    try:
        yield True
    finally:
        dist.destroy_process_group()


def barrier(shard: Shard) -> None:
    """Wait for every rank (no-op outside torchrun)."""
    if shard.sharded:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()


def rank_records_name(name: str, shard: Shard) -> str:
    """`generated.jsonl` -> `generated.rank00001-of-00002.jsonl`: where one rank appends its records."""
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}.{shard.tag()}.{suffix}" if dot else f"{name}.{shard.tag()}"


def rank_record_files(folder: str | os.PathLike, name: str) -> list[os.PathLike]:
    """The per-rank record files of `name` in `folder` left by sharded runs (of any world size), by name."""
    from pathlib import Path

    stem, _, suffix = name.rpartition(".")
    return sorted(Path(folder).glob(f"{stem}.rank[0-9]*-of-[0-9]*.{suffix}"))


def merge_rank_records(folder: str | os.PathLike, name: str, order: Sequence[str] = ()) -> int:
    """Fold every rank's JSONL records into `folder/name` (rewritten atomically, old lines first, the new ones
    in the order of the ids in `order`), then delete the rank files; returns how many lines were added.

    Torn lines (a rank killed mid-write) are dropped. Call it on one process after every rank is done."""
    import json
    from pathlib import Path

    from .files import write_text_atomic

    final = Path(folder) / name
    parts = rank_record_files(folder, name)
    if not parts:
        return 0
    old = final.read_text(errors="replace").splitlines() if final.is_file() else []
    old = [ln for ln in old if _parses(ln)]
    new: list[tuple[int, str]] = []
    position = {clip: i for i, clip in enumerate(order)}
    for part in parts:
        for ln in Path(part).read_text(errors="replace").splitlines():
            if _parses(ln):
                new.append((position.get(json.loads(ln).get("id"), len(position)), ln))
    new.sort(key=lambda p: p[0])  # stable: lines of one id keep their rank-file order
    write_text_atomic(final, "".join(ln + "\n" for ln in old + [ln for _, ln in new]))
    for part in parts:
        Path(part).unlink(missing_ok=True)
    return len(new)


def _parses(line: str) -> bool:
    import json

    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def rank_device(device: str | None, shard: Shard) -> str | None:
    """Under torchrun, `cuda` (or no choice, on a machine with GPUs) means this process's GPU, cuda:LOCAL_RANK;
    anything else is kept."""
    if not shard.sharded or device not in (None, "cuda"):
        return device
    import torch

    if device is None and not torch.cuda.is_available():
        return None
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
