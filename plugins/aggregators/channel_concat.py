"""`channel-concat`: frame-aligned features on the latent grid, concatenated to the noisy latent's channels.

VSSFlow's route for dense, deterministic conditions (phonemes, lips, sync): they travel through
self-attention together with the audio frame they describe.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vssflow.core.conditioning import Aggregator, AggregatorDims, Conditioning
from vssflow.core.conditioning import projection as build_projection
from vssflow.core.interfaces import Condition
from vssflow.core.sequence import SequenceSpec


class ChannelConcatAggregator(Aggregator):
    """Resample (B, L, D) at the condition's fps to the latent grid (B, T, D), project to `dim` channels.

    Frames the condition does not cover, and samples where it is absent or dropped, take the null vector.
    `dim: null` keeps the encoder's dim; with `projection: none` the raw features are concatenated.
    """

    name = "channel-concat"
    requires_fps = True

    def __init__(
        self, dims: AggregatorDims, dim: int | None = None, projection: str = "mlp", mlp_ratio: float = 2.0,
        bias: bool = False, resample: str = "nearest",
    ) -> None:
        super().__init__(dims)
        self.out_dim = dim if dim is not None else dims.in_dim
        self.resample = resample
        self.proj = build_projection(projection, dims.in_dim, self.out_dim, mlp_ratio, bias)
        self.null = nn.Parameter(torch.zeros(self.out_dim))

    @property
    def channels(self) -> int:
        """Channels added to the backbone's input."""
        return self.out_dim

    def forward(self, condition: Condition, keep: Tensor, spec: SequenceSpec) -> Conditioning:
        """Channels (B, T, dim) on the latent grid."""
        grid, grid_mask = self.to_latent_grid(condition, spec, self.resample)  # (B, T, D), (B, T)
        return Conditioning(channel=self.frames_or_null(self.proj(grid), grid_mask, keep))  # (B, T, dim)
