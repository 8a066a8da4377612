"""Mel and STFT helpers shared by codecs, vocoders and vocoder training: one framing everywhere.

Framing: a waveform of S samples gives exactly F = S // hop frames. The signal is reflect-padded by
(n_fft - hop) / 2 on each side and analysed without centring (the AudioLDM / HiFi-GAN convention), so frame k
covers samples [k*hop - (n_fft - hop)/2, k*hop + (n_fft + hop)/2) and `istft_same` inverts on the same grid.
Filterbank: Slaney mel scale with Slaney area normalisation (librosa's default), the filterbank AudioLDM2's
mel-VAE and HiFi-GAN were trained on, so their weights read our mels. Values: natural log of the magnitude
mel, clamped at `MelSpec.log_floor`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .interfaces import MelSpec


def side_padding(n_fft: int, hop_length: int) -> int:
    """Samples of padding on each side that make frames land on the S // hop grid."""
    if n_fft < hop_length or (n_fft - hop_length) % 2:
        raise ValueError(f"n_fft - hop_length must be even and >= 0, got n_fft={n_fft}, hop_length={hop_length}")
    return (n_fft - hop_length) // 2


def _pad_signal(wav: Tensor, pad: int) -> Tensor:
    # reflect needs more samples than the padding; tiny inputs fall back to zeros
    mode = "reflect" if wav.shape[-1] > pad else "constant"
    return F.pad(wav.unsqueeze(1), (pad, pad), mode=mode).squeeze(1)


class LogMel(nn.Module):
    """Waveform (B, S) -> natural-log mel (B, M, S // hop), on the framing described in this module."""

    def __init__(self, spec: MelSpec):
        super().__init__()
        import torchaudio

        self.spec = spec
        self.pad = side_padding(spec.n_fft, spec.hop_length)
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=spec.sample_rate,
            n_fft=spec.n_fft,
            win_length=spec.win_length,
            hop_length=spec.hop_length,
            f_min=spec.f_min,
            f_max=spec.f_max,
            n_mels=spec.n_mels,
            power=1.0,
            center=False,
            norm="slaney",
            mel_scale="slaney",
        )

    def magnitude(self, wav: Tensor) -> Tensor:
        """Linear-magnitude mel (B, M, F)."""
        frames = wav.shape[-1] // self.spec.hop_length
        mel = self.mel(_pad_signal(wav.float(), self.pad))  # (B, M, F')
        return mel[..., :frames]

    def forward(self, wav: Tensor) -> Tensor:
        """(B, S) -> (B, M, S // hop) natural-log mel."""
        return torch.log(self.magnitude(wav).clamp_min(self.spec.log_floor))


def padded_window(win_length: int, n_fft: int, device=None, dtype=None) -> Tensor:
    """Periodic Hann window of `win_length`, zero-padded to `n_fft` in the centre (as torch.stft does). (n_fft,)"""
    window = torch.hann_window(win_length, device=device, dtype=dtype)
    left = (n_fft - win_length) // 2
    return F.pad(window, (left, n_fft - win_length - left))


def istft_same(spec: Tensor, n_fft: int, hop_length: int, win_length: int | None = None) -> Tensor:
    """Complex spectrogram (B, n_fft // 2 + 1, F) on this module's framing -> waveform (B, F * hop)."""
    # torch.istft cannot invert uncentred frames (its window-envelope check fails at the edges), so the
    # frames are overlap-added here and the side padding trimmed, the approach Vocos takes
    win_length = win_length or n_fft
    pad = side_padding(n_fft, hop_length)
    b, _, frames = spec.shape
    window = padded_window(win_length, n_fft, device=spec.device, dtype=spec.real.dtype)
    chunks = torch.fft.irfft(spec, n=n_fft, dim=1) * window[None, :, None]  # (B, n_fft, F)
    total = (frames - 1) * hop_length + n_fft
    wav = F.fold(chunks, output_size=(1, total), kernel_size=(1, n_fft), stride=(1, hop_length))[:, 0, 0]
    envelope = F.fold(
        (window**2)[None, :, None].expand(1, n_fft, frames), output_size=(1, total), kernel_size=(1, n_fft),
        stride=(1, hop_length),
    )[0, 0, 0]
    wav = wav[:, pad : total - pad]  # (B, F * hop)
    envelope = envelope[pad : total - pad]
    return wav / envelope.clamp_min(1e-8)


class MultiResolutionMelLoss(nn.Module):
    """Mean L1 between log-mels of two waveforms (B, S) at several (n_fft, hop, n_mels) resolutions."""

    def __init__(
        self,
        sample_rate: int,
        resolutions: tuple[tuple[int, int, int], ...] = ((512, 128, 40), (1024, 256, 64), (2048, 512, 128)),
        f_max: float | None = None,
    ):
        super().__init__()
        import torchaudio

        self.mels = nn.ModuleList(
            torchaudio.transforms.MelSpectrogram(
                sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels, f_max=f_max or sample_rate / 2, power=1.0,
                norm="slaney", mel_scale="slaney",
            )
            for n_fft, hop, n_mels in resolutions
        )

    def forward(self, generated: Tensor, target: Tensor) -> Tensor:
        """Scalar loss."""
        total = generated.new_zeros(())
        for mel in self.mels:
            g = torch.log(mel(generated).clamp_min(1e-5))
            t = torch.log(mel(target).clamp_min(1e-5))
            total = total + (g - t).abs().mean()
        return total / len(self.mels)
