"""Media I/O: frame timing at any fps (CFR, NTSC, VFR), rotation, odd files, audio formats, writing, muxing."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.data.conftest import read_code, write_test_video
from vssflow.core import media
from vssflow.core.errors import MediaError


def _check_timing(vf, source_times, target_fps, start=0.0):
    """Each output frame shows the source frame whose interval covers its target time, within one frame."""
    source_times = np.asarray(source_times)
    period = float(np.max(np.diff(source_times))) if len(source_times) > 1 else 1.0
    for k, frame in enumerate(vf.frames):
        shown = read_code(frame)
        target = start + k / target_fps
        truth = int(np.searchsorted(source_times, target + 1e-6, side="right") - 1)
        assert abs(shown - truth) <= 1, f"frame {k} (t={target:.3f}) shows source frame {shown}, expected {truth}"
        assert abs(source_times[shown] - target) <= period + 1e-6
        assert abs(vf.times[k].item() - source_times[shown]) < 1e-3  # reported timestamp = the frame shown


@pytest.mark.parametrize(
    "rate", [Fraction(24), Fraction(30000, 1001), Fraction(25)], ids=["24fps", "29.97fps", "25fps"]
)
@pytest.mark.parametrize("target_fps", [25.0, 10.0])
def test_constant_rate_videos_map_onto_the_target_grid(tmp_path, rate, target_fps):
    n = 50
    times = [i / float(rate) for i in range(n)]
    path = write_test_video(tmp_path / "v.mp4", times, rate=rate)
    vf = media.read_video(path, fps=target_fps)
    assert len(vf) == math.ceil(n / float(rate) * target_fps - 1e-6)  # the grid stops at the video's end
    _check_timing(vf, times, target_fps)
    # exact content check: with integer-aligned grids there is no ambiguity at all
    for k, frame in enumerate(vf.frames):
        assert read_code(frame) == int(math.floor(k / target_fps * float(rate) + 1e-6))


def test_variable_frame_rate_picks_the_frame_covering_each_target_time(tmp_path):
    rng = np.random.default_rng(0)
    times = np.round(np.cumsum(np.r_[0.0, rng.uniform(0.015, 0.09, 59)]), 3).tolist()
    path = write_test_video(tmp_path / "vfr.mp4", times, time_base=Fraction(1, 1000))
    vf = media.read_video(path, fps=25)
    _check_timing(vf, times, 25)
    expected = [int(np.searchsorted(times, k / 25 + 1e-9, side="right") - 1) for k in range(len(vf))]
    assert [read_code(f) for f in vf.frames] == expected


def test_same_clip_at_24_2997_and_variable_fps_reads_the_same_times(tmp_path):
    """One 2.4 s scene (content = its time in centiseconds) encoded three ways, read back at 25 fps."""
    rng = np.random.default_rng(1)
    versions = {
        "24": ([i / 24 for i in range(58)], {"rate": Fraction(24)}),
        "29.97": ([i * 1001 / 30000 for i in range(72)], {"rate": Fraction(30000, 1001)}),
        "vfr": (np.round(np.cumsum(np.r_[0.0, rng.uniform(0.02, 0.06, 59)]), 3).tolist(),
                {"time_base": Fraction(1, 1000)}),
    }
    shown = {}
    for name, (times, kwargs) in versions.items():
        codes = [int(round(t * 100)) for t in times]  # the scene's clock, burnt into the frames
        path = write_test_video(tmp_path / f"{name}.mp4", times, codes=codes, **kwargs)
        vf = media.read_video(path, fps=25, end=2.2)
        assert len(vf) == 55
        period = float(np.max(np.diff(times)))
        clock = np.array([read_code(f) / 100 for f in vf.frames])
        target = np.arange(len(vf)) / 25
        assert np.all(clock <= target + 0.006) and np.all(target - clock < period + 0.006), name  # within a frame
        assert np.allclose(vf.times.numpy(), clock, atol=0.006), name  # timestamps = the frames' own times
        shown[name] = clock
    assert np.abs(shown["24"] - shown["29.97"]).max() < 1 / 24 + 0.01


def test_native_frames_with_their_timestamps(tmp_path):
    times = [i / 24 for i in range(12)]
    vf = media.read_video(write_test_video(tmp_path / "v.mp4", times, rate=Fraction(24)))
    assert [read_code(f) for f in vf.frames] == list(range(12))
    assert torch.allclose(vf.times, torch.tensor(times, dtype=torch.float64), atol=1e-4)
    assert vf.fps is None and vf.source_fps == pytest.approx(24.0)


def test_start_end_window_and_resize(tmp_path):
    times = [i / 25 for i in range(75)]
    path = write_test_video(tmp_path / "v.mp4", times, rate=Fraction(25), size=(48, 64))
    vf = media.read_video(path, fps=10, size=(32, 32), start=1.0, end=2.0)
    assert vf.frames.shape == (10, 3, 32, 32)
    assert vf.frames.min() >= 0 and vf.frames.max() <= 1
    assert vf.times[0].item() == pytest.approx(1.0, abs=1e-3)
    stretched = media.read_video(path, fps=5, size=(16, 40), fit="stretch")
    assert stretched.frames.shape == (15, 3, 16, 40)


def test_one_frame_video(tmp_path):
    path = write_test_video(tmp_path / "one.mp4", [0.0], rate=Fraction(25))
    info = media.probe(path)
    assert info.num_frames == 1 and info.has_video and not info.has_audio
    vf = media.read_video(path, fps=10)
    assert vf.frames.shape == (1, 3, 64, 64) and vf.times.tolist() == [0.0]
    assert media.read_video(path, fps=100).frames.shape[0] == 4  # its 40 ms last 4 periods at 100 fps


def test_video_without_audio(tmp_path):
    path = write_test_video(tmp_path / "silent.mp4", [i / 25 for i in range(10)], rate=Fraction(25))
    assert not media.probe(path).has_audio
    with pytest.raises(MediaError, match="silent.mp4: cannot read audio: no audio stream"):
        media.read_audio(path)


def test_portrait_rotated_video_is_read_upright(tmp_path):
    # coded landscape 64x32 with a white left stripe; display matrix: 90 degrees counter-clockwise
    import av

    path = tmp_path / "portrait.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(90)
        img = np.zeros((32, 64, 3), np.uint8)
        img[:, :16] = 255
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    info = media.probe(path)
    assert (info.width, info.height, info.rotation) == (32, 64, 90)
    frames = media.read_video(path).frames
    assert frames.shape == (3, 3, 64, 32)  # portrait
    rows = frames[0].mean(dim=(0, 2))  # brightness per row
    assert rows[-12:].min() > 0.8 and rows[:40].max() < 0.2  # the left stripe now lies along the bottom
    resized = media.read_video(path, size=(32, 16)).frames
    assert resized.shape == (3, 3, 32, 16)


def test_ten_bit_444_pixel_format(tmp_path):
    times = [i / 25 for i in range(5)]
    path = write_test_video(tmp_path / "p444.mp4", times, rate=Fraction(25), pix_fmt="yuv444p10le")
    vf = media.read_video(path, fps=25)
    assert [read_code(f) for f in vf.frames] == list(range(5))


@pytest.mark.parametrize("reader", [media.read_video, media.probe, media.read_audio])
def test_unreadable_files_raise_one_media_error_naming_the_file(tmp_path, reader):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video " * 50)
    good = write_test_video(tmp_path / "good.mp4", [i / 25 for i in range(50)], rate=Fraction(25), audio_seconds=2)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases = {empty: "empty file (0 bytes)", junk: "not a media file", truncated: "truncated",
             tmp_path / "missing.mp4": "file not found"}
    for path, why in cases.items():
        with pytest.raises(MediaError) as info:
            reader(path)
        message = str(info.value)
        assert str(path) in message and why in message and "\n" not in message


def test_truncated_faststart_file_is_an_error(tmp_path):
    # moov first, then the media data cut short: the header promises frames the file lacks
    import av

    src = write_test_video(tmp_path / "src.mp4", [i / 25 for i in range(100)], rate=Fraction(25))
    fast = tmp_path / "fast.mp4"
    with av.open(str(src)) as inp, av.open(str(fast), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(fast.read_bytes()[: int(fast.stat().st_size * 0.6)])
    with pytest.raises(MediaError, match="cut.mp4: cannot read video: .*truncated"):
        media.read_video(cut)


def _tone(seconds=1.0, sr=22050, channels=2):
    t = np.arange(int(seconds * sr)) / sr
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = 0.25 * np.sin(2 * np.pi * 440 * t)
    return np.stack([left, right][:channels], axis=1).astype(np.float32), sr  # (S, C)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
def test_read_audio_soundfile_formats_downmix_and_resample(tmp_path, suffix):
    data, sr = _tone()
    path = tmp_path / f"tone{suffix}"
    sf.write(str(path), data, sr)
    wav, rate = media.read_audio(path)
    assert rate == sr and wav.dim() == 1 and wav.shape[0] == data.shape[0]
    assert wav.abs().max().item() == pytest.approx(0.375, abs=0.03)  # mean of the two channels
    stereo, _ = media.read_audio(path, mono=False)
    assert stereo.shape == (2, data.shape[0])
    res, rate = media.read_audio(path, sample_rate=16000, start=0.25, end=0.75)
    assert rate == 16000 and res.shape[0] == pytest.approx(8000, abs=2)


@pytest.mark.parametrize("container,codec", [("mp4", "aac"), ("m4a", "aac"), ("mp3", "libmp3lame")])
def test_read_audio_from_compressed_containers(tmp_path, container, codec):
    import av

    data, sr = _tone(seconds=1.5, sr=44100)
    path = tmp_path / f"tone.{container}"
    with av.open(str(path), "w", format="mp4" if container == "m4a" else None) as out:
        stream = out.add_stream(codec, rate=sr, layout="stereo")
        planar = np.ascontiguousarray(data.T)
        step = 1152 if codec == "libmp3lame" else 1024
        for i in range(0, planar.shape[1], step):
            fmt = "s16p" if codec == "libmp3lame" else "fltp"
            chunk = planar[:, i : i + step]
            if fmt == "s16p":
                chunk = (chunk * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=fmt, layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = sr, i, Fraction(1, sr)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    wav, rate = media.read_audio(path, sample_rate=16000)
    assert rate == 16000 and wav.dim() == 1
    assert abs(wav.shape[0] - 24000) <= 0.06 * 16000  # within a codec frame or two of 1.5 s
    mid = wav[4000:20000]
    assert mid.abs().max().item() == pytest.approx(0.375, abs=0.05)
    spectrum = torch.fft.rfft(mid).abs()
    assert abs(spectrum.argmax().item() * 16000 / len(mid) - 440) < 5  # still a 440 Hz tone


def test_write_audio_is_atomic_and_round_trips(tmp_path):
    wav = torch.sin(torch.linspace(0, 200, 16000)) * 0.5
    path = media.write_audio(tmp_path / "out" / "a.wav", wav, 16000)
    back, rate = media.read_audio(path)
    assert rate == 16000 and torch.allclose(back, wav, atol=1e-4)
    flac = media.write_audio(tmp_path / "a.flac", torch.stack([wav, -wav]), 16000)
    assert media.read_audio(flac, mono=False)[0].shape == (2, 16000)
    with pytest.raises(MediaError, match="use a .wav or .flac name"):
        media.write_audio(tmp_path / "a.mp3", wav, 16000)
    with pytest.raises(ValueError):
        media.write_audio(tmp_path / "bad.wav", torch.zeros(2, 2, 2), 16000)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.flac", "a.wav", "out"]  # no temp files left


def test_failed_write_leaves_no_file(tmp_path):
    target = tmp_path / "v.mp4"
    with pytest.raises(ValueError):
        media.write_video(target, np.zeros((2, 8, 8, 4), np.uint8), 25)  # 4 channels: rejected
    with pytest.raises(RuntimeError):
        with media.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_write_video_round_trip(tmp_path):
    frames = np.stack([np.full((32, 48, 3), 10 * i, np.uint8) for i in range(10)])
    tone = 0.3 * np.sin(2 * np.pi * 300 * np.arange(16000) / 16000)
    path = media.write_video(tmp_path / "w.mp4", frames, 25, audio=tone, sample_rate=16000)
    info = media.probe(path)
    assert (info.width, info.height, info.num_frames, info.has_audio) == (48, 32, 10, True)
    back = media.read_video(path).frames
    assert back.shape == (10, 3, 32, 48)
    assert torch.allclose(back.mean(dim=(1, 2, 3)) * 255, torch.arange(10.0) * 10, atol=3)


def test_mux_keeps_the_video_stream_bit_identical(tmp_path):
    times = [i / 25 for i in range(60)]  # 2.4 s, rotated and with an old audio track to drop
    src = write_test_video(tmp_path / "src.mp4", times, rate=Fraction(25), rotation=270, audio_seconds=2.4)
    wav = torch.sin(2 * math.pi * 500 * torch.arange(48000) / 16000) * 0.4  # 3 s: longer than the video
    out = media.mux_audio(src, wav, 16000, tmp_path / "out.mp4")
    assert media.video_packets(out) == media.video_packets(src)  # same bytes, pts and dts: a stream copy
    info = media.probe(out)
    assert info.rotation == 270 and info.audio_codec == "aac" and info.sample_rate == 16000 and info.channels == 1
    audio, _ = media.read_audio(out)
    assert abs(audio.shape[0] - 2.4 * 16000) <= 1  # trimmed to the video; AAC padding removed
    kept = media.mux_audio(src, wav[:16000], 16000, tmp_path / "short.mp4")
    assert abs(media.read_audio(kept)[0].shape[0] - 16000) <= 1  # shorter audio keeps its length
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "short.mp4", "src.mp4"]


def test_mux_into_matroska_copies_the_payloads(tmp_path):
    src = write_test_video(tmp_path / "src.mp4", [i / 25 for i in range(25)], rate=Fraction(25))
    out = media.mux_audio(src, np.zeros(16000, np.float32), 16000, tmp_path / "out.mkv")
    import av

    with av.open(str(out)) as container:
        assert "matroska" in container.format.name
    assert [p[2] for p in media.video_packets(out)] == [p[2] for p in media.video_packets(src)]
