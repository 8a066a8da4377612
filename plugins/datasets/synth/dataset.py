"""`SyntheticAVDataset`: a ClipDataset over a synthetic set that is generated on first use and then reused."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vssflow.core.data import ClipDataset
from vssflow.core.manifest import ClipRecord, read_manifest
from vssflow.core.sequence import SequenceSpec

from .generate import _TASK, SynthConfig, clip_family, clip_split, generate


class SyntheticAVDataset(ClipDataset):
    """The clips of one split of a synthetic set under `root`; `len()` is known before anything is generated."""

    def __init__(
        self,
        root: str | os.PathLike,
        clips: int,
        seconds: float = 4.0,
        seed: int = 0,
        families: tuple[str, ...] = ("v2s", "visualtts", "mix"),
        split: str = "train",
        size: int = 96,
        workers: int = 1,
        sample_rate: int = 16000,
        channels: int = 1,
        **options: Any,
    ) -> None:
        self.config = SynthConfig(clips=clips, seconds=seconds, seed=seed, families=tuple(families), size=size,
                                  sample_rate=sample_rate, channels=channels)
        options.setdefault("spec", SequenceSpec(sample_rate, sample_rate // 100, seconds, channels))
        super().__init__(None, **options)
        self.root, self.split, self.workers = Path(root), split, workers
        self._indices = [i for i in range(clips) if split == "all" or clip_split(i) == split]

    def prepare(self) -> Path:
        """Generate the set if needed (a complete root with the same config is reused) and load its clips."""
        manifest = generate(self.root, self.config, workers=self.workers)
        records = read_manifest(manifest)
        self._records = records if self.split == "all" else [r for r in records if r.split == self.split]
        return manifest

    @property
    def records(self) -> list[ClipRecord]:
        """The clips of the split (generating the set on first access)."""
        if self._records is None:
            self.prepare()
        return self._records

    def __len__(self) -> int:
        return len(self._indices)

    def tasks(self) -> list[str]:
        """Task of every clip, known without generating."""
        return [_TASK[clip_family(self.config, i)] for i in self._indices]
