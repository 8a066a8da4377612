"""`global`: a condition pooled to one vector, added to the timestep conditioning or prepended as a token."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vssflow.core.conditioning import Aggregator, AggregatorDims, Conditioning, masked_mean
from vssflow.core.conditioning import projection as build_projection
from vssflow.core.interfaces import Condition
from vssflow.core.sequence import SequenceSpec


class GlobalAggregator(Aggregator):
    """Mean over valid frames (B, D), projected to width (B, W).

    mode `add`: summed into the timestep embedding (the adaLN vector, or the time token under
    `timestep: token`); mode `token`: one extra prefix token in self-attention. Dropped samples use the
    null vector.
    """

    name = "global"

    def __init__(
        self, dims: AggregatorDims, mode: str = "add", projection: str = "mlp", mlp_ratio: float = 2.0,
        bias: bool = False,
    ) -> None:
        super().__init__(dims)
        self.mode = mode
        self.proj = build_projection(projection, dims.in_dim, dims.width, mlp_ratio, bias)
        self.null = nn.Parameter(torch.zeros(dims.width))

    def forward(self, condition: Condition, keep: Tensor, spec: SequenceSpec) -> Conditioning:
        """global_embedding (B, W), or prefix (B, 1, W)."""
        vec = self.proj(masked_mean(condition.features, condition.mask))  # (B, W)
        vec = torch.where(keep[:, None], vec, self.null.to(vec.dtype).expand_as(vec))  # (B, W)
        return MODES[self.mode](vec)


def _as_token(vec: Tensor) -> Conditioning:
    b = vec.shape[0]
    return Conditioning(
        prefix=vec[:, None],  # (B, 1, W)
        prefix_mask=torch.ones(b, 1, dtype=torch.bool, device=vec.device),
        prefix_pos=torch.zeros(1, device=vec.device),
    )


MODES = {"add": lambda vec: Conditioning(global_embedding=vec), "token": _as_token}
