"""`sequence-concat`: condition tokens joined to the audio tokens in self-attention (in-context)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vssflow.core.conditioning import Aggregator, AggregatorDims, Conditioning, timed_positions
from vssflow.core.conditioning import projection as build_projection
from vssflow.core.interfaces import Condition
from vssflow.core.sequence import SequenceSpec


class SequenceConcatAggregator(Aggregator):
    """Project (B, L, D) to width (B, L, W) prefix tokens; they share self-attention and FFNs with the audio.

    Timed conditions carry their latent-frame positions, so self-attention RoPE aligns them with the audio
    frames they describe; a dropped sample is one learned null token.
    """

    name = "sequence-concat"

    def __init__(self, dims: AggregatorDims, projection: str = "mlp", mlp_ratio: float = 2.0, bias: bool = False) -> None:
        super().__init__(dims)
        self.proj = build_projection(projection, dims.in_dim, dims.width, mlp_ratio, bias)
        self.null = nn.Parameter(torch.zeros(dims.width))

    def forward(self, condition: Condition, keep: Tensor, spec: SequenceSpec) -> Conditioning:
        """Prefix tokens (B, L, W), their mask and positions."""
        features = condition.features
        pos = timed_positions(features.shape[1], self.dims.fps, spec.latent_fps, features.device)  # (L,)
        tokens, tmask = self.tokens_or_null(self.proj(features), condition.mask, keep)  # (B, L, W), (B, L)
        return Conditioning(prefix=tokens, prefix_mask=tmask, prefix_pos=pos)
