"""Triton kernel: the gated residual x + gate * y over (B, L, W), gate per token or per sample; one launch
forward and one backward (dx is the incoming gradient). All math is fp32 in registers.
This module imports triton at import time: load it only from the triton path of the dispatcher.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .dispatch import device_guard
from .rows import load_modulation, modulation_view, per_token_grad, reduce_partials, row_geometry, split_rows


@triton.jit
def _gated_fwd(
    X, G, Y, OUT, L, W, sxb, sxl, syb, syl, sgb, sgl, sgw,
    BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr, G_TOK: tl.constexpr,
):
    """out = x + gate * y for BLOCK_R tokens of one batch element."""
    pid = tl.program_id(0)
    b = tl.program_id(1)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_W)
    rmask = rows < L
    cmask = cols < W
    m2 = rmask[:, None] & cmask[None, :]
    r64 = rows[:, None].to(tl.int64)
    x = tl.load(X + b.to(tl.int64) * sxb + r64 * sxl + cols[None, :], mask=m2, other=0.0).to(tl.float32)
    y = tl.load(Y + b.to(tl.int64) * syb + r64 * syl + cols[None, :], mask=m2, other=0.0).to(tl.float32)
    g = load_modulation(G, b, rows, cols, rmask, cmask, sgb, sgl, sgw, G_TOK)
    tok = b.to(tl.int64) * L + rows
    tl.store(OUT + tok[:, None] * W + cols[None, :], (x + g * y).to(OUT.dtype.element_ty), mask=m2)


@triton.jit
def _gated_bwd(
    DO, G, Y, DY, DG, L, W, rows_per_prog, sdb, sdl, syb, syl, sgb, sgl, sgw,
    BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr, G_TOK: tl.constexpr,
):
    """dy = dout * gate; dgate = dout * y per token, or this program's partial sum over its rows."""
    pid = tl.program_id(0)
    b = tl.program_id(1)
    n_chunks = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_W)
    cmask = cols < W
    dg_acc = tl.zeros([BLOCK_W], dtype=tl.float32)
    start = pid * rows_per_prog
    stop = tl.minimum(start + rows_per_prog, L)
    for r0 in range(start, stop, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        rmask = rows < stop
        m2 = rmask[:, None] & cmask[None, :]
        r64 = rows[:, None].to(tl.int64)
        tok = b.to(tl.int64) * L + rows
        do = tl.load(DO + b.to(tl.int64) * sdb + r64 * sdl + cols[None, :], mask=m2, other=0.0).to(tl.float32)
        y = tl.load(Y + b.to(tl.int64) * syb + r64 * syl + cols[None, :], mask=m2, other=0.0).to(tl.float32)
        g = load_modulation(G, b, rows, cols, rmask, cmask, sgb, sgl, sgw, G_TOK)
        tl.store(DY + tok[:, None] * W + cols[None, :], (do * g).to(DY.dtype.element_ty), mask=m2)
        if G_TOK:
            tl.store(DG + tok[:, None] * W + cols[None, :], do * y, mask=m2)
        else:
            dg_acc += tl.sum(do * y, 0)
    if not G_TOK:
        tl.store(DG + (b.to(tl.int64) * n_chunks + pid) * W + cols, dg_acc, mask=cmask)


class GatedResidual(torch.autograd.Function):
    """x + gate * y over (B, L, W), one launch forward and backward (dx is the incoming gradient)."""

    @staticmethod
    def forward(ctx, x, gate, y):
        x = x if x.stride(-1) == 1 else x.contiguous()
        y = y if y.stride(-1) == 1 else y.contiguous()
        b, length, w = x.shape
        g, g_tok = modulation_view(gate, x)
        block_r, block_w, warps = row_geometry(x)
        out = torch.empty((b, length, w), device=x.device, dtype=x.dtype)
        with device_guard(x):
            _gated_fwd[(triton.cdiv(length, block_r), b)](
                x, g, y, out, length, w, x.stride(0), x.stride(1), y.stride(0), y.stride(1),
                g.stride(0), g.stride(1), g.stride(2),
                BLOCK_R=block_r, BLOCK_W=block_w, G_TOK=g_tok, num_warps=warps,
            )
        ctx.save_for_backward(gate, y)
        ctx.x_dtype = x.dtype
        return out

    @staticmethod
    def backward(ctx, dout):
        gate, y = ctx.saved_tensors
        dout = dout if dout.stride(-1) == 1 else dout.contiguous()
        b, length, w = y.shape
        g, g_tok = modulation_view(gate, y)
        block_r, block_w, warps = row_geometry(y)
        chunks, rows = split_rows(y, block_r)
        dy = torch.empty((b, length, w), device=y.device, dtype=y.dtype)
        dg = torch.empty((b, length, w) if g_tok else (b, chunks, w), device=y.device, dtype=torch.float32)
        with device_guard(y):
            _gated_bwd[(chunks, b)](
                dout, g, y, dy, dg, length, w, rows, dout.stride(0), dout.stride(1), y.stride(0), y.stride(1),
                g.stride(0), g.stride(1), g.stride(2),
                BLOCK_R=block_r, BLOCK_W=block_w, G_TOK=g_tok, num_warps=warps,
            )
        dgate = per_token_grad(dg, gate) if g_tok else reduce_partials(dg, gate)
        return dout.to(ctx.x_dtype), dgate, dy
