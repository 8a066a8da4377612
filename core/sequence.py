"""SequenceSpec: the one place where sequence lengths are derived (sample rate, hop, fps, duration)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_EPS = 1e-6


@dataclass(frozen=True)
class SequenceSpec:
    """Audio latent grid: `sample_rate` Hz waveform, one latent frame every `hop_length` samples."""

    sample_rate: int
    hop_length: int
    duration_s: float

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.hop_length <= 0 or self.duration_s <= 0:
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
        return SequenceSpec(self.sample_rate, self.hop_length, num_frames * self.hop_length / self.sample_rate)

    def grid_indices(self, src_fps: float, src_len: int, num_frames: int | None = None) -> torch.Tensor:
        """Index of the source frame (at `src_fps`) covering the centre of each latent frame. (T,)"""
        t_frames = self.num_frames if num_frames is None else num_frames
        centres = (torch.arange(t_frames, dtype=torch.float64) + 0.5) / self.latent_fps  # seconds
        idx = torch.floor(centres * src_fps).long()
        return idx.clamp_(0, max(src_len - 1, 0))

    def to_grid(
        self,
        features: torch.Tensor,
        src_fps: float,
        mask: torch.Tensor | None = None,
        num_frames: int | None = None,
        mode: str = "nearest",
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Resample time-aligned features (B, L, D) at `src_fps` onto the latent grid (B, T, D).

        `nearest` keeps discrete embeddings (phonemes) crisp; `linear` interpolates between frame centres.
        The mask (B, L) True = valid is resampled with nearest, so padded source frames stay invalid.
        """
        b, length, _ = features.shape
        t_frames = self.num_frames if num_frames is None else num_frames
        idx = self.grid_indices(src_fps, length, t_frames).to(features.device)
        if mode == "nearest":
            out = features.index_select(1, idx)  # (B, T, D)
        elif mode == "linear":
            centres = (torch.arange(t_frames, device=features.device, dtype=torch.float32) + 0.5) / self.latent_fps
            pos = (centres * src_fps - 0.5).clamp(0, max(length - 1, 0))  # fractional source index
            lo = pos.floor().long()
            hi = (lo + 1).clamp(max=length - 1)
            w = (pos - lo.float()).view(1, -1, 1).to(features.dtype)
            out = features.index_select(1, lo) * (1 - w) + features.index_select(1, hi) * w
        else:
            raise ValueError(f"unknown resampling mode {mode!r}; use 'nearest' or 'linear'")
        out_mask = None if mask is None else mask.index_select(1, idx)
        return out, out_mask


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
