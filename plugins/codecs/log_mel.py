"""`log-mel`: the normalised natural-log mel spectrogram as the flow's latent (no training, exact decode).

encode: wav (B, S) -> (log-mel - mean) / std, transposed to (B, T = S // hop, n_mels), 100 Hz at the
paper's settings. decode: latent -> log-mel (B, n_mels, T), clamped at the log floor (real mels never go
below it, generated ones may). The default mean/std make the flow target roughly unit variance; they were
measured with `mel_statistics` on espeak-ng speech (four voices and gains) mixed with synthetic impacts,
beeps and rumble plus 10% silence (mean -6.4, std 3.5; the speech alone: -4.9, 2.3). Measure your own data
with the same function and put the numbers in the recipe.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from torch import Tensor

from vssflow.core.audio import LogMel
from vssflow.core.interfaces import InputContract, MelSpec

from .base import MelCodec

DEFAULT_MEAN = -6.4
DEFAULT_STD = 3.5


def mel_statistics(wavs: Iterable[Tensor], spec: MelSpec = MelSpec()) -> tuple[float, float]:
    """Mean and standard deviation of the log-mel of some waveforms (S,) or (B, S): the codec's mean/std."""
    analysis = LogMel(spec)
    total, total_sq, count = 0.0, 0.0, 0
    for wav in wavs:
        mel = analysis(wav.reshape(-1, wav.shape[-1]).float()).double()
        total += float(mel.sum())
        total_sq += float((mel**2).sum())
        count += mel.numel()
    mean = total / count
    return mean, math.sqrt(max(total_sq / count - mean**2, 1e-12))


class LogMelCodec(MelCodec):
    """Waveform <-> normalised log-mel (B, T, n_mels); decode is exact up to the log floor."""

    def __init__(self, mel: MelSpec = MelSpec(), mean: float = DEFAULT_MEAN, std: float = DEFAULT_STD,
                 audio_channels: int = 1):
        super().__init__()
        self.mel = mel
        self.audio_channels = int(audio_channels)
        self.sample_rate, self.hop_length = mel.sample_rate, mel.hop_length
        self.channels = mel.n_mels * self.audio_channels  # audio channel a's mel bins are latent channels a*M..(a+1)*M
        self.mean, self.std = float(mean), float(std)
        self.analysis = LogMel(self.mel)

    @property
    def contract(self) -> InputContract:
        """Waveform at `sample_rate`: (B, S) mono, (B, audio_channels, S) otherwise."""
        return InputContract("audio", sample_rate=self.sample_rate,
                             extra={"latent_fps": self.mel.frames_per_second, "audio_channels": self.audio_channels})

    def encode(self, wav: Tensor, sample_rate: int | None = None) -> Tensor:
        """(B, S) -> (B, S // hop, n_mels); (B, A, S) -> (B, S // hop, A * n_mels), channel-major."""
        if self.audio_channels == 1:
            self.check_wav(wav, sample_rate)
            return ((self.analysis(wav) - self.mean) / self.std).transpose(1, 2)
        self.check_channels(wav, sample_rate)
        b, a, s = wav.shape
        mel = self.analysis(wav.reshape(b * a, s))  # (B*A, M, F)
        mel = mel.reshape(b, a * self.mel.n_mels, -1)  # (B, A*M, F)
        return ((mel - self.mean) / self.std).transpose(1, 2)

    def decode(self, latent: Tensor) -> Tensor:
        """(B, T, n_mels) -> natural-log mel (B, n_mels, T); several audio channels: (B, A, n_mels, T)."""
        mel = (latent.transpose(1, 2) * self.std + self.mean).clamp_min(math.log(self.mel.log_floor))
        if self.audio_channels == 1:
            return mel
        return mel.unflatten(1, (self.audio_channels, self.mel.n_mels))

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """Round trip: (B, n_mels, S // hop), or (B, A, n_mels, S // hop)."""
        wav = inputs["wav"]
        lead = (wav.shape[0],) if self.audio_channels == 1 else (wav.shape[0], self.audio_channels)
        return {"output": (*lead, self.mel.n_mels, wav.shape[-1] // self.hop_length)}
