"""Shared pieces of the built-in codecs: input checks naming the component."""

from __future__ import annotations

from torch import Tensor

from vssflow.core.errors import ContractError
from vssflow.core.interfaces import Codec


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
