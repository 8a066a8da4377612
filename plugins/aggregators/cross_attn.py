"""`cross-attn`: condition tokens become keys/values of every cross-attention layer."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vssflow.core.conditioning import Aggregator, AggregatorDims, Conditioning, timed_positions
from vssflow.core.conditioning import projection as build_projection
from vssflow.core.errors import ContractError
from vssflow.core.interfaces import Condition
from vssflow.core.sequence import SequenceSpec


class CrossAttnAggregator(Aggregator):
    """Project (B, L, D) to the context dim (B, L, Dc); a dropped sample is one learned null token.

    Token positions (latent-frame units) go with the context so the backbone can rotate keys
    (`cross_rope: both`). `to_grid` first resamples a timed condition onto the latent grid, as the public
    VSSFlow code does with CLIP features (nearest, 10 fps -> 25 Hz).
    """

    name = "cross-attn"

    def __init__(
        self, dims: AggregatorDims, projection: str = "mlp", mlp_ratio: float = 2.0, bias: bool = False,
        to_grid: bool = False, resample: str = "nearest",
    ) -> None:
        if to_grid and dims.fps is None:
            raise ContractError(
                f"aggregator {self.name!r} with to_grid needs a time-aligned condition (an encoder with an fps); "
                "set to_grid: false for token-like conditions"
            )
        super().__init__(dims)
        self.to_grid, self.resample = to_grid, resample
        self.proj = build_projection(projection, dims.in_dim, dims.context_dim, mlp_ratio, bias)
        self.null = nn.Parameter(torch.zeros(dims.context_dim))

    @property
    def uses_context(self) -> bool:
        """Feeds cross-attention."""
        return True

    def forward(self, condition: Condition, keep: Tensor, spec: SequenceSpec) -> Conditioning:
        """Context tokens (B, L, Dc) or (B, T, Dc) with `to_grid`, their mask and positions."""
        features, mask = condition.features, condition.mask
        if self.to_grid:
            features, mask = self.to_latent_grid(condition, spec, self.resample)  # (B, T, D), (B, T)
            pos = torch.arange(spec.num_frames, device=features.device, dtype=torch.float32)  # (T,)
        else:
            pos = timed_positions(features.shape[1], self.dims.fps, spec.latent_fps, features.device)  # (L,)
        tokens, tmask = self.tokens_or_null(self.proj(features), mask, keep)  # (B, L, Dc), (B, L)
        return Conditioning(context=tokens, context_mask=tmask, context_pos=pos)
