"""Feature cache: outputs of frozen encoders over a manifest, stored as one safetensors file per clip.

    ROOT/<encoder name>-<key>/config.json          the resolved encoder config the key was made from
    ROOT/<encoder name>-<key>/<clip id>.safetensors {"features": (L, D) float}, metadata {"fps": ...}

`key` hashes the encoder's name, resolved params and distribution + version, so changing any of them gives
a new folder and stale features are never served. Files are written atomically. Filling a cache from a
manifest is `vssflow.core.feature_extraction.extract_features`. Core stays plugin-agnostic: the caller builds the encoders with
`vssflow.registry.create`, which stamps each with the resolved config (ComponentInfo) the key is made from.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import MediaError

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


def cached_dirs(root: str | os.PathLike, encoders: Mapping[str, Any]) -> dict[str, Path]:
    """{condition: folder} for the frozen encoders (built by the registry) that already have a cache under `root`."""
    out = {}
    for cname, encoder in encoders.items():
        if getattr(encoder, "frozen", False) and getattr(encoder, "vssflow_component", None) is not None:
            folder = cache_dir_for(root, encoder)
            if (folder / "config.json").is_file():
                out[cname] = folder
    return out
