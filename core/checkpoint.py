"""Checkpoints: a directory of safetensors plus JSON, written atomically; nothing is ever unpickled.

    model.safetensors       every weight and buffer (frozen encoders, codec, vocoder too: self-contained)
    ema.safetensors         EMA of the trainable weights (optional; overlaid on model.safetensors)
    optimizer.safetensors   optimizer tensors; optimizer.json holds its structure and hyper-parameters
    rng.safetensors         torch RNG states (CPU and CUDA)
    trainer_state.json      step, data position, python/numpy RNG, anything JSON-able
    meta.json               vssflow version, recipe name and hash, format version, extra metadata
    recipe.yaml             the resolved recipe

A checkpoint is written to a hidden temporary directory beside its final name and renamed into place,
so a kill at any moment leaves either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

FORMAT_VERSION = 1
REQUIRED = ("model.safetensors", "meta.json")


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({exc}); the checkpoint is truncated or corrupt"
        ) from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable JSON ({exc}); the checkpoint is truncated or corrupt") from None


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (for safetensors) and a JSON-able structure."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    structure: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for idx, entry in state["state"].items():
        slots: dict[str, Any] = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{key}"] = value
                slots[key] = {"tensor": f"state.{idx}.{key}"}
            else:
                slots[key] = {"value": value}
        structure["state"][str(idx)] = slots
    return tensors, structure


def optimizer_from_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], structure: dict[str, Any]
) -> None:
    """Load the state split by `optimizer_to_tensors` back into `optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for idx, slots in structure["state"].items():
        entry = {}
        for key, slot in slots.items():
            if "tensor" in slot:
                if slot["tensor"] not in tensors:
                    raise CheckpointError(f"optimizer state is missing tensor {slot['tensor']}")
                entry[key] = tensors[slot["tensor"]]
            else:
                entry[key] = slot["value"]
        state[int(idx)] = entry
    try:
        optimizer.load_state_dict({"state": state, "param_groups": structure["param_groups"]})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"optimizer state does not fit this model ({exc})") from None


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """All RNG states: torch (CPU/CUDA) as tensors, python and numpy as JSON."""
    import numpy as np

    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    py = random.getstate()
    np_state = np.random.get_state()
    meta = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    import numpy as np

    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    py = meta["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def save_checkpoint(
    directory: str | Path,
    model_state: dict[str, torch.Tensor],
    meta: dict[str, Any],
    *,
    ema_state: dict[str, torch.Tensor] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    trainer_state: dict[str, Any] | None = None,
    recipe_yaml: str | None = None,
    extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None,
    include_rng: bool = True,
) -> Path:
    """Write a checkpoint directory atomically (temporary sibling, then rename) and return its path."""
    final = Path(directory)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        _save_tensors(tmp / "model.safetensors", model_state)
        if ema_state is not None:
            _save_tensors(tmp / "ema.safetensors", ema_state)
        if optimizer is not None:
            tensors, structure = optimizer_to_tensors(optimizer)
            _save_tensors(tmp / "optimizer.safetensors", tensors)
            _write_json(tmp / "optimizer.json", structure)
        for name, tensors in (extra_tensors or {}).items():
            _save_tensors(tmp / f"{name}.safetensors", tensors)
        state = dict(trainer_state or {})
        if include_rng:
            rng_tensors, rng_meta = rng_state()
            _save_tensors(tmp / "rng.safetensors", rng_tensors)
            state["rng"] = rng_meta
        _write_json(tmp / "trainer_state.json", state)
        if recipe_yaml is not None:
            (tmp / "recipe.yaml").write_text(recipe_yaml)
        _write_json(tmp / "meta.json", {"format_version": FORMAT_VERSION, **meta})
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


class Checkpoint:
    """A checkpoint directory opened for reading; every read validates and raises CheckpointError."""

    def __init__(self, directory: str | Path):
        self.path = Path(directory)
        if not self.path.exists():
            raise CheckpointError(f"{self.path}: checkpoint not found")
        if not self.path.is_dir():
            raise CheckpointError(
                f"{self.path}: not a vssflow checkpoint directory (expected a folder with model.safetensors and "
                "meta.json; vssflow never unpickles files such as .pt/.ckpt)"
            )
        missing = [f for f in REQUIRED if not (self.path / f).is_file()]
        if missing:
            raise CheckpointError(f"{self.path}: incomplete checkpoint, missing {', '.join(missing)}")
        self.meta: dict[str, Any] = _read_json(self.path / "meta.json")
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{self.path}: checkpoint format {self.meta.get('format_version')!r}, this vssflow reads {FORMAT_VERSION}"
            )

    def model_state(self, ema: bool = False) -> dict[str, torch.Tensor]:
        """Model weights; with ema=True (and an EMA file present) the EMA tensors replace their namesakes."""
        state = _load_tensors(self.path / "model.safetensors")
        if ema and (self.path / "ema.safetensors").is_file():
            averaged = _load_tensors(self.path / "ema.safetensors")
            unknown = sorted(set(averaged) - set(state))
            if unknown:
                raise CheckpointError(
                    f"{self.path}: ema.safetensors has tensors model.safetensors lacks ({', '.join(unknown[:3])}"
                    f"{', ...' if len(unknown) > 3 else ''}); the checkpoint is inconsistent"
                )
            state.update(averaged)
        return state

    def has(self, name: str) -> bool:
        """Whether the checkpoint holds file `name`."""
        return (self.path / name).is_file()

    def tensors(self, name: str) -> dict[str, torch.Tensor]:
        """Tensors of `name`.safetensors."""
        path = self.path / f"{name}.safetensors"
        if not path.is_file():
            raise CheckpointError(f"{self.path}: checkpoint has no {name}.safetensors")
        return _load_tensors(path)

    def trainer_state(self) -> dict[str, Any]:
        """trainer_state.json (empty if absent)."""
        path = self.path / "trainer_state.json"
        return _read_json(path) if path.is_file() else {}

    def recipe_yaml(self) -> str:
        """The resolved recipe saved with the checkpoint."""
        path = self.path / "recipe.yaml"
        if not path.is_file():
            raise CheckpointError(f"{self.path}: checkpoint has no recipe.yaml")
        return path.read_text()

    def load_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Restore optimizer state."""
        optimizer_from_tensors(optimizer, self.tensors("optimizer"), _read_json(self.path / "optimizer.json"))

    def restore_rng(self) -> None:
        """Restore the RNG states saved with the checkpoint."""
        state = self.trainer_state()
        if "rng" in state and self.has("rng.safetensors"):
            set_rng_state(self.tensors("rng"), state["rng"])


def load_model_state(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str, strict: bool = True) -> None:
    """load_state_dict with a CheckpointError naming the mismatch (another recipe's checkpoint, say)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if wrong or (strict and (missing or unexpected)):
        detail = (
            f"{len(missing)} missing (e.g. {missing[0]})" if missing else
            f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else
            f"shape of {wrong[0]} is {tuple(state[wrong[0]].shape)}, model has {tuple(own[wrong[0]].shape)}"
        )
        raise CheckpointError(f"{source}: weights do not fit this model ({detail}); was it trained with another recipe?")
    module.load_state_dict(state, strict=strict)
