"""Audio-visual and lip-speech offsets: a known delay gives the known offset."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vssflow.registry import create

from .conftest import SR, knocks, synthetic_clip


def _jumps(times: list[float], seconds: float = 2.0, fps: float = 25.0) -> torch.Tensor:
    """A bright square that jumps to a new place at each time (one visual change per event)."""
    frames = torch.full((int(seconds * fps), 3, 48, 48), 0.2)
    places = [(4, 4), (28, 28), (4, 28), (28, 4), (16, 16)]
    k0 = 0
    for j, t in enumerate([*times, seconds]):
        k1 = min(len(frames), round(t * fps + 0.5))  # first frame after the change at time t
        y, x = places[j % len(places)]
        frames[k0:k1, :, y : y + 16, x : x + 16] = 1.0
        k0 = k1
    return frames


def _delay(wav: torch.Tensor, seconds: float) -> torch.Tensor:
    n = round(abs(seconds) * SR)
    return F.pad(wav, (n, 0))[: wav.numel()] if seconds >= 0 else F.pad(wav[n:], (0, n))


@pytest.mark.parametrize("delay", [0.0, 0.2, -0.32])
def test_av_offset_recovers_a_known_delay(delay):
    times = [0.26, 0.78, 1.22, 1.66]  # midway between 25 fps frames
    frames = _jumps(times)
    wav = _delay(knocks(2.0, times, 1200.0), delay)
    metric = create("metric", "av-offset", signed=True)
    ms = metric(wav[None], labels=[{"video": frames, "video_fps": 25.0}])[0]
    assert ms == pytest.approx(1000 * delay, abs=25.0)  # within about half a video frame
    assert create("metric", "av-offset")(wav[None], labels=[{"video": frames, "video_fps": 25.0}])[0] == abs(ms)


def test_av_offset_reads_the_video_file(tmp_path):
    from vssflow.core.media import write_video

    times = [0.26, 0.78, 1.22, 1.66]  # midway between 25 fps frames
    path = tmp_path / "flash.mp4"
    write_video(path, (_jumps(times).permute(0, 2, 3, 1) * 255).to(torch.uint8).numpy(), 25.0)
    wav = _delay(knocks(2.0, times, 1200.0), 0.12)
    ms = create("metric", "av-offset", signed=True)(wav[None], labels=[{"video": str(path)}])[0]
    assert ms == pytest.approx(120.0, abs=25.0)


def test_av_offset_on_a_synthetic_scene():
    video, wav, _ = synthetic_clip("v2s", 1, 4.0)
    metric = create("metric", "av-offset", signed=True)
    labels = [{"video": video, "video_fps": 25.0}]
    base = float(metric(wav[None], labels=labels)[0])
    shifted = float(metric(_delay(wav, 0.2)[None], labels=labels)[0])
    assert abs(base) <= 60.0 and shifted - base == pytest.approx(200.0, abs=40.0)


def test_lip_offset_on_a_synthetic_talking_face():
    pytest.importorskip("cv2")
    video, wav, _ = synthetic_clip("visualtts", 1, 3.0)
    labels = [{"video": video, "video_fps": 25.0}]
    metric = create("metric", "lip-offset", signed=True)
    base = float(metric(wav[None], labels=labels)[0])
    late = float(metric(_delay(wav, 0.24)[None], labels=labels)[0])
    assert abs(base) <= 40.0 and late - base == pytest.approx(240.0, abs=40.0)  # one video frame
    confidence = create("metric", "lip-sync-confidence")
    noise = 0.05 * torch.randn(wav.numel(), generator=torch.Generator().manual_seed(0))
    assert confidence(wav[None], labels=labels)[0] > confidence(noise[None], labels=labels)[0]


def test_lip_offset_with_a_detected_face_crop():
    pytest.importorskip("cv2")
    video, wav, _ = synthetic_clip("visualtts", 1, 3.0)
    labels = [{"video": video, "video_fps": 25.0}]
    metric = create("metric", "lip-offset", signed=True, crop="detect")
    base = float(metric(wav[None], labels=labels)[0])
    late = float(metric(_delay(wav, 0.24)[None], labels=labels)[0])
    assert abs(base) <= 40.0 and late - base == pytest.approx(240.0, abs=40.0)
