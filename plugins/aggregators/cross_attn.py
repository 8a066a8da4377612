"""`cross-attn`: condition tokens become keys/values of every cross-attention layer."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from vssflow.core.conditioning import (
    EXAMPLE_BINDING,
    Aggregator,
    AggregatorBinding,
    Conditioning,
    projection,
    timed_positions,
)


class CrossAttnAggregator(Aggregator):
    """Project (B, L, D) to the context dim (B, L, Dc); a dropped sample is one learned null token.

    Token positions (latent-frame units) go with the context so the backbone can rotate keys
    (`cross_rope: both`). `to_grid` first resamples a timed condition onto the latent grid, as the public
    VSSFlow code does with CLIP features (nearest, 10 fps -> 25 Hz).
    """

    name = "cross-attn"

    def __init__(
        self, projection: str = "mlp", mlp_ratio: float = 2.0, bias: bool = False, to_grid: bool = False,
        resample: str = "nearest",
    ) -> None:
        super().__init__()
        self.kind, self.mlp_ratio, self.bias = projection, mlp_ratio, bias
        self.to_grid, self.resample = to_grid, resample
        self.requires_fps = to_grid  # resampling onto the grid needs a time axis
        self.bind(EXAMPLE_BINDING)

    @property
    def uses_context(self) -> bool:
        """Feeds cross-attention."""
        return True

    def build(self, binding: AggregatorBinding) -> None:
        """Projection in_dim -> context_dim and one null token."""
        self.proj = projection(self.kind, binding.in_dim, binding.context_dim, self.mlp_ratio, self.bias)
        self.null = nn.Parameter(torch.zeros(binding.context_dim))

    def route(self, features: Tensor, mask: Tensor | None, keep: Tensor, num_frames: int) -> Conditioning:
        """Context tokens (B, L, Dc) or (B, T, Dc) with `to_grid`, their mask and positions."""
        spec = self.binding.spec
        if self.to_grid:
            features, mask = self.to_latent_grid(features, mask, num_frames, self.resample)  # (B, T, D)
            pos = torch.arange(num_frames, device=features.device, dtype=torch.float32)  # (T,)
        else:
            pos = timed_positions(features.shape[1], self.binding.fps, spec.latent_fps, features.device)  # (L,)
        tokens, tmask = self.tokens_or_null(self.proj(features), mask, keep)  # (B, L, Dc), (B, L)
        return Conditioning(context=tokens, context_mask=tmask, context_pos=pos)

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """(B, L, Dc), or (B, T, Dc) when resampled onto the grid."""
        b, length, _ = inputs["features"].shape
        length = self.binding.spec.num_frames if self.to_grid else length
        return {"context": (b, length, self.binding.context_dim)}

