"""`oobleck`: the Stable Audio Open VAE (diffusers' AutoencoderOobleck), a waveform codec, from a local folder.

    wav (B, A, S) --pad S to a multiple of hop--> VAE encoder --posterior mean (or sample)--> (B, D, T)
    --* scaling_factor, transpose--> latent (B, T = ceil(S / hop), D)
    decode: latent --/ scaling_factor--> VAE decoder --> wav (B, A, T * hop)   (mono codecs: (B, S))
Stable Audio Open: A = 2 channels at 44.1 kHz, hop = 2 * 4 * 4 * 8 * 8 = 2048 samples (21.5 latent frames per
second), D = 64 channels. It decodes straight to the waveform: a recipe with it takes no vocoder.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from vssflow.core.errors import ContractError, PluginError
from vssflow.core.interfaces import InputContract

from .base import FrozenVAEMixin, MelCodec, load_local_vae

# random-init architecture defaults = Stable Audio Open 1.0's VAE (its `vae/config.json`)
ARCHITECTURE: dict[str, Any] = {
    "encoder_hidden_size": 128,
    "downsampling_ratios": [2, 4, 4, 8, 8],
    "channel_multiples": [1, 2, 4, 8, 16],
    "decoder_channels": 128,
    "decoder_input_channels": 64,
    "audio_channels": 2,
    "sampling_rate": 44100,
}


class OobleckCodec(FrozenVAEMixin, MelCodec):
    """Waveform <-> AutoencoderOobleck latent (B, T, D); decode gives the waveform (no mel, no vocoder)."""

    output = "wav"

    def __init__(
        self,
        path: str | None = None,
        subfolder: str | None = None,
        scaling_factor: float = 1.0,
        frozen: bool = True,
        sample: bool = False,
        encoder_hidden_size: int = ARCHITECTURE["encoder_hidden_size"],
        downsampling_ratios: tuple[int, ...] = tuple(ARCHITECTURE["downsampling_ratios"]),
        channel_multiples: tuple[int, ...] = tuple(ARCHITECTURE["channel_multiples"]),
        decoder_channels: int = ARCHITECTURE["decoder_channels"],
        decoder_input_channels: int = ARCHITECTURE["decoder_input_channels"],
        audio_channels: int = ARCHITECTURE["audio_channels"],
        sampling_rate: int = ARCHITECTURE["sampling_rate"],
    ):
        super().__init__()
        from diffusers import AutoencoderOobleck

        asked = {"encoder_hidden_size": encoder_hidden_size, "downsampling_ratios": list(downsampling_ratios),
                 "channel_multiples": list(channel_multiples), "decoder_channels": decoder_channels,
                 "decoder_input_channels": decoder_input_channels, "audio_channels": audio_channels,
                 "sampling_rate": sampling_rate}
        if len(asked["downsampling_ratios"]) != len(asked["channel_multiples"]):
            raise PluginError("codec 'oobleck': downsampling_ratios and channel_multiples must have the same length")
        if encoder_hidden_size != 2 * decoder_input_channels:
            raise PluginError(
                f"codec 'oobleck': encoder_hidden_size ({encoder_hidden_size}) must be twice decoder_input_channels "
                f"({decoder_input_channels}): the encoder gives the posterior's mean and scale"
            )
        if path is not None:
            vae = load_local_vae(
                AutoencoderOobleck, "oobleck", path, subfolder, asked, ARCHITECTURE,
                "a local folder written by save_pretrained (config.json + diffusion_pytorch_model.safetensors), "
                "e.g. Stable Audio Open's snapshot with subfolder: vae",
            )
        else:
            vae = AutoencoderOobleck(**asked)
        self.vae = vae
        config = vae.config
        self.audio_channels = int(config.audio_channels)
        self.sample_rate = int(config.sampling_rate)
        self.hop_length = int(math.prod(config.downsampling_ratios))
        self.channels = int(config.decoder_input_channels)
        self.mel = None
        self.scaling_factor = float(scaling_factor)
        if self.scaling_factor <= 0:
            raise PluginError(f"codec 'oobleck': scaling_factor must be positive, got {scaling_factor}")
        self.sample = bool(sample)
        self.frozen = bool(frozen)
        self.freeze_if_asked()

    @property
    def contract(self) -> InputContract:
        """Waveform at `sample_rate`: (B, audio_channels, S), or (B, S) for a mono VAE."""
        return InputContract("audio", sample_rate=self.sample_rate,
                             extra={"latent_fps": self.sample_rate / self.hop_length,
                                    "audio_channels": self.audio_channels})

    def encode(self, wav: Tensor, sample_rate: int | None = None) -> Tensor:
        """(B, A, S) (or (B, S) when A = 1) -> (B, ceil(S / hop), D)."""
        if self.audio_channels == 1 and wav.dim() == 2:
            self.check_wav(wav, sample_rate)
            wav = wav[:, None]
        else:
            self.check_channels(wav, sample_rate)
        frames = max(1, math.ceil(wav.shape[-1] / self.hop_length))
        wav = F.pad(wav, (0, frames * self.hop_length - wav.shape[-1]))
        posterior = self.vae.encode(wav).latent_dist
        z = posterior.sample() if self.sample else posterior.mode()  # (B, D, T')
        z = _fit(z, frames) * self.scaling_factor
        return z.transpose(1, 2)  # (B, T, D)

    def decode(self, latent: Tensor) -> Tensor:
        """(B, T, D) -> waveform (B, A, T * hop), or (B, T * hop) when A = 1."""
        if latent.dim() != 3 or latent.shape[-1] != self.channels:
            raise ContractError(f"{self.label}: expected latents (B, T, {self.channels}), got {tuple(latent.shape)}")
        frames = latent.shape[1]
        wav = self.vae.decode(latent.transpose(1, 2) / self.scaling_factor).sample  # (B, A, S')
        wav = _fit(wav, frames * self.hop_length)
        return wav[:, 0] if self.audio_channels == 1 else wav

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """Round trip: the waveform rounded up to whole latent frames."""
        wav = inputs["wav"]
        samples = max(1, math.ceil(wav.shape[-1] / self.hop_length)) * self.hop_length
        lead = (wav.shape[0],) if self.audio_channels == 1 else (wav.shape[0], self.audio_channels)
        return {"output": (*lead, samples)}

    def save_pretrained(self, path: str | Path) -> None:
        """Write the VAE folder (config.json + safetensors) this codec loads with `path`."""
        self.vae.save_pretrained(str(path), safe_serialization=True)


def _fit(x: Tensor, length: int) -> Tensor:
    """Cut or zero-pad the last dim to `length` (convolution edges can leave a sample more or less)."""
    if x.shape[-1] >= length:
        return x[..., :length]
    return F.pad(x, (0, length - x.shape[-1]))
