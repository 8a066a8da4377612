"""The trainer's batch order: global batches of dataset indices as a function of (seed, step, micro-batch).

`BatchPlan` maps (step, micro-batch) to global dataset indices; rank r of W takes every W-th of them, and
each sample gets a seed from (seed, step, global position). Nothing depends on loader state, the number
of processes or whether the run was resumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix64), stable across processes and platforms."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 29
    return x & 0x7FFFFFFFFFFFFFFF


@dataclass
class BatchPlan:
    """Global batches of dataset indices for every (step, micro-batch), derived from the seed alone.

    Without weights: epochs of seeded permutations (natural proportions, each clip once per epoch).
    With per-item weights (task mix): seeded sampling with replacement in proportion to the weights.
    With durations (duration bucketing): consecutive pools of `bucket_batches` micro-batches are drawn as
    above, sorted by duration and cut into micro-batches whose order within the pool is shuffled, so each
    micro-batch holds clips of similar length (little padding) and the pool still holds the same clips.
    Everything stays a function of (seed, step, micro), so resumes and process counts agree.
    """

    num_items: int
    batch_size: int  # samples per optimizer step, all processes together
    seed: int
    grad_accum: int = 1
    weights: Sequence[float] | None = None
    durations: Sequence[float] | None = None
    bucket_batches: int = 32

    def __post_init__(self) -> None:
        if self.num_items <= 0:
            raise ValueError("the dataset is empty")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")
        if self.durations is not None and len(self.durations) != self.num_items:
            raise ValueError(f"{len(self.durations)} durations for {self.num_items} items")
        if self.bucket_batches <= 0:
            raise ValueError(f"bucket_batches must be positive, got {self.bucket_batches}")
        self._perm_epoch, self._perm = -1, torch.empty(0, dtype=torch.long)
        self._pool_id, self._pool = -1, ([], [])

    @property
    def micro_size(self) -> int:
        """Samples per micro-batch, all processes together."""
        return self.batch_size // self.grad_accum

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed(mix_seed(self.seed, 0xDA7A, epoch))
            self._perm, self._perm_epoch = torch.randperm(self.num_items, generator=gen), epoch
        return self._perm

    def _drawn(self, start: int, count: int, *draw: int) -> list[int]:
        """Dataset indices of `count` slots from global position `start`: the epoch permutations, or with
        weights a seeded draw with replacement keyed by `draw`."""
        if self.weights is not None:
            gen = torch.Generator().manual_seed(mix_seed(self.seed, 0x3A3A, *draw))
            w = torch.as_tensor(self.weights, dtype=torch.float64)
            return torch.multinomial(w, count, replacement=True, generator=gen).tolist()
        out = []
        for pos in range(start, start + count):
            epoch, offset = divmod(pos, self.num_items)
            out.append(int(self._permutation(epoch)[offset]))
        return out

    def _micro(self, step: int, micro: int) -> tuple[list[int], list[int]]:
        """(dataset indices, source positions) of one micro-batch."""
        j = step * self.grad_accum + micro  # global micro-batch number
        m = self.micro_size
        if self.durations is None:
            return self._drawn(j * m, m, step, micro), list(range(j * m, j * m + m))
        pool_id, k = divmod(j, self.bucket_batches)
        if pool_id != self._pool_id:
            size = m * self.bucket_batches
            idx = self._drawn(pool_id * size, size, 0xB0C7, pool_id)
            pos = list(range(pool_id * size, pool_id * size + size))
            gen = torch.Generator().manual_seed(mix_seed(self.seed, 0xB0C7, pool_id))
            tie = torch.rand(size, generator=gen, dtype=torch.float64).tolist()
            order = sorted(range(size), key=lambda i: (float(self.durations[idx[i]]), tie[i]))
            blocks = [order[b * m : (b + 1) * m] for b in range(self.bucket_batches)]
            shuffled = torch.randperm(self.bucket_batches, generator=gen).tolist()
            slots = [i for b in shuffled for i in blocks[b]]
            self._pool_id, self._pool = pool_id, ([idx[i] for i in slots], [pos[i] for i in slots])
        idx, pos = self._pool
        return idx[k * m : (k + 1) * m], pos[k * m : (k + 1) * m]

    def epochs(self, step: int, micro: int) -> list[int]:
        """Epoch of each sample of a micro-batch (datasets with per-epoch randomness, e.g. random crops)."""
        return [pos // self.num_items for pos in self._micro(step, micro)[1]]

    def global_indices(self, step: int, micro: int) -> list[int]:
        """Dataset indices of one micro-batch of one optimizer step (all processes)."""
        return self._micro(step, micro)[0]

    def positions(self, step: int, micro: int) -> list[int]:
        """Global sample positions of a micro-batch (used to derive per-sample seeds)."""
        start = (step * self.grad_accum + micro) * self.micro_size
        return list(range(start, start + self.micro_size))
