"""Fixtures for the data tests: test videos written with PyAV, a tiny synthetic set, a tiny frozen encoder."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

BARS = 8  # frame index encoded as 8 black/white bars: survives H.264 and identifies time


def code_frame(index: int, height: int = 64, width: int = 64) -> np.ndarray:
    """A frame whose content is its index in binary (bar b white when bit b is set). (H, W, 3) uint8"""
    img = np.zeros((height, width, 3), np.uint8)
    step = width // BARS
    for b in range(BARS):
        if (index >> b) & 1:
            img[:, b * step : (b + 1) * step] = 255
    return img


def read_code(frame) -> int:
    """Index encoded by `code_frame` in a (3, H, W) float frame."""
    bars = frame.mean(dim=(0, 1)).reshape(BARS, -1).mean(dim=1)
    return int(sum(1 << b for b in range(BARS) if bars[b] > 0.5))


def write_test_video(
    path: Path,
    times: list[float],
    rate: Fraction | None = None,
    time_base: Fraction | None = None,
    rotation: int = 0,
    audio_seconds: float | None = None,
    pix_fmt: str = "yuv420p",
    size: tuple[int, int] = (64, 64),
    codes: list[int] | None = None,
) -> Path:
    """H.264 mp4 with one coded frame per entry of `times` (seconds), optionally rotated and with a tone.

    Frame i shows `codes[i]` (default: i) as bars, so its content says which source frame it is.
    """
    import av

    height, width = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate or 25)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if time_base is not None:
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
        if rotation:
            stream.set_display_rotation(rotation)
        astream = out.add_stream("aac", rate=16000, layout="stereo") if audio_seconds else None  # before muxing
        for i, t in enumerate(times):
            code = i if codes is None else codes[i]
            frame = av.VideoFrame.from_ndarray(code_frame(code, height, width), format="rgb24")
            if time_base is not None:
                frame.pts, frame.time_base = int(round(t / time_base)), time_base
            else:
                frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        if astream is not None:
            sr = 16000
            n = int(audio_seconds * sr)
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / sr)).astype(np.float32)
            data = np.stack([tone, tone])
            for i in range(0, n, 1024):
                chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, i : i + 1024]), format="fltp",
                                                   layout="stereo")
                chunk.sample_rate, chunk.pts, chunk.time_base = sr, i, Fraction(1, sr)
                for packet in astream.encode(chunk):
                    out.mux(packet)
            for packet in astream.encode():
                out.mux(packet)
    return path


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A small synthetic set (all families, 9 clips of 3 s), generated once per test session."""
    from vssflow.plugins.datasets.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, SynthConfig(clips=9, seconds=3.0, seed=7))
    return root


TINY_ENCODER_SOURCE = '''
from pydantic import BaseModel, ConfigDict
from vssflow.core.interfaces import Condition, Encoder, InputContract
from vssflow.registry import hookimpl


class MeanColourParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fps: float = 5.0
    size: int = 16


class MeanColour(Encoder):
    """Frozen: each frame's mean colour (3-d) at `fps`."""

    modality = "video"
    frozen = True

    def __init__(self, fps=5.0, size=16):
        super().__init__()
        self.fps, self.size, self.dim = fps, size, 3

    @property
    def contract(self):
        return InputContract("video", fps=self.fps, size=(self.size, self.size))

    def forward(self, x, mask=None, **extras):
        return Condition(x.mean(dim=(3, 4)), mask, self.fps)  # (B, L, 3)


@hookimpl
def register_encoders(register):
    register("test-mean-colour", MeanColour, params=MeanColourParams, description="test: frame mean colour")
'''
