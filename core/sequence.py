"""SequenceSpec: the one place where sequence lengths are derived (sample rate, hop, fps, duration).

Resampling a condition onto the latent grid is `vssflow.core.conditioning.to_latent_grid`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_EPS = 1e-6


@dataclass(frozen=True)
class SequenceSpec:
    """Audio latent grid: `sample_rate` Hz waveform, one latent frame every `hop_length` samples; `channels`
    waveform channels (1: mono (S,) clips, 2: stereo (2, S))."""

    sample_rate: int
    hop_length: int
    duration_s: float
    channels: int = 1

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.hop_length <= 0 or self.duration_s <= 0 or self.channels <= 0:
            raise ValueError(f"SequenceSpec needs positive values, got {self}")

    @property
    def latent_fps(self) -> float:
        """Latent frames per second."""
        return self.sample_rate / self.hop_length

    @property
    def num_frames(self) -> int:
        """Latent frames in the full window."""
        return self.frames_for(self.duration_s)

    @property
    def num_samples(self) -> int:
        """Waveform samples in the full window."""
        return self.num_frames * self.hop_length

    def frames_for(self, seconds: float) -> int:
        """Latent frames needed to cover `seconds` of audio (rounded up)."""
        return max(1, math.ceil(seconds * self.latent_fps - _EPS))

    def condition_frames(self, fps: float, seconds: float | None = None) -> int:
        """Frames a condition sampled at `fps` has over `seconds` (default: the window)."""
        seconds = self.duration_s if seconds is None else seconds
        return max(1, math.ceil(seconds * fps - _EPS))

    def for_frames(self, num_frames: int) -> SequenceSpec:
        """The same grid over exactly `num_frames` latent frames (a padded batch, a generation length)."""
        if num_frames == self.num_frames:
            return self
        return SequenceSpec(self.sample_rate, self.hop_length, num_frames * self.hop_length / self.sample_rate,
                            self.channels)


def pad_or_trim(x: torch.Tensor, length: int, dim: int = -1, value: float = 0.0) -> torch.Tensor:
    """Zero-pad or cut `x` along `dim` to exactly `length`."""
    size = x.shape[dim]
    if size == length:
        return x
    if size > length:
        return x.narrow(dim, 0, length)
    dim = dim % x.dim()
    pad = [0, 0] * (x.dim() - dim - 1) + [0, length - size]
    return F.pad(x, pad, value=value)
