"""Built-in codecs: waveform <-> the latent the flow is trained on.

Params models live here (pydantic only); factories import torch/torchaudio/diffusers when called, so listing
plugins stays fast. A component's params are exactly its constructor arguments.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Positive = Annotated[int, Field(gt=0)]


class MelParams(BaseModel):
    """The mel analysis (the paper's: 16 kHz, 64 bins, n_fft = win = 1024, hop 160, 0-8 kHz, log clamp 1e-5)."""

    model_config = ConfigDict(extra="forbid")
    sample_rate: Positive = 16000
    n_mels: Positive = 64
    n_fft: Positive = 1024
    win_length: Positive = 1024
    hop_length: Positive = 160
    f_min: Annotated[float, Field(ge=0)] = 0.0
    f_max: Annotated[float, Field(gt=0)] | None = None  # None: Nyquist (8 kHz at 16 kHz)
    log_floor: Annotated[float, Field(gt=0)] = 1e-5


class LogMelParams(MelParams):
    """Normalised log-mel latent at sample_rate / hop_length Hz. mean/std: see vssflow.plugins.codecs.log_mel."""

    mean: float = -6.4
    std: Annotated[float, Field(gt=0)] = 3.5


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


def _log_mel(**params):
    from .log_mel import LogMelCodec

    return LogMelCodec(**params)


def _vae(**params):
    from .mel_vae import MelVAECodec

    return MelVAECodec(**params)


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
