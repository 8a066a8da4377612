"""Built-in vocoders: natural-log mel (B, M, F) -> waveform (B, F * hop).

Params models live here (pydantic only); factories import torch/torchaudio when called, so listing plugins
stays fast. A component's params are exactly its constructor arguments, the mel analysis fields
(`vssflow.plugins.mel.MelParams`) passed as one `mel=` MelSpec (hifigan keeps the SpeechT5HifiGanConfig keys:
`model_in_dim`, `sampling_rate`, the hop from `upsample_rates`); `path` loads a local folder (config.json +
model.safetensors) whose config then defines the architecture.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..mel import MelAnalysisParams, MelParams, Positive, split_mel


class GriffinLimParams(MelParams):
    """Mel analysis to invert, and the Griffin-Lim iterations (momentum 0.99 = fast Griffin-Lim)."""

    n_iter: Positive = 32
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.99
    rand_init: bool = True
    seed: int = 0  # random initial phases come from this seed, per clip: the output depends on the mel alone


class HiFiGANParams(MelAnalysisParams):
    """HiFi-GAN V1 (SpeechT5HifiGanConfig keys; defaults = AudioLDM2's vocoder) from a local folder or random."""

    path: str | None = None  # folder with config.json + model.safetensors (AudioLDM2's vocoder/ folder works)
    model_in_dim: Positive = 64
    sampling_rate: Positive = 16000
    upsample_initial_channel: Positive = 1024
    upsample_rates: list[Positive] = Field(default_factory=lambda: [5, 4, 2, 2, 2])
    upsample_kernel_sizes: list[Positive] = Field(default_factory=lambda: [16, 16, 8, 4, 4])
    resblock_kernel_sizes: list[Positive] = Field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list[list[Positive]] = Field(default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]])
    leaky_relu_slope: float = 0.1
    normalize_before: bool = False


class VocosParams(MelParams):
    """Vocos-style vocoder; `path` loads what `vssflow train-vocoder` wrote."""

    path: str | None = None
    dim: Positive = 512
    intermediate_dim: Positive = 1536
    layers: Annotated[int, Field(ge=0)] = 8
    head_n_fft: Positive | None = None  # None: 4 * hop_length


class BigVGANParams(BaseModel):
    """BigVGAN generator (the reference's config.json keys; defaults = bigvgan_v2_44khz_128band_512x)."""

    model_config = ConfigDict(extra="forbid")
    path: str | None = None  # folder with config.json + model.safetensors (convert_reference_checkpoint makes one)
    num_mels: Positive = 128
    sampling_rate: Positive = 44100
    upsample_rates: Annotated[list[Positive], Field(min_length=1)] = Field(default_factory=lambda: [8, 4, 2, 2, 2, 2])
    upsample_kernel_sizes: Annotated[list[Positive], Field(min_length=1)] = Field(
        default_factory=lambda: [16, 8, 4, 4, 4, 4])
    upsample_initial_channel: Positive = 1536
    resblock: Literal["1", "2"] = "1"
    resblock_kernel_sizes: list[Positive] = Field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list[list[Positive]] = Field(default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]])
    activation: Literal["snake", "snakebeta"] = "snakebeta"
    snake_logscale: bool = True
    use_tanh_at_final: bool = False
    use_bias_at_final: bool = False
    n_fft: Positive = 2048
    win_size: Positive = 2048
    fmin: Annotated[float, Field(ge=0)] = 0.0
    fmax: Annotated[float, Field(gt=0)] | None = None  # None: Nyquist


def _griffin_lim(**params):
    from .griffin_lim import GriffinLimVocoder

    mel, rest = split_mel(params)
    return GriffinLimVocoder(mel, **rest)


def _hifigan(path: str | None = None, **params):
    from .hifigan import HiFiGANVocoder

    return HiFiGANVocoder(**params) if path is None else HiFiGANVocoder.from_pretrained(path, **params)


def _vocos(path: str | None = None, **params):
    from .vocos import VocosVocoder

    if path is not None:
        return VocosVocoder.from_pretrained(path, **params)
    mel, rest = split_mel(params)
    return VocosVocoder(mel, **rest)


def _bigvgan(path: str | None = None, **params):
    from .bigvgan import BigVGANVocoder

    return BigVGANVocoder(**params) if path is None else BigVGANVocoder.from_pretrained(path, **params)


def register(register) -> None:
    """Register the built-in vocoders."""
    register(
        "griffin-lim", _griffin_lim, params=GriffinLimParams,
        description="Least-squares inverse mel + fast Griffin-Lim (torchaudio); no training, the default.",
        tiny={"n_iter": 4},
    )
    register(
        "hifigan", _hifigan, params=HiFiGANParams,
        description="HiFi-GAN V1 generator; loads AudioLDM2/SpeechT5 vocoder folders (config.json + safetensors).",
        tiny={"upsample_initial_channel": 16, "upsample_rates": [10, 16], "upsample_kernel_sizes": [20, 32],
              "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3]]},
    )
    register(
        "vocos", _vocos, params=VocosParams,
        description="Vocos-style ConvNeXt + iSTFT vocoder, trained with `vssflow train-vocoder`, from a local folder.",
        tiny={"dim": 16, "intermediate_dim": 32, "layers": 1},
    )
    register(
        "bigvgan", _bigvgan, params=BigVGANParams,
        description="BigVGAN generator (AMP blocks, anti-aliased snake); loads BigVGAN weights from a local folder.",
        tiny={"num_mels": 16, "upsample_rates": [8, 8], "upsample_kernel_sizes": [16, 16],
              "upsample_initial_channel": 16, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3]],
              "n_fft": 256, "win_size": 256},
    )
