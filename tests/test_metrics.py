"""Built-in metrics measure what they claim."""

from __future__ import annotations

import math

import torch

from vssflow.plugins.metrics.audio_metrics import detect_onsets, match_f1
from vssflow.registry import create

SR = 16000


def clicks(times: list[float], seconds: float = 2.0, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    wav = 0.003 * torch.randn(int(seconds * SR), generator=gen)
    decay = torch.exp(-torch.arange(800) / 120.0) * torch.sin(torch.arange(800) * 2 * math.pi * 900 / SR)
    for t in times:
        i = int(t * SR)
        wav[i : i + 800] += decay[: len(wav) - i]
    return wav


def test_onsets_are_detected_where_the_clicks_are():
    truth = [0.25, 0.7, 1.1, 1.6]
    found = detect_onsets(clicks(truth), SR, 160, 1.5, 0.08)
    assert len(found) == len(truth)
    assert max(abs(a - b) for a, b in zip(found, truth, strict=True)) < 0.02


def test_onset_f1_rewards_timing_and_penalises_shifts():
    metric = create("metric", "onset-f1")
    truth = [0.25, 0.7, 1.1, 1.6]
    labels = [{"events": [{"time": t} for t in truth]}] * 2
    wavs = torch.stack([clicks(truth), clicks([t + 0.3 for t in truth])])
    score = metric(wavs, labels=labels)
    assert score[0] == 1.0 and score[1] < 0.3
    assert match_f1([], [], 0.1) == 1.0 and match_f1([0.5], [], 0.1) == 0.0


def test_mel_distance_is_zero_for_identical_audio_and_grows_with_noise():
    metric = create("metric", "mel-distance")
    ref = clicks([0.3, 0.9]).unsqueeze(0).repeat(3, 1)
    gen = ref.clone()
    gen[1] += 0.01 * torch.randn_like(gen[1])
    gen[2] += 0.1 * torch.randn_like(gen[2])
    d = metric(gen, ref)
    assert d[0] < 1e-6 < d[1] < d[2]


def test_lengths_restrict_metrics_to_valid_samples():
    metric = create("metric", "mel-distance")
    ref = clicks([0.3]).unsqueeze(0)
    gen = ref.clone()
    gen[:, SR:] = torch.randn(ref.shape[-1] - SR)  # garbage only in the padding
    assert metric(gen, ref, lengths=torch.tensor([SR - 2000]))[0] < 1e-6


def test_envelope_correlation_sign():
    metric = create("metric", "envelope-corr")
    ramp = torch.linspace(0.01, 1.0, SR) * torch.randn(SR, generator=torch.Generator().manual_seed(1))
    out = metric(torch.stack([ramp, ramp.flip(0)]), torch.stack([ramp, ramp]))
    assert out[0] > 0.99 and out[1] < -0.5


def test_offscreen_distractors_are_not_expected_from_the_video():
    metric = create("metric", "onset-f1")
    labels = [{"events": [{"time": 0.25}, {"time": 1.1, "onscreen": False}]}]
    assert metric(clicks([0.25]).unsqueeze(0), labels=labels)[0] == 1.0
    strict = create("metric", "onset-f1", onscreen_only=False)
    assert strict(clicks([0.25]).unsqueeze(0), labels=labels)[0] < 1.0
