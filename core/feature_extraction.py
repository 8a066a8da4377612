"""Fill a feature cache (`vssflow.core.feature_cache`): run frozen encoders over a manifest's clips.

An interrupted extraction resumes by skipping clips whose file exists. Under torchrun each process takes its
share of the missing clips (`vssflow.core.sharding`: blocks of `batch_size`, so every batch is the batch one
process would encode and the files are bit-identical). Core stays plugin-agnostic: the caller
builds the encoders with `vssflow.registry.create`, which stamps each with the resolved config the cache key
is made from.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .data import ClipDataset
from .feature_cache import cache_dir_for, encoder_config, feature_path, write_feature_file
from .media import atomic_path
from .sharding import Shard, barrier


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



def extract_features(
    encoders: Mapping[str, Any],
    records: list[Any],
    root: str | os.PathLike,
    tasks: Mapping[str, Iterable[str] | None] | None = None,
    workers: int = 0,
    batch_size: int = 4,
    device: str = "cpu",
    progress: bool = True,
    shard: Shard | None = None,
) -> list[ExtractReport]:
    """Run each frozen encoder ({condition: encoder built by the registry}) over `records` into the cache.

    `tasks` limits a condition to clips of those tasks. Clips already cached are skipped; decoding runs in
    `workers` DataLoader processes. `shard`: this process's rank and the world size (default: one process);
    each rank encodes its blocks of `batch_size` missing clips.
    """
    from torch.utils.data import DataLoader

    reports: list[ExtractReport] = []
    plans: list[tuple[str, Any, ExtractReport, list[Any]]] = []
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
        if shard is not None and shard.sharded:
            todo = shard.take(todo, batch_size)
        reports.append(report)
        plans.append((cname, encoder, report, todo))
    # every rank has listed what is missing before any rank writes: the split is the same on all ranks
    barrier(shard or Shard())
    for cname, encoder, report, todo in plans:
        name, folder, contract = report.encoder, report.folder, encoder.contract
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
