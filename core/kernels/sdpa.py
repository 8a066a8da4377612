"""Attention through torch.nn.functional.scaled_dot_product_attention, made to agree with the kernels."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention_sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """SDPA with a (B, Lk) padding mask; batch elements without any valid key return zeros, not NaN."""
    gqa = q.shape[1] != k.shape[1]
    if key_padding_mask is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa)
    valid = key_padding_mask.to(device=q.device, dtype=torch.bool)  # (B, Lk)
    has_key = valid.any(dim=-1)  # (B,)
    # SDPA returns NaN (and NaN gradients) for a row with every key masked. Unmask those rows so the
    # softmax is finite, then zero them: the product also zeroes their gradients.
    attn_mask = (valid | ~has_key[:, None])[:, None, None, :]  # (B, 1, 1, Lk)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale, enable_gqa=gqa)
    return out * has_key[:, None, None, None].to(out.dtype)
