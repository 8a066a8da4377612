"""Discriminators and losses for vocoder GAN training (HiFi-GAN's multi-period + a multi-resolution STFT one).

Every discriminator returns, per sub-discriminator, (logits, feature maps); losses are least-squares GAN
(HiFi-GAN's), feature matching is the L1 between real and generated feature maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

Outputs = list[tuple[Tensor, list[Tensor]]]


def _width(channels: int, scale: float) -> int:
    return max(4, int(round(channels * scale)))


class PeriodDiscriminator(nn.Module):
    """Waveform folded into (T / p, p) columns, 2D convs along time: catches periodic structure (pitch)."""

    def __init__(self, period: int, scale: float = 1.0):
        super().__init__()
        self.period = period
        widths = [1] + [_width(c, scale) for c in (32, 128, 512, 1024)]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(widths[i], widths[i + 1], (5, 1), (3, 1), padding=(2, 0))) for i in range(4)
        )
        self.convs.append(weight_norm(nn.Conv2d(widths[-1], widths[-1], (5, 1), 1, padding=(2, 0))))
        self.post = weight_norm(nn.Conv2d(widths[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(B, S) -> logits (B, N), feature maps."""
        b, s = wav.shape
        pad = (-s) % self.period
        x = F.pad(wav, (0, pad), mode="reflect" if pad < s else "constant").view(b, 1, -1, self.period)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            features.append(x)
        x = self.post(x)
        features.append(x)
        return x.flatten(1), features


class ResolutionDiscriminator(nn.Module):
    """2D convs over one STFT magnitude (UnivNet's multi-resolution discriminator): catches spectral detail."""

    def __init__(self, n_fft: int, hop_length: int, scale: float = 1.0):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        ch = _width(32, scale)
        self.convs = nn.ModuleList([
            weight_norm(nn.Conv2d(1, ch, (3, 9), padding=(1, 4))),
            weight_norm(nn.Conv2d(ch, ch, (3, 9), stride=(1, 2), padding=(1, 4))),
            weight_norm(nn.Conv2d(ch, ch, (3, 9), stride=(1, 2), padding=(1, 4))),
            weight_norm(nn.Conv2d(ch, ch, (3, 3), padding=(1, 1))),
        ])
        self.post = weight_norm(nn.Conv2d(ch, 1, (3, 3), padding=(1, 1)))
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(B, S) -> logits (B, N), feature maps."""
        spec = torch.stft(wav, self.n_fft, self.hop_length, window=self.window, return_complex=True)
        x = spec.abs().clamp_min(1e-7).pow(0.5).unsqueeze(1)  # (B, 1, freq, frames); sqrt compresses the range
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            features.append(x)
        x = self.post(x)
        features.append(x)
        return x.flatten(1), features


class Discriminators(nn.Module):
    """Multi-period (2, 3, 5, 7, 11) and multi-resolution STFT discriminators together."""

    def __init__(
        self,
        periods: tuple[int, ...] = (2, 3, 5, 7, 11),
        resolutions: tuple[tuple[int, int], ...] = ((512, 128), (1024, 256), (2048, 512)),
        scale: float = 1.0,
    ):
        super().__init__()
        self.periods = nn.ModuleList(PeriodDiscriminator(p, scale) for p in periods)
        self.resolutions = nn.ModuleList(ResolutionDiscriminator(n, h, scale) for n, h in resolutions)

    def forward(self, wav: Tensor) -> Outputs:
        """(B, S) -> [(logits, features)] for every sub-discriminator."""
        return [d(wav) for d in (*self.periods, *self.resolutions)]


def discriminator_loss(real: Outputs, fake: Outputs) -> Tensor:
    """Least squares: real -> 1, generated -> 0."""
    return sum(((1 - r) ** 2).mean() + (f**2).mean() for (r, _), (f, _) in zip(real, fake, strict=True))


def generator_loss(fake: Outputs) -> Tensor:
    """Least squares: generated -> 1."""
    return sum(((1 - f) ** 2).mean() for f, _ in fake)


def feature_matching_loss(real: Outputs, fake: Outputs) -> Tensor:
    """Mean L1 between the discriminators' feature maps on real and generated audio."""
    total, count = 0.0, 0
    for (_, real_maps), (_, fake_maps) in zip(real, fake, strict=True):
        for r, f in zip(real_maps, fake_maps, strict=True):
            total = total + (r.detach() - f).abs().mean()
            count += 1
    return total / max(count, 1)
