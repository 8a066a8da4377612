"""One mel analysis for every codec and vocoder.

Recipes give it as flat params (`codec: {name: log-mel, params: {n_mels: 64, hop_length: 160}}`), validated
by `MelParams`, which every codec and vocoder params model extends; constructors take it as one
`vssflow.core.interfaces.MelSpec` (`mel=`), built by `mel_spec`, so the eight settings are declared once.
Pydantic only at import time: listing plugins stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from vssflow.core.interfaces import MelSpec

Positive = Annotated[int, Field(gt=0)]


class MelAnalysisParams(BaseModel):
    """STFT window and filterbank range of the mel analysis (natural log, clamped at `log_floor`)."""

    model_config = ConfigDict(extra="forbid")
    n_fft: Positive = 1024
    win_length: Positive = 1024
    f_min: Annotated[float, Field(ge=0)] = 0.0
    f_max: Annotated[float, Field(gt=0)] | None = None  # None: Nyquist (8 kHz at 16 kHz)
    log_floor: Annotated[float, Field(gt=0)] = 1e-5


class MelParams(MelAnalysisParams):
    """The whole mel analysis (the paper's: 16 kHz, 64 bins, n_fft = win = 1024, hop 160, 0-8 kHz, floor 1e-5)."""

    sample_rate: Positive = 16000
    n_mels: Positive = 64
    hop_length: Positive = 160


MEL_FIELDS: tuple[str, ...] = tuple(MelParams.model_fields)


def mel_spec(**params: Any) -> MelSpec:
    """A MelSpec from MelParams fields (missing ones at their defaults; f_max None = Nyquist)."""
    from vssflow.core.interfaces import MelSpec

    p = MelParams(**params)
    f_max = float(p.f_max) if p.f_max is not None else p.sample_rate / 2
    return MelSpec(p.sample_rate, p.n_fft, p.win_length, p.hop_length, p.n_mels, float(p.f_min), f_max,
                   float(p.log_floor))


def split_mel(params: dict[str, Any]) -> tuple[MelSpec, dict[str, Any]]:
    """Flat component params -> (the MelSpec of their mel fields, the other params)."""
    mel = mel_spec(**{k: v for k, v in params.items() if k in MEL_FIELDS})
    return mel, {k: v for k, v in params.items() if k not in MEL_FIELDS}


def mel_params(mel: MelSpec) -> dict[str, Any]:
    """The flat MelParams fields of a MelSpec (for config.json files and signatures)."""
    return {name: getattr(mel, name) for name in MEL_FIELDS}
