"""Plain PyTorch references for every kernel: the ground truth of the tests and `backend="reference"`.

Each reference computes in float32 and returns the input's dtype, so it also serves as the accuracy
target for the low-precision kernels. None of them is fast; that is not their job.
"""

from __future__ import annotations

import torch


def _wide(t: torch.Tensor) -> torch.Tensor:
    """Upcast to float32 for the math; float64 stays float64 (the reference must not lose precision)."""
    return t if t.dtype == torch.float64 else t.float()


def _expand_kv(k: torch.Tensor, heads: int) -> torch.Tensor:
    """Repeat grouped KV heads (B, Hkv, L, D) -> (B, H, L, D)."""
    groups = heads // k.shape[1]
    return k if groups == 1 else k.repeat_interleave(groups, dim=1)


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Matmul-softmax attention; queries whose keys are all masked return zeros (and zero gradients)."""
    b, h, _, d = q.shape
    scale = d**-0.5 if scale is None else scale
    qf, kf, vf = _wide(q), _wide(_expand_kv(k, h)), _wide(_expand_kv(v, h))
    scores = torch.matmul(qf, kf.transpose(-1, -2)) * scale  # (B, H, Lq, Lk)
    if key_padding_mask is None:
        probs = torch.softmax(scores, dim=-1)
    else:
        valid = key_padding_mask.to(device=q.device, dtype=torch.bool)[:, None, None, :]  # (B, 1, 1, Lk)
        # A finite fill keeps softmax NaN-free on fully masked rows; multiplying by `valid` then zeroes
        # those rows exactly and cuts their gradient path.
        scores = scores.masked_fill(~valid, torch.finfo(scores.dtype).min)
        probs = torch.softmax(scores, dim=-1) * valid
    return torch.matmul(probs, vf).to(q.dtype)


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dim: x / sqrt(mean(x^2) + eps) * weight."""
    xf = _wide(x)
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * _wide(weight)
    return y.to(x.dtype)


def rope_cos_sin_reference(
    positions: torch.Tensor, rot_dim: int, base: float = 10000.0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (L, rot_dim // 2) for (possibly fractional) positions (L,)."""
    if rot_dim <= 0 or rot_dim % 2:
        raise ValueError(f"rot_dim must be a positive even number, got {rot_dim}")
    # float64 angles: positions reach thousands of frames, where float32 loses ~1e-3 rad.
    wide = torch.float32 if positions.device.type == "mps" else torch.float64
    inv_freq = base ** (-torch.arange(0, rot_dim, 2, device=positions.device, dtype=wide) / rot_dim)
    angles = positions.to(wide)[:, None] * inv_freq[None, :]  # (L, rot_dim // 2)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _rope_table(table: torch.Tensor) -> torch.Tensor:
    """Broadcast a cos/sin table (L, R) or (B, L, R) against (B, H, L, R)."""
    return _wide(table) if table.dim() == 2 else _wide(table)[:, None]


def apply_rope_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Half-split (GPT-NeoX) RoPE on the first 2 * cos.shape[-1] dims of x (B, H, L, D); the rest pass."""
    half = cos.shape[-1]
    xf = _wide(x)
    x1, x2, rest = xf[..., :half], xf[..., half : 2 * half], xf[..., 2 * half :]
    c, s = _rope_table(cos), _rope_table(sin)
    out = torch.cat([x1 * c - x2 * s, x2 * c + x1 * s, rest], dim=-1)
    return out.to(x.dtype)


def qk_norm_rope_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    q_weight: torch.Tensor | None = None,
    k_weight: torch.Tensor | None = None,
    cos: torch.Tensor | None = None,
    sin: torch.Tensor | None = None,
    eps: float = 1e-6,
    norm: bool = True,
    k_cos: torch.Tensor | None = None,
    k_sin: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm over the head dim (if norm) then RoPE (if a table is given) for q and k."""
    if norm:
        q = rms_norm_reference(q, q_weight, eps)
        k = rms_norm_reference(k, k_weight, eps)
    if cos is not None:
        q = apply_rope_reference(q, cos, sin)
    if k_cos is not None:
        k = apply_rope_reference(k, k_cos, k_sin)
    return q, k


def adaln_modulate_reference(
    x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """LayerNorm(x) without affine, then * (1 + scale) + shift; (B, W) modulations apply to every token."""
    xf = _wide(x)
    mean = xf.mean(-1, keepdim=True)
    var = (xf - mean).pow(2).mean(-1, keepdim=True)
    normed = (xf - mean) * torch.rsqrt(var + eps)
    shift, scale = _per_token(shift, x), _per_token(scale, x)
    return (normed * (1 + _wide(scale)) + _wide(shift)).to(x.dtype)


def gated_residual_reference(x: torch.Tensor, gate: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x + gate * y with a (B, W) gate applied to every token."""
    gate = _per_token(gate, x)
    return (_wide(x) + _wide(gate) * _wide(y)).to(x.dtype)


def _per_token(mod: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """View a (B, W) modulation as (B, 1, W) so it broadcasts over the tokens of x (B, L, W)."""
    return mod[:, None, :] if mod.dim() == 2 and x.dim() == 3 else mod
