"""Windowed generation: plans cover the clip, cross-fades are a partition of unity."""

from __future__ import annotations

import pytest
import torch

from vssflow.core.windows import crossfade, plan_windows


@pytest.mark.parametrize("total", [0.5, 4.0, 4.01, 9.3, 60.0])
def test_windows_cover_the_clip_and_overlap(total):
    wins = plan_windows(total, 4.0, 1.0)
    assert wins[0].start == 0
    end = max(w.start + w.length for w in wins)
    assert end >= total - 1e-9 and (total <= 4.0 or abs(end - total) < 1e-9)
    for a, b in zip(wins, wins[1:], strict=False):
        assert b.start > a.start and a.start + a.length - b.start >= 1.0 - 1e-9


def test_crossfade_of_a_constant_signal_is_constant_and_exact_length():
    sr, total = 100, 9.3
    wins = plan_windows(total, 4.0, 1.0)
    chunks = [torch.full((2, 400), 3.0) for _ in wins]
    out = crossfade(chunks, wins, round(total * sr), sr)
    assert out.shape == (2, 930)
    assert torch.allclose(out, torch.full_like(out, 3.0))


def test_crossfade_reconstructs_a_signal_split_into_windows():
    sr, total = 50, 10.0
    signal = torch.sin(torch.arange(int(total * sr)) * 0.1)
    wins = plan_windows(total, 3.0, 0.8)
    chunks = [signal[round(w.start * sr) : round((w.start + w.length) * sr)] for w in wins]
    assert torch.allclose(crossfade(chunks, wins, signal.numel(), sr), signal, atol=1e-6)


def test_bad_plans_are_rejected():
    with pytest.raises(ValueError):
        plan_windows(5.0, 4.0, 4.0)
