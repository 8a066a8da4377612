"""Built-in metrics: mel distance, onset timing against labelled events, loudness-envelope correlation."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class MelDistanceParams(BaseModel):
    """Mel analysis of the distance (the paper's defaults)."""

    model_config = ConfigDict(extra="forbid")
    sample_rate: Annotated[int, Field(gt=0)] = 16000
    n_fft: Annotated[int, Field(gt=0)] = 1024
    hop_length: Annotated[int, Field(gt=0)] = 160
    n_mels: Annotated[int, Field(gt=0)] = 64


class OnsetParams(BaseModel):
    """Onset detection and matching tolerance."""

    model_config = ConfigDict(extra="forbid")
    sample_rate: Annotated[int, Field(gt=0)] = 16000
    tolerance_s: Annotated[float, Field(gt=0)] = 0.1
    hop_length: Annotated[int, Field(gt=0)] = 160
    threshold: Annotated[float, Field(gt=0)] = 1.5  # peaks this many std above the mean flux
    min_gap_s: Annotated[float, Field(gt=0)] = 0.08
    onscreen_only: bool = True  # skip events labelled off-screen (distractors no video model can time)


class EnvelopeParams(BaseModel):
    """Loudness-envelope frame rate."""

    model_config = ConfigDict(extra="forbid")
    sample_rate: Annotated[int, Field(gt=0)] = 16000
    frame_s: Annotated[float, Field(gt=0)] = 0.02


def _mel_distance(**params):
    from .audio_metrics import MelDistance

    return MelDistance(**params)


def _onset(**params):
    from .audio_metrics import OnsetTiming

    return OnsetTiming(**params)


def _envelope(**params):
    from .audio_metrics import EnvelopeCorrelation

    return EnvelopeCorrelation(**params)


def register(register) -> None:
    """Register the built-in metrics."""
    register("mel-distance", _mel_distance, params=MelDistanceParams,
             description="Mean absolute log-mel difference to the reference (lower is better).")
    register("onset-f1", _onset, params=OnsetParams,
             description="F1 of detected onsets against labelled event times within a tolerance (higher is better).")
    register("envelope-corr", _envelope, params=EnvelopeParams,
             description="Correlation of loudness envelopes with the reference (higher is better).")
