"""Adapters: fine-tune a few added weights (LoRA, ...) on a frozen base checkpoint, write adapter-only
checkpoints, apply several adapters with scales at generation, merge them into a plain checkpoint.

    # recipe: `adapter: {name: lora, params: {rank: 8}}` and `train.init_from: BASE`
    vssflow.train("recipes/finetune/lora-v2s.yaml", out_dir="runs/ft")
    pipe = vssflow.load_pipeline(BASE, adapters=[("runs/ft/checkpoints/last", 1.0)])
    vssflow.adapters.merge_adapters(BASE, [("runs/ft/checkpoints/last", 1.0)], "runs/merged")

An adapter run's checkpoint is an ordinary step folder whose model.safetensors (and ema.safetensors) hold
only the adapter's tensors, under slot-free names; meta.json's `adapter` entry names the adapter component
and its params, the modules it adapts, and the base checkpoint by the sha256 of its weight files
(`checkpoint_sha256`). Loading an adapter on any other base is refused with one line.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vssflow.core.checkpoint import Checkpoint, load_model_state
from vssflow.core.errors import CheckpointError, RecipeError

log = logging.getLogger("vssflow.adapters")

TRAIN_SLOT = "adapter0"
WEIGHT_FILES = ("model.safetensors", "ema.safetensors")


def checkpoint_sha256(path: str | Path) -> str:
    """The content hash of a checkpoint's weights: sha256 over model.safetensors, then ema.safetensors when
    present (the EMA weights are what generation and fine-tuning start from)."""
    h = hashlib.sha256()
    for name in WEIGHT_FILES:
        file = Path(path) / name
        if not file.is_file():
            continue
        h.update(name.encode())
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


class AdapterWeights:
    """The Trainer's view of an adapter run (see core.trainer.FullWeights): checkpoints hold the adapter's
    tensors only, under slot-free names."""

    def __init__(self, adapter: Any, slot: str):
        self.adapter, self.slot = adapter, slot

    def model_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The adapter's tensors, by file name."""
        return self.to_file({n: p.detach() for n, p in model.named_parameters()})

    def to_file(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Parameter names -> file names, dropping everything that is not this slot's."""
        out = {}
        for name, tensor in state.items():
            key = self.adapter.file_key(name, self.slot)
            if key is not None:
                out[key] = tensor
        return out

    def from_file(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """File names -> this slot's parameter names."""
        return {self.adapter.param_name(k, self.slot): v for k, v in state.items()}

    @torch.no_grad()
    def load(self, model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
        """Copy an adapter file's tensors into this slot; every tensor must fit, none may be missing."""
        own = self.model_state(model)
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
        if missing or unexpected or wrong:
            detail = (f"{len(missing)} missing (e.g. {missing[0]})" if missing else
                      f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else
                      f"shape of {wrong[0]} is {tuple(state[wrong[0]].shape)}, the adapter has {tuple(own[wrong[0]].shape)}")
            raise CheckpointError(f"{source}: adapter weights do not fit this adapter ({detail}); "
                                  "was it trained with other adapter params?")
        params = dict(model.named_parameters())
        for key, tensor in state.items():
            params[self.adapter.param_name(key, self.slot)].copy_(tensor)


def _create_adapter(name: str, params: dict[str, Any]) -> Any:
    from vssflow.registry import create

    return create("adapter", name, **params)


def count_parameters(weights: AdapterWeights, model: nn.Module) -> int:
    """Number of adapter parameters."""
    return sum(t.numel() for t in weights.model_state(model).values())


def prepare_run(recipe: Any, model: nn.Module, resume_from: str | Path | None = None) -> tuple[AdapterWeights, dict]:
    """An adapter run: load the base (train.init_from, every tensor, EMA weights when present), attach the
    recipe's adapter (initialised from train.seed), freeze the rest. Returns the Trainer's weights view and
    the `adapter` entry of meta.json. On resume the base must be the one the run started from."""
    if not recipe.train.init_from:
        raise RecipeError(
            f"recipe {recipe.name!r}: adapter: needs train.init_from, the checkpoint it adapts "
            "(--set train.init_from=runs/BASE/checkpoints/last)"
        )
    base = Checkpoint(recipe.train.init_from)
    if base.meta.get("adapter"):
        raise RecipeError(
            f"train.init_from {base.path} is an adapter checkpoint; an adapter adapts a full checkpoint "
            f"(merge it first: vssflow adapter merge BASE {base.path} --out DIR)"
        )
    load_model_state(model, base.model_state(ema=True), str(base.path))
    sha = checkpoint_sha256(base.path)
    if resume_from is not None:
        recorded = (Checkpoint(resume_from).meta.get("adapter") or {}).get("base", {}).get("sha256")
        if recorded != sha:
            raise CheckpointError(
                f"{base.path}: the base checkpoint's weights changed since this adapter run started (sha256 "
                f"{str(recorded)[:12]}, now {sha[:12]}); restore that base or start a new run"
            )
    adapter = _create_adapter(recipe.adapter.name, dict(recipe.adapter.params))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.train.seed)
        modules = adapter.attach(model, TRAIN_SLOT)
    encoders = getattr(model, "encoders", {})
    for name in modules:
        parts = name.split(".")
        if parts[0] == "encoders" and len(parts) > 1 and getattr(encoders[parts[1]], "frozen", False):
            raise RecipeError(
                f"adapter.params.targets: {name} is in encoder {parts[1]!r}, which is frozen (it runs without "
                "gradients and its features may come from the cache); target trainable encoders, aggregators or "
                "the backbone"
            )
    keep_frozen_in_eval(model)
    weights = AdapterWeights(adapter, TRAIN_SLOT)
    n = count_parameters(weights, model)
    total = sum(p.numel() for n_, p in model.named_parameters() if weights.adapter.file_key(n_, TRAIN_SLOT) is None)
    log.info("adapter %s on %d modules: %d trainable parameters (%.2f%% of the %d frozen); base %s",
             recipe.adapter.name, len(modules), n, 100.0 * n / max(total, 1), total, base.path)
    meta = {"adapter": {
        "name": recipe.adapter.name, "params": dict(recipe.adapter.params), "modules": modules, "parameters": n,
        "base": {"sha256": sha, "path": str(base.path), "recipe_name": base.meta.get("recipe_name"),
                 "step": base.meta.get("step")},
    }}
    return weights, meta


def _stay_in_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(module, False)


def keep_frozen_in_eval(module: nn.Module) -> None:
    """Every sub-module without a trainable parameter stays in eval mode while the adapter trains: the frozen
    base computes exactly what it computed when it was trained (dropout off, normalisation statistics fixed),
    only the adapter's layers follow model.train()."""
    if not any(p.requires_grad for p in module.parameters()):
        module.eval()
        module.train = _stay_in_eval.__get__(module)  # this instance only
        return
    for child in module.children():
        keep_frozen_in_eval(child)


def adapter_parameter_count(recipe: Any) -> tuple[int, int]:
    """(parameters, modules) the recipe's adapter adds, from shapes only (the model built on the meta device)."""
    from vssflow.registry.assemble import build

    model = build(recipe, device="meta").model
    adapter = _create_adapter(recipe.adapter.name, dict(recipe.adapter.params))
    with torch.device("meta"):
        modules = adapter.attach(model, TRAIN_SLOT)
    return count_parameters(AdapterWeights(adapter, TRAIN_SLOT), model), len(modules)


def adapter_info(path: str | Path) -> tuple[Checkpoint, dict[str, Any]]:
    """An adapter checkpoint and its meta.json `adapter` entry; one line when it is not an adapter."""
    ckpt = Checkpoint(path)
    info = ckpt.meta.get("adapter")
    if not isinstance(info, dict) or "base" not in info:
        raise CheckpointError(f"{ckpt.path}: not an adapter checkpoint (meta.json names no adapter); a full "
                              "checkpoint goes to --checkpoint")
    return ckpt, info


def reject_adapter_checkpoint(ckpt: Checkpoint) -> None:
    """One line when an adapter checkpoint is given where a full one is needed (--checkpoint)."""
    info = ckpt.meta.get("adapter")
    if isinstance(info, dict):
        base = (info.get("base") or {}).get("path", "BASE")
        raise CheckpointError(f"{ckpt.path}: is an adapter checkpoint (only the adapter's weights); pass its base as "
                              f"--checkpoint and it as --adapter: --checkpoint {base} --adapter {ckpt.path}")


def parse_adapters(paths: Sequence[str] | None, scales: Sequence[float] | None) -> list[tuple[str, float]]:
    """--adapter A (repeatable) with --adapter-scale s (repeatable, by position; missing ones are 1)."""
    paths, scales = list(paths or []), list(scales or [])
    if len(scales) > len(paths):
        raise CheckpointError(f"{len(scales)} --adapter-scale values for {len(paths)} --adapter; give one scale per "
                              "adapter, in the same order")
    return [(p, scales[i] if i < len(scales) else 1.0) for i, p in enumerate(paths)]


def attach_adapters(model: nn.Module, base: Checkpoint, adapters: Sequence[tuple[str | Path, float]],
                    ema: bool = True) -> list[dict[str, Any]]:
    """Attach each adapter (checkpoint, scale) to a model loaded from `base`, in its own slot; all of them
    contribute, each times its scale. Returns what was applied (path, sha256, scale) for records."""
    if not adapters:
        return []
    sha = checkpoint_sha256(base.path)
    applied = []
    for i, (path, scale) in enumerate(adapters):
        ckpt, info = adapter_info(path)
        want = str(info["base"].get("sha256"))
        if want != sha:
            raise CheckpointError(
                f"{ckpt.path}: adapter was trained on base {info['base'].get('path')} (sha256 {want[:12]}), not on "
                f"{base.path} (sha256 {sha[:12]}); pass the checkpoint it was trained on as --checkpoint"
            )
        adapter = _create_adapter(info["name"], dict(info.get("params") or {}))
        slot = f"adapter{i}"
        adapter.attach(model, slot)
        weights = AdapterWeights(adapter, slot)
        weights.load(model, ckpt.model_state(ema=ema), str(ckpt.path))
        adapter.set_scale(model, slot, float(scale))
        applied.append({"path": str(ckpt.path), "sha256": checkpoint_sha256(ckpt.path), "scale": float(scale),
                        "adapter": adapter})
    model.requires_grad_(False)
    return applied


def merge_adapters(base: str | Path, adapters: Sequence[tuple[str | Path, float]], out: str | Path,
                   ema: bool = True) -> Path:
    """Fold adapters (with scales) into the base weights and write a plain checkpoint to `out` that
    `vssflow generate --checkpoint` loads like any other."""
    from vssflow.core.checkpoint import save_checkpoint
    from vssflow.core.files import OutputError
    from vssflow.generation import Pipeline
    from vssflow.registry.assemble import build

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(f"{out}: --out exists and is not an empty folder; choose a new folder")
    if not adapters:
        raise CheckpointError("nothing to merge: name at least one adapter checkpoint")
    pipe = Pipeline(base, device="cpu", ema=ema, adapters=adapters)
    merged_types = set()
    for record in pipe.adapters:
        if type(record["adapter"]) not in merged_types:  # one merge folds every slot of that adapter type
            record["adapter"].merge(pipe.model)
            merged_types.add(type(record["adapter"]))
    ckpt = pipe.checkpoint
    meta = {k: v for k, v in ckpt.meta.items() if k != "format_version"}
    meta["merged"] = {"base": {"path": str(ckpt.path), "sha256": checkpoint_sha256(ckpt.path), "ema": ema},
                      "adapters": [{k: v for k, v in r.items() if k != "adapter"} for r in pipe.adapters]}
    state = pipe.model.state_dict()
    own = set(build(pipe.recipe, device="meta").model.state_dict())  # the plain model's names, one for one
    if set(state) != own:
        extra = sorted(set(state) ^ own)
        raise CheckpointError(f"merging left the model with other tensor names than the plain model (e.g. "
                              f"{extra[0]}); this adapter type cannot be merged")
    return save_checkpoint(out, state, meta, recipe_yaml=ckpt.recipe_yaml(), include_rng=False)
