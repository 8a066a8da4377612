"""Synchrony metrics that need no pretrained model: an audio-visual offset and a lip-speech offset.

`av-offset` (a DeSync-style number): the visual motion energy of the clip's video (mean absolute luma
difference of consecutive frames, stamped midway between them) and the audio onset envelope (positive
log-mel spectral flux, 10 ms frames) are put on one 10 ms grid, standardised, and cross-correlated
(sum of products over the overlap / clip length) for lags within +-`max_offset_s`; the best lag is the offset. Positive: the
audio comes late. The metric is |offset| in ms (`signed: true` keeps the sign).

`lip-offset` (an LSE-D-style proxy): the same search between the mouth opening (negated mean luma of the
mouth crop: an open mouth shows its dark interior; crop as the `lip` encoder's: `centre` for face-crop
video, `detect` to find the face first) and the speech loudness envelope (frame RMS in dB, 20 ms windows,
floored 50 dB below the peak). `lip-sync-confidence` (an LSE-C-style proxy): the correlation at the best
lag minus the median correlation over all lags.

Labels read: `video` (a path, or frames (L, 3, H, W) in [0, 1] with `video_fps`), `video_start` (seconds
into the video where the clip starts; default 0).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from vssflow.core.interfaces import Metric

from .audio_metrics import _valid, spectral_flux

STEP = 0.01  # seconds per grid point


def load_frames(labels: dict[str, Any], size: int) -> tuple[Tensor, np.ndarray]:
    """(L, 3, H, W) frames in [0, 1] and (L,) times in clip seconds from a clip's `video` label."""
    video = labels.get("video")
    if video is None:
        raise ValueError("needs labels with 'video' (a path or a frames tensor)")
    start = float(labels.get("video_start", 0.0))
    if isinstance(video, Tensor):
        fps = float(labels.get("video_fps", 25.0))
        frames = video.float()
        times = np.arange(frames.shape[0]) / fps - start
        return frames, times
    from vssflow.core.media import read_video

    v = read_video(str(video), size=(size, size), fit="stretch", start=start)
    return v.frames, v.times.numpy() - start


def motion_energy(frames: Tensor, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean |luma difference| of consecutive frames, at the midpoints of their times."""
    from vssflow.plugins.encoders.layers import luma

    y = luma(frames)
    energy = (y[1:] - y[:-1]).abs().mean(dim=(1, 2, 3)).double().numpy()
    return energy, 0.5 * (times[1:] + times[:-1])


def onset_envelope(wav: Tensor, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Spectral-flux onset strength at 10 ms frames and its frame times."""
    hop = round(sample_rate * STEP)
    flux = spectral_flux(wav, sample_rate, hop).double().numpy()
    return flux, np.arange(len(flux)) * hop / sample_rate


def loudness_envelope(wav: Tensor, sample_rate: int, floor_db: float = 50.0) -> tuple[np.ndarray, np.ndarray]:
    """Frame RMS in dB (20 ms windows, 10 ms hop), floored `floor_db` below the clip's peak."""
    hop, win = round(sample_rate * STEP), round(sample_rate * 0.02)
    x = torch.nn.functional.pad(wav.float(), (win // 2, win // 2))
    frames = x.unfold(0, win, hop)
    db = 10 * torch.log10(frames.pow(2).mean(-1) + 1e-10)
    db = db.clamp_min(db.max() - floor_db).double().numpy()
    return db, np.arange(len(db)) * STEP


def correlate_lags(a: tuple[np.ndarray, np.ndarray], v: tuple[np.ndarray, np.ndarray], max_lag_s: float,
                   min_overlap_s: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Normalised cross-correlation of audio a(t + lag) with visual v(t) on a 10 ms grid, lags in +-max_lag_s.

    Both signals are standardised over the whole clip and each lag's sum of products is divided by the clip
    length (the biased estimate: a lag that overlaps less of the clip cannot win on a few frames).
    Returns (lags in seconds, correlations); lags with less than `min_overlap_s` of overlap, or a constant
    signal, get 0.
    """
    (av, at), (vv, vt) = a, v
    end = min(at[-1], vt[-1]) if len(at) and len(vt) else 0.0
    grid = np.arange(0.0, max(end, 0.0) + 1e-9, STEP)
    lags = np.arange(-round(max_lag_s / STEP), round(max_lag_s / STEP) + 1)
    corr = np.zeros(len(lags))
    if len(grid) < 3 or len(vt) < 2:
        return lags * STEP, corr
    A, V = np.interp(grid, at, av), np.interp(grid, vt, vv)
    if A.std() < 1e-9 or V.std() < 1e-9:
        return lags * STEP, corr
    A, V = (A - A.mean()) / A.std(), (V - V.mean()) / V.std()
    n = len(grid)
    min_overlap = max(3, round(min_overlap_s / STEP))
    for i, k in enumerate(lags):
        if n - abs(k) < min_overlap:
            continue
        x, y = (A[k:], V[: n - k]) if k >= 0 else (A[: n + k], V[-k:])
        corr[i] = float((x * y).sum() / n)
    return lags * STEP, corr


def _example(batch_size: int, sample_rate: int, generator: torch.Generator | None) -> dict[str, Any]:
    """One second of 25 fps video whose square flashes when the audio clicks (same times: offset 0)."""
    n = sample_rate
    gen = 0.003 * torch.randn((batch_size, n), generator=generator)
    labels = []
    for b in range(batch_size):
        frames = torch.zeros(25, 3, 32, 32)
        for t in (0.2 + 0.04 * b, 0.64):
            k = round(t * 25)
            frames[k : k + 3, :, 8:24, 8:24] = 1.0
            i = int(k / 25 * sample_rate)
            gen[b, i : i + 400] += torch.linspace(1.0, 0.0, 400) * torch.sin(torch.arange(400) * 0.5)
        labels.append({"video": frames, "video_fps": 25.0})
    return {"generated": gen, "labels": labels}


class AVOffset(Metric):
    """|audio-visual offset| in ms from motion energy vs onset envelope (lower is better); see the module doc."""

    higher_is_better: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = True
    needs_video: ClassVar[bool] = True
    label_keys: ClassVar[tuple[str, ...]] = ("video", "video_fps", "video_start")

    def __init__(self, sample_rate: int = 16000, max_offset_s: float = 1.0, signed: bool = False, size: int = 64):
        self.sample_rate, self.max_offset, self.signed, self.size = sample_rate, max_offset_s, signed, size

    def offsets(self, generated: Tensor, labels: list[dict[str, Any]], lengths: Tensor | None) -> list[float]:
        """Signed offsets (ms) per clip; positive = audio late."""
        out = []
        for b in range(generated.shape[0]):
            if not labels or not labels[b]:
                raise ValueError("av-offset needs labels with 'video'")
            frames, times = load_frames(labels[b], self.size)
            wav = generated[b, : _valid(lengths, b, generated.shape[-1])].detach().float().cpu()
            lags, corr = correlate_lags(onset_envelope(wav, self.sample_rate), motion_energy(frames, times),
                                        self.max_offset)
            out.append(1000.0 * float(lags[int(np.argmax(corr))]))
        return out

    def __call__(self, generated, reference=None, labels=None, lengths=None) -> Tensor:  # noqa: D102
        ms = self.offsets(generated, labels, lengths)
        return torch.tensor(ms if self.signed else [abs(x) for x in ms])

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Flashing frames and matching clicks."""
        return _example(batch_size, self.sample_rate, generator)


class LipOffset(Metric):
    """|lip-speech offset| in ms, mouth opening vs loudness envelope (lower is better); see the module doc."""

    higher_is_better: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = True
    needs_video: ClassVar[bool] = True
    label_keys: ClassVar[tuple[str, ...]] = ("video", "video_fps", "video_start")
    confidence: ClassVar[bool] = False

    def __init__(self, sample_rate: int = 16000, max_offset_s: float = 1.0, signed: bool = False,
                 crop: str = "centre", mouth_box: tuple[float, float, float, float] = (0.55, 0.2, 0.4, 0.6),
                 size: int = 96, roi: int = 32):
        from vssflow.core.errors import PluginError

        if crop not in ("centre", "detect"):
            raise PluginError(f"lip metrics: crop must be centre or detect, got {crop!r}")
        self.sample_rate, self.max_offset, self.signed = sample_rate, max_offset_s, signed
        self.crop, self.fractions, self.size, self.roi = crop, tuple(mouth_box), size, roi

    def mouth_opening(self, frames: Tensor, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Negated mean luma of the mouth crop per frame (an open mouth is dark inside)."""
        from vssflow.plugins.encoders.layers import luma
        from vssflow.plugins.encoders.lip import crop_resize, make_detector, mouth_box

        h, w = frames.shape[-2:]
        face = (0.0, 0.0, float(w), float(h))
        if self.crop == "detect":
            detector = make_detector("auto")
            picks = np.linspace(0, len(frames) - 1, min(5, len(frames))).round().astype(int)
            boxes = [bx for bx in (detector(frames[int(i)]) for i in picks) if bx is not None]
            if boxes:
                face = tuple(torch.tensor(boxes).median(dim=0).values.tolist())
        crops = crop_resize(luma(frames), mouth_box(face, self.fractions), self.roi)
        return -crops.mean(dim=(1, 2, 3)).double().numpy(), times

    def correlations(self, generated: Tensor, labels: list[dict[str, Any]], lengths: Tensor | None):
        """(lags, correlations) per clip."""
        out = []
        for b in range(generated.shape[0]):
            if not labels or not labels[b]:
                raise ValueError("lip metrics need labels with 'video'")
            frames, times = load_frames(labels[b], self.size)
            wav = generated[b, : _valid(lengths, b, generated.shape[-1])].detach().float().cpu()
            out.append(correlate_lags(loudness_envelope(wav, self.sample_rate), self.mouth_opening(frames, times),
                                      self.max_offset))
        return out

    def __call__(self, generated, reference=None, labels=None, lengths=None) -> Tensor:  # noqa: D102
        scores = []
        for lags, corr in self.correlations(generated, labels, lengths):
            if self.confidence:
                scores.append(float(corr.max() - np.median(corr)))
            else:
                ms = 1000.0 * float(lags[int(np.argmax(corr))])
                scores.append(ms if self.signed else abs(ms))
        return torch.tensor(scores)

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Flashing frames and matching clicks."""
        return _example(batch_size, self.sample_rate, generator)


class LipSyncConfidence(LipOffset):
    """Peak minus median lip-speech correlation over lags (higher is better): an LSE-C-style proxy."""

    higher_is_better: ClassVar[bool] = True
    confidence: ClassVar[bool] = True
