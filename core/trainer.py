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

import contextlib
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

from .batch_plan import BatchPlan, mix_seed
from .checkpoint import Checkpoint, CheckpointFolder, load_model_state, save_checkpoint, step_folder_name
from .ema import EMA
from .errors import VssflowError
from .files import write_error

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
    # optional: keep_last (None: keep every checkpoint), keep_every (also keep steps divisible by it),
    # strategy ("ddp" or "fsdp", see core/fsdp.py), activation_checkpointing (bool)


class FullWeights:
    """What a checkpoint of a full run holds: the whole state dict, under the model's own names.

    A fine-tuning run that trains only part of a model (an adapter) passes another view to the Trainer: its
    `model_state` is what model.safetensors holds, `to_file`/`from_file` rename EMA tensors (parameter names
    <-> file names), and `load` restores model.safetensors into the model."""

    def model_state(self, model: nn.Module) -> dict[str, torch.Tensor]:  # noqa: D102
        return model.state_dict()

    def to_file(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # noqa: D102
        return state

    def from_file(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # noqa: D102
        return state

    def load(self, model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:  # noqa: D102
        load_model_state(model, state, source)


class DivergenceError(VssflowError):
    """The loss or the gradient norm is not finite: the step is not applied and not saved."""


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices only; none on norms, biases, embeddings and null embeddings.

    A parameter is exempt when it is vector-like (fewer than two dimensions larger than one: biases, norm
    scales, layer scales), belongs to an nn.Embedding, or is a learned substitute token ("null" embeddings
    of aggregators, "silence"). With weight_decay 0 a single group (the same update, and checkpoints of
    runs started before the groups existed keep loading)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not weight_decay:
        return [{"params": [p for _, p in named], "weight_decay": 0.0}]
    embedding = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters(recurse=False)}

    def exempt(name: str, param: torch.Tensor) -> bool:
        leaf = name.rsplit(".", 1)[-1]
        vector_like = sum(1 for d in param.shape if d > 1) < 2
        return vector_like or id(param) in embedding or "null" in leaf or leaf in ("silence",)

    decay = [p for n, p in named if not exempt(n, p)]
    plain = [p for n, p in named if exempt(n, p)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Learning-rate multiplier: linear warm-up, then constant or cosine decay to zero at `total`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


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
    """Runs `model.loss(batch)` over a dataset with the settings of a recipe's `train` section.

    find_unused: DDP's find_unused_parameters, needed only when some trainable parameters can miss the
    graph of a step (a condition absent from a batch: several tasks, conditions restricted to tasks).
    """

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
        find_unused: bool = False,
        weights: Any | None = None,
    ):
        self.weights = weights or FullWeights()  # which tensors checkpoints hold (an adapter's: only its own)
        self.model, self.settings, self.dataset, self.collate = model, settings, dataset, collate
        for key in ("lr", "weight_decay"):
            if not math.isfinite(float(getattr(settings, key))):
                raise DivergenceError(f"train.{key} is {getattr(settings, key)}, not a finite number; set a finite value")
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
        if getattr(settings, "activation_checkpointing", False):
            from .fsdp import checkpoint_activations

            checkpoint_activations(model)
        self.wrapped: nn.Module = _LossModule(model)
        self.fsdp = getattr(settings, "strategy", "ddp") == "fsdp" and self.dist.world > 1
        if self.fsdp:  # before the optimizer and the EMA: they hold the sharded parameters
            from .fsdp import shard

            shard(self.wrapped, self.dist.world, self.device, find_unused=find_unused,
                  bf16=settings.precision == "bf16" and self.device.type == "cuda")
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            parameter_groups(model, settings.weight_decay), lr=settings.lr, betas=tuple(settings.betas),
            weight_decay=settings.weight_decay,
        )
        self.ema = EMA(model, settings.ema) if settings.ema > 0 else None
        self.step = 0
        if self.dist.world > 1 and not self.fsdp:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(self.wrapped, device_ids=ids, find_unused_parameters=find_unused)
        self.ckpt_dir = self.out / "checkpoints"
        self.checkpoints = CheckpointFolder(self.ckpt_dir)
        self.resumed_from: Path | None = None
        self._tb = None

    # bookkeeping -----------------------------------------------------------------------------------------
    def _set_lr(self) -> float:
        s = self.settings
        lr = s.lr * lr_factor(self.step, s.warmup_steps, s.steps, s.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def save(self) -> Path | None:
        """Write checkpoints/step-NNNNNN completely, point `last` at it, apply retention (rank 0 only)."""
        if self.fsdp:
            return self._save_sharded()
        if not all(torch.isfinite(p).all() for p in self.params):  # never publish weights that diverged
            raise DivergenceError(self._diverged("weights", applied=True))  # (every rank: the weights agree)
        if not self.dist.is_main:
            return None
        folder = self.ckpt_dir / step_folder_name(self.step)
        if not (folder.is_dir() and self.checkpoints.newest() == folder):
            save_checkpoint(
                folder,
                self.weights.model_state(self.model),
                {**self.meta, "step": self.step},
                ema_state=self.weights.to_file(self.ema.state_dict(self.model)) if self.ema else None,
                optimizer=self.optimizer,
                trainer_state={"step": self.step, "seed": self.settings.seed, "world": self.dist.world},
                recipe_yaml=self.recipe_yaml,
            )
        self.checkpoints.publish(folder)
        self.checkpoints.retain(getattr(self.settings, "keep_last", None), getattr(self.settings, "keep_every", None))
        return self.checkpoints.last

    def resume(self, path: str | Path | None = None) -> bool:
        """Continue from the newest complete checkpoint (or `path`); False when there is none."""
        path = Path(path) if path else self.checkpoints.newest()
        if path is None or not path.exists():
            return False
        ckpt = Checkpoint(path)
        if self.fsdp:
            return self._resume_sharded(ckpt)
        self.weights.load(self.model, ckpt.model_state(), str(path))
        if self.ema is not None and (ckpt.has("ema.safetensors") or ckpt.sharded is not None):
            self.ema.load(self.weights.from_file(ckpt.model_state(ema=True)))  # (sharded: an FSDP run's, joined)
        ckpt.load_optimizer(self.optimizer)
        ckpt.restore_rng()
        self.step = int(ckpt.trainer_state()["step"])
        self.resumed_from = path
        log.info("resumed from %s at step %d", path, self.step)
        return True

    def _save_sharded(self) -> Path | None:
        """save() under FSDP: every rank writes its shards (core/sharded_checkpoint.py), rank 0 publishes."""
        from .fsdp import all_finite
        from .sharded_checkpoint import save_sharded

        if not all_finite(self.params):
            raise DivergenceError(self._diverged("weights", applied=True))
        folder = self.ckpt_dir / step_folder_name(self.step)
        if not (folder.is_dir() and self.checkpoints.newest() == folder):
            save_sharded(folder, self.dist.rank, self.dist.world, self.model.state_dict(),
                         {**self.meta, "step": self.step},
                         ema_state=self.ema.state_dict(self.model) if self.ema else None, optimizer=self.optimizer,
                         trainer_state={"step": self.step, "seed": self.settings.seed, "world": self.dist.world},
                         recipe_yaml=self.recipe_yaml)
        if not self.dist.is_main:
            return None
        self.checkpoints.publish(folder)
        self.checkpoints.retain(getattr(self.settings, "keep_last", None), getattr(self.settings, "keep_every", None))
        return self.checkpoints.last

    def _resume_sharded(self, ckpt: Checkpoint) -> bool:
        """resume() under FSDP, from a sharded checkpoint of any world size or a plain one: every tensor is
        read whole and this rank keeps its rows."""
        from .checkpoint import _read_json, optimizer_from_tensors
        from .fsdp import like

        own = self.model.state_dict()
        state = ckpt.model_state()
        load_model_state(self.model, {k: like(v, own[k]) if k in own else v for k, v in state.items()}, str(ckpt.path))
        if self.ema is not None:
            ema = {}
            if ckpt.sharded is not None:
                from .checkpoint import full_state, has_state

                ema = full_state(ckpt.path, "ema") if has_state(ckpt.path, "ema") else {}
            elif ckpt.has("ema.safetensors"):
                ema = ckpt.tensors("ema")
            self.ema.load({k: like(v, self.ema.shadow[k]) for k, v in ema.items() if k in self.ema.shadow})
        structure = _read_json(ckpt.path / "optimizer.json")
        order = [p for group in self.optimizer.param_groups for p in group["params"]]
        tensors = ckpt.optimizer_tensors()
        placed = {}
        for idx, slots in structure["state"].items():
            param = order[int(idx)] if int(idx) < len(order) else None
            for slot in slots.values():
                name = slot.get("tensor")
                if name in tensors:
                    value = tensors[name]
                    fits = param is not None and tuple(value.shape) == tuple(param.shape)
                    placed[name] = like(value, param) if fits else value
        optimizer_from_tensors(self.optimizer, placed, structure)
        ckpt.restore_rng()
        self.step = int(ckpt.trainer_state()["step"])
        self.resumed_from = ckpt.path
        log.info("resumed from %s at step %d", ckpt.path, self.step)
        return True

    def _log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        path = self.out / "train_log.jsonl"
        try:
            with open(path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise write_error(path, exc, "append to the training log") from None
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

    def _forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        use_bf16 = self.settings.precision == "bf16" and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            return self.wrapped(batch)

    def train_step(self, batches: list[dict[str, Any]] | None = None) -> dict[str, float]:
        """One optimizer step over its micro-batches (loaded here unless given); returns logged values.

        Weighting: each micro-batch's loss averages its own valid (unpadded) elements, `count` of them. The
        step's gradient is that of the mean over every valid element of the global batch, all micro-batches
        of all ranks together, as one process holding the whole batch would compute it: micro-batch m of rank
        r back-propagates loss * count * world, DDP averages over ranks, and the accumulated gradient is then
        divided by the global count (one all-reduce per step). Rank weighting (world * count_r / total) and
        micro-batch weighting are the same rule. Models that report no count weigh micro-batches equally.
        Under DDP only the last micro-batch synchronises gradients (no_sync before it).
        """
        if batches is None:
            batches = [b for _, _, b in self._batches(self.step, self.step + 1)]
        self.model.train()
        lr = self._set_lr()
        self.optimizer.zero_grad(set_to_none=True)
        world = self.dist.world
        weighted: bool | None = None
        local = torch.zeros(2, dtype=torch.float64)  # sum of loss * count, sum of count (this rank)
        plain = 0.0
        for k, batch in enumerate(batches):
            last = k == len(batches) - 1
            sync = contextlib.nullcontext() if last or world == 1 or self.fsdp else self.wrapped.no_sync()
            if self.fsdp:  # FSDP's no_sync: reduce-scatter only after the last micro-batch
                self.wrapped.set_requires_gradient_sync(last)
            with sync:
                loss, count = self._forward(batch)
                if weighted is None:
                    weighted = count is not None and (world > 1 or len(batches) > 1)
                if world == 1 and not torch.isfinite(loss.detach()).all():  # under DDP: the synced norm below
                    self.optimizer.zero_grad(set_to_none=True)
                    raise DivergenceError(self._diverged("loss"))
                if weighted:
                    c = count.detach().double().cpu()
                    local += torch.stack([loss.detach().double().cpu() * c, c])
                    (loss * (count.to(loss.dtype) * world)).backward()
                else:
                    (loss / len(batches)).backward()
                    plain += float(loss.detach()) / len(batches)
        if weighted:
            totals = local.clone()
            if world > 1:
                import torch.distributed as dist

                totals = totals.to(self.device)
                dist.all_reduce(totals)
                totals = totals.cpu()
            scale = 1.0 / float(totals[1])
            for p in self.params:
                if p.grad is not None:
                    p.grad.mul_(scale)
            logged = float(totals[0] / totals[1])
        else:
            logged = plain
        if self.fsdp:
            from .fsdp import clip_grad_norm

            grad_norm = clip_grad_norm(self.params, self.settings.grad_clip or float("inf"))
        else:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.settings.grad_clip or float("inf"))
        if not math.isfinite(logged) and (world == 1 or weighted):  # a global value: every rank agrees
            self.optimizer.zero_grad(set_to_none=True)
            raise DivergenceError(self._diverged("loss"))
        if not torch.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise DivergenceError(self._diverged("gradient norm"))
        self.optimizer.step()
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        return {"loss": logged, "lr": lr, "grad_norm": float(grad_norm)}

    def _diverged(self, what: str, applied: bool = False) -> str:
        good = self.checkpoints.newest() if self.dist.is_main else None
        kept = f"the last good checkpoint {good} is kept" if good else "no checkpoint was written"
        step = self.step if applied else self.step + 1
        done = "it was not saved" if applied else "the step was not applied"
        return (f"non-finite {what} at step {step} (lr {self.optimizer.param_groups[0]['lr']:.3g}); "
                f"{done} and {kept}; lower train.lr, set train.grad_clip, or check the data")

    def fit(self, steps: int | None = None) -> Path | None:
        """Train until `steps` (default: settings.steps); checkpoint periodically and at the end."""
        total = self.settings.steps if steps is None else steps
        from tqdm import tqdm

        bar = tqdm(total=total, initial=self.step, disable=not self.progress, desc="train", unit="step",
                   dynamic_ncols=True)
        t0, s0 = time.perf_counter(), self.step
        pending: list[dict[str, Any]] = []
        try:
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
                    if self.fsdp:  # every rank samples (the blocks gather their shards); rank 0 writes
                        from .fsdp import gathered

                        with gathered(self.wrapped):
                            scores = self.validate(self.model, self.step)
                        self._log({"step": self.step, **{f"val/{k}": v for k, v in scores.items()}})
                    elif self.dist.is_main:
                        scores = self.validate(self.model, self.step)
                        self._log({"step": self.step, **{f"val/{k}": v for k, v in scores.items()}})
                if self.settings.ckpt_every and self.step % self.settings.ckpt_every == 0 and self.step < total:
                    self.save()
        finally:
            bar.close()
        return self.save()
