"""Long inputs: split a clip into overlapping windows of the model's length and cross-fade the results."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Window:
    """One generation window: [start, start + length) seconds of the clip, `valid` seconds of it real."""

    start: float
    length: float
    valid: float


def plan_windows(total_s: float, window_s: float, overlap_s: float) -> list[Window]:
    """Windows of `window_s` covering `total_s`, consecutive ones overlapping by `overlap_s`.

    A clip no longer than one window gives a single window (padded past its end); the last window is
    shifted back to end exactly at the clip's end, so no window is mostly padding.
    """
    if total_s <= 0 or window_s <= 0:
        raise ValueError(f"durations must be positive, got total {total_s}, window {window_s}")
    if not 0 <= overlap_s < window_s:
        raise ValueError(f"overlap {overlap_s} s must be in [0, window {window_s} s)")
    if total_s <= window_s:
        return [Window(0.0, window_s, total_s)]
    hop = window_s - overlap_s
    count = math.ceil((total_s - window_s) / hop - 1e-9) + 1
    starts = [min(i * hop, total_s - window_s) for i in range(count)]
    return [Window(s, window_s, window_s) for s in starts]


def crossfade(chunks: list[Tensor], windows: list[Window], total_samples: int, sample_rate: int) -> Tensor:
    """Overlap-add window outputs (..., S_i) into (..., total_samples) with linear cross-fades.

    Weights are a partition of unity on every sample: inside an overlap the earlier window fades out as
    the later one fades in; elsewhere a single window has weight one.
    """
    if len(chunks) != len(windows):
        raise ValueError("one chunk per window")
    lead = chunks[0].shape[:-1]
    out = chunks[0].new_zeros(*lead, total_samples)
    weight = torch.zeros(total_samples, dtype=out.dtype, device=out.device)
    for i, (chunk, win) in enumerate(zip(chunks, windows, strict=True)):
        start = round(win.start * sample_rate)
        n = min(chunk.shape[-1], total_samples - start)
        w = torch.ones(n, dtype=out.dtype, device=out.device)
        if i > 0:  # fade in over the overlap with the previous window
            prev_end = round((windows[i - 1].start + windows[i - 1].length) * sample_rate)
            fade = max(0, min(n, prev_end - start))
            if fade:
                w[:fade] = torch.linspace(0, 1, fade + 2, dtype=out.dtype, device=out.device)[1:-1]
        if i + 1 < len(windows):  # fade out over the overlap with the next window
            next_start = round(windows[i + 1].start * sample_rate)
            fade = max(0, min(n, start + n - next_start))
            if fade:
                w[n - fade :] = w[n - fade :] * torch.linspace(1, 0, fade + 2, dtype=out.dtype, device=out.device)[1:-1]
        out[..., start : start + n] += chunk[..., :n] * w
        weight[start : start + n] += w
    return out / weight.clamp_min(1e-8)
