"""Shared pieces of the built-in codecs: input checks naming the component, and loading a diffusers VAE from a
local folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from vssflow.core.errors import ContractError, PluginError
from vssflow.core.interfaces import Codec


def load_local_vae(vae_class: Any, name: str, folder: str | Path, subfolder: str | None, asked: dict[str, Any],
                   defaults: dict[str, Any], hint: str) -> nn.Module:
    """`vae_class.from_pretrained` on a LOCAL folder written by save_pretrained (config.json + safetensors), never
    downloading. Architecture params the recipe changed from `defaults` must agree with the folder's config (the
    others defer to it); `hint` says which folder is expected. Every failure is a PluginError/ContractError naming
    codec `name`."""
    folder = Path(folder)
    config_file = (folder / subfolder if subfolder else folder) / "config.json"
    if not config_file.is_file():
        raise PluginError(f"codec {name!r}: {config_file} not found; `path` must be {hint}")
    config = json.loads(config_file.read_text())
    for key, value in asked.items():
        if value != defaults[key] and config.get(key) != value:
            raise ContractError(
                f"codec {name!r}: params ask for {key}={value}, the VAE folder has {key}={config.get(key)} "
                "(drop the architecture params when loading from a folder)"
            )
    try:
        return vae_class.from_pretrained(str(folder), subfolder=subfolder, use_safetensors=True,
                                         local_files_only=True)
    except (OSError, ValueError) as exc:
        raise PluginError(f"codec {name!r}: cannot load {folder} ({exc})") from None


class FrozenVAEMixin:
    """A codec around `self.vae` that may be frozen (`self.frozen`): a frozen VAE stays in eval mode."""

    def freeze_if_asked(self) -> None:
        """No gradients and eval mode for the VAE when the codec is frozen."""
        if self.frozen:
            self.vae.requires_grad_(False)
            self.vae.eval()

    def train(self, mode: bool = True):
        """A frozen VAE stays in eval mode."""
        super().train(mode)
        if self.frozen:
            self.vae.eval()
        return self


class MelCodec(Codec):
    """A codec whose contract errors name its registered name (`codec 'log-mel': ...`)."""

    @property
    def label(self) -> str:
        """`codec 'log-mel'` when built through the registry, else the class name."""
        info = getattr(self, "vssflow_component", None)
        return f"codec {info.name!r}" if info is not None else f"codec {type(self).__name__}"

    def check_sample_rate(self, actual: int) -> None:
        """ContractError when audio at another rate is given to this codec."""
        if int(actual) != self.sample_rate:
            raise ContractError(
                f"{self.label}: expected audio at {self.sample_rate} Hz, got {int(actual)} Hz "
                f"(resample first, or set audio.sample_rate to {int(actual)} in the recipe)"
            )

    def check_wav(self, wav: Tensor, sample_rate: int | None) -> None:
        """ContractError unless wav is (B, S) at this codec's rate (when the caller says which rate it is)."""
        if wav.dim() != 2:
            raise ContractError(f"{self.label}: expected a waveform batch (B, S), got shape {tuple(wav.shape)}")
        if sample_rate is not None:
            self.check_sample_rate(sample_rate)

    def check_channels(self, wav: Tensor, sample_rate: int | None) -> None:
        """ContractError unless wav is (B, audio_channels, S) at this codec's rate."""
        channels = getattr(self, "audio_channels", 1)
        if wav.dim() != 3 or wav.shape[1] != channels:
            raise ContractError(
                f"{self.label}: expected a {channels}-channel waveform batch (B, {channels}, S), got shape "
                f"{tuple(wav.shape)}"
            )
        if sample_rate is not None:
            self.check_sample_rate(sample_rate)
