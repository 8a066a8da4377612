"""The template's components, written against vssflow's public interfaces only."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from vssflow.core.conditioning import Aggregator, AggregatorDims, Conditioning
from vssflow.core.interfaces import Condition, Encoder, InputContract
from vssflow.core.sequence import SequenceSpec


class ColorStatsEncoder(Encoder):
    """Video frames -> per-frame colour mean and spread per channel, projected to `dim` features."""

    modality = "video"

    def __init__(self, dim: int, fps: float, size: int):
        super().__init__()
        self.dim, self.fps, self.size = dim, fps, size
        self.proj = nn.Sequential(nn.Linear(6, dim), nn.GELU(), nn.Linear(dim, dim))

    @property
    def contract(self) -> InputContract:
        """RGB frames in [0, 1] at `fps`, `size` x `size`."""
        return InputContract("video", fps=self.fps, size=(self.size, self.size), value_range=(0.0, 1.0))

    def forward(self, x: Tensor, mask: Tensor | None = None, **extras: Any) -> Condition:
        """(B, L, 3, H, W) frames -> Condition (B, L, dim) at `fps`."""
        stats = torch.cat([x.mean(dim=(-2, -1)), x.std(dim=(-2, -1))], dim=-1)  # (B, L, 6)
        return Condition(self.proj(stats), mask, self.fps)

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Eleven random frames; the second clip has three padded frames."""
        frames = torch.rand(batch_size, 11, 3, self.size, self.size, generator=generator)
        mask = torch.ones(batch_size, 11, dtype=torch.bool)
        mask[1:, 8:] = False
        return {"x": frames, "mask": mask}

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """One feature vector per frame."""
        b, length = inputs["x"].shape[:2]
        return {"features": (b, length, self.dim)}


class GatedAdditiveAggregator(Aggregator):
    """Frame-aligned condition -> latent grid -> MLP -> added to hidden states through tanh(gate), gate = 0 at init.

    Starting at zero means a new condition cannot disturb a pretrained backbone until training opens the gate.
    The gate learns from step 1 because the MLP in front of it is initialised normally (were both zero, no
    gradient would ever reach either: the conformance check's `learns` fails that).
    """

    name = "gated-additive"
    requires_fps = True  # a frame route: the condition needs a time axis

    def __init__(self, dims: AggregatorDims, hidden: int = 128):
        super().__init__(dims)  # checks requires_fps, stores dims
        self.null = nn.Parameter(torch.zeros(dims.in_dim))  # used where the condition is absent or dropped
        self.proj = nn.Sequential(nn.Linear(dims.in_dim, hidden), nn.SiLU(), nn.Linear(hidden, dims.width))
        self.gate = nn.Parameter(torch.zeros(dims.width))

    def forward(self, condition: Condition, keep: Tensor, spec: SequenceSpec) -> Conditioning:
        """(B, L, D) at the condition's fps -> additive (B, T, W) on the grid of `spec`."""
        grid, grid_mask = self.to_latent_grid(condition, spec, mode="linear")  # (B, T, D), (B, T)
        frames = self.frames_or_null(grid, grid_mask, keep)  # (B, T, D)
        return Conditioning(additive=torch.tanh(self.gate) * self.proj(frames))  # (B, T, W)

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """One W-vector per latent frame (the route contract checks this too)."""
        b, t = inputs["condition"].features.shape[0], inputs["spec"].num_frames
        return {"additive": (b, t, self.dims.width)}
