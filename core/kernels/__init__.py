"""Fused attention and norm kernels behind one dispatching API (Triton on CUDA, PyTorch elsewhere).

Every op takes `backend` in BACKENDS ("auto" | "triton" | "sdpa" | "reference"); see dispatch.py and
docs/kernels.md for the rules. All ops are differentiable on every backend. Importing this package does
not import triton: the triton modules load on the first call that resolves to "triton".
"""

from __future__ import annotations

import torch

from .dispatch import BACKENDS, ENV_VAR, resolve_backend, warn_once
from .reference import (
    adaln_modulate_reference,
    apply_rope_reference,
    attention_reference,
    gated_residual_reference,
    qk_norm_rope_reference,
    rms_norm_reference,
    rope_cos_sin_reference,
)
from .sdpa import attention_sdpa

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "adaln_modulate",
    "apply_rope",
    "attention",
    "gated_residual",
    "qk_norm_rope",
    "resolve_backend",
    "rms_norm",
    "rope_cos_sin",
]


def _check_attention(q, k, v, key_padding_mask) -> None:
    """Shape/dtype contract of `attention`, checked once for every backend."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"attention wants (B, H, L, D) tensors, got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    b, h, _, d = q.shape
    if k.shape != v.shape or k.shape[0] != b or k.shape[-1] != d:
        raise ValueError(f"k and v must be (B={b}, Hkv, Lk, D={d}), got {tuple(k.shape)} and {tuple(v.shape)}")
    if h % k.shape[1]:
        raise ValueError(f"query heads ({h}) must be a multiple of KV heads ({k.shape[1]})")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(f"key_padding_mask must be bool (True = valid), got {key_padding_mask.dtype}")
        if tuple(key_padding_mask.shape) != (b, k.shape[2]):
            raise ValueError(f"key_padding_mask must be (B, Lk) = ({b}, {k.shape[2]}), "
                             f"got {tuple(key_padding_mask.shape)}")


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    backend: str = "auto",
    scale: float | None = None,
) -> torch.Tensor:
    """Softmax attention q (B, H, Lq, D), k/v (B, Hkv, Lk, D), mask (B, Lk) True = valid -> (B, H, Lq, D)."""
    _check_attention(q, k, v, key_padding_mask)
    name = resolve_backend(backend, q.device, op="attention", dtype=q.dtype, head_dim=q.shape[-1])
    if q.numel() == 0 or k.shape[2] == 0:
        name = "reference"  # empty problems: nothing to launch, and SDPA rejects Lk = 0
    if name == "triton":
        from .flash_attention import flash_attention

        return flash_attention(q, k, v, key_padding_mask, scale)
    if name == "sdpa":
        return attention_sdpa(q, k, v, key_padding_mask, scale)
    return attention_reference(q, k, v, key_padding_mask, scale)


def _triton_rows(name: str, op: str, x: torch.Tensor, rank: int) -> str:
    """Demote "triton" to the PyTorch path (one log line) when x does not have the rank the kernel reads."""
    if name == "triton" and (x.dim() != rank or x.numel() == 0):
        warn_once(f"{op}: the triton kernel takes {rank}-D non-empty inputs, got shape {tuple(x.shape)}")
        return "sdpa"
    return name


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6, backend: str = "auto"
) -> torch.Tensor:
    """RMSNorm over the last dim, optionally times `weight` (N,)."""
    name = resolve_backend(backend, x.device, op="rms_norm", dtype=x.dtype, width=x.shape[-1])
    if name == "triton" and x.numel() > 0:
        from .norm_rope import norm_rope

        rows = x.reshape(1, 1, -1, x.shape[-1])  # (1, 1, R, N): the row kernel's (B, H, L, D) view
        return norm_rope(rows, None, q_weight=weight, eps=eps, norm=True)[0].reshape(x.shape)
    return rms_norm_reference(x, weight, eps)


def rope_cos_sin(
    positions: torch.Tensor, rot_dim: int, base: float = 10000.0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE tables cos, sin (L, rot_dim // 2) for float positions (L,); fractional positions allowed."""
    return rope_cos_sin_reference(positions, rot_dim, base, dtype)


def _check_table(cos: torch.Tensor | None, sin: torch.Tensor | None, x: torch.Tensor, what: str) -> None:
    """cos and sin come together, (L, R) or (B, L, R), with 2 * R <= D."""
    if (cos is None) != (sin is None):
        raise ValueError(f"{what}: pass both cos and sin, or neither")
    if cos is None:
        return
    if cos.shape != sin.shape or cos.dim() not in (2, 3):
        raise ValueError(f"{what}: cos/sin must both be (L, R) or (B, L, R), got {tuple(cos.shape)}, "
                         f"{tuple(sin.shape)}")
    if cos.shape[-2] != x.shape[-2] or 2 * cos.shape[-1] > x.shape[-1]:
        raise ValueError(f"{what}: table {tuple(cos.shape)} does not fit x {tuple(x.shape)}")
    if cos.dim() == 3 and cos.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"{what}: per-batch table has batch {cos.shape[0]}, x has {x.shape[0]}")


def _tables_need_grad(name: str, op: str, *tables: torch.Tensor | None) -> str:
    """The triton row kernels give cos/sin no gradient: trainable tables take the PyTorch path (logged)."""
    if name == "triton" and torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tables):
        warn_once(f"{op}: cos/sin tables that require grad are differentiated only by the PyTorch path")
        return "sdpa"
    return name


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Half-split (GPT-NeoX) RoPE on the first 2 * cos.shape[-1] dims of x (B, H, L, D); the rest pass."""
    _check_table(cos, sin, x, "apply_rope")
    name = resolve_backend(backend, x.device, op="rope", dtype=x.dtype, width=x.shape[-1])
    name = _triton_rows(name, "apply_rope", x, 4)
    name = _tables_need_grad(name, "apply_rope", cos, sin)
    if name == "triton":
        from .norm_rope import norm_rope

        return norm_rope(x, None, q_cos=cos, q_sin=sin, norm=False)[0]
    return apply_rope_reference(x, cos, sin)


def qk_norm_rope(
    q: torch.Tensor,
    k: torch.Tensor,
    q_weight: torch.Tensor | None = None,
    k_weight: torch.Tensor | None = None,
    cos: torch.Tensor | None = None,
    sin: torch.Tensor | None = None,
    eps: float = 1e-6,
    norm: bool = True,
    backend: str = "auto",
    *,
    k_cos: torch.Tensor | None = None,
    k_sin: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm over the head dim (if norm) then RoPE for q (B, H, Lq, D) and k (B, Hkv, Lk, D), one launch.

    q is rotated with (cos, sin) when given; k is rotated with (k_cos, k_sin) when given and never
    otherwise: tables are passed explicitly for each side, never inferred from lengths (self-attention
    passes the same table twice; cross-attention with no key table leaves the keys as they are). Weights are
    (D,) and shared by all heads; cos/sin are (L, R) or (B, L, R) with 2 * R <= D. The triton kernel
    gives cos/sin no gradient, so tables that require grad take the PyTorch path (logged once).
    """
    _check_table(cos, sin, q, "qk_norm_rope (q)")
    _check_table(k_cos, k_sin, k, "qk_norm_rope (k)")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k head dims differ: {q.shape[-1]} vs {k.shape[-1]}")
    if not norm and cos is None and k_cos is None:
        return q, k
    name = resolve_backend(backend, q.device, op="qk_norm_rope", dtype=q.dtype, width=q.shape[-1])
    name = _triton_rows(name, "qk_norm_rope", q, 4)
    name = _triton_rows(name, "qk_norm_rope", k, 4)
    name = _tables_need_grad(name, "qk_norm_rope", cos, sin, k_cos, k_sin)
    if name == "triton" and q.dtype != k.dtype:
        warn_once(f"qk_norm_rope: the triton kernel wants q and k of one dtype, got {q.dtype} and {k.dtype}")
        name = "sdpa"
    if name == "triton":
        from .norm_rope import norm_rope

        return norm_rope(q, k, q_weight, k_weight, cos, sin, k_cos, k_sin, eps=eps, norm=norm)
    return qk_norm_rope_reference(q, k, q_weight, k_weight, cos, sin, eps, norm, k_cos, k_sin)


def adaln_modulate(
    x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6, backend: str = "auto"
) -> torch.Tensor:
    """LayerNorm(x (B, L, W), no affine) * (1 + scale) + shift, with shift/scale (B, W) or (B, L, W)."""
    name = resolve_backend(backend, x.device, op="adaln_modulate", dtype=x.dtype, width=x.shape[-1])
    name = _triton_rows(name, "adaln_modulate", x, 3)
    if name == "triton":
        from .adaln import AdaLNModulate

        return AdaLNModulate.apply(x, shift, scale, eps)
    return adaln_modulate_reference(x, shift, scale, eps)


def gated_residual(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """x + gate * y for x, y (B, L, W) and gate (B, W) or (B, L, W)."""
    if x.shape != y.shape:
        raise ValueError(f"gated_residual: x {tuple(x.shape)} and y {tuple(y.shape)} differ")
    name = resolve_backend(backend, x.device, op="gated_residual", dtype=x.dtype, width=x.shape[-1])
    name = _triton_rows(name, "gated_residual", x, 3)
    if name == "triton":
        from .gated import GatedResidual

        return GatedResidual.apply(x, gate, y)
    return gated_residual_reference(x, gate, y)
