"""`vae`: a diffusers AutoencoderKL over log-mel images (the AudioLDM2 layout), loaded from a local folder.

    wav (B, S) --log-mel--> (B, M, F) --as image--> (B, 1, F, M) --VAE encoder--> (B, c, F/f, M/f)
    --* scaling_factor, flatten--> latent (B, T = F/f, c * M/f)
AudioLDM2: M = 64, f = 4, c = 8, so 10 s = 1000 mel frames -> 250 latent frames (25 Hz) x 128 channels.
F is padded up to a multiple of f with silence (the log floor); decode returns T * f mel frames.
The mel analysis is core.audio.LogMel (Slaney filterbank, natural log), what AudioLDM2's VAE was trained on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from vssflow.core.audio import LogMel
from vssflow.core.errors import PluginError
from vssflow.core.interfaces import InputContract, MelSpec

from .base import FrozenVAEMixin, MelCodec, load_local_vae

# random-init architecture defaults = AudioLDM2's mel VAE
ARCHITECTURE = {"block_out_channels": [128, 256, 512], "latent_channels": 8, "layers_per_block": 2, "norm_num_groups": 32}


class MelVAECodec(FrozenVAEMixin, MelCodec):
    """Log-mel image <-> AutoencoderKL latent, flattened to (B, T, channels)."""

    def __init__(
        self,
        path: str | None = None,
        subfolder: str | None = None,
        scaling_factor: float | None = None,
        frozen: bool = True,
        sample: bool = False,
        mel: MelSpec = MelSpec(),
        block_out_channels: tuple[int, ...] = tuple(ARCHITECTURE["block_out_channels"]),
        latent_channels: int = ARCHITECTURE["latent_channels"],
        layers_per_block: int = ARCHITECTURE["layers_per_block"],
        norm_num_groups: int = ARCHITECTURE["norm_num_groups"],
    ):
        super().__init__()
        from diffusers import AutoencoderKL

        if path is not None:
            vae = load_local_vae(
                AutoencoderKL, "vae", path, subfolder,
                {"block_out_channels": list(block_out_channels), "latent_channels": latent_channels,
                 "layers_per_block": layers_per_block, "norm_num_groups": norm_num_groups},
                ARCHITECTURE, "a local folder written by AutoencoderKL.save_pretrained (config.json + "
                "diffusion_pytorch_model.safetensors)",
            )
        else:
            n = len(block_out_channels)
            vae = AutoencoderKL(
                in_channels=1, out_channels=1, latent_channels=latent_channels, layers_per_block=layers_per_block,
                block_out_channels=tuple(block_out_channels), norm_num_groups=norm_num_groups,
                down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
            )
        if vae.config.in_channels != 1 or vae.config.out_channels != 1:
            raise PluginError(f"codec 'vae': expected a 1-channel mel VAE, got in/out channels "
                              f"{vae.config.in_channels}/{vae.config.out_channels}")
        self.vae = vae
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)  # spatial downsampling of the VAE
        if mel.n_mels % self.factor:
            raise PluginError(
                f"codec 'vae': n_mels {mel.n_mels} must be divisible by the VAE's downsampling {self.factor}"
            )
        self.mel = mel
        self.analysis = LogMel(self.mel)
        self.sample_rate = mel.sample_rate
        self.hop_length = mel.hop_length * self.factor
        self.latent_channels = int(vae.config.latent_channels)
        self.channels = self.latent_channels * (mel.n_mels // self.factor)
        self.scaling_factor = float(scaling_factor if scaling_factor is not None else vae.config.scaling_factor)
        self.shift_factor = float(getattr(vae.config, "shift_factor", None) or 0.0)
        self.sample = bool(sample)
        self.frozen = bool(frozen)
        self.freeze_if_asked()

    @property
    def contract(self) -> InputContract:
        """Mono waveform at `sample_rate`."""
        return InputContract(
            "audio", sample_rate=self.sample_rate,
            extra={"latent_fps": self.sample_rate / self.hop_length, "mel_frames_per_latent": self.factor},
        )

    def encode(self, wav: Tensor, sample_rate: int | None = None) -> Tensor:
        """(B, S) -> (B, ceil((S // mel_hop) / f), channels)."""
        self.check_wav(wav, sample_rate)
        mel = self.analysis(wav)  # (B, M, F)
        frames = mel.shape[-1]
        padded = math.ceil(frames / self.factor) * self.factor
        mel = F.pad(mel, (0, padded - frames), value=math.log(self.mel.log_floor))
        image = mel.transpose(1, 2).unsqueeze(1)  # (B, 1, F, M): time is the image height, as in AudioLDM2
        posterior = self.vae.encode(image).latent_dist
        z = posterior.sample() if self.sample else posterior.mode()  # (B, c, F/f, M/f)
        z = (z - self.shift_factor) * self.scaling_factor
        b, c, t, m = z.shape
        return z.permute(0, 2, 1, 3).reshape(b, t, c * m)  # (B, T, c * M/f)

    def decode(self, latent: Tensor) -> Tensor:
        """(B, T, channels) -> natural-log mel (B, n_mels, T * f)."""
        b, t, _ = latent.shape
        z = latent.reshape(b, t, self.latent_channels, -1).permute(0, 2, 1, 3)  # (B, c, T, M/f)
        z = z / self.scaling_factor + self.shift_factor
        image = self.vae.decode(z).sample  # (B, 1, T*f, M)
        return image[:, 0].transpose(1, 2)  # (B, M, T*f)

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """Round trip: (B, n_mels, T * f)."""
        wav = inputs["wav"]
        t = math.ceil((wav.shape[-1] // self.mel.hop_length) / self.factor)
        return {"output": (wav.shape[0], self.mel.n_mels, t * self.factor)}

    def save_pretrained(self, path: str | Path) -> None:
        """Write the VAE folder (config.json + safetensors) this codec loads with `path`."""
        self.vae.save_pretrained(str(path), safe_serialization=True)
