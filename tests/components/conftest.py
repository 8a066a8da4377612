"""Fixtures for component tests: real-ish speech (espeak-ng, else a formant-filtered harmonic chirp), mel L1."""

from __future__ import annotations

import math

import pytest
import torch

SAMPLE_RATE = 16000


def formant_chirp(seconds: float = 1.5, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """A voiced-speech stand-in: harmonics of a gliding pitch through three vowel-like formant filters. (S,)"""
    import torchaudio.functional as AF

    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 120 + 40 * torch.sin(2 * math.pi * 0.7 * t)  # Hz
    phase = 2 * math.pi * torch.cumsum(f0, 0) / sample_rate
    source = sum(torch.sin(k * phase) / k for k in range(1, 30))
    voiced = sum(AF.bandpass_biquad(source, sample_rate, f, Q=5.0) for f in (700.0, 1200.0, 2600.0))
    envelope = 0.5 * (1 - torch.cos(2 * math.pi * 3 * t)).clamp(0, 1)  # three "syllables" a second
    wav = voiced * envelope
    return (0.5 * wav / wav.abs().max()).float()


def synthesize_speech(text: str, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """espeak-ng speech (via espeakng-loader) at `sample_rate`, or the formant chirp when espeak is unavailable."""
    try:
        from vssflow.core.phonemes import Espeak

        wav, rate, _ = Espeak.get().synthesize(text)
    except Exception:  # noqa: BLE001 - no espeak-ng library on this machine: fall back to a synthetic voice
        return formant_chirp()
    import torchaudio.functional as AF

    wav = torch.from_numpy(wav.astype("float32")) / 32768.0
    return AF.resample(wav, rate, sample_rate).float()


@pytest.fixture(autouse=True)
def one_thread():
    """CI-sized models gain nothing from intra-op threads and lose a lot to them on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def speech() -> torch.Tensor:
    """About two seconds of speech at 16 kHz, trimmed to a whole number of 10 ms hops. (S,)"""
    wav = synthesize_speech("The quick brown fox jumps over the lazy dog.")
    wav = wav[: 2 * SAMPLE_RATE]
    return wav[: wav.numel() // 160 * 160]


def mel_l1(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute difference of the paper's log-mels of two waveforms (S,) (the shorter length is used)."""
    from vssflow.core.audio import LogMel
    from vssflow.core.interfaces import MelSpec

    n = min(a.shape[-1], b.shape[-1])
    mel = LogMel(MelSpec())
    return float((mel(a[None, :n]) - mel(b[None, :n])).abs().mean())
