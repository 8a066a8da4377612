"""Training loop: AdamW, warm-up then constant or cosine, clipping, EMA, bf16 autocast on GPU, gradient
accumulation, atomic checkpoints, exact resume, and data parallelism over torch.distributed.

Determinism: the data order and every random draw of a step depend only on (seed, step), never on how
many processes share the work or whether the run was resumed:
  - `BatchPlan` maps (step, micro-batch) to global dataset indices; rank r of W takes every W-th of them;
  - each sample gets a seed from (seed, step, global position) in `batch["seeds"]`, from which the model
    draws its noise, time and condition dropout.
So a resumed run reaches the same weights as an uninterrupted one, and W processes with the same global
batch reach the weights of one process (up to floating-point reduction order).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from .checkpoint import Checkpoint, load_model_state, save_checkpoint

log = logging.getLogger("vssflow.train")


class TrainSettings(Protocol):
    """The training section of a recipe (vssflow.registry.recipe.TrainConfig satisfies it)."""

    batch_size: int
    lr: float
    weight_decay: float
    betas: tuple[float, float]
    steps: int
    warmup_steps: int
    schedule: str
    ema: float
    grad_clip: float | None
    grad_accum: int
    precision: str
    seed: int
    log_every: int
    val_every: int
    ckpt_every: int
    num_workers: int


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


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Learning-rate multiplier: linear warm-up, then constant or cosine decay to zero at `total`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


class EMA:
    """Exponential moving average of trainable parameters (float32 shadows), with the usual warm-up."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """shadow <- d * shadow + (1 - d) * param, with d ramping up over the first steps."""
        d = min(self.decay, (1 + step) / (10 + step))
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.shadow[n].lerp_(p.detach().float(), 1 - d)

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """EMA values of the trainable parameters, in their dtype. Frozen weights and buffers are not
        repeated: a checkpoint reader overlays these on model.safetensors."""
        params = dict(model.named_parameters())
        return {k: v.to(params[k].dtype) for k, v in self.shadow.items()}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        """Restore shadows from `state_dict` output."""
        for n in self.shadow:
            if n in state:
                self.shadow[n] = state[n].detach().float().clone()


@dataclass(frozen=True)
class _Order:
    """(step, micro-batch) pairs of steps [first, last), lazily."""

    first: int
    last: int
    accum: int

    def __iter__(self):
        return ((s, m) for s in range(self.first, self.last) for m in range(self.accum))

    def __len__(self) -> int:
        return max(0, self.last - self.first) * self.accum


class _Keys:
    """A lazy batch sampler: the dataset keys of each (step, micro-batch) of an `_Order`."""

    def __init__(self, order: _Order, keys: Callable[[int, int], list[Any]]):
        self.order, self.keys = order, keys

    def __iter__(self):
        return (self.keys(s, m) for s, m in self.order)

    def __len__(self) -> int:
        return len(self.order)


class _LossModule(nn.Module):
    """Exposes the model's loss as forward, so DistributedDataParallel synchronises its gradients.

    Returns (loss, count): count is how many elements the scalar averages, or None when the model does not
    say (then every rank weighs the same).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Any]) -> tuple[Any, torch.Tensor | None]:
        if hasattr(self.model, "loss_terms"):
            result = self.model.loss_terms(batch)[0]
            return result.loss, result.count
        return self.model.loss(batch), None


@dataclass
class DistInfo:
    """This process's place in a torch.distributed job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> DistInfo:
        """Read torchrun's environment variables."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs and checkpoints."""
        return self.rank == 0


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list) and batch and isinstance(batch[0], torch.Tensor):
        return [_to_device(v, device) for v in batch]
    return batch


class Trainer:
    """Runs `model.loss(batch)` over a dataset with the settings of a recipe's `train` section."""

    def __init__(
        self,
        model: nn.Module,
        settings: TrainSettings,
        dataset: Any,
        collate: Callable[[list[Any]], dict[str, Any]],
        out_dir: str | Path,
        *,
        meta: dict[str, Any] | None = None,
        recipe_yaml: str | None = None,
        item_weights: Sequence[float] | None = None,
        item_durations: Sequence[float] | None = None,
        validate: Callable[[nn.Module, int], dict[str, float]] | None = None,
        device: str | torch.device | None = None,
        dist: DistInfo | None = None,
        progress: bool = True,
    ):
        self.model, self.settings, self.dataset, self.collate = model, settings, dataset, collate
        self.out = Path(out_dir)
        self.meta, self.recipe_yaml, self.validate = dict(meta or {}), recipe_yaml, validate
        self.dist = dist or DistInfo()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.progress = progress and self.dist.is_main
        self.plan = BatchPlan(len(dataset), settings.batch_size, settings.seed, settings.grad_accum, item_weights,
                              durations=item_durations)
        if self.plan.micro_size % self.dist.world:
            raise ValueError(
                f"micro-batch {self.plan.micro_size} (batch_size / grad_accum) is not divisible by {self.dist.world} processes"
            )
        self.model.to(self.device)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=settings.lr, betas=tuple(settings.betas), weight_decay=settings.weight_decay
        )
        self.ema = EMA(model, settings.ema) if settings.ema > 0 else None
        self.step = 0
        self.wrapped: nn.Module = _LossModule(model)
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(self.wrapped, device_ids=ids, find_unused_parameters=True)
        self.ckpt_dir = self.out / "checkpoints"
        self._tb = None

    # bookkeeping -----------------------------------------------------------------------------------------
    def _set_lr(self) -> float:
        s = self.settings
        lr = s.lr * lr_factor(self.step, s.warmup_steps, s.steps, s.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def save(self, name: str = "last") -> Path | None:
        """Write checkpoints/NAME atomically (rank 0 only)."""
        if not self.dist.is_main:
            return None
        return save_checkpoint(
            self.ckpt_dir / name,
            self.model.state_dict(),
            {**self.meta, "step": self.step},
            ema_state=self.ema.state_dict(self.model) if self.ema else None,
            optimizer=self.optimizer,
            trainer_state={"step": self.step, "seed": self.settings.seed, "world": self.dist.world},
            recipe_yaml=self.recipe_yaml,
        )

    def resume(self, path: str | Path | None = None) -> bool:
        """Continue from checkpoints/last (or `path`); False when there is nothing to resume."""
        path = Path(path) if path else self.ckpt_dir / "last"
        if self.dist.is_main and self.ckpt_dir.is_dir():
            import shutil

            for stale in self.ckpt_dir.glob(".*.tmp-*"):  # a write that was killed before its rename
                shutil.rmtree(stale, ignore_errors=True)
        if not path.exists():
            return False
        ckpt = Checkpoint(path)
        load_model_state(self.model, ckpt.model_state(), str(path))
        if self.ema is not None and ckpt.has("ema.safetensors"):
            self.ema.load(ckpt.model_state(ema=True))
        ckpt.load_optimizer(self.optimizer)
        ckpt.restore_rng()
        self.step = int(ckpt.trainer_state()["step"])
        log.info("resumed from %s at step %d", path, self.step)
        return True

    def _log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "train_log.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        tb = self._tensorboard()
        if tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    tb.add_scalar(key, value, record["step"])

    def _tensorboard(self):
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                self._tb = False
            else:
                self._tb = SummaryWriter(str(self.out / "tensorboard"))
        return self._tb or None

    # the loop --------------------------------------------------------------------------------------------
    def _keys(self, step: int, micro: int) -> list[Any]:
        """This process's dataset keys for one micro-batch: indices, or (index, epoch) for epoch-aware sets."""
        idx = self.plan.global_indices(step, micro)[self.dist.rank :: self.dist.world]
        if hasattr(self.dataset, "set_epoch"):  # crops then depend on the epoch, never on loader state
            epochs = self.plan.epochs(step, micro)[self.dist.rank :: self.dist.world]
            return list(zip(idx, epochs, strict=True))
        return idx

    def _seeds(self, step: int, micro: int) -> torch.Tensor:
        pos = self.plan.positions(step, micro)[self.dist.rank :: self.dist.world]
        return torch.tensor([mix_seed(self.settings.seed, 0x5EED, p) for p in pos], dtype=torch.long)

    def _batches(self, first: int, last: int):
        """(step, micro, batch) for steps [first, last), loaded ahead by `num_workers` processes."""
        from torch.utils.data import DataLoader

        accum = self.settings.grad_accum
        order = _Order(first, last, accum)
        workers = self.settings.num_workers
        loader = DataLoader(
            self.dataset, batch_sampler=_Keys(order, self._keys), collate_fn=self.collate,
            num_workers=workers, prefetch_factor=2 if workers else None, pin_memory=self.device.type == "cuda",
        )
        for (s, m), batch in zip(order, loader, strict=True):
            batch["seeds"] = self._seeds(s, m)
            yield s, m, _to_device(batch, self.device)

    def _loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, float]:
        """(loss to back-propagate, the global mean loss to log) for one micro-batch."""
        use_bf16 = self.settings.precision == "bf16" and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss, count = self.wrapped(batch)
        if self.dist.world == 1 or count is None:
            return loss, float(loss.detach())
        # Each rank averages over its own valid elements; DDP then averages ranks. Weighting rank r by
        # world * count_r / total makes that the mean over all valid elements of the global micro-batch,
        # as one process would compute it, even when ranks hold clips of different lengths.
        import torch.distributed as dist

        sums = torch.stack([loss.detach().float() * count, count.float()]).to(self.device)
        dist.all_reduce(sums)
        share = count.float() * self.dist.world / sums[1]
        return loss * share.to(loss.dtype), float(sums[0] / sums[1])

    def train_step(self, batches: list[dict[str, Any]] | None = None) -> dict[str, float]:
        """One optimizer step over its micro-batches (loaded here unless given); returns logged values."""
        if batches is None:
            batches = [b for _, _, b in self._batches(self.step, self.step + 1)]
        self.model.train()
        lr = self._set_lr()
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for batch in batches:
            loss, logged = self._loss(batch)
            (loss / self.settings.grad_accum).backward()
            total += logged / self.settings.grad_accum
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.settings.grad_clip or float("inf"))
        if not torch.isfinite(grad_norm):
            raise FloatingPointError(f"non-finite gradient norm at step {self.step}; lower train.lr or check the data")
        self.optimizer.step()
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        return {"loss": total, "lr": lr, "grad_norm": float(grad_norm)}

    def fit(self, steps: int | None = None) -> Path | None:
        """Train until `steps` (default: settings.steps); checkpoint periodically and at the end."""
        total = self.settings.steps if steps is None else steps
        from tqdm import tqdm

        bar = tqdm(total=total, initial=self.step, disable=not self.progress, desc="train", unit="step",
                   dynamic_ncols=True)
        t0, s0 = time.perf_counter(), self.step
        pending: list[dict[str, Any]] = []
        for _, micro, batch in self._batches(self.step, total):
            pending.append(batch)
            if micro + 1 < self.settings.grad_accum:
                continue
            record = self.train_step(pending)
            pending = []
            bar.update(1)
            rate = (self.step - s0) / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{record['loss']:.4f}", steps_s=f"{rate:.2f}")
            if self.step % self.settings.log_every == 0 or self.step == total:
                self._log({"step": self.step, "steps_per_s": rate, **record})
            if self.validate is not None and self.settings.val_every and self.step % self.settings.val_every == 0:
                if self.dist.is_main:
                    self._log({"step": self.step, **{f"val/{k}": v for k, v in self.validate(self.model, self.step).items()}})
            if self.settings.ckpt_every and self.step % self.settings.ckpt_every == 0 and self.step < total:
                self.save()
        bar.close()
        return self.save()
