"""Checkpoints: a directory of safetensors plus JSON, written atomically; nothing is ever unpickled.

    model.safetensors       every weight and buffer (frozen encoders, codec, vocoder too: self-contained)
    ema.safetensors         EMA of the trainable weights (optional; overlaid on model.safetensors)
    optimizer.safetensors   optimizer tensors; optimizer.json holds its structure and hyper-parameters
    rng.safetensors         torch RNG states (CPU and CUDA)
    trainer_state.json      step, data position, python/numpy RNG, anything JSON-able
    meta.json               vssflow version, recipe name and hash, format version, extra metadata
    recipe.yaml             the resolved recipe

A checkpoint is written to a hidden temporary directory beside its final name and renamed into place
(meta.json is written last), so a kill at any moment leaves either no checkpoint of that name or all of it.

A training run keeps its checkpoints in one folder (`CheckpointFolder`):

    checkpoints/step-000500/    one complete checkpoint per saved step, never modified once renamed in
    checkpoints/step-001000/
    checkpoints/last -> step-001000    a relative symlink, replaced by ONE rename (os.replace)

Nothing is moved away before its successor exists: the new step folder is renamed in, then `last` is
switched, then old step folders beyond the retention are retired (renamed to a hidden name, then deleted),
so a `step-*` name always means a complete checkpoint. Resume takes the newest complete step folder.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .files import apply_umask, fsync_dir, write_error

FORMAT_VERSION = 1
REQUIRED = ("model.safetensors", "meta.json")


def _write_text(path: Path, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _write_json(path: Path, data: Any) -> None:
    _write_text(path, json.dumps(data, indent=2, sort_keys=True))


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))
    except SafetensorError as exc:  # its I/O errors carry the OS error only in the text: "(os error 28)"
        code = re.search(r"os error (\d+)", str(exc))
        if code is None:
            raise OSError(errno.EIO, str(exc)) from None
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1)))) from None
    apply_umask(path, directory=False)  # safetensors creates its files 0600
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
    extra_json: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory atomically (temporary sibling, then rename) and return its path.

    Files and the folder get the user's umask (0644/0755 by default). An OSError (full disk, read-only
    folder) becomes one CheckpointError naming the checkpoint; nothing of the new one is left behind and an
    existing checkpoint of another name is untouched. Replacing an existing folder of the same name moves
    it aside first; a training run never does that (its step folders are new names, see CheckpointFolder).
    """
    final = Path(directory)
    tmp: Path | None = None
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        apply_umask(tmp, directory=True)
        _save_tensors(tmp / "model.safetensors", model_state)
        if ema_state is not None:
            _save_tensors(tmp / "ema.safetensors", ema_state)
        if optimizer is not None:
            tensors, structure = optimizer_to_tensors(optimizer)
            _save_tensors(tmp / "optimizer.safetensors", tensors)
            _write_json(tmp / "optimizer.json", structure)
        for name, tensors in (extra_tensors or {}).items():
            _save_tensors(tmp / f"{name}.safetensors", tensors)
        for name, data in (extra_json or {}).items():
            _write_json(tmp / f"{name}.json", data)
        state = dict(trainer_state or {})
        if include_rng:
            rng_tensors, rng_meta = rng_state()
            _save_tensors(tmp / "rng.safetensors", rng_tensors)
            state["rng"] = rng_meta
        _write_json(tmp / "trainer_state.json", state)
        if recipe_yaml is not None:
            _write_text(tmp / "recipe.yaml", recipe_yaml)
        _write_json(tmp / "meta.json", {"format_version": FORMAT_VERSION, **meta})  # last: marks completeness
        fsync_dir(tmp)
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            os.replace(final, old)
        os.replace(tmp, final)
        tmp = None
        fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise CheckpointError(str(write_error(final, exc, "write the checkpoint"))) from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


STEP_PATTERN = re.compile(r"^step-(\d{6,})$")


def step_folder_name(step: int) -> str:
    """checkpoints/step-000123: zero-padded so names sort by step."""
    return f"step-{step:06d}"


def _is_complete(path: Path) -> bool:
    """Every required file there and meta.json (written last) a readable JSON object (for a sharded
    checkpoint of an FSDP run: every rank's model file instead of model.safetensors)."""
    if not path.is_dir() or not (path / "meta.json").is_file():
        return False
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict):
        return False
    if not (path / "model.safetensors").is_file():
        return complete(path, meta)
    return True


@dataclass(frozen=True)
class CheckpointFolder:
    """The checkpoints/ folder of a run: step folders, the `last` symlink, retention, stale clean-up.

    `last` is a relative symlink (`last -> step-000123`): published by creating a temporary symlink and
    os.replace-ing it onto `last`, one atomic rename, so `last` always names a complete checkpoint.
    """

    path: Path

    @property
    def last(self) -> Path:
        """checkpoints/last."""
        return self.path / "last"

    def steps(self) -> list[tuple[int, Path]]:
        """(step, folder) of every complete step folder, oldest first."""
        if not self.path.is_dir():
            return []
        found = []
        for child in self.path.iterdir():
            m = STEP_PATTERN.match(child.name)
            if m and not child.is_symlink() and _is_complete(child):
                found.append((int(m.group(1)), child))
        return sorted(found)

    def _legacy_last(self) -> Path | None:
        """A `last` that is a real folder (written by vssflow before step folders), if complete."""
        last = self.last
        return last if last.is_dir() and not last.is_symlink() and _is_complete(last) else None

    def newest(self) -> Path | None:
        """The newest complete checkpoint (what --resume continues from), or None."""
        candidates = [(s, p) for s, p in self.steps()]
        legacy = self._legacy_last()
        if legacy is not None:
            try:
                step = int(json.loads((legacy / "trainer_state.json").read_text()).get("step", 0))
            except (OSError, ValueError, AttributeError):
                step = 0
            candidates.append((step, legacy))
        return max(candidates, key=lambda sp: sp[0])[1] if candidates else None

    def holds_run(self) -> bool:
        """Whether any complete checkpoint is there."""
        return self.newest() is not None

    def clean_stale(self) -> list[Path]:
        """Remove what interrupted writes leave: hidden temporaries, retired folders, temporary symlinks."""
        removed = []
        if not self.path.is_dir():
            return removed
        for child in self.path.iterdir():
            if child.name.startswith(".") and (".tmp-" in child.name or ".old-" in child.name
                                                or ".retired-" in child.name):
                if child.is_symlink() or child.is_file():
                    child.unlink(missing_ok=True)
                else:
                    shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
            elif STEP_PATTERN.match(child.name) and child.is_dir() and not _is_complete(child):
                # never produced by this module (step folders are renamed in complete); a copy gone wrong
                retired = self.path / f".{child.name}.retired-{os.getpid()}"
                os.replace(child, retired)
                shutil.rmtree(retired, ignore_errors=True)
                removed.append(child)
        return removed

    def _adopt_legacy_last(self) -> None:
        """Rename an old-style `last` folder to its step folder, so `last` can become a symlink."""
        legacy = self._legacy_last()
        if legacy is None:
            return
        step = int(json.loads((legacy / "trainer_state.json").read_text()).get("step", 0))
        target = self.path / step_folder_name(step)
        if target.exists():
            retired = self.path / f".last.retired-{os.getpid()}"
            os.replace(legacy, retired)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(legacy, target)

    def publish(self, step_folder: Path) -> None:
        """Point `last` at `step_folder` with one atomic rename of a relative symlink."""
        try:
            self._adopt_legacy_last()
            tmp = self.path / f".last.tmp-{os.getpid()}"
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()
            os.symlink(step_folder.name, tmp)
            os.replace(tmp, self.last)
            fsync_dir(self.path)
        except OSError as exc:
            raise CheckpointError(str(write_error(self.last, exc, "publish the checkpoint"))) from None

    def retain(self, keep_last: int | None, keep_every: int | None = None) -> list[Path]:
        """Delete step folders beyond the newest `keep_last` (None: keep all), except every `keep_every`-th
        step and the one `last` points to. Each is renamed to a hidden name first, then deleted."""
        if keep_last is None:
            return []
        steps = self.steps()
        keep = {p for _, p in steps[-keep_last:]} if keep_last > 0 else set()
        if keep_every:
            keep |= {p for s, p in steps if s % keep_every == 0}
        if self.last.is_symlink():
            keep.add(self.path / os.readlink(self.last))
        removed = []
        for _, path in steps:
            if path in keep:
                continue
            retired = self.path / f".{path.name}.retired-{os.getpid()}"
            try:
                os.replace(path, retired)
            except OSError:
                continue  # retention is best effort; a folder we cannot move stays complete
            shutil.rmtree(retired, ignore_errors=True)
            removed.append(path)
        return removed


# sharded checkpoints of FSDP runs (written by core/sharded_checkpoint.py): reading them

def shard_name(kind: str, rank: int, world: int) -> str:
    """`model.rank00001-of-00004.safetensors`."""
    return f"{kind}.rank{rank:05d}-of-{world:05d}.safetensors"


def sharded_world(meta: dict[str, Any]) -> int | None:
    """The world size of a sharded checkpoint's meta.json, None for a plain one."""
    info = meta.get("sharded")
    return int(info["world"]) if isinstance(info, dict) and "world" in info else None


def complete(folder: Path, meta: dict[str, Any]) -> bool:
    """Every rank's model file and shards.json are there."""
    world = sharded_world(meta)
    return world is not None and (folder / "shards.json").is_file() and all(
        (folder / shard_name("model", r, world)).is_file() for r in range(world))


def full_state(folder: Path, kind: str) -> dict[str, torch.Tensor]:
    """The whole (unsharded) state `kind` of a sharded step folder: each split tensor's ranks' rows joined."""
    index = _read_json(folder / "shards.json")
    world, layout = int(index["world"]), index["tensors"].get(kind)
    if layout is None:
        raise CheckpointError(f"{folder}: sharded checkpoint has no {kind} state")
    parts = []
    for r in range(world):
        path = folder / shard_name(kind, r, world)
        if not path.is_file():
            raise CheckpointError(f"{folder}: sharded checkpoint is missing {path.name}; it is incomplete")
        parts.append(_load_tensors(path))
    state = {}
    for key, info in layout.items():
        if info["split"]:
            missing = [r for r in range(world) if key not in parts[r]]
            if missing:
                raise CheckpointError(f"{folder}: {shard_name(kind, missing[0], world)} lacks {key}; the checkpoint "
                                      "is corrupt")
            value = torch.cat([parts[r][key] for r in range(world)], dim=0)
        else:
            if key not in parts[0]:
                raise CheckpointError(f"{folder}: {shard_name(kind, 0, world)} lacks {key}; the checkpoint is corrupt")
            value = parts[0][key]
        if list(value.shape) != list(info["shape"]):
            raise CheckpointError(f"{folder}: {kind} tensor {key} joins to shape {tuple(value.shape)}, shards.json says "
                                  f"{tuple(info['shape'])}; the checkpoint is corrupt")
        state[key] = value
    return state


def has_state(folder: Path, kind: str) -> bool:
    """Whether a sharded step folder holds state `kind`."""
    return kind in _read_json(folder / "shards.json")["tensors"]


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
        if missing == ["model.safetensors"] and (self.path / "shards.json").is_file():
            missing = []  # a sharded checkpoint (FSDP): checked below
        if missing:
            raise CheckpointError(f"{self.path}: incomplete checkpoint, missing {', '.join(missing)}")
        meta = _read_json(self.path / "meta.json")
        if not isinstance(meta, dict):
            raise CheckpointError(
                f"{self.path}/meta.json: expected a JSON object, got {type(meta).__name__}; the checkpoint is corrupt"
            )
        self.meta: dict[str, Any] = meta
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{self.path}: checkpoint format {self.meta.get('format_version')!r}, this vssflow reads {FORMAT_VERSION}"
            )
        self.sharded = sharded_world(self.meta)  # world size of a sharded (FSDP) checkpoint, None when plain
        if self.sharded is not None and not complete(self.path, self.meta):
            raise CheckpointError(f"{self.path}: incomplete sharded checkpoint (a rank's model file or shards.json "
                                  "is missing)")

    def model_state(self, ema: bool = False) -> dict[str, torch.Tensor]:
        """Model weights; with ema=True (and an EMA file present) the EMA tensors replace their namesakes.
        A sharded checkpoint's ranks are joined (`vssflow.core.sharded_checkpoint`)."""
        if self.sharded is not None:
            state = full_state(self.path, "model")
            if ema and has_state(self.path, "ema"):
                state.update(full_state(self.path, "ema"))
            return state
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
        state = _read_json(path) if path.is_file() else {}
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: expected a JSON object, got {type(state).__name__}; the checkpoint is corrupt")
        return state

    def check_plugins(self) -> None:
        """Every plugin distribution the checkpoint's recipe needs (meta.json `plugins`) is installed;
        otherwise one line saying which `pip install` brings it back."""
        from importlib.metadata import PackageNotFoundError, version

        for entry in self.meta.get("plugins") or []:
            if not isinstance(entry, dict) or not entry.get("distribution"):
                continue
            dist, wanted = str(entry["distribution"]), entry.get("version")
            try:
                version(dist)
            except PackageNotFoundError:
                pin = f"{dist}=={wanted}" if wanted else dist
                what = ", ".join(entry.get("components") or []) or "its components"
                raise CheckpointError(
                    f"{self.path}: the recipe needs plugin distribution {dist!r} ({what}), which is not installed; "
                    f"pip install {pin}"
                ) from None

    def recipe_yaml(self) -> str:
        """The resolved recipe saved with the checkpoint."""
        path = self.path / "recipe.yaml"
        if not path.is_file():
            raise CheckpointError(f"{self.path}: checkpoint has no recipe.yaml")
        return path.read_text()

    def load_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Restore optimizer state."""
        optimizer_from_tensors(optimizer, self.optimizer_tensors(), _read_json(self.path / "optimizer.json"))

    def optimizer_tensors(self) -> dict[str, torch.Tensor]:
        """The optimizer's tensors (a sharded checkpoint's ranks joined)."""
        if self.sharded is not None:
            return full_state(self.path, "optimizer")
        return self.tensors("optimizer")

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
