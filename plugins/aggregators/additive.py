"""`additive`: frame-aligned features projected to the backbone width and added to the hidden states."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from vssflow.core.conditioning import EXAMPLE_BINDING, Aggregator, AggregatorBinding, Conditioning, projection


class AdditiveAggregator(Aggregator):
    """Resample (B, L, D) onto the latent grid, project to (B, T, W); added after the input projection.

    MMAudio's route for synchronisation features. Uncovered frames and dropped samples add the null vector.
    """

    name = "additive"
    requires_fps = True

    def __init__(
        self, projection: str = "mlp", mlp_ratio: float = 2.0, bias: bool = False, resample: str = "nearest"
    ) -> None:
        super().__init__()
        self.kind, self.mlp_ratio, self.bias, self.resample = projection, mlp_ratio, bias, resample
        self.bind(EXAMPLE_BINDING)

    def build(self, binding: AggregatorBinding) -> None:
        """Projection in_dim -> width and the null vector."""
        self.proj = projection(self.kind, binding.in_dim, binding.width, self.mlp_ratio, self.bias)
        self.null = nn.Parameter(torch.zeros(binding.width))

    def route(self, features: Tensor, mask: Tensor | None, keep: Tensor, num_frames: int) -> Conditioning:
        """Hidden-state offsets (B, T, W)."""
        grid, grid_mask = self.to_latent_grid(features, mask, num_frames, self.resample)  # (B, T, D), (B, T)
        return Conditioning(additive=self.frames_or_null(self.proj(grid), grid_mask, keep))  # (B, T, W)

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """(B, T, W) over the whole window."""
        return {"additive": (inputs["features"].shape[0], self.binding.spec.num_frames, self.binding.width)}
