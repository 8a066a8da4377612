"""`hifigan`: the HiFi-GAN V1 generator, written in torch, loading AudioLDM2 / SpeechT5 vocoder folders.

Key names are those of transformers' SpeechT5HifiGan (AudioLDM2's `vocoder/` folder): conv_pre,
upsampler.N, resblocks.N.convs1.M, resblocks.N.convs2.M, conv_post, and the `mean`/`scale` buffers used when
`normalize_before`. Weight norm is folded at load time (weight_g/weight_v and parametrizations keys both
work), so the runtime is plain convolutions and no transformers install is needed.

    mel (B, M, F) --conv_pre--> (B, C, F) --[lrelu, upsample x r_i, mean of resblocks]*--> (B, C/2^n, F * prod r)
    --lrelu(0.01), conv_post, tanh--> (B, F * hop); hop = prod(upsample_rates), trimmed/padded to exactly F * hop.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vssflow.core.errors import ContractError
from vssflow.core.interfaces import Vocoder

from ..mel import MelAnalysisParams, mel_spec
from .base import (
    architecture_from_config,
    check_mel_input,
    fold_weight_norm,
    load_strict,
    read_folder,
    write_folder,
)

# AudioLDM2's vocoder (16 kHz, 64 mels, hop 160): the defaults of every architecture param below
AUDIOLDM2 = {
    "model_in_dim": 64,
    "sampling_rate": 16000,
    "upsample_initial_channel": 1024,
    "upsample_rates": [5, 4, 2, 2, 2],
    "upsample_kernel_sizes": [16, 16, 8, 4, 4],
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "leaky_relu_slope": 0.1,
    "normalize_before": False,
}
# the mel analysis the weights expect; SpeechT5's config has no such keys, our save_pretrained writes them
MEL_DEFAULTS = MelAnalysisParams().model_dump()


class ResBlock(nn.Module):
    """HiFi-GAN ResBlock1: pairs of (dilated conv, conv) with leaky ReLU, each pair residual."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int], slope: float):
        super().__init__()
        self.slope = slope
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=d * (kernel_size - 1) // 2) for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2) for _ in dilations
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, C, T)."""
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, self.slope)), self.slope))
        return x


class HiFiGANVocoder(Vocoder):
    """HiFi-GAN V1 generator (SpeechT5HifiGan layout): natural-log mel (B, M, F) -> waveform (B, F * hop)."""

    def __init__(
        self,
        model_in_dim: int = 64,
        sampling_rate: int = 16000,
        upsample_initial_channel: int = 1024,
        upsample_rates: Sequence[int] = (5, 4, 2, 2, 2),
        upsample_kernel_sizes: Sequence[int] = (16, 16, 8, 4, 4),
        resblock_kernel_sizes: Sequence[int] = (3, 7, 11),
        resblock_dilation_sizes: Sequence[Sequence[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
        leaky_relu_slope: float = 0.1,
        normalize_before: bool = False,
        n_fft: int = 1024,
        win_length: int = 1024,
        f_min: float = 0.0,
        f_max: float | None = None,
        log_floor: float = 1e-5,
    ):
        super().__init__()
        if len(upsample_rates) != len(upsample_kernel_sizes):
            raise ContractError("hifigan: upsample_rates and upsample_kernel_sizes must have the same length")
        if len(resblock_kernel_sizes) != len(resblock_dilation_sizes):
            raise ContractError("hifigan: resblock_kernel_sizes and resblock_dilation_sizes must have the same length")
        self.config = {
            "model_in_dim": int(model_in_dim), "sampling_rate": int(sampling_rate),
            "upsample_initial_channel": int(upsample_initial_channel), "upsample_rates": [int(r) for r in upsample_rates],
            "upsample_kernel_sizes": [int(k) for k in upsample_kernel_sizes],
            "resblock_kernel_sizes": [int(k) for k in resblock_kernel_sizes],
            "resblock_dilation_sizes": [[int(d) for d in ds] for ds in resblock_dilation_sizes],
            "leaky_relu_slope": float(leaky_relu_slope), "normalize_before": bool(normalize_before),
            "n_fft": n_fft, "win_length": win_length, "f_min": f_min, "f_max": f_max, "log_floor": log_floor,
        }
        hop = 1
        for r in upsample_rates:
            hop *= int(r)
        self.mel = mel_spec(sample_rate=sampling_rate, n_mels=model_in_dim, hop_length=hop, n_fft=n_fft,
                            win_length=win_length, f_min=f_min, f_max=f_max, log_floor=log_floor)
        self.slope, self.normalize_before = float(leaky_relu_slope), bool(normalize_before)
        self.num_kernels = len(resblock_kernel_sizes)
        self.conv_pre = nn.Conv1d(model_in_dim, upsample_initial_channel, 7, padding=3)
        self.upsampler = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        channels = upsample_initial_channel
        for rate, kernel in zip(upsample_rates, upsample_kernel_sizes, strict=True):
            self.upsampler.append(
                nn.ConvTranspose1d(channels, channels // 2, kernel, stride=rate, padding=(kernel - rate) // 2)
            )
            channels //= 2
            for k, dilations in zip(resblock_kernel_sizes, resblock_dilation_sizes, strict=True):
                self.resblocks.append(ResBlock(channels, int(k), [int(d) for d in dilations], self.slope))
        self.conv_post = nn.Conv1d(channels, 1, 7, padding=3)
        self.register_buffer("mean", torch.zeros(model_in_dim))  # SpeechT5's input statistics
        self.register_buffer("scale", torch.ones(model_in_dim))

    @classmethod
    def from_pretrained(cls, path: str | Path, **params: Any) -> HiFiGANVocoder:
        """Load a SpeechT5HifiGan / AudioLDM2 vocoder folder; params left at their defaults defer to its config."""
        config, state = read_folder(path, "vocoder 'hifigan'")
        args = architecture_from_config("vocoder 'hifigan'", path, config, params, {**AUDIOLDM2, **MEL_DEFAULTS})
        vocoder = cls(**args)
        load_strict(vocoder, fold_weight_norm(state), f"vocoder 'hifigan' from {path}")
        return vocoder

    def save_pretrained(self, path: str | Path) -> Path:
        """Write config.json (SpeechT5HifiGanConfig keys + the mel analysis) and model.safetensors."""
        return write_folder(path, self.config, self.state_dict())

    def forward(self, mel: Tensor) -> Tensor:
        """(B, M, F) natural-log mel -> (B, F * hop)."""
        check_mel_input(self, mel)
        frames = mel.shape[-1]
        if self.normalize_before:
            mel = (mel - self.mean[:, None]) / self.scale[:, None]
        h = self.conv_pre(mel)  # (B, C, F)
        for i, up in enumerate(self.upsampler):
            h = up(F.leaky_relu(h, self.slope))  # (B, C / 2^(i+1), F * r_0 ... r_i)
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            h = sum(block(h) for block in blocks) / self.num_kernels
        wav = torch.tanh(self.conv_post(F.leaky_relu(h)))[:, 0]  # SpeechT5: default slope 0.01 here
        target = frames * self.mel.hop_length
        # transposed convs with odd (kernel - rate) add a sample or two; the contract is exactly F * hop
        return wav[:, :target] if wav.shape[-1] >= target else F.pad(wav, (0, target - wav.shape[-1]))
