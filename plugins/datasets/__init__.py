"""Built-in datasets: `synthetic-av` (generated on first use, cached) and `manifest` (any JSONL manifest).

Both build a `vssflow.core.data.ClipDataset` that reads (or generates) its clips on first use. Until the trainer binds it to a recipe with
`ds.configure(conditions=..., spec=..., tokenizer=...)`, a dataset serves each clip's audio window
(16 kHz, hop 160, the set's clip length) with no conditions, which is what the conformance check reads.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Family = Literal["v2s", "visualtts", "mix"]
Split = Literal["train", "val", "test", "all"]


class SyntheticAVParams(BaseModel):
    """Params of `synthetic-av`."""

    model_config = ConfigDict(extra="forbid")

    root: str = Field(description="folder of the generated set; generated there on first use if missing")
    clips: Annotated[int, Field(ge=1)] = 1000
    seconds: Annotated[float, Field(ge=1.0, le=60.0)] = 4.0
    seed: int = 0
    families: list[Family] = Field(default_factory=lambda: ["v2s", "visualtts", "mix"])
    split: Split = "train"
    size: Annotated[int, Field(ge=32, le=512, multiple_of=2)] = 96
    workers: Annotated[int, Field(ge=1)] = 1  # processes used when generating
    sample_rate: Annotated[int, Field(ge=8000, le=96000)] = 16000  # of the written wavs
    channels: Literal[1, 2] = 1  # 2: stereo, each on-screen source panned by its x position


class ManifestParams(BaseModel):
    """Params of `manifest`."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="JSONL manifest; paths inside are relative to it")
    split: str | None = None  # keep clips whose `split` field equals this (None: all)
    window_s: Annotated[float, Field(gt=0, le=600)] = 10.0  # audio window until the trainer sets the recipe's
    create_example: bool = False  # write a 2-clip synthetic example at `path` when it does not exist


def build_synthetic_av(**params: Any) -> Any:
    """Synthetic V2S / VisualTTS / mixture clips, generated under `root` on first use."""
    from vssflow.plugins.datasets.synth.dataset import SyntheticAVDataset

    p = SyntheticAVParams(**params)
    return SyntheticAVDataset(p.root, clips=p.clips, seconds=p.seconds, seed=p.seed, families=tuple(p.families),
                              split=p.split, size=p.size, workers=p.workers, sample_rate=p.sample_rate,
                              channels=p.channels)


def build_manifest(**params: Any) -> Any:
    """The clips of a JSONL manifest (see docs/data.md), read and validated on first use."""
    from functools import partial

    from vssflow.core.data import ClipDataset
    from vssflow.core.sequence import SequenceSpec

    p = ManifestParams(**params)
    return ClipDataset(partial(_read, p.path, p.split, p.create_example), spec=SequenceSpec(16000, 160, p.window_s))


def _read(path: str, split: str | None, create_example: bool) -> list[Any]:
    from pathlib import Path

    from vssflow.core.manifest import read_manifest, write_manifest

    if create_example and not Path(path).exists():
        from vssflow.plugins.datasets.synth import SynthConfig, generate

        example = SynthConfig(clips=2, seconds=1.0, families=("v2s", "visualtts"))
        made = generate(Path(path).parent / f".{Path(path).stem}-example", example)
        write_manifest(path, read_manifest(made))
    return read_manifest(path, split=split)


def register(register) -> None:
    """Register the built-in datasets."""
    register(
        "synthetic-av",
        build_synthetic_av,
        params=SyntheticAVParams,
        description="synthetic audio-visual benchmark: V2S scenes, talking faces, mixtures (generated, cached)",
        tiny={"root": "{tmp}/synthetic-av", "clips": 2, "seconds": 1.0},
    )
    register(
        "manifest",
        build_manifest,
        params=ManifestParams,
        description="clips listed in a JSONL manifest (VGGSound, LRS2/3, GRID, Chem or your own)",
        tiny={"path": "{tmp}/example/manifest.jsonl", "create_example": True},
    )
