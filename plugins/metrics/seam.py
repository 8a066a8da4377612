"""`seam`: spectral discontinuity at the joins of a long clip's generation windows, relative to the same
measure inside the windows (docs/continuation.md).

Change curve: for every log-mel frame f, D(f) is the RMS difference (over mel bins) between the mean log-mel
spectrum of the `context_s` before f and of the `context_s` after it. A join is the overlap of two
consecutive windows, [start of window k, end of window k - 1]; its value is the largest D in it. The same
statistic (largest D over a stretch of equal length) is taken over stretches that tile the clip away from
every join. The score is mean(join values) / mean(inside values): about 1 when the joins are as smooth as
the audio inside a window, above 1 when they stand out. Lower is better. A clip of one window has no join
(NaN, left out of the mean).

Windows come from the clip's `windows` label ([[start, end], ...] seconds) when given, else from the
window layout the generator uses (`vssflow.core.windows.plan_windows` with `window_s` and `overlap_s`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from vssflow.core.interfaces import Metric
from vssflow.core.windows import plan_windows


class SeamDiscontinuity(Metric):
    """Join / inside ratio of the largest spectral change over a stretch (lower is better, 1 = seamless)."""

    higher_is_better = False
    needs_reference = False
    label_keys = ("windows",)  # optional: [[start, end], ...] seconds of each generation window

    def __init__(self, sample_rate: int = 16000, window_s: float = 4.0, overlap_s: float = 1.0,
                 context_s: float = 0.1, n_fft: int = 1024, hop_length: int = 160, n_mels: int = 64):
        import torchaudio

        self.sample_rate, self.window_s, self.overlap_s = sample_rate, window_s, overlap_s
        self.hop, self.context = hop_length, max(1, round(context_s * sample_rate / hop_length))
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels, f_max=sample_rate / 2, power=1.0
        )

    def change_curve(self, wav: Tensor) -> Tensor:
        """D(f) (F,) for a waveform (S,); NaN within `context_s` of either end."""
        m = torch.log(self.mel(wav.float()).clamp_min(1e-5))  # (M, F)
        a, frames = self.context, m.shape[-1]
        out = torch.full((frames,), math.nan)
        if frames <= 2 * a:
            return out
        c = torch.cat([m.new_zeros(m.shape[0], 1), m.cumsum(-1)], dim=-1)  # (M, F + 1)
        f = torch.arange(a, frames - a + 1)
        before = (c[:, f] - c[:, f - a]) / a  # mean of frames [f - a, f)
        after = (c[:, f + a] - c[:, f]) / a  # mean of frames [f, f + a)
        out[a : frames - a + 1] = (before - after).pow(2).mean(0).sqrt()[: frames - 2 * a + 1]
        return out

    def joins(self, seconds: float, labels: dict[str, Any] | None) -> list[tuple[float, float]]:
        """(start, end) seconds of each join between consecutive windows."""
        windows = (labels or {}).get("windows")
        if windows:
            spans = [(float(s), float(e)) for s, e in windows]
        else:
            spans = [(w.start, w.start + w.length) for w in plan_windows(seconds, self.window_s,
                                                                          min(self.overlap_s, self.window_s / 2))]
        spans.sort()
        return [(spans[k][0], max(spans[k][0], spans[k - 1][1])) for k in range(1, len(spans))]

    def score(self, wav: Tensor, labels: dict[str, Any] | None = None) -> float:
        """The ratio for one clip (S,)."""
        seconds = wav.shape[-1] / self.sample_rate
        joins = self.joins(seconds, labels)
        if not joins:
            return math.nan
        d = self.change_curve(wav)
        fps = self.sample_rate / self.hop
        frames = d.shape[0]

        def peak(a: int, b: int) -> float:
            part = d[max(0, a) : min(frames, b + 1)]
            part = part[~torch.isnan(part)]
            return float(part.max()) if part.numel() else math.nan

        width = max(1, round(max(e - s for s, e in joins) * fps))
        seam = [peak(round(s * fps), round(e * fps)) for s, e in joins]
        blocked = torch.zeros(frames, dtype=torch.bool)
        for s, e in joins:  # stretches inside windows stay a context away from every join
            blocked[max(0, round(s * fps) - self.context) : round(e * fps) + self.context + 1] = True
        inside, f = [], 0
        while f + width <= frames:
            if not bool(blocked[f : f + width + 1].any()):
                inside.append(peak(f, f + width))
                f += width + 1
            else:
                f += 1
        seam = [v for v in seam if math.isfinite(v)]
        inside = [v for v in inside if math.isfinite(v)]
        if not seam or not inside:
            return math.nan
        base = sum(inside) / len(inside)
        return (sum(seam) / len(seam)) / base if base > 0 else math.nan

    def __call__(self, generated, reference=None, labels=None, lengths=None) -> Tensor:  # noqa: D102
        scores = []
        for b in range(generated.shape[0]):
            n = generated.shape[-1] if lengths is None else int(min(lengths[b].item(), generated.shape[-1]))
            scores.append(self.score(generated[b, :n], labels[b] if labels else None))
        return torch.tensor(scores, dtype=torch.float32)

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Ten seconds of noise (three windows of four seconds)."""
        return {"generated": 0.1 * torch.randn(batch_size, 10 * self.sample_rate, generator=generator)}
