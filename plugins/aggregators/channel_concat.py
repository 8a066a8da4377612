"""`channel-concat`: frame-aligned features on the latent grid, concatenated to the noisy latent's channels.

VSSFlow's route for dense, deterministic conditions (phonemes, lips, sync): they travel through
self-attention together with the audio frame they describe.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from vssflow.core.conditioning import EXAMPLE_BINDING, Aggregator, AggregatorBinding, Conditioning, projection


class ChannelConcatAggregator(Aggregator):
    """Resample (B, L, D) at the condition's fps to the latent grid (B, T, D), project to `dim` channels.

    Frames the condition does not cover, and samples where it is absent or dropped, take the null vector.
    `dim: null` keeps the encoder's dim; with `projection: none` the raw features are concatenated.
    """

    name = "channel-concat"
    requires_fps = True

    def __init__(
        self, dim: int | None = None, projection: str = "mlp", mlp_ratio: float = 2.0, bias: bool = False,
        resample: str = "nearest",
    ) -> None:
        super().__init__()
        self.dim, self.kind, self.mlp_ratio, self.bias, self.resample = dim, projection, mlp_ratio, bias, resample
        self.bind(EXAMPLE_BINDING)

    @property
    def channels(self) -> int:
        """Channels added to the backbone's input."""
        return self.out_dim

    def build(self, binding: AggregatorBinding) -> None:
        """Projection in_dim -> dim and the null vector."""
        self.out_dim = self.dim if self.dim is not None else binding.in_dim
        self.proj = projection(self.kind, binding.in_dim, self.out_dim, self.mlp_ratio, self.bias)
        self.null = nn.Parameter(torch.zeros(self.out_dim))

    def route(self, features: Tensor, mask: Tensor | None, keep: Tensor, num_frames: int) -> Conditioning:
        """Channels (B, T, dim) on the latent grid."""
        grid, grid_mask = self.to_latent_grid(features, mask, num_frames, self.resample)  # (B, T, D), (B, T)
        return Conditioning(channel=self.frames_or_null(self.proj(grid), grid_mask, keep))  # (B, T, dim)

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """(B, T, dim) over the whole window."""
        return {"channel": (inputs["features"].shape[0], self.binding.spec.num_frames, self.out_dim)}
