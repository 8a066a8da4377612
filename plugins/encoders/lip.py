"""`lip`: mouth-region encoder at 25 fps: crop the mouth, then a small trainable 3D + 2D conv network.

Crop (`mouth_box` = top, left, height, width as fractions of the face box):
  centre  the frame is a face crop (LRS2/GRID-style preprocessed video, the synthetic data's faces): the
          face box is the whole frame, so the mouth is the lower-middle region.
  detect  the face box is found per clip on a few frames (median box, so it does not jitter) with
          OpenCV's Haar frontal-face cascade when the installed OpenCV ships it (4.x does; 5.x moved it out),
          else with a skin-colour box (YCbCr thresholds of Chai & Ngan); clips without a face fall back to
          the whole frame.
The crop is resized to `roi` x `roi` luma, then Conv3d (a few frames of context, as AV-HuBERT's front-end)
-> per-frame Conv2d stack -> temporal convs -> (B, L, dim).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vssflow.core.errors import PluginError
from vssflow.core.interfaces import Condition, InputContract

from .layers import FrameCNN, TemporalConv, luma, norm_groups
from .video import VideoEncoder

log = logging.getLogger(__name__)
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


def haar_available() -> bool:
    """Whether the installed OpenCV has CascadeClassifier and ships the frontal-face cascade file."""
    try:
        import cv2
    except ImportError:
        return False
    import os

    path = os.path.join(getattr(getattr(cv2, "data", None), "haarcascades", ""), "haarcascade_frontalface_default.xml")
    return hasattr(cv2, "CascadeClassifier") and os.path.isfile(path)


class HaarFaceDetector:
    """OpenCV Haar cascade face detector: the largest frontal face in an RGB frame."""

    def __init__(self) -> None:
        import os

        import cv2

        path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        self.cascade = cv2.CascadeClassifier(path)
        self.cv2 = cv2

    def __call__(self, frame: Tensor) -> Box | None:
        """(3, H, W) in [0, 1] -> the largest face box, or None."""
        gray = (luma(frame)[0].clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
        faces = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4, minSize=(24, 24))
        if len(faces) == 0:
            return None
        x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
        return float(x), float(y), float(x + w), float(y + h)


class SkinFaceDetector:
    """Skin-colour face box: YCbCr thresholds, then the 5th-95th percentile extent of skin pixels."""

    def __init__(self, min_fraction: float = 0.02) -> None:
        self.min_fraction = min_fraction

    def __call__(self, frame: Tensor) -> Box | None:
        """(3, H, W) in [0, 1] -> face box, or None when too few pixels look like skin."""
        r, g, b = (frame.float() * 255).unbind(0)
        cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
        cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
        skin = (cb >= 77) & (cb <= 127) & (cr >= 133) & (cr <= 173)  # (H, W)
        if skin.float().mean() < self.min_fraction:
            return None
        ys, xs = torch.nonzero(skin, as_tuple=True)
        q = torch.tensor([0.05, 0.95])
        x0, x1 = torch.quantile(xs.float(), q).tolist()
        y0, y1 = torch.quantile(ys.float(), q).tolist()
        if x1 - x0 < 4 or y1 - y0 < 4:
            return None
        return x0, y0, x1 + 1, y1 + 1


def make_detector(detector: str):
    """`auto`, `haar` or `skin` -> a callable frame -> box."""
    if detector == "haar" or (detector == "auto" and haar_available()):
        if not haar_available():
            raise PluginError(
                "lip: detector haar needs OpenCV's CascadeClassifier and cv2.data.haarcascades, absent from this "
                "OpenCV build (5.x moved them out); install opencv-python-headless<5, or use detector: skin"
            )
        return HaarFaceDetector()
    if detector in ("auto", "skin"):
        return SkinFaceDetector()
    raise PluginError(f"lip: detector must be auto, haar or skin, got {detector!r}")


def mouth_box(face: Box, fractions: tuple[float, float, float, float]) -> Box:
    """Mouth region of a face box: (top, left, height, width) fractions of the face -> pixel box."""
    x0, y0, x1, y1 = face
    top, left, height, width = fractions
    fw, fh = x1 - x0, y1 - y0
    return x0 + left * fw, y0 + top * fh, x0 + (left + width) * fw, y0 + (top + height) * fh


def crop_resize(frames: Tensor, box: Box, roi: int) -> Tensor:
    """Crop (L, C, H, W) to a pixel box (clamped to the frame) and resize to (L, C, roi, roi)."""
    h, w = frames.shape[-2:]
    x0, y0, x1, y1 = box
    xa, ya = int(max(0, min(w - 1, round(x0)))), int(max(0, min(h - 1, round(y0))))
    xb, yb = int(max(xa + 1, min(w, round(x1)))), int(max(ya + 1, min(h, round(y1))))
    crop = frames[..., ya:yb, xa:xb]
    return F.interpolate(crop, size=(roi, roi), mode="bilinear", align_corners=False, antialias=True)


class LipEncoder(VideoEncoder):
    """Mouth crops (centre of the lower face, or a detected face) -> 3D/2D conv features at `fps`."""

    def __init__(
        self,
        fps: float = 25.0,
        size: int | tuple[int, int] = 96,
        dim: int = 128,
        crop: str = "centre",
        detector: str = "auto",
        mouth_box: tuple[float, float, float, float] = (0.55, 0.2, 0.4, 0.6),
        roi: int = 44,
        channels: tuple[int, ...] = (32, 64, 96),
        temporal_layers: int = 2,
        detect_frames: int = 5,
    ):
        super().__init__()
        if crop not in ("centre", "detect"):
            raise PluginError(f"lip: crop must be centre or detect, got {crop!r}")
        self._setup_video(fps, size, mean=(0.5,), std=(0.25,))
        self.dim, self.crop, self.roi = dim, crop, int(roi)
        self.mouth_fractions = tuple(float(v) for v in mouth_box)
        self.detect_frames = int(detect_frames)
        self.detector = make_detector(detector) if crop == "detect" else None
        self.detector_name = type(self.detector).__name__ if self.detector is not None else None
        first = channels[0]
        # (3 frames x 5 x 5) spatio-temporal stem: mouth motion is visible only across frames
        self.stem = nn.Sequential(
            nn.Conv3d(1, first, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2)), nn.GroupNorm(norm_groups(first), first),
            nn.SiLU(),
        )
        self.frame = FrameCNN(first, tuple(channels[1:]) or (first,), dim)
        self.temporal = nn.ModuleList(TemporalConv(dim, 3, dilation=2**i) for i in range(temporal_layers))
        self.norm = nn.LayerNorm(dim)

    @property
    def contract(self) -> InputContract:
        """Face video frames at `fps` and `size`; the mouth crop and luma conversion happen inside."""
        return InputContract(
            "video", fps=self.input_fps, size=self.size, mean=self.mean, std=self.std, value_range=(0.0, 1.0),
            extra={"crop": self.crop, "mouth_box": self.mouth_fractions, "roi": self.roi, "detector": self.detector_name},
        )

    def face_box(self, frames: Tensor, mask: Tensor | None = None) -> Box:
        """Median face box over a few valid frames of one clip (L, 3, H, W); the whole frame if none is found."""
        h, w = frames.shape[-2:]
        whole = (0.0, 0.0, float(w), float(h))
        if self.detector is None:
            return whole
        valid = torch.arange(frames.shape[0]) if mask is None else torch.nonzero(mask.cpu()).flatten()
        if len(valid) == 0:
            return whole
        picks = valid[torch.linspace(0, len(valid) - 1, min(self.detect_frames, len(valid))).round().long()]
        boxes = [b for b in (self.detector(frames[int(i)].detach()) for i in picks) if b is not None]
        if not boxes:
            log.debug("lip: no face found in a clip; using the whole frame")
            return whole
        return tuple(torch.tensor(boxes).median(dim=0).values.tolist())  # type: ignore[return-value]

    def mouths(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """frames (B, L, 3, H, W) -> mouth crops (B, L, 1, roi, roi) in luma."""
        y = luma(x)  # (B, L, 1, H, W)
        crops = []
        for i in range(x.shape[0]):
            face = self.face_box(x[i], None if mask is None else mask[i])
            crops.append(crop_resize(y[i], mouth_box(face, self.mouth_fractions), self.roi))
        return torch.stack(crops)

    def forward(self, x: Tensor, mask: Tensor | None = None, **extras: Any) -> Condition:
        """frames (B, L, 3, H, W) -> Condition (B, L, dim) at `fps`."""
        self.check_frames(x, extras)
        b, length = x.shape[:2]
        mask = self.output_mask(x, mask)
        m = self.normalise(self.mouths(x, mask).flatten(0, 1)).view(b, length, 1, self.roi, self.roi)
        m = m * mask[:, :, None, None, None].to(m.dtype)  # padded frames give the stem nothing
        h = self.stem(m.transpose(1, 2))  # (B, C, L, roi/2, roi/2)
        h = self.frame(h.transpose(1, 2).flatten(0, 1)).view(b, length, self.dim)  # (B, L, D)
        for layer in self.temporal:
            h = layer(h, mask)
        return Condition(self.norm(h), mask, self.fps)
