"""Feature cache: outputs of frozen encoders over a manifest, stored as one safetensors file per clip.

    ROOT/<encoder name>-<key>/config.json          the resolved encoder config the key was made from
    ROOT/<encoder name>-<key>/<clip id>.safetensors {"features": (L, D) float}, metadata {"fps": ...}

`key` hashes the encoder's name, resolved params and distribution + version, so changing any of them gives
a new folder and stale features are never served. Files are written atomically; an interrupted extraction
resumes by skipping clips whose file exists. Core stays plugin-agnostic: the caller builds the encoders with
`vssflow.registry.create`, which stamps each with the resolved config (ComponentInfo) the key is made from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import MediaError

logger = logging.getLogger(__name__)

CACHE_VERSION = 1


def encoder_config(name: str, params: Mapping[str, Any], distribution: str = "vssflow",
                   version: str = "unknown") -> dict[str, Any]:
    """The config a cache folder is keyed by."""
    return {"name": name, "params": json.loads(json.dumps(dict(params), sort_keys=True, default=str)),
            "distribution": distribution, "version": version, "cache_version": CACHE_VERSION}


def encoder_key(config: Mapping[str, Any]) -> str:
    """16 hex digits of sha256 over the canonical JSON of an encoder config."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_dir(root: str | os.PathLike, name: str, params: Mapping[str, Any], distribution: str = "vssflow",
              version: str = "unknown") -> Path:
    """Folder of one encoder's features under `root`."""
    return Path(root) / f"{name}-{encoder_key(encoder_config(name, params, distribution, version))}"


def cache_dir_for(root: str | os.PathLike, component: Any) -> Path:
    """Folder of a built component's features, from the ComponentInfo the registry stamps on it."""
    info = getattr(component, "vssflow_component", None)
    if info is None:
        raise ValueError(f"{type(component).__name__} was not built by vssflow.registry.create: no config to key by")
    return cache_dir(root, info.name, info.params, info.distribution, info.version)


def feature_path(folder: str | os.PathLike, clip_id: str) -> Path:
    """The file of one clip in a cache folder."""
    return Path(folder) / f"{clip_id}.safetensors"


def write_feature_file(path: str | os.PathLike, features: torch.Tensor, fps: float | None,
                       meta: Mapping[str, str] | None = None) -> Path:
    """Save (L, D) features atomically, with fps in the file's metadata."""
    from safetensors.torch import save_file

    from .media import atomic_path

    if features.dim() != 2:
        raise ValueError(f"features must be (L, D), got shape {tuple(features.shape)}")
    metadata = {"fps": "" if fps is None else repr(float(fps)), **{k: str(v) for k, v in (meta or {}).items()}}
    with atomic_path(path) as tmp:
        save_file({"features": features.detach().to("cpu", torch.float32).contiguous()}, str(tmp), metadata=metadata)
    return Path(path)


def read_feature_file(path: str | os.PathLike) -> tuple[torch.Tensor, dict[str, Any]]:
    """(features (L, D), metadata with fps as float or None)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            x = f.get_tensor("features")
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for a bad file
        raise MediaError(f"{path}: cannot read cached features: {exc}") from None
    meta["fps"] = float(meta["fps"]) if meta.get("fps") else None
    return x.float(), meta


# ----------------------------------------------------------------------------------------------------------
# extraction


@dataclass
class ExtractReport:
    """What one condition's extraction did."""

    condition: str
    encoder: str
    folder: Path | None
    written: int = 0
    skipped: int = 0  # already cached
    absent: int = 0  # clips without this condition's input
    seconds: float = 0.0
    note: str = ""

    def line(self) -> str:
        """One line for the CLI."""
        if self.folder is None:
            return f"{self.condition}: {self.encoder} not cached ({self.note})"
        rate = self.written / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.condition}: {self.encoder} -> {self.folder} ({self.written} written, {self.skipped} cached, "
                f"{self.absent} without input, {rate:.1f} clips/s)")


def cached_dirs(root: str | os.PathLike, encoders: Mapping[str, Any]) -> dict[str, Path]:
    """{condition: folder} for the frozen encoders (built by the registry) that already have a cache under `root`."""
    out = {}
    for cname, encoder in encoders.items():
        if getattr(encoder, "frozen", False) and getattr(encoder, "vssflow_component", None) is not None:
            folder = cache_dir_for(root, encoder)
            if (folder / "config.json").is_file():
                out[cname] = folder
    return out


def extract_features(
    encoders: Mapping[str, Any],
    records: list[Any],
    root: str | os.PathLike,
    tasks: Mapping[str, Iterable[str] | None] | None = None,
    workers: int = 0,
    batch_size: int = 4,
    device: str = "cpu",
    progress: bool = True,
) -> list[ExtractReport]:
    """Run each frozen encoder ({condition: encoder built by the registry}) over `records` into the cache.

    `tasks` limits a condition to clips of those tasks. Clips already cached are skipped; decoding runs in
    `workers` DataLoader processes.
    """
    from torch.utils.data import DataLoader

    from .data import ClipDataset
    from .media import atomic_path

    reports: list[ExtractReport] = []
    for cname, encoder in encoders.items():
        info = getattr(encoder, "vssflow_component", None)
        name = info.name if info is not None else type(encoder).__name__
        if not getattr(encoder, "frozen", False):
            reports.append(ExtractReport(cname, name, None, note="trainable encoder: computed during training"))
            continue
        folder = cache_dir_for(root, encoder)
        folder.mkdir(parents=True, exist_ok=True)
        contract = encoder.contract
        config_path = folder / "config.json"
        if not config_path.is_file():
            config = {**encoder_config(info.name, info.params, info.distribution, info.version),
                      "fps": contract.fps, "dim": getattr(encoder, "dim", None), "modality": contract.modality}
            with atomic_path(config_path) as tmp:
                tmp.write_text(json.dumps(config, indent=1, sort_keys=True))
        report = ExtractReport(cname, name, folder)
        todo = [r for r in records if not feature_path(folder, r.id).is_file()]
        report.skipped = len(records) - len(todo)
        started = time.perf_counter()
        if todo:
            allowed = (tasks or {}).get(cname)
            ds = ClipDataset(todo, {cname: (contract.modality, contract)}, spec=None, load_labels=False,
                             condition_tasks={cname: tuple(allowed)} if allowed else None)
            loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=ds.collate)
            encoder = encoder.to(device).eval()
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=len(todo), unit="clip", desc=f"{cname} ({name})")
            try:
                for batch in loader:
                    report.written += _encode_batch(encoder, batch, cname, folder, device)
                    report.absent += len(batch["ids"]) - int(batch["conditions"][cname]["present"].sum())
                    if bar is not None:
                        bar.update(len(batch["ids"]))
            finally:
                if bar is not None:
                    bar.close()
        report.seconds = time.perf_counter() - started
        reports.append(report)
    return reports


def _encode_batch(encoder: Any, batch: dict[str, Any], cname: str, folder: Path, device: str) -> int:
    cond = batch["conditions"][cname]
    present = cond["present"]
    if not bool(present.any()):
        return 0
    rows = present.nonzero().flatten()
    x = cond["x"][rows].to(device)
    mask = cond["mask"][rows].to(device)
    extras = {k: v[rows].to(device) for k, v in cond.items()
              if k not in ("x", "mask", "present") and isinstance(v, torch.Tensor)}
    with torch.inference_mode():
        out = encoder(x, mask=mask, **extras)
    features = out.features.float().cpu()  # (b, L, D)
    valid = out.mask.cpu() if out.mask is not None else None
    for j, row in enumerate(rows.tolist()):
        feats = features[j][valid[j]] if valid is not None else features[j]
        write_feature_file(feature_path(folder, batch["ids"][row]), feats, out.fps,
                           {"clip": batch["ids"][row], "condition": cname})
    return len(rows)
