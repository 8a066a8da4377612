"""`global`: a condition pooled to one vector, added to the timestep conditioning or prepended as a token."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from vssflow.core.conditioning import (
    EXAMPLE_BINDING,
    Aggregator,
    AggregatorBinding,
    Conditioning,
    masked_mean,
    projection,
)


class GlobalAggregator(Aggregator):
    """Mean over valid frames (B, D), projected to width (B, W).

    mode `add`: summed into the timestep embedding (the adaLN vector, or the time token under
    `timestep: token`); mode `token`: one extra prefix token in self-attention. Dropped samples use the
    null vector.
    """

    name = "global"

    def __init__(self, mode: str = "add", projection: str = "mlp", mlp_ratio: float = 2.0, bias: bool = False) -> None:
        super().__init__()
        self.mode, self.kind, self.mlp_ratio, self.bias = mode, projection, mlp_ratio, bias
        self.bind(EXAMPLE_BINDING)

    def build(self, binding: AggregatorBinding) -> None:
        """Projection in_dim -> width and the null vector."""
        self.proj = projection(self.kind, binding.in_dim, binding.width, self.mlp_ratio, self.bias)
        self.null = nn.Parameter(torch.zeros(binding.width))

    def route(self, features: Tensor, mask: Tensor | None, keep: Tensor, num_frames: int) -> Conditioning:
        """global_embedding (B, W), or prefix (B, 1, W)."""
        vec = self.proj(masked_mean(features, mask))  # (B, W)
        vec = torch.where(keep[:, None], vec, self.null.to(vec.dtype).expand_as(vec))  # (B, W)
        return MODES[self.mode](vec)

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """(B, W) added, or (B, 1, W) as a token."""
        b, w = inputs["features"].shape[0], self.binding.width
        return {"global_embedding": (b, w)} if self.mode == "add" else {"prefix": (b, 1, w)}


def _as_token(vec: Tensor) -> Conditioning:
    b = vec.shape[0]
    return Conditioning(
        prefix=vec[:, None],  # (B, 1, W)
        prefix_mask=torch.ones(b, 1, dtype=torch.bool, device=vec.device),
        prefix_pos=torch.zeros(1, device=vec.device),
    )


MODES = {"add": lambda vec: Conditioning(global_embedding=vec), "token": _as_token}
