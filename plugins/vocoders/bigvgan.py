"""`bigvgan`: NVIDIA's BigVGAN generator (Lee et al. 2023), written in torch, loading its weights from a local folder.

Module and parameter names are those of the reference implementation (NVIDIA/BigVGAN `bigvgan.py`,
`activations.py`, `alias_free_activation/torch/`), so its checkpoints load key for key: conv_pre,
ups.N.0, resblocks.N.convs1/convs2.M, resblocks.N.activations.M.act.alpha/beta,
...upsample.filter / ...downsample.lowpass.filter, activation_post, conv_post. Weight norm is folded at load
time (weight_g/weight_v and parametrizations keys both work).

    mel (B, M, F) --conv_pre--> (B, C, F) --[upsample x r_i, mean of AMP blocks]*--> (B, C/2^n, F * prod r)
    --anti-aliased snake, conv_post, clamp (or tanh)--> (B, F * hop)
AMP block: pairs of (anti-aliased Snake/SnakeBeta, dilated conv, anti-aliased Snake/SnakeBeta, conv), each
pair residual. Anti-aliased activation: upsample x2 with a Kaiser-windowed sinc, the activation, low-pass and
downsample x2, so the periodic activation does not alias.

The mel is the one `vssflow.core.audio.LogMel` computes (reflect padding, uncentred STFT, Slaney filterbank,
natural log clamped at 1e-5): BigVGAN's own `meldataset.mel_spectrogram`. The 44.1 kHz model
(bigvgan_v2_44khz_128band_512x) reads 128 bins, n_fft 2048, hop 512, 0 Hz to Nyquist.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vssflow.core.errors import ContractError, PluginError
from vssflow.core.interfaces import Vocoder

from ..mel import mel_spec
from .base import (
    architecture_from_config,
    check_mel_input,
    fold_weight_norm,
    load_strict,
    read_folder,
    write_folder,
)

# bigvgan_v2_44khz_128band_512x: the defaults of every architecture param below
BIGVGAN_V2_44K: dict[str, Any] = {
    "num_mels": 128,
    "sampling_rate": 44100,
    "upsample_rates": [8, 4, 2, 2, 2, 2],
    "upsample_kernel_sizes": [16, 8, 4, 4, 4, 4],
    "upsample_initial_channel": 1536,
    "resblock": "1",
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "activation": "snakebeta",
    "snake_logscale": True,
    "use_tanh_at_final": False,
    "use_bias_at_final": False,
    "n_fft": 2048,
    "win_size": 2048,
    "fmin": 0.0,
    "fmax": None,
}


# ----------------------------------------------------------------------------------------------------------
# anti-aliased activation (alias_free_activation/torch in the reference)


def kaiser_sinc_filter1d(cutoff: float, half_width: float, kernel_size: int) -> Tensor:
    """A Kaiser-windowed sinc low-pass filter (1, 1, kernel_size), unit DC gain."""
    even = kernel_size % 2 == 0
    half_size = kernel_size // 2
    delta_f = 4 * half_width
    attenuation = 2.285 * (half_size - 1) * math.pi * delta_f + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, beta=beta, periodic=False)
    time = (torch.arange(-half_size, half_size) + 0.5) if even else (torch.arange(kernel_size) - half_size)
    if cutoff == 0:
        return torch.zeros_like(time).view(1, 1, kernel_size)
    filt = 2 * cutoff * window * torch.sinc(2 * cutoff * time)
    return (filt / filt.sum()).view(1, 1, kernel_size)


class LowPassFilter1d(nn.Module):
    """Depthwise low-pass (replicate padding), optionally strided."""

    def __init__(self, cutoff: float = 0.5, half_width: float = 0.6, stride: int = 1, kernel_size: int = 12):
        super().__init__()
        even = kernel_size % 2 == 0
        self.pad_left, self.pad_right = kernel_size // 2 - int(even), kernel_size // 2
        self.stride = stride
        self.register_buffer("filter", kaiser_sinc_filter1d(cutoff, half_width, kernel_size))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, C, T / stride)."""
        channels = x.shape[1]
        x = F.pad(x, (self.pad_left, self.pad_right), mode="replicate")
        return F.conv1d(x, self.filter.expand(channels, -1, -1), stride=self.stride, groups=channels)


class UpSample1d(nn.Module):
    """Upsample by `ratio` with a transposed Kaiser-sinc filter."""

    def __init__(self, ratio: int = 2, kernel_size: int | None = None):
        super().__init__()
        self.ratio = ratio
        self.kernel_size = int(6 * ratio // 2) * 2 if kernel_size is None else kernel_size
        self.stride = ratio
        self.pad = self.kernel_size // ratio - 1
        self.pad_left = self.pad * self.stride + (self.kernel_size - self.stride) // 2
        self.pad_right = self.pad * self.stride + (self.kernel_size - self.stride + 1) // 2
        self.register_buffer("filter", kaiser_sinc_filter1d(0.5 / ratio, 0.6 / ratio, self.kernel_size))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, C, T * ratio)."""
        channels = x.shape[1]
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        x = self.ratio * F.conv_transpose1d(x, self.filter.expand(channels, -1, -1), stride=self.stride, groups=channels)
        return x[..., self.pad_left : -self.pad_right]


class DownSample1d(nn.Module):
    """Low-pass and keep every `ratio`-th sample."""

    def __init__(self, ratio: int = 2, kernel_size: int | None = None):
        super().__init__()
        kernel_size = int(6 * ratio // 2) * 2 if kernel_size is None else kernel_size
        self.lowpass = LowPassFilter1d(0.5 / ratio, 0.6 / ratio, ratio, kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, C, T / ratio)."""
        return self.lowpass(x)


class Activation1d(nn.Module):
    """An activation run at twice the rate: upsample, act, downsample."""

    def __init__(self, activation: nn.Module, up_ratio: int = 2, down_ratio: int = 2, up_kernel_size: int = 12,
                 down_kernel_size: int = 12):
        super().__init__()
        self.act = activation
        self.upsample = UpSample1d(up_ratio, up_kernel_size)
        self.downsample = DownSample1d(down_ratio, down_kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, C, T)."""
        return self.downsample(self.act(self.upsample(x)))


class Snake(nn.Module):
    """x + 1/alpha sin^2(alpha x), a learned alpha per channel (log scale when `alpha_logscale`)."""

    def __init__(self, channels: int, alpha_logscale: bool = True):
        super().__init__()
        self.alpha_logscale = alpha_logscale
        self.alpha = nn.Parameter(torch.zeros(channels) if alpha_logscale else torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, C, T)."""
        alpha = self.alpha[None, :, None]
        alpha = torch.exp(alpha) if self.alpha_logscale else alpha
        return x + (1.0 / (alpha + 1e-9)) * torch.sin(x * alpha) ** 2


class SnakeBeta(nn.Module):
    """x + 1/beta sin^2(alpha x): separate frequency (alpha) and magnitude (beta) per channel."""

    def __init__(self, channels: int, alpha_logscale: bool = True):
        super().__init__()
        self.alpha_logscale = alpha_logscale
        init = torch.zeros(channels) if alpha_logscale else torch.ones(channels)
        self.alpha = nn.Parameter(init.clone())
        self.beta = nn.Parameter(init.clone())

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, C, T)."""
        alpha, beta = self.alpha[None, :, None], self.beta[None, :, None]
        if self.alpha_logscale:
            alpha, beta = torch.exp(alpha), torch.exp(beta)
        return x + (1.0 / (beta + 1e-9)) * torch.sin(x * alpha) ** 2


def _activation(kind: str, channels: int, logscale: bool) -> Activation1d:
    return Activation1d(Snake(channels, logscale) if kind == "snake" else SnakeBeta(channels, logscale))


def _padding(kernel_size: int, dilation: int) -> int:
    return (kernel_size * dilation - dilation) // 2


class AMPBlock1(nn.Module):
    """Pairs of (act, dilated conv, act, conv), each pair residual."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int], activation: str, logscale: bool):
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=_padding(kernel_size, d)) for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=_padding(kernel_size, 1)) for _ in dilations
        )
        self.activations = nn.ModuleList(_activation(activation, channels, logscale) for _ in range(2 * len(dilations)))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, C, T)."""
        acts1, acts2 = self.activations[::2], self.activations[1::2]
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, acts1, acts2, strict=True):
            x = x + c2(a2(c1(a1(x))))
        return x


class AMPBlock2(nn.Module):
    """(act, dilated conv) pairs, each residual: the lighter block."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int], activation: str, logscale: bool):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=_padding(kernel_size, d)) for d in dilations
        )
        self.activations = nn.ModuleList(_activation(activation, channels, logscale) for _ in dilations)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, C, T)."""
        for conv, act in zip(self.convs, self.activations, strict=True):
            x = x + conv(act(x))
        return x


class BigVGANVocoder(Vocoder):
    """BigVGAN generator (reference layout): natural-log mel (B, M, F) -> waveform (B, F * hop)."""

    def __init__(
        self,
        num_mels: int = 128,
        sampling_rate: int = 44100,
        upsample_rates: Sequence[int] = (8, 4, 2, 2, 2, 2),
        upsample_kernel_sizes: Sequence[int] = (16, 8, 4, 4, 4, 4),
        upsample_initial_channel: int = 1536,
        resblock: str = "1",
        resblock_kernel_sizes: Sequence[int] = (3, 7, 11),
        resblock_dilation_sizes: Sequence[Sequence[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
        activation: str = "snakebeta",
        snake_logscale: bool = True,
        use_tanh_at_final: bool = False,
        use_bias_at_final: bool = False,
        n_fft: int = 2048,
        win_size: int = 2048,
        fmin: float = 0.0,
        fmax: float | None = None,
    ):
        super().__init__()
        if len(upsample_rates) != len(upsample_kernel_sizes):
            raise ContractError("vocoder 'bigvgan': upsample_rates and upsample_kernel_sizes must have the same length")
        if len(resblock_kernel_sizes) != len(resblock_dilation_sizes):
            raise ContractError(
                "vocoder 'bigvgan': resblock_kernel_sizes and resblock_dilation_sizes must have the same length"
            )
        if str(resblock) not in ("1", "2") or activation not in ("snake", "snakebeta"):
            raise ContractError(f"vocoder 'bigvgan': resblock must be '1' or '2' and activation snake or snakebeta, "
                                f"got {resblock!r}, {activation!r}")
        self.config = {
            "num_mels": int(num_mels), "sampling_rate": int(sampling_rate),
            "upsample_rates": [int(r) for r in upsample_rates],
            "upsample_kernel_sizes": [int(k) for k in upsample_kernel_sizes],
            "upsample_initial_channel": int(upsample_initial_channel), "resblock": str(resblock),
            "resblock_kernel_sizes": [int(k) for k in resblock_kernel_sizes],
            "resblock_dilation_sizes": [[int(d) for d in ds] for ds in resblock_dilation_sizes],
            "activation": activation, "snake_logscale": bool(snake_logscale),
            "use_tanh_at_final": bool(use_tanh_at_final), "use_bias_at_final": bool(use_bias_at_final),
            "n_fft": int(n_fft), "win_size": int(win_size), "fmin": float(fmin), "fmax": fmax,
        }
        hop = math.prod(int(r) for r in upsample_rates)
        self.config["hop_size"] = hop
        try:
            self.mel = mel_spec(sample_rate=sampling_rate, n_mels=num_mels, hop_length=hop, n_fft=n_fft,
                                win_length=win_size, f_min=fmin, f_max=fmax)
        except ValueError as exc:
            raise ContractError(f"vocoder 'bigvgan': {exc}") from None
        self.use_tanh_at_final = bool(use_tanh_at_final)
        self.num_kernels = len(resblock_kernel_sizes)
        self.num_upsamples = len(upsample_rates)
        self.conv_pre = nn.Conv1d(num_mels, upsample_initial_channel, 7, padding=3)
        self.ups = nn.ModuleList()
        for i, (rate, kernel) in enumerate(zip(upsample_rates, upsample_kernel_sizes, strict=True)):
            self.ups.append(nn.ModuleList([nn.ConvTranspose1d(
                upsample_initial_channel // 2**i, upsample_initial_channel // 2 ** (i + 1), kernel, stride=rate,
                padding=(kernel - rate) // 2,
            )]))
        block = AMPBlock1 if str(resblock) == "1" else AMPBlock2
        self.resblocks = nn.ModuleList()
        channels = upsample_initial_channel
        for i in range(self.num_upsamples):
            channels = upsample_initial_channel // 2 ** (i + 1)
            for k, dilations in zip(resblock_kernel_sizes, resblock_dilation_sizes, strict=True):
                self.resblocks.append(block(channels, int(k), [int(d) for d in dilations], activation, snake_logscale))
        self.activation_post = _activation(activation, channels, snake_logscale)
        self.conv_post = nn.Conv1d(channels, 1, 7, padding=3, bias=bool(use_bias_at_final))

    @classmethod
    def from_pretrained(cls, path: str | Path, **params: Any) -> BigVGANVocoder:
        """Load a folder with BigVGAN's config.json and model.safetensors; params left at their defaults defer
        to its config (training keys in the reference's config.json are ignored)."""
        config, state = read_folder(path, "vocoder 'bigvgan'")
        args = architecture_from_config("vocoder 'bigvgan'", path, config, params, BIGVGAN_V2_44K)
        vocoder = cls(**args)
        if "hop_size" in config and int(config["hop_size"]) != vocoder.mel.hop_length:
            raise PluginError(f"vocoder 'bigvgan': {path}/config.json has hop_size {config['hop_size']} but its "
                              f"upsample_rates multiply to {vocoder.mel.hop_length}")
        load_strict(vocoder, fold_weight_norm(state), f"vocoder 'bigvgan' from {path}")
        return vocoder

    def save_pretrained(self, path: str | Path) -> Path:
        """Write config.json (the reference's keys) and model.safetensors."""
        return write_folder(path, self.config, self.state_dict())

    def forward(self, mel: Tensor) -> Tensor:
        """(B, M, F) natural-log mel -> (B, F * hop)."""
        check_mel_input(self, mel)
        frames = mel.shape[-1]
        x = self.conv_pre(mel)
        for i in range(self.num_upsamples):
            for up in self.ups[i]:
                x = up(x)
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            x = sum(block(x) for block in blocks) / self.num_kernels
        x = self.conv_post(self.activation_post(x))
        wav = torch.tanh(x) if self.use_tanh_at_final else x.clamp(-1.0, 1.0)
        wav = wav[:, 0]
        target = frames * self.mel.hop_length
        return wav[:, :target] if wav.shape[-1] >= target else F.pad(wav, (0, target - wav.shape[-1]))


def convert_reference_checkpoint(folder: str | Path, out: str | Path | None = None) -> Path:
    """Turn a downloaded BigVGAN folder (config.json + bigvgan_generator.pt) into config.json +
    model.safetensors that `vocoder: {name: bigvgan, params: {path: ...}}` loads. The .pt is read with
    `torch.load(weights_only=True)` (tensors only, nothing executed); `out` defaults to the same folder."""
    import json

    folder = Path(folder)
    out = Path(out) if out is not None else folder
    config_file, weights = folder / "config.json", folder / "bigvgan_generator.pt"
    for needed in (config_file, weights):
        if not needed.is_file():
            raise PluginError(f"vocoder 'bigvgan': {needed} not found (a BigVGAN folder has config.json and "
                              "bigvgan_generator.pt)")
    config = json.loads(config_file.read_text())
    state = torch.load(weights, map_location="cpu", weights_only=True)
    state = state.get("generator", state)
    keep = {k: config[k] for k in (*BIGVGAN_V2_44K, "hop_size") if k in config}
    vocoder = BigVGANVocoder(**{k: v for k, v in keep.items() if k != "hop_size"})
    load_strict(vocoder, fold_weight_norm(state), f"vocoder 'bigvgan' from {weights}")
    return vocoder.save_pretrained(out)
