"""Media I/O: probe, read video frames at any fps/size, read and write audio, mux audio into a video.

Video is decoded with PyAV whatever its frame rate (constant, NTSC 29.97, variable), rotation (display
matrix), pixel format or resolution. Frames come back as (L, 3, H, W) float32 in [0, 1] together with the
presentation time of the source frame each output frame shows. Audio comes back as float32 (S,) mono or
(C, S). Every failure to read a file (missing, 0 bytes, truncated, not media) is one MediaError naming it.

Frame selection at a target fps: output frame k shows the decoded frame whose presentation interval
[pts_i, pts_{i+1}) covers the target time start + k / fps, so variable frame rates map onto a regular grid.
"""

from __future__ import annotations

import contextlib
import math
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import MediaError

SOUNDFILE_SUFFIXES = (".wav", ".flac", ".ogg", ".oga")
_EPS = 1e-6  # seconds: absorbs float error in pts * time_base, far below any real timestamp step


@dataclass(frozen=True)
class MediaInfo:
    """What `probe` learns about a media file. Sizes are display sizes (after rotation)."""

    path: str
    duration_s: float
    has_video: bool
    has_audio: bool
    fps: float | None = None  # average frame rate of the video stream
    width: int | None = None
    height: int | None = None
    rotation: int = 0  # degrees counter-clockwise applied for display (0, 90, 180, 270)
    num_frames: int | None = None  # as declared by the container (0/None when unknown)
    sample_rate: int | None = None
    channels: int | None = None
    video_codec: str | None = None
    audio_codec: str | None = None


@dataclass
class VideoFrames:
    """Decoded frames (L, 3, H, W) float32 in [0, 1] and the presentation time (L,) of each source frame."""

    frames: torch.Tensor
    times: torch.Tensor  # (L,) float64 seconds since the start of the file
    fps: float | None  # the target fps, or None when every decoded frame was returned
    source_fps: float | None

    def __len__(self) -> int:
        return int(self.frames.shape[0])


# ----------------------------------------------------------------------------------------------------------
# opening and errors


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise MediaError(f"{path}: cannot read {what}: file not found")
    if path.is_dir():
        raise MediaError(f"{path}: cannot read {what}: is a directory")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: cannot read {what}: empty file (0 bytes)")


def _reason(exc: BaseException) -> str:
    """FFmpeg's own words, without errno and the repeated file name."""
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return str(text).splitlines()[0]


@contextlib.contextmanager
def _open_input(path: str | os.PathLike, what: str) -> Iterator[Any]:
    """av.open for reading; any FFmpeg error while open or decoding becomes MediaError naming the file."""
    import av

    path = Path(path)
    _check_file(path, what)
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise MediaError(
            f"{path}: cannot read {what}: truncated, corrupt or not a media file ({_reason(exc)})"
        ) from None
    try:
        yield container
    except (av.FFmpegError, EOFError) as exc:
        raise MediaError(f"{path}: cannot read {what}: corrupt or truncated ({_reason(exc)})") from None
    finally:
        container.close()


def _origin(container: Any) -> float:
    """Container start time in seconds: timestamps are reported relative to it (0 = file start)."""
    return (container.start_time or 0) / 1_000_000


def _stream_rotation(container: Any, stream: Any) -> int:
    """Display rotation (CCW degrees, multiple of 90) from the first decoded frame's display matrix."""
    for frame in container.decode(stream):
        return int(round((frame.rotation or 0) / 90.0)) * 90 % 360
    return 0


# ----------------------------------------------------------------------------------------------------------
# probe


def probe(path: str | os.PathLike) -> MediaInfo:
    """Duration, fps, display size, rotation and audio presence of a media file (MediaError if unreadable)."""
    path = Path(path)
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        info = _soundfile_info(path)
        if info is not None:
            return info
    with _open_input(path, "media") as container:
        v = container.streams.video[0] if container.streams.video else None
        a = container.streams.audio[0] if container.streams.audio else None
        if v is None and a is None:
            raise MediaError(f"{path}: cannot read media: no audio or video stream")
        duration = container.duration / 1_000_000 if container.duration else 0.0
        fields: dict[str, Any] = {}
        if v is not None:
            rate = v.average_rate or v.guessed_rate or v.base_rate
            fields.update(
                fps=float(rate) if rate else None,
                num_frames=int(v.frames) or None,
                video_codec=v.codec_context.name,
            )
            width, height = v.codec_context.width, v.codec_context.height
            rotation = _stream_rotation(container, v)
            if rotation in (90, 270):
                width, height = height, width
            fields.update(width=width, height=height, rotation=rotation)
            if not duration and v.duration and v.time_base:
                duration = float(v.duration * v.time_base)
        if a is not None:
            fields.update(sample_rate=a.codec_context.sample_rate, channels=a.codec_context.channels,
                          audio_codec=a.codec_context.name)
            if not duration and a.duration and a.time_base:
                duration = float(a.duration * a.time_base)
        return MediaInfo(str(path), float(duration), v is not None, a is not None, **fields)


def _soundfile_info(path: Path) -> MediaInfo | None:
    import soundfile as sf

    _check_file(path, "audio")
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError):
        return None  # let PyAV try (and name the error)
    return MediaInfo(str(path), float(info.duration), False, True, sample_rate=info.samplerate,
                     channels=info.channels, audio_codec=info.subtype)


# ----------------------------------------------------------------------------------------------------------
# video


def _scaled_size(src_h: int, src_w: int, size: tuple[int, int] | None, fit: str) -> tuple[int, int]:
    """Display size (h, w) to scale to before any centre crop."""
    if size is None:
        return src_h, src_w
    h, w = size
    if fit == "stretch":
        return h, w
    if fit == "crop":
        scale = max(h / src_h, w / src_w)
        return max(h, round(src_h * scale)), max(w, round(src_w * scale))
    raise ValueError(f"fit must be 'crop' or 'stretch', got {fit!r}")


class _FrameConverter:
    """Decoded frame -> (H, W, 3) uint8 at the requested display size, rotated upright."""

    def __init__(self, size: tuple[int, int] | None, fit: str) -> None:
        from av.video.reformatter import VideoReformatter

        self.size, self.fit = size, fit
        self._reformatter = VideoReformatter()  # keeps its swscale context: 30x faster than frame.reformat

    def __call__(self, frame: Any) -> np.ndarray:
        rotation = int(round((frame.rotation or 0) / 90.0)) * 90 % 360
        src_h, src_w = frame.height, frame.width
        if rotation in (90, 270):
            src_h, src_w = src_w, src_h  # display size
        sh, sw = _scaled_size(src_h, src_w, self.size, self.fit)
        coded_h, coded_w = (sw, sh) if rotation in (90, 270) else (sh, sw)
        rgb = self._reformatter.reformat(frame, width=coded_w, height=coded_h, format="rgb24",
                                         interpolation="AREA").to_ndarray()
        if rotation:
            rgb = np.rot90(rgb, k=rotation // 90)  # display matrix angle is counter-clockwise
        if self.size is not None and (sh, sw) != tuple(self.size):
            h, w = self.size
            top, left = (sh - h) // 2, (sw - w) // 2
            rgb = rgb[top : top + h, left : left + w]
        return np.ascontiguousarray(rgb)


def _frame_time(frame: Any, index: int, origin: float, rate: float | None, path: Path) -> float:
    if frame.pts is not None and frame.time_base is not None:
        return float(frame.pts * frame.time_base) - origin
    if rate:
        return index / rate  # no timestamps at all (raw streams): assume constant rate
    raise MediaError(f"{path}: cannot read video: frames have no timestamps and the stream no frame rate")


@dataclass(frozen=True)
class VideoRequest:
    """One frame sequence to take from a video: `fps` (None: every frame), `size` (H, W), `start`..`end` s, `fit`."""

    fps: float | None = None
    size: tuple[int, int] | None = None
    start: float = 0.0
    end: float | None = None
    fit: str = "crop"


class _Take:
    """The frames of one VideoRequest, gathered while the decoder runs (several takes share one pass)."""

    def __init__(self, request: VideoRequest) -> None:
        if request.fps is not None and request.fps <= 0:
            raise ValueError(f"fps must be positive, got {request.fps}")
        if request.end is not None and request.end <= request.start:
            raise ValueError(f"end ({request.end}) must be after start ({request.start})")
        self.request = request
        self.convert = _FrameConverter(tuple(request.size) if request.size is not None else None, request.fit)
        self.images: list[np.ndarray] = []
        self.times: list[float] = []
        self.prev: Any = None
        self.prev_t = self.prev_end = 0.0
        self.prev_rgb: np.ndarray | None = None
        self.k = 0  # next target index
        self.done = False

    def feed(self, frame: Any, t: float, source_fps: float | None) -> None:
        """Take a decoded frame at time `t` (frames before `start` only move the frame that covers it)."""
        if self.done:
            return
        fps, start, end = self.request.fps, self.request.start, self.request.end
        if end is not None and t >= end - _EPS and self.prev is not None:
            self.prev_end = t  # the previous frame lasts until this one
            self.done = True
            return
        if fps is None:
            if t >= start - _EPS:  # after a seek, frames before `start` are decoded but not kept
                self.images.append(self.convert(frame))
                self.times.append(t)
            self.prev = frame
            return
        # every target before this frame's pts is covered by the previous frame; targets before the
        # first frame wait for finish() and are shown the first frame
        while self.prev is not None and start + self.k / fps < t - _EPS and (end is None or start + self.k / fps < end - _EPS):
            self._repeat_prev()
        self.prev, self.prev_t, self.prev_rgb = frame, t, None
        self.prev_end = t + _frame_duration(frame, source_fps)

    def _repeat_prev(self) -> None:
        if self.prev_rgb is None:
            self.prev_rgb = self.convert(self.prev)
        self.images.append(self.prev_rgb)
        self.times.append(self.prev_t)
        self.k += 1

    def finish(self) -> None:
        """After the last decoded frame: the last frame covers its own duration."""
        fps, start, end = self.request.fps, self.request.start, self.request.end
        if fps is not None and self.prev is not None:
            stop = self.prev_end if end is None else min(self.prev_end, end)
            while start + self.k / fps < stop - _EPS:
                self._repeat_prev()
            if not self.images:  # a window shorter than one target period still shows one frame
                self.images.append(self.convert(self.prev))
                self.times.append(self.prev_t)


@dataclass
class DecodedVideo:
    """One VideoRequest's frames as decoded, (L, H, W, 3) uint8 (a quarter of the float frames' memory)."""

    rgb: np.ndarray  # (L, H, W, 3) uint8
    times: np.ndarray  # (L,) float64 seconds since the start of the file
    fps: float | None
    source_fps: float | None

    @property
    def nbytes(self) -> int:
        return int(self.rgb.nbytes + self.times.nbytes)

    def frames(self) -> VideoFrames:
        """The float frames (L, 3, H, W) in [0, 1] that `read_video` returns for the same request."""
        frames = np.empty((self.rgb.shape[0], 3, *self.rgb.shape[1:3]), np.float32)
        # numpy, single-threaded: torch's thread pool costs more than it saves on these small copies
        np.multiply(self.rgb.transpose(0, 3, 1, 2), np.float32(1 / 255.0), out=frames, dtype=np.float32)
        return VideoFrames(torch.from_numpy(frames), torch.from_numpy(self.times.copy()), self.fps, self.source_fps)


def decode_video(path: str | os.PathLike, requests: list[VideoRequest]) -> list[DecodedVideo]:
    """Every request's frames of one video, decoded in a single pass (uint8; see `read_video`)."""
    path = Path(path)
    takes = [_Take(r) for r in requests]
    if not takes:
        return []
    first = min(r.start for r in requests)
    whole = any(r.start <= 0 and r.end is None for r in requests)
    with _open_input(path, "video") as container:
        if not container.streams.video:
            raise MediaError(f"{path}: cannot read video: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate_q = stream.average_rate or stream.guessed_rate or stream.base_rate
        source_fps = float(rate_q) if rate_q else None
        origin = _origin(container)
        if first > 0:
            container.seek(int((first + origin) / stream.time_base), stream=stream, backward=True)
        decoded = 0
        for frame in container.decode(stream):
            t = _frame_time(frame, decoded, origin, source_fps, path)
            decoded += 1
            for take in takes:
                take.feed(frame, t, source_fps)
            if all(take.done for take in takes):
                break
        for take in takes:
            take.finish()
        if decoded == 0:
            raise MediaError(f"{path}: cannot read video: no decodable frames (empty or truncated stream)")
        declared = int(stream.frames or 0)
        if whole and declared > 1 and decoded < declared - 1:
            raise MediaError(f"{path}: cannot read video: truncated (header declares {declared} frames, "
                             f"only {decoded} decodable)")
    out = []
    for take in takes:
        if not take.images:
            raise MediaError(f"{path}: cannot read video: no frames between {take.request.start:.3f}s and "
                             f"{take.request.end}s")
        out.append(DecodedVideo(np.stack(take.images), np.asarray(take.times, dtype=np.float64), take.request.fps,
                                source_fps))
    return out


def read_videos(path: str | os.PathLike, requests: list[VideoRequest]) -> list[VideoFrames]:
    """`read_video` for several requests (rates, sizes, windows) of one file, decoded once."""
    return [d.frames() for d in decode_video(path, requests)]


def read_video(
    path: str | os.PathLike,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
    start: float = 0.0,
    end: float | None = None,
    fit: str = "crop",
) -> VideoFrames:
    """Frames (L, 3, H, W) in [0, 1] at `fps` (None: every frame) and `size` (H, W), from `start` to `end` s.

    `fit="crop"` scales to cover `size` and centre-crops (aspect kept); `fit="stretch"` scales to `size`.
    L = ceil((min(end, video end) - start) * fps): the last output frame is the last one whose target time
    falls inside the video.
    """
    size = tuple(size) if size is not None else None
    return read_videos(path, [VideoRequest(fps, size, start, end, fit)])[0]


def _frame_duration(frame: Any, source_fps: float | None) -> float:
    if frame.duration and frame.time_base is not None:
        return float(frame.duration * frame.time_base)
    return 1.0 / source_fps if source_fps else 0.04


# ----------------------------------------------------------------------------------------------------------
# audio


def read_audio(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    mono: bool = True,
    start: float = 0.0,
    end: float | None = None,
) -> tuple[torch.Tensor, int]:
    """Audio as float32 (S,) when mono (channels averaged) else (C, S), resampled to `sample_rate`.

    wav/flac/ogg are read with soundfile; anything else (mp4, m4a, mp3, mkv, ...) with PyAV.
    Returns (wav, rate): the rate is `sample_rate` when given, else the file's own.
    """
    path = Path(path)
    data = rate = None
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        _check_file(path, "audio")
        data, rate = _read_soundfile(path, start, end)
    if data is None:
        data, rate = _read_av_audio(path, start, end)
    data = np.asarray(data, dtype=np.float32)  # (C, S)
    if mono:
        data = data[0] if data.shape[0] == 1 else data.mean(axis=0, dtype=np.float32)
    wav = torch.from_numpy(np.ascontiguousarray(data))
    if sample_rate is not None and sample_rate != rate:
        wav = resample(wav, int(rate), int(sample_rate))
        rate = sample_rate
    return wav.contiguous(), int(rate)


def fit_channels(wav: torch.Tensor, channels: int) -> torch.Tensor:
    """(S,) or (C, S) audio -> (channels, S): mono is copied to every channel, `channels=1` averages, and
    more channels than asked keep the first ones (front left/right in the usual 5.1 and 7.1 layouts)."""
    wav = wav.unsqueeze(0) if wav.dim() == 1 else wav
    have = wav.shape[0]
    if have == channels:
        return wav
    if channels == 1:
        return wav.mean(dim=0, keepdim=True)
    if have == 1:
        return wav.expand(channels, -1).contiguous()
    if have > channels:
        return wav[:channels].contiguous()
    raise MediaError(f"cannot make {channels}-channel audio from {have} channels")


def resample(wav: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """(..., S) at `orig` Hz -> (..., S') at `new` Hz (torchaudio's band-limited sinc resampling)."""
    if orig == new:
        return wav
    import torchaudio.functional as AF

    return AF.resample(wav, orig, new)


def _read_soundfile(path: Path, start: float, end: float | None) -> tuple[np.ndarray | None, int | None]:
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            rate = f.samplerate
            first = int(round(start * rate))
            last = f.frames if end is None else min(f.frames, int(round(end * rate)))
            f.seek(min(first, f.frames))
            data = f.read(max(0, last - first), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError):
        return None, None  # not what the suffix says: PyAV gets a go and reports the error
    return data.T, rate


def _read_av_audio(path: Path, start: float, end: float | None) -> tuple[np.ndarray, int]:
    import av

    with _open_input(path, "audio") as container:
        if not container.streams.audio:
            raise MediaError(f"{path}: cannot read audio: no audio stream")
        stream = container.streams.audio[0]
        origin = _origin(container)
        rate = stream.codec_context.sample_rate
        if start > 0:
            container.seek(int((start + origin) / stream.time_base), stream=stream, backward=True)
        resampler = av.AudioResampler(format="fltp")  # float planar, native rate and layout
        chunks: list[np.ndarray] = []
        first_t: float | None = None
        total = 0
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                if first_t is None:
                    first_t = float(out.pts * out.time_base) - origin if out.pts is not None else 0.0
                chunks.append(out.to_ndarray())  # (C, n)
                total += chunks[-1].shape[1]
            if end is not None and first_t is not None and first_t + total / rate >= end:
                break
        else:
            chunks += [out.to_ndarray() for out in resampler.resample(None)]
        declared_end = _declared_end(container, stream)
    if not chunks:
        raise MediaError(f"{path}: cannot read audio: no decodable audio (empty or truncated stream)")
    first_t = first_t or 0.0
    data = np.concatenate(chunks, axis=1)
    if declared_end is not None:
        # AAC pads its last frame; the mp4 edit list says where the real audio stops
        data = data[:, : max(0, int(round((declared_end - first_t) * rate)))]
    data = data[:, max(0, int(round((start - first_t) * rate))) :]
    if end is not None:
        data = data[:, : max(0, int(round((end - start) * rate)))]
    return data, rate


# ----------------------------------------------------------------------------------------------------------
# writing (atomic: a temporary name in the same folder, renamed when complete)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    from .files import write_error

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(path.parent, exc, "create the folder") from None
    # same folder (so the rename is atomic), same suffix (so writers pick the format), unique per writer
    tmp_path = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:  # full disk, read-only folder, a name too long: the OUTPUT is at fault (PyAV's
        # write errors are OSErrors too), never the input being read
        raise write_error(path, exc) from None
    finally:
        try:
            if tmp_path.exists():
                tmp_path.unlink()
        except OSError:
            pass


def _as_numpy_audio(wav: torch.Tensor | np.ndarray) -> np.ndarray:
    """(S,) or (C, S) -> (S, C) float32 for soundfile."""
    arr = wav.detach().cpu().float().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav, np.float32)
    if arr.ndim == 1:
        arr = arr[:, None]
    elif arr.ndim == 2:
        arr = arr.T
    else:
        raise ValueError(f"audio must be (S,) or (C, S), got shape {arr.shape}")
    return np.ascontiguousarray(arr.astype(np.float32))


def write_audio(
    path: str | os.PathLike, wav: torch.Tensor | np.ndarray, sample_rate: int, subtype: str | None = None
) -> Path:
    """Write (S,) or (C, S) audio to .wav or .flac atomically (default 16-bit PCM, values clipped to [-1, 1])."""
    import soundfile as sf

    path = Path(path)
    formats = {".wav": "WAV", ".flac": "FLAC"}
    fmt = formats.get(path.suffix.lower())
    if fmt is None:
        raise MediaError(f"{path}: cannot write audio: use a .wav or .flac name")
    data = np.clip(_as_numpy_audio(wav), -1.0, 1.0)
    with atomic_path(path) as tmp:
        try:
            sf.write(str(tmp), data, int(sample_rate), format=fmt, subtype=subtype or "PCM_16")
        except sf.SoundFileError as exc:  # libsndfile reports a failed open or write without an errno
            from .files import OutputError

            raise OutputError(f"{path}: cannot write ({exc}); check that the folder is writable and has space") from None
    return path


def _to_uint8_frames(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """(L, 3, H, W) float in [0, 1] tensor or (L, H, W, 3) uint8 array -> (L, H, W, 3) uint8."""
    if isinstance(frames, torch.Tensor):
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames tensor must be (L, 3, H, W), got {tuple(frames.shape)}")
        frames = (frames.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"frames array must be (L, H, W, 3) uint8, got {arr.shape} {arr.dtype}")
    return arr


def write_video(
    path: str | os.PathLike,
    frames: torch.Tensor | np.ndarray,
    fps: float,
    audio: torch.Tensor | np.ndarray | None = None,
    sample_rate: int | None = None,
    codec: str = "libx264",
    crf: int = 23,
    preset: str = "ultrafast",
    threads: int = 1,
) -> Path:
    """Encode frames ((L, H, W, 3) uint8 or (L, 3, H, W) in [0, 1]) to an mp4 at `fps`, plus optional AAC audio.

    Atomic. `threads=1` keeps the bitstream deterministic (and suits one encoder per worker process).
    """
    import av

    arr = _to_uint8_frames(frames)
    length, height, width, _ = arr.shape
    if length == 0:
        raise ValueError("cannot write a video with no frames")
    rate = Fraction(fps).limit_denominator(1001)
    path = Path(path)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as out:
            vs = out.add_stream(codec, rate=rate)
            vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
            vs.codec_context.thread_count = threads
            if codec == "libx264":
                vs.options = {"preset": preset, "crf": str(crf)}
            else:
                vs.codec_context.qscale = 4  # mpeg4 & co: constant quality
                vs.codec_context.flags |= "QSCALE"
            encoder = None
            if audio is not None:
                if sample_rate is None:
                    raise ValueError("write_video: sample_rate is required with audio")
                encoder = _AudioEncoder(out, _as_numpy_audio(audio).T, int(sample_rate))
            for i in range(length):
                frame = av.VideoFrame.from_ndarray(arr[i], format="rgb24")
                frame.pts = i
                for packet in vs.encode(frame):
                    out.mux(packet)
            for packet in vs.encode():
                out.mux(packet)
            if encoder is not None:
                encoder.encode_until(None)
    return path


class _AudioEncoder:
    """Feeds (C, S) float audio to an AAC stream up to a given time, so audio interleaves with video."""

    def __init__(self, out: Any, data: np.ndarray, sample_rate: int, bitrate: int | None = None) -> None:
        if data.shape[0] not in (1, 2):
            data = data.mean(axis=0, keepdims=True)  # AAC here is mono or stereo
        self.layout = "mono" if data.shape[0] == 1 else "stereo"
        self.out, self.rate = out, sample_rate
        self.data = np.clip(data, -1.0, 1.0).astype(np.float32)
        self.stream = out.add_stream("aac", rate=sample_rate, layout=self.layout)
        if bitrate:
            self.stream.bit_rate = bitrate
        self.pos = 0

    def encode_until(self, seconds: float | None) -> None:
        """Encode samples up to `seconds` (None: all of them, then flush)."""
        import av

        stop = self.data.shape[1] if seconds is None else min(self.data.shape[1], int(seconds * self.rate))
        chunk = self.stream.codec_context.frame_size or 1024
        while self.pos < stop:
            piece = np.ascontiguousarray(self.data[:, self.pos : self.pos + chunk])
            frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=self.layout)
            frame.sample_rate = self.rate
            frame.pts = self.pos
            frame.time_base = Fraction(1, self.rate)
            for packet in self.stream.encode(frame):
                self.out.mux(packet)
            self.pos += piece.shape[1]
        if seconds is None:
            for packet in self.stream.encode():
                self.out.mux(packet)


def mux_audio(
    video_path: str | os.PathLike,
    wav: torch.Tensor | np.ndarray,
    sample_rate: int,
    out_path: str | os.PathLike,
    trim: bool = True,
    bitrate: int = 128_000,
) -> Path:
    """Copy `video_path` with its video stream untouched (packets copied, not re-encoded) and `wav` as AAC.

    Existing audio streams are dropped. `trim=True` cuts audio longer than the video. Atomic.
    """
    import av

    video_path, out_path = Path(video_path), Path(out_path)
    data = _as_numpy_audio(wav).T  # (C, S)
    with _open_input(video_path, "video") as src:
        if not src.streams.video:
            raise MediaError(f"{video_path}: cannot mux audio: no video stream")
        vin = src.streams.video[0]
        origin = _origin(src)
        if trim:
            video_end = _video_end(src, vin)
            if video_end:
                data = data[:, : max(1, int(math.ceil(video_end * sample_rate)))]
        fmt = {".mkv": "matroska", ".mov": "mov"}.get(out_path.suffix.lower(), "mp4")
        with atomic_path(out_path) as tmp:
            with av.open(str(tmp), mode="w", format=fmt) as out:
                vout = out.add_stream_from_template(vin)
                audio = _AudioEncoder(out, data, int(sample_rate), bitrate)
                for packet in src.demux(vin):
                    if packet.dts is None:
                        continue  # the demuxer's flush packet
                    audio.encode_until(float(packet.dts * packet.time_base) - origin + 0.5)
                    packet.stream = vout
                    out.mux(packet)
                audio.encode_until(None)
    return out_path


def _declared_end(container: Any, stream: Any) -> float | None:
    """End (s) of an audio stream from an mp4/mov edit list; None where durations are only estimates."""
    if "mp4" not in container.format.name and "mov" not in container.format.name:
        return None
    if not stream.duration or not stream.time_base:
        return None
    return float(((stream.start_time or 0) + stream.duration) * stream.time_base) - _origin(container)


def _video_end(container: Any, stream: Any) -> float:
    """End time (s, relative to the file start) of a video stream, from its declared duration."""
    if stream.duration and stream.time_base:
        start = float((stream.start_time or 0) * stream.time_base) - _origin(container)
        return start + float(stream.duration * stream.time_base)
    return container.duration / 1_000_000 if container.duration else 0.0


def video_packets(path: str | os.PathLike) -> list[tuple[int | None, int | None, bytes]]:
    """(pts, dts, payload) of every packet of the first video stream; for checking stream copies."""
    with _open_input(path, "video") as container:
        stream = container.streams.video[0]
        return [(p.pts, p.dts, bytes(p)) for p in container.demux(stream) if p.size]

