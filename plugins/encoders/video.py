"""Video encoders trained end to end: `tiny-cnn` (per-frame semantics) and `motion` (frame differences, sync).

Input: frames (B, L, 3, H, W) float in [0, 1] at the encoder's fps and size, mask (B, L) True = valid frame.
Output: Condition(features (B, L, D), mask (B, L), fps) — one feature vector per input frame.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from vssflow.core.errors import ContractError
from vssflow.core.interfaces import Condition, Encoder, InputContract

from .layers import FrameCNN, MotionStatsCache, TemporalConv, check_fps, component_label, luma

EXAMPLE_FRAMES = 6


def as_size(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """An int or (H, W) -> (H, W)."""
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


class VideoEncoder(Encoder):
    """Shared input contract of frame encoders: size, fps, value range, per-channel normalisation."""

    modality = "video"
    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def _setup_video(self, fps: float, size: int | tuple[int, int], mean, std) -> None:
        self.input_fps = self.fps = float(fps)  # fps of the frames in and of the features out
        self.size = as_size(size)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        # buffers: they follow .to(device) and are not trainable
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, -1, 1, 1), persistent=False)

    @property
    def contract(self) -> InputContract:
        """Frames at `fps`, `size`, values in [0, 1], normalised inside with `mean`/`std`."""
        return InputContract(
            "video", fps=self.input_fps, size=self.size, mean=self.mean, std=self.std, value_range=(0.0, 1.0),
            extra=self._contract_extra(),
        )

    def _contract_extra(self) -> dict[str, Any]:
        return {}

    def check_frames(self, x: Tensor, extras: dict[str, Any]) -> None:
        """ContractError unless x is (B, L, 3, H, W) at this encoder's size (and fps, when the input says)."""
        label = component_label(self)
        if x.dim() != 5 or x.shape[2] != 3:
            raise ContractError(f"{label}: expected frames (B, L, 3, H, W), got shape {tuple(x.shape)}")
        got = (int(x.shape[-2]), int(x.shape[-1]))
        if got != self.size:
            raise ContractError(
                f"{label}: expected frames of size (H, W) = {self.size}, got {got} (read the video at the encoder's size)"
            )
        check_fps(self, self.input_fps, extras.get("fps"))

    def normalise(self, frames: Tensor) -> Tensor:
        """(N, 3, H, W) in [0, 1] -> normalised."""
        return (frames - self._mean) / self._std

    @staticmethod
    def output_mask(x: Tensor, mask: Tensor | None) -> Tensor:
        """The input mask, or all frames valid. (B, L)"""
        if mask is not None:
            return mask.to(device=x.device, dtype=torch.bool)
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Random frames; the last sample has two padded frames."""
        x = torch.rand((batch_size, EXAMPLE_FRAMES, 3, *self.size), generator=generator)
        mask = torch.ones(batch_size, EXAMPLE_FRAMES, dtype=torch.bool)
        mask[-1, -2:] = False
        return {"x": x, "mask": mask}

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """One feature vector per frame."""
        b, length = inputs["x"].shape[:2]
        return {"features": (b, length, self.dim)}


class TinyCNNEncoder(VideoEncoder):
    """Per-frame CNN + temporal convs, trainable end to end; small enough for CPU recipes."""

    def __init__(
        self,
        fps: float = 10.0,
        size: int | tuple[int, int] = 64,
        dim: int = 128,
        channels: tuple[int, ...] = (16, 32, 64),
        temporal_layers: int = 1,
        temporal_kernel: int = 3,
    ):
        super().__init__()
        self._setup_video(fps, size, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
        self.dim = dim
        self.frame = FrameCNN(3, tuple(channels), dim)
        self.temporal = nn.ModuleList(TemporalConv(dim, temporal_kernel) for _ in range(temporal_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, mask: Tensor | None = None, **extras: Any) -> Condition:
        """frames (B, L, 3, H, W) -> Condition (B, L, dim) at `fps`."""
        self.check_frames(x, extras)
        b, length = x.shape[:2]
        mask = self.output_mask(x, mask)
        h = self.frame(self.normalise(x.flatten(0, 1))).view(b, length, self.dim)  # (B, L, D)
        for layer in self.temporal:
            h = layer(h, mask)
        return Condition(self.norm(h), mask, self.fps)


class MotionEncoder(VideoEncoder):
    """Sync features from luma and its frame-to-frame difference, with dilated temporal convs for timing.

    With `flow_grid` > 0, parameter-free Lucas-Kanade motion statistics (flow and acceleration per cell of a
    flow_grid x flow_grid grid) are projected and added to the CNN's per-frame features. A CNN trained only
    through the generative loss learns slowly when events are sparse; acceleration spikes mark impacts and
    bounces from the first step, so the generator can time them early in training.
    """

    def __init__(
        self,
        fps: float = 25.0,
        size: int | tuple[int, int] = 64,
        dim: int = 64,
        channels: tuple[int, ...] = (16, 32, 64),
        temporal_layers: int = 3,
        temporal_kernel: int = 3,
        flow_grid: int = 4,
        flow_window: int = 5,
        flow_cache: int = 4096,
    ):
        super().__init__()
        self.flow_grid, self.flow_window = int(flow_grid), int(flow_window)
        self.flow_stats = MotionStatsCache(flow_cache)  # the statistics are parameter-free: once per clip
        self.flow_proj = nn.Linear(4 * flow_grid * flow_grid, dim) if flow_grid > 0 else None
        # two input channels: luma and its temporal difference, both roughly centred at 0
        self._setup_video(fps, size, mean=(0.5, 0.0), std=(0.25, 0.25))
        self.dim = dim
        self.frame = FrameCNN(2, tuple(channels), dim)
        # dilations 1, 2, 4, ...: a receptive field of several frames at little cost
        self.temporal = nn.ModuleList(
            TemporalConv(dim, temporal_kernel, dilation=2**i) for i in range(temporal_layers)
        )
        self.norm = nn.LayerNorm(dim)

    @property
    def contract(self) -> InputContract:
        """RGB frames at `fps` and `size`; luma and frame differences are derived inside."""
        return InputContract(
            "video", fps=self.input_fps, size=self.size, value_range=(0.0, 1.0),
            extra={"features": "luma (mean 0.5, std 0.25) and its frame difference (std 0.25)"},
        )

    def forward(self, x: Tensor, mask: Tensor | None = None, **extras: Any) -> Condition:
        """frames (B, L, 3, H, W) -> Condition (B, L, dim) at `fps`."""
        self.check_frames(x, extras)
        b, length = x.shape[:2]
        mask = self.output_mask(x, mask)
        y = luma(x) * mask[:, :, None, None, None].to(x.dtype)  # (B, L, 1, H, W); padded frames black
        diff = torch.cat([torch.zeros_like(y[:, :1]), y[:, 1:] - y[:, :-1]], dim=1)  # first frame: no motion
        h = torch.cat([y, diff], dim=2).flatten(0, 1)  # (B*L, 2, H, W)
        h = self.frame(self.normalise(h)).view(b, length, self.dim)
        if self.flow_proj is not None:
            stats = self.flow_stats(y, mask, self.flow_grid, self.flow_window)  # (B, L, 4 * grid^2)
            h = h + self.flow_proj(stats.to(h.dtype))
        for layer in self.temporal:
            h = layer(h, mask)
        return Condition(self.norm(h), mask, self.fps)
