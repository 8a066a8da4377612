"""Triton kernel: adaLN modulation, LayerNorm without affine then * (1 + scale) + shift over x (B, L, W),
with shift/scale per token (B, L, W) or per sample (B, W); one launch forward and one backward (plus a tiny
torch sum over per-program partials for broadcast modulations). All math is fp32 in registers.
This module imports triton at import time: load it only from the triton path of the dispatcher.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .dispatch import device_guard
from .rows import load_modulation, modulation_view, per_token_grad, reduce_partials, row_geometry, split_rows


@triton.jit
def _adaln_fwd(
    X, Y, SHIFT, SCALE, MEAN, RSTD, L, W, sxb, sxl, shb, shl, shw, scb, scl, scw, eps,
    BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr, SH_TOK: tl.constexpr, SC_TOK: tl.constexpr,
):
    """y = (x - mean) * rstd * (1 + scale) + shift for BLOCK_R tokens of one batch element."""
    pid = tl.program_id(0)
    b = tl.program_id(1)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_W)
    rmask = rows < L
    cmask = cols < W
    m2 = rmask[:, None] & cmask[None, :]
    x = tl.load(X + b.to(tl.int64) * sxb + rows[:, None].to(tl.int64) * sxl + cols[None, :], mask=m2, other=0.0)
    x = x.to(tl.float32)
    mean = tl.sum(x, 1) / W
    xc = tl.where(m2, x - mean[:, None], 0.0)
    rstd = tl.rsqrt(tl.sum(xc * xc, 1) / W + eps)
    n = xc * rstd[:, None]
    shift = load_modulation(SHIFT, b, rows, cols, rmask, cmask, shb, shl, shw, SH_TOK)
    scale = load_modulation(SCALE, b, rows, cols, rmask, cmask, scb, scl, scw, SC_TOK)
    y = n * (1.0 + scale) + shift
    tok = b.to(tl.int64) * L + rows
    tl.store(Y + tok[:, None] * W + cols[None, :], y.to(Y.dtype.element_ty), mask=m2)
    tl.store(MEAN + tok, mean, mask=rmask)
    tl.store(RSTD + tok, rstd, mask=rmask)


@triton.jit
def _adaln_bwd(
    DY, X, SCALE, MEAN, RSTD, DX, DSCALE, DSHIFT, L, W, rows_per_prog,
    sdb, sdl, sxb, sxl, scb, scl, scw,
    BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr, SH_TOK: tl.constexpr, SC_TOK: tl.constexpr,
):
    """dx, and dscale/dshift: per token, or this program's partial sum over its rows (broadcast mods)."""
    pid = tl.program_id(0)
    b = tl.program_id(1)
    n_chunks = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_W)
    cmask = cols < W
    dsc_acc = tl.zeros([BLOCK_W], dtype=tl.float32)
    dsh_acc = tl.zeros([BLOCK_W], dtype=tl.float32)
    start = pid * rows_per_prog
    stop = tl.minimum(start + rows_per_prog, L)
    for r0 in range(start, stop, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        rmask = rows < stop
        m2 = rmask[:, None] & cmask[None, :]
        tok = b.to(tl.int64) * L + rows
        dy = tl.load(DY + b.to(tl.int64) * sdb + rows[:, None].to(tl.int64) * sdl + cols[None, :], mask=m2,
                     other=0.0).to(tl.float32)
        x = tl.load(X + b.to(tl.int64) * sxb + rows[:, None].to(tl.int64) * sxl + cols[None, :], mask=m2,
                    other=0.0).to(tl.float32)
        mean = tl.load(MEAN + tok, mask=rmask, other=0.0)
        rstd = tl.load(RSTD + tok, mask=rmask, other=0.0)
        n = tl.where(m2, (x - mean[:, None]) * rstd[:, None], 0.0)
        scale = load_modulation(SCALE, b, rows, cols, rmask, cmask, scb, scl, scw, SC_TOK)
        if SC_TOK:
            tl.store(DSCALE + tok[:, None] * W + cols[None, :], dy * n, mask=m2)
        else:
            dsc_acc += tl.sum(dy * n, 0)
        if not SH_TOK:
            dsh_acc += tl.sum(dy, 0)
        dn = dy * (1.0 + scale)
        # LayerNorm backward: rstd * (dn - mean(dn) - n * mean(dn * n)).
        mdn = tl.sum(dn, 1) / W
        mdnn = tl.sum(dn * n, 1) / W
        dx = rstd[:, None] * (dn - mdn[:, None] - n * mdnn[:, None])
        tl.store(DX + tok[:, None] * W + cols[None, :], dx.to(DX.dtype.element_ty), mask=m2)
    part = (b.to(tl.int64) * n_chunks + pid) * W + cols
    if not SC_TOK:
        tl.store(DSCALE + part, dsc_acc, mask=cmask)
    if not SH_TOK:
        tl.store(DSHIFT + part, dsh_acc, mask=cmask)


class AdaLNModulate(torch.autograd.Function):
    """LayerNorm (no affine) * (1 + scale) + shift over x (B, L, W), one launch forward and backward."""

    @staticmethod
    def forward(ctx, x, shift, scale, eps):
        x = x if x.stride(-1) == 1 else x.contiguous()
        b, length, w = x.shape
        sh, sh_tok = modulation_view(shift, x)
        sc, sc_tok = modulation_view(scale, x)
        block_r, block_w, warps = row_geometry(x)
        y = torch.empty((b, length, w), device=x.device, dtype=x.dtype)
        mean = torch.empty((b, length), device=x.device, dtype=torch.float32)
        rstd = torch.empty_like(mean)
        with device_guard(x):
            _adaln_fwd[(triton.cdiv(length, block_r), b)](
                x, y, sh, sc, mean, rstd, length, w, x.stride(0), x.stride(1),
                sh.stride(0), sh.stride(1), sh.stride(2), sc.stride(0), sc.stride(1), sc.stride(2), eps,
                BLOCK_R=block_r, BLOCK_W=block_w, SH_TOK=sh_tok, SC_TOK=sc_tok, num_warps=warps,
            )
        ctx.save_for_backward(x, scale, mean, rstd)
        ctx.shift_meta = (shift.shape, shift.dtype, sh_tok)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, scale, mean, rstd = ctx.saved_tensors
        shift_shape, shift_dtype, sh_tok = ctx.shift_meta
        dy = dy if dy.stride(-1) == 1 else dy.contiguous()
        b, length, w = x.shape
        sc, sc_tok = modulation_view(scale, x)
        block_r, block_w, warps = row_geometry(x)
        chunks, rows = split_rows(x, block_r)
        dx = torch.empty_like(x, memory_format=torch.contiguous_format)
        dev = x.device
        dscale = torch.empty((b, length, w) if sc_tok else (b, chunks, w), device=dev, dtype=torch.float32)
        dshift = dscale if sh_tok else torch.empty((b, chunks, w), device=dev, dtype=torch.float32)
        with device_guard(x):
            _adaln_bwd[(chunks, b)](
                dy, x, sc, mean, rstd, dx, dscale, dshift, length, w, rows,
                dy.stride(0), dy.stride(1), x.stride(0), x.stride(1), sc.stride(0), sc.stride(1), sc.stride(2),
                BLOCK_R=block_r, BLOCK_W=block_w, SH_TOK=sh_tok, SC_TOK=sc_tok, num_warps=warps,
            )
        shift_like = torch.empty(shift_shape, dtype=shift_dtype, device="meta")
        if sh_tok and tuple(shift_shape) == tuple(x.shape):
            g_shift = dy.to(shift_dtype)  # d(shift) is dy itself: no kernel at all
        elif sh_tok:
            g_shift = per_token_grad(dy.float(), shift_like)
        else:
            g_shift = reduce_partials(dshift, shift_like)
        g_scale = per_token_grad(dscale, scale) if sc_tok else reduce_partials(dscale, scale)
        return dx, g_shift, g_scale, None
