"""The seam metric: joins of independent windows stand out, seamless audio scores about 1."""

from __future__ import annotations

import math

import torch

from vssflow.registry import create

SR = 16000


def tone(seconds: float, freq: float) -> torch.Tensor:
    t = torch.arange(round(seconds * SR)) / SR
    return 0.3 * torch.sin(2 * torch.pi * freq * t)


def test_joins_between_different_sounds_stand_out_and_continuous_sound_does_not():
    metric = create("metric", "seam", window_s=4.0, overlap_s=1.0)
    g = torch.Generator().manual_seed(0)
    noise = 0.1 * torch.randn(10 * SR, generator=g)
    smooth = float(metric(noise[None])[0])
    # windows [0, 4), [3, 7), [6, 10): a hard switch of sound at each join
    parts = [tone(3.5, 300), tone(3.0, 1200), tone(3.5, 500)]
    switched = torch.cat(parts)[None] + 0.01 * torch.randn(1, 10 * SR, generator=g)
    seam = float(metric(switched)[0])
    assert 0.7 < smooth < 1.5
    assert seam > 3 * smooth
    assert math.isnan(float(metric(noise[None, : 3 * SR])[0]))  # one window: no join
    minute = float(metric(0.1 * torch.randn(1, 60 * SR, generator=g))[0])  # 19 windows, joins every 3 s
    assert 0.7 < minute < 1.5


def test_windows_from_labels_replace_the_default_layout():
    metric = create("metric", "seam")
    wav = torch.cat([tone(2.0, 300), tone(6.0, 1200)]) + 0.01 * torch.randn(8 * SR, generator=torch.Generator().manual_seed(1))
    at_switch = float(metric(wav[None], labels=[{"windows": [[0.0, 2.05], [1.95, 8.0]]}])[0])
    elsewhere = float(metric(wav[None], labels=[{"windows": [[0.0, 5.05], [4.95, 8.0]]}])[0])
    assert at_switch > 3 * elsewhere
