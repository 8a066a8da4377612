"""`griffin-lim`: the zero-training vocoder. exp(log-mel) -> linear magnitude (torchaudio InverseMelScale,
least squares on the same Slaney filterbank) -> phase by fast Griffin-Lim (torchaudio GriffinLim, momentum).

torchaudio's Griffin-Lim frames are centred (frame k at sample k * hop); the mel framing of core.audio puts
frame k's centre at k * hop + hop / 2, so the output is delayed by half a hop (and padded at the end) to line up with the analysed audio.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vssflow.core.interfaces import MelSpec, Vocoder

from .base import check_mel_input


class GriffinLimVocoder(Vocoder):
    """Natural-log mel (B, M, F) -> waveform (B, F * hop) by least-squares inverse mel and Griffin-Lim."""

    def __init__(
        self, mel: MelSpec = MelSpec(), n_iter: int = 32, momentum: float = 0.99, rand_init: bool = True, seed: int = 0
    ):
        super().__init__()
        self.rand_init, self.seed = rand_init, int(seed)
        import torchaudio

        self.mel = mel
        self.inverse_mel = torchaudio.transforms.InverseMelScale(
            mel.n_fft // 2 + 1, mel.n_mels, mel.sample_rate, mel.f_min, mel.f_max, norm="slaney", mel_scale="slaney"
        )
        self.griffin_lim = torchaudio.transforms.GriffinLim(
            n_fft=mel.n_fft, n_iter=n_iter, win_length=mel.win_length, hop_length=mel.hop_length, power=1.0,
            momentum=momentum, rand_init=rand_init,
        )


    def forward(self, mel: Tensor) -> Tensor:
        """(B, M, F) natural-log mel -> (B, F * hop)."""
        check_mel_input(self, mel)
        frames, hop = mel.shape[-1], self.mel.hop_length
        magnitude = self.inverse_mel(torch.exp(mel.float()))  # (B, n_fft/2+1, F)
        # centred frames span (F - 1) * hop samples; asking for more makes GriffinLim re-analyse F + 1 frames
        self.griffin_lim.length = (frames - 1) * hop
        if self.rand_init:  # seeded phases, clip by clip: independent of the batch and of the global RNG
            wav = torch.cat([self._seeded(magnitude[i : i + 1]) for i in range(magnitude.shape[0])])
        else:
            wav = self.griffin_lim(magnitude)  # (B, (F - 1) * hop), frame k centred at sample k * hop
        return F.pad(wav, (hop // 2, hop - hop // 2))  # (B, F * hop), frame k centred at k * hop + hop / 2

    def _seeded(self, magnitude: Tensor) -> Tensor:
        devices = [magnitude.device.index or 0] if magnitude.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            return self.griffin_lim(magnitude)
