"""`additive`: frame-aligned features projected to the backbone width and added to the hidden states."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vssflow.core.conditioning import Aggregator, AggregatorDims, Conditioning
from vssflow.core.conditioning import projection as build_projection
from vssflow.core.interfaces import Condition
from vssflow.core.sequence import SequenceSpec


class AdditiveAggregator(Aggregator):
    """Resample (B, L, D) onto the latent grid, project to (B, T, W); added after the input projection.

    MMAudio's route for synchronisation features. Uncovered frames and dropped samples add the null vector.
    """

    name = "additive"
    requires_fps = True

    def __init__(
        self, dims: AggregatorDims, projection: str = "mlp", mlp_ratio: float = 2.0, bias: bool = False,
        resample: str = "nearest",
    ) -> None:
        super().__init__(dims)
        self.resample = resample
        self.proj = build_projection(projection, dims.in_dim, dims.width, mlp_ratio, bias)
        self.null = nn.Parameter(torch.zeros(dims.width))

    def forward(self, condition: Condition, keep: Tensor, spec: SequenceSpec) -> Conditioning:
        """Hidden-state offsets (B, T, W)."""
        grid, grid_mask = self.to_latent_grid(condition, spec, self.resample)  # (B, T, D), (B, T)
        return Conditioning(additive=self.frames_or_null(self.proj(grid), grid_mask, keep))  # (B, T, W)
