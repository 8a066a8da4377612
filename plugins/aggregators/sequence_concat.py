"""`sequence-concat`: condition tokens joined to the audio tokens in self-attention (in-context)."""

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


class SequenceConcatAggregator(Aggregator):
    """Project (B, L, D) to width (B, L, W) prefix tokens; they share self-attention and FFNs with the audio.

    Timed conditions carry their latent-frame positions, so self-attention RoPE aligns them with the audio
    frames they describe; a dropped sample is one learned null token.
    """

    name = "sequence-concat"

    def __init__(self, projection: str = "mlp", mlp_ratio: float = 2.0, bias: bool = False) -> None:
        super().__init__()
        self.kind, self.mlp_ratio, self.bias = projection, mlp_ratio, bias
        self.bind(EXAMPLE_BINDING)

    def build(self, binding: AggregatorBinding) -> None:
        """Projection in_dim -> width and one null token."""
        self.proj = projection(self.kind, binding.in_dim, binding.width, self.mlp_ratio, self.bias)
        self.null = nn.Parameter(torch.zeros(binding.width))

    def route(self, features: Tensor, mask: Tensor | None, keep: Tensor, num_frames: int) -> Conditioning:
        """Prefix tokens (B, L, W), their mask and positions."""
        pos = timed_positions(features.shape[1], self.binding.fps, self.binding.spec.latent_fps, features.device)
        tokens, tmask = self.tokens_or_null(self.proj(features), mask, keep)  # (B, L, W), (B, L)
        return Conditioning(prefix=tokens, prefix_mask=tmask, prefix_pos=pos)

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """(B, L, W)."""
        b, length, _ = inputs["features"].shape
        return {"prefix": (b, length, self.binding.width)}
