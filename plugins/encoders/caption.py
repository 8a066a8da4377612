"""`byte-text`: caption encoder. UTF-8 bytes -> a few pre-norm transformer layers -> one token per byte.

Needs no download and no vocabulary file: the tokens are the text's UTF-8 bytes shifted by one (ids 1..256),
0 = padding (`caption_ids` in vssflow.core.data makes them). A learned positional embedding covers
`max_length` tokens; longer captions are cut there by the dataset. Self-attention never looks at padding,
so a caption's features do not depend on how far its batch is padded.

Output: Condition(features (B, N, dim), mask (B, N) = the valid tokens, fps None): tokens without a time
axis, for a token route (cross-attention by default, or `global` for one pooled vector).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vssflow.core.data import CAPTION_PAD_ID, CAPTION_VOCAB
from vssflow.core.errors import ContractError
from vssflow.core.interfaces import Condition, Encoder, InputContract

from .layers import component_label


class TextBlock(nn.Module):
    """Pre-norm self-attention + GELU MLP over (B, N, D), with a key padding mask."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        hidden = max(1, int(dim * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, h: Tensor, valid: Tensor) -> Tensor:
        """h (B, N, D), valid (B, N) bool (at least one True per row) -> (B, N, D)."""
        b, n, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=valid[:, None, None, :])  # (B, H, N, D/H)
        h = h + self.out(attn.transpose(1, 2).reshape(b, n, d))
        return h + self.mlp(self.norm2(h))


class ByteTextEncoder(Encoder):
    """Captions as UTF-8 byte ids (B, N) -> learned token + position embeddings -> `layers` transformer blocks."""

    modality = "caption"
    fps = None

    def __init__(self, dim: int = 64, layers: int = 2, heads: int = 4, mlp_ratio: float = 2.0,
                 max_length: int = 128) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"byte-text: dim {dim} must be a multiple of heads {heads}")
        self.dim, self.max_length = int(dim), int(max_length)
        self.embed = nn.Embedding(CAPTION_VOCAB, self.dim, padding_idx=CAPTION_PAD_ID)
        self.position = nn.Parameter(0.02 * torch.randn(self.max_length, self.dim))
        self.blocks = nn.ModuleList(TextBlock(self.dim, heads, mlp_ratio) for _ in range(layers))
        self.norm = nn.LayerNorm(self.dim)

    @property
    def contract(self) -> InputContract:
        """Byte ids in [1, 257), 0 = padding, at most `max_length` of them."""
        return InputContract("caption", extra={"vocab_size": CAPTION_VOCAB, "pad_id": CAPTION_PAD_ID,
                                               "max_length": self.max_length})

    def forward(self, x: Tensor, mask: Tensor | None = None, **extras: Any) -> Condition:
        """ids (B, N) -> Condition (B, N, dim), mask = valid tokens, no frame rate."""
        label = component_label(self)
        if x.dim() != 2 or x.dtype not in (torch.int64, torch.int32):
            raise ContractError(f"{label}: expected caption byte ids (B, N) of integers, got {x.dtype} {tuple(x.shape)}")
        if x.shape[1] > self.max_length:
            raise ContractError(f"{label}: caption of {x.shape[1]} tokens is longer than max_length "
                                f"{self.max_length}; shorten it or raise max_length in the recipe")
        if x.numel() and (int(x.max()) >= CAPTION_VOCAB or int(x.min()) < 0):
            raise ContractError(f"{label}: expected byte ids in [0, {CAPTION_VOCAB}), got {int(x.max())}")
        ids = x.long()
        valid = ids != CAPTION_PAD_ID
        if mask is not None:
            valid = valid & mask.to(device=ids.device, dtype=torch.bool)
        ids = torch.where(valid, ids, torch.zeros_like(ids))  # garbage under the mask never reaches the embedding
        h = self.embed(ids) + self.position[: ids.shape[1]]  # (B, N, D)
        # a row without tokens attends to its first position only (its output is masked out anyway)
        attend = valid.clone()
        attend[:, 0] |= ~valid.any(dim=1)
        for block in self.blocks:
            h = block(h, attend)
        h = self.norm(h) * valid[..., None]
        return Condition(h, valid, None)

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Random byte ids of 12 tokens, the last sample padded after 7."""
        ids = torch.randint(1, CAPTION_VOCAB, (batch_size, 12), generator=generator)
        ids[-1, 7:] = CAPTION_PAD_ID
        return {"x": ids, "mask": ids != CAPTION_PAD_ID}

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """(B, N, dim)."""
        return {"features": (*inputs["x"].shape, self.dim)}
