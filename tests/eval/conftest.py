"""Audio and video the evaluation tests make: espeak utterances, synthetic clips, tones and clicks."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

SR = 16000


@functools.cache
def utterance(words: tuple[str, ...], speaker: int) -> torch.Tensor:
    """espeak-ng speech of `words` by synthetic speaker `speaker` at 16 kHz."""
    from vssflow.plugins.datasets.synth.speech import speak, speakers

    wav, _ = speak(list(words), speakers()[speaker], SR)
    return torch.from_numpy(np.ascontiguousarray(wav)).float()


@functools.cache
def synthetic_clip(family: str, index: int = 0, seconds: float = 2.0):
    """(frames (L, 3, H, W) in [0, 1], wav (S,), labels) of one synthetic benchmark clip, rendered in memory."""
    from vssflow.plugins.datasets.synth.generate import SynthConfig, render_clip

    frames, wav, labels = render_clip(SynthConfig(clips=4, seconds=seconds, families=(family,)), index)
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    return video, torch.from_numpy(wav).float(), labels


def tone(seconds: float, f0: float, seed: int = 0, harmonics: int = 5) -> torch.Tensor:
    """A harmonic tone with a little noise."""
    t = torch.arange(int(seconds * SR)) / SR
    gen = torch.Generator().manual_seed(seed)
    wav = sum(torch.sin(2 * math.pi * k * f0 * t) / k for k in range(1, harmonics + 1)) * 0.2
    return wav + 0.003 * torch.randn(wav.shape, generator=gen)


def knocks(seconds: float, times: list[float], freq: float, seed: int = 0) -> torch.Tensor:
    """Decaying sinusoidal knocks at `times` over faint noise."""
    gen = torch.Generator().manual_seed(seed)
    wav = 0.003 * torch.randn(int(seconds * SR), generator=gen)
    n = 1200
    decay = torch.exp(-torch.arange(n) / 200.0) * torch.sin(torch.arange(n) * 2 * math.pi * freq / SR)
    for t in times:
        i = int(t * SR)
        wav[i : i + n] += decay[: len(wav) - i]
    return wav


@pytest.fixture(scope="session")
def grid_words():
    """Two GRID sentences."""
    return ("bin", "blue", "at", "f", "two", "now"), ("place", "red", "by", "g", "nine", "soon")
