"""Built-in codecs: waveform <-> the latent the flow is trained on.

Params models live here (pydantic only); factories import torch/torchaudio/diffusers when called, so listing
plugins stays fast. A component's params are exactly its constructor arguments, the mel analysis fields
(`vssflow.plugins.mel.MelParams`) passed as one `mel=` MelSpec.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from ..mel import MelParams, Positive, split_mel


class LogMelParams(MelParams):
    """Normalised log-mel latent at sample_rate / hop_length Hz. mean/std: see vssflow.plugins.codecs.log_mel."""

    mean: float = -6.4
    std: Annotated[float, Field(gt=0)] = 3.5
    audio_channels: Annotated[int, Field(ge=1, le=8)] = 1  # 2: stereo, one mel per channel side by side


class VAEParams(MelParams):
    """AutoencoderKL over mel images from a local folder (`path`), or random init with the architecture params."""

    path: str | None = None  # folder written by save_pretrained; None: random init (tests, training from scratch)
    subfolder: str | None = None  # e.g. "vae" inside a whole AudioLDM2 pipeline folder
    scaling_factor: Annotated[float, Field(gt=0)] | None = None  # None: the VAE config's
    frozen: bool = True
    sample: bool = False  # encode to a posterior sample instead of its mean
    block_out_channels: Annotated[list[Positive], Field(min_length=1)] = Field(default_factory=lambda: [128, 256, 512])
    latent_channels: Positive = 8
    layers_per_block: Positive = 2
    norm_num_groups: Positive = 32


class OobleckParams(BaseModel):
    """Stable Audio Open's VAE (diffusers AutoencoderOobleck) from a local folder (`path`), or random init."""

    model_config = ConfigDict(extra="forbid")
    path: str | None = None  # folder written by save_pretrained; None: random init (tests)
    subfolder: str | None = None  # "vae" inside a whole Stable Audio Open snapshot
    scaling_factor: Annotated[float, Field(gt=0)] = 1.0  # latent * scaling_factor is the flow target
    frozen: bool = True
    sample: bool = False  # encode to a posterior sample instead of its mean
    encoder_hidden_size: Positive = 128
    downsampling_ratios: Annotated[list[Positive], Field(min_length=1)] = Field(default_factory=lambda: [2, 4, 4, 8, 8])
    channel_multiples: Annotated[list[Positive], Field(min_length=1)] = Field(default_factory=lambda: [1, 2, 4, 8, 16])
    decoder_channels: Positive = 128
    decoder_input_channels: Positive = 64
    audio_channels: Annotated[int, Field(ge=1, le=8)] = 2
    sampling_rate: Positive = 44100


def _log_mel(**params):
    from .log_mel import LogMelCodec

    mel, rest = split_mel(params)
    return LogMelCodec(mel, **rest)


def _vae(**params):
    from .mel_vae import MelVAECodec

    mel, rest = split_mel(params)
    return MelVAECodec(mel=mel, **rest)


def _oobleck(**params):
    from .oobleck import OobleckCodec

    return OobleckCodec(**params)


def register(register) -> None:
    """Register the built-in codecs."""
    register(
        "log-mel", _log_mel, params=LogMelParams,
        description="Normalised natural-log mel (B, T, n_mels) at 100 Hz; exact decode, no training.",
        tiny={},
    )
    register(
        "vae", _vae, params=VAEParams,
        description="AudioLDM2-layout mel VAE (diffusers AutoencoderKL) from a local folder: 128 channels at 25 Hz.",
        tiny={"block_out_channels": [8, 16], "latent_channels": 2, "layers_per_block": 1, "norm_num_groups": 4,
              "frozen": False},
    )
    register(
        "oobleck", _oobleck, params=OobleckParams,
        description="Stable Audio Open VAE (diffusers AutoencoderOobleck), 44.1 kHz stereo, 64 channels at 21.5 Hz; "
                    "decodes to the waveform.",
        tiny={"encoder_hidden_size": 16, "downsampling_ratios": [4, 8, 8], "channel_multiples": [1, 2, 2],
              "decoder_channels": 4, "decoder_input_channels": 8},
    )
