"""Triton kernel for short sequences, where launches dominate: RMSNorm over the head dim, then (partial)
half-split RoPE, for q AND k in one launch (programs [0, Pq) handle q, [Pq, Pq + Pk) handle k), and one
backward launch (plus a tiny torch sum over per-program partials for the weights). `rms_norm` and
`apply_rope` are the same kernel with one side. Reads strided (B, H, L, D) views, e.g. heads sliced out of
a fused QKV projection. All math is fp32 in registers; inputs and outputs keep their dtype. cos/sin tables
get no gradient here (the dispatcher sends trainable tables to the PyTorch path).
This module imports triton at import time: load it only from the triton path of the dispatcher.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .dispatch import device_guard
from .rows import num_programs_cap, rows_per_block, warps_for


@triton.jit
def _nr_fwd_side(
    X, Y, W, COS, SIN, RSTD, pid, n_rows, H, L, sxb, sxh, sxl, scb, scl, eps,
    D: tl.constexpr, R2: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_T: tl.constexpr,
    HAS_W: tl.constexpr, NORM: tl.constexpr, ROPE: tl.constexpr,
):
    """One block of rows: y = rope(rms_norm(x) * w); pairs [0, R2) x [R2, 2*R2) rotate, [2*R2, D) pass."""
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < n_rows
    l_idx = rows % L
    bh = rows // L
    b = bh // H
    h = bh % H
    xoff = b.to(tl.int64) * sxb + h.to(tl.int64) * sxh + l_idx.to(tl.int64) * sxl  # (BLOCK_R,)
    yoff = rows.to(tl.int64) * D
    ss = tl.zeros([BLOCK_R], dtype=tl.float32)
    if D > 2 * R2:
        ct = tl.arange(0, BLOCK_T)
        mt = rmask[:, None] & (ct < D - 2 * R2)[None, :]
        xt = tl.load(X + xoff[:, None] + 2 * R2 + ct[None, :], mask=mt, other=0.0).to(tl.float32)
        ss += tl.sum(xt * xt, 1)
    if ROPE:
        ch = tl.arange(0, BLOCK_H)
        mh = rmask[:, None] & (ch < R2)[None, :]
        x1 = tl.load(X + xoff[:, None] + ch[None, :], mask=mh, other=0.0).to(tl.float32)
        x2 = tl.load(X + xoff[:, None] + R2 + ch[None, :], mask=mh, other=0.0).to(tl.float32)
        ss += tl.sum(x1 * x1, 1) + tl.sum(x2 * x2, 1)
    if NORM:
        rstd = tl.rsqrt(ss / D + eps)
        tl.store(RSTD + rows, rstd, mask=rmask)
        if D > 2 * R2:
            xt = xt * rstd[:, None]
            if HAS_W:
                xt = xt * tl.load(W + 2 * R2 + ct, mask=ct < D - 2 * R2, other=0.0).to(tl.float32)[None, :]
        if ROPE:
            x1 = x1 * rstd[:, None]
            x2 = x2 * rstd[:, None]
            if HAS_W:
                x1 = x1 * tl.load(W + ch, mask=ch < R2, other=0.0).to(tl.float32)[None, :]
                x2 = x2 * tl.load(W + R2 + ch, mask=ch < R2, other=0.0).to(tl.float32)[None, :]
    if ROPE:
        coff = b.to(tl.int64) * scb + l_idx.to(tl.int64) * scl
        c = tl.load(COS + coff[:, None] + ch[None, :], mask=mh, other=0.0).to(tl.float32)
        s = tl.load(SIN + coff[:, None] + ch[None, :], mask=mh, other=0.0).to(tl.float32)
        tl.store(Y + yoff[:, None] + ch[None, :], (x1 * c - x2 * s).to(Y.dtype.element_ty), mask=mh)
        tl.store(Y + yoff[:, None] + R2 + ch[None, :], (x2 * c + x1 * s).to(Y.dtype.element_ty), mask=mh)
    if D > 2 * R2:
        tl.store(Y + yoff[:, None] + 2 * R2 + ct[None, :], xt.to(Y.dtype.element_ty), mask=mt)


@triton.jit
def _nr_fwd(
    QX, QY, QW, QCOS, QSIN, QRSTD, q_rows, q_progs, QH, QL, qsb, qsh, qsl, qcb, qcl,
    KX, KY, KW, KCOS, KSIN, KRSTD, k_rows, KH, KL, ksb, ksh, ksl, kcb, kcl,
    eps,
    D: tl.constexpr, BLOCK_R: tl.constexpr, NORM: tl.constexpr, TWO: tl.constexpr,
    Q_R2: tl.constexpr, Q_BH: tl.constexpr, Q_BT: tl.constexpr, Q_W: tl.constexpr, Q_ROPE: tl.constexpr,
    K_R2: tl.constexpr, K_BH: tl.constexpr, K_BT: tl.constexpr, K_W: tl.constexpr, K_ROPE: tl.constexpr,
):
    """Forward for q (programs [0, q_progs)) and, when TWO, k (the programs after)."""
    pid = tl.program_id(0)
    if pid < q_progs:
        _nr_fwd_side(QX, QY, QW, QCOS, QSIN, QRSTD, pid, q_rows, QH, QL, qsb, qsh, qsl, qcb, qcl, eps,
                     D, Q_R2, BLOCK_R, Q_BH, Q_BT, Q_W, NORM, Q_ROPE)
    elif TWO:
        _nr_fwd_side(KX, KY, KW, KCOS, KSIN, KRSTD, pid - q_progs, k_rows, KH, KL, ksb, ksh, ksl, kcb, kcl,
                     eps, D, K_R2, BLOCK_R, K_BH, K_BT, K_W, NORM, K_ROPE)


@triton.jit
def _nr_bwd_side(
    DY, X, DX, W, COS, SIN, RSTD, DWP, pid, n_progs, n_rows, H, L,
    sdb, sdh, sdl, sxb, sxh, sxl, scb, scl,
    D: tl.constexpr, R2: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_T: tl.constexpr,
    HAS_W: tl.constexpr, NORM: tl.constexpr, ROPE: tl.constexpr,
):
    """Persistent loop over row blocks: dx, and this program's partial dW written to DWP[pid]."""
    ct = tl.arange(0, BLOCK_T)
    ch = tl.arange(0, BLOCK_H)
    dwt = tl.zeros([BLOCK_T], dtype=tl.float32)
    dw1 = tl.zeros([BLOCK_H], dtype=tl.float32)
    dw2 = tl.zeros([BLOCK_H], dtype=tl.float32)
    n_blocks = tl.cdiv(n_rows, BLOCK_R)
    for blk in range(pid, n_blocks, n_progs):
        rows = blk * BLOCK_R + tl.arange(0, BLOCK_R)
        rmask = rows < n_rows
        l_idx = rows % L
        bh = rows // L
        b = bh // H
        h = bh % H
        doff = b.to(tl.int64) * sdb + h.to(tl.int64) * sdh + l_idx.to(tl.int64) * sdl
        xoff = b.to(tl.int64) * sxb + h.to(tl.int64) * sxh + l_idx.to(tl.int64) * sxl
        yoff = rows.to(tl.int64) * D
        dot = tl.zeros([BLOCK_R], dtype=tl.float32)
        if D > 2 * R2:
            mt = rmask[:, None] & (ct < D - 2 * R2)[None, :]
            gt = tl.load(DY + doff[:, None] + 2 * R2 + ct[None, :], mask=mt, other=0.0).to(tl.float32)
        if ROPE:
            mh = rmask[:, None] & (ch < R2)[None, :]
            g1 = tl.load(DY + doff[:, None] + ch[None, :], mask=mh, other=0.0).to(tl.float32)
            g2 = tl.load(DY + doff[:, None] + R2 + ch[None, :], mask=mh, other=0.0).to(tl.float32)
            coff = b.to(tl.int64) * scb + l_idx.to(tl.int64) * scl
            c = tl.load(COS + coff[:, None] + ch[None, :], mask=mh, other=0.0).to(tl.float32)
            s = tl.load(SIN + coff[:, None] + ch[None, :], mask=mh, other=0.0).to(tl.float32)
            # Transpose of the rotation [[c, -s], [s, c]].
            d1 = g1 * c + g2 * s
            d2 = g2 * c - g1 * s
        if NORM:
            rstd = tl.load(RSTD + rows, mask=rmask, other=0.0)
            if D > 2 * R2:
                nt = tl.load(X + xoff[:, None] + 2 * R2 + ct[None, :], mask=mt, other=0.0).to(tl.float32)
                nt = nt * rstd[:, None]
                if HAS_W:
                    dwt += tl.sum(gt * nt, 0)
                    gt = gt * tl.load(W + 2 * R2 + ct, mask=ct < D - 2 * R2, other=0.0).to(tl.float32)[None, :]
                dot += tl.sum(gt * nt, 1)
            if ROPE:
                n1 = tl.load(X + xoff[:, None] + ch[None, :], mask=mh, other=0.0).to(tl.float32) * rstd[:, None]
                n2 = tl.load(X + xoff[:, None] + R2 + ch[None, :], mask=mh, other=0.0).to(tl.float32)
                n2 = n2 * rstd[:, None]
                if HAS_W:
                    dw1 += tl.sum(d1 * n1, 0)
                    dw2 += tl.sum(d2 * n2, 0)
                    d1 = d1 * tl.load(W + ch, mask=ch < R2, other=0.0).to(tl.float32)[None, :]
                    d2 = d2 * tl.load(W + R2 + ch, mask=ch < R2, other=0.0).to(tl.float32)[None, :]
                dot += tl.sum(d1 * n1, 1) + tl.sum(d2 * n2, 1)
            # d/dx of x * rstd(x): rstd * (g - n * mean(g * n)).
            dot = dot / D
            if D > 2 * R2:
                gt = rstd[:, None] * (gt - nt * dot[:, None])
            if ROPE:
                d1 = rstd[:, None] * (d1 - n1 * dot[:, None])
                d2 = rstd[:, None] * (d2 - n2 * dot[:, None])
        if D > 2 * R2:
            tl.store(DX + yoff[:, None] + 2 * R2 + ct[None, :], gt.to(DX.dtype.element_ty), mask=mt)
        if ROPE:
            tl.store(DX + yoff[:, None] + ch[None, :], d1.to(DX.dtype.element_ty), mask=mh)
            tl.store(DX + yoff[:, None] + R2 + ch[None, :], d2.to(DX.dtype.element_ty), mask=mh)
    if HAS_W:
        if NORM:
            if D > 2 * R2:
                tl.store(DWP + pid * D + 2 * R2 + ct, dwt, mask=ct < D - 2 * R2)
            if ROPE:
                tl.store(DWP + pid * D + ch, dw1, mask=ch < R2)
                tl.store(DWP + pid * D + R2 + ch, dw2, mask=ch < R2)


@triton.jit
def _nr_bwd(
    QDY, QX, QDX, QW, QCOS, QSIN, QRSTD, QDWP, q_progs, q_rows, QH, QL,
    qdb, qdh, qdl, qsb, qsh, qsl, qcb, qcl,
    KDY, KX, KDX, KW, KCOS, KSIN, KRSTD, KDWP, k_progs, k_rows, KH, KL,
    kdb, kdh, kdl, ksb, ksh, ksl, kcb, kcl,
    D: tl.constexpr, BLOCK_R: tl.constexpr, NORM: tl.constexpr, TWO: tl.constexpr,
    Q_R2: tl.constexpr, Q_BH: tl.constexpr, Q_BT: tl.constexpr, Q_W: tl.constexpr, Q_ROPE: tl.constexpr,
    K_R2: tl.constexpr, K_BH: tl.constexpr, K_BT: tl.constexpr, K_W: tl.constexpr, K_ROPE: tl.constexpr,
):
    """Backward for q (programs [0, q_progs)) and, when TWO, k (the programs after)."""
    pid = tl.program_id(0)
    if pid < q_progs:
        _nr_bwd_side(QDY, QX, QDX, QW, QCOS, QSIN, QRSTD, QDWP, pid, q_progs, q_rows, QH, QL,
                     qdb, qdh, qdl, qsb, qsh, qsl, qcb, qcl, D, Q_R2, BLOCK_R, Q_BH, Q_BT, Q_W, NORM, Q_ROPE)
    elif TWO:
        _nr_bwd_side(KDY, KX, KDX, KW, KCOS, KSIN, KRSTD, KDWP, pid - q_progs, k_progs, k_rows, KH, KL,
                     kdb, kdh, kdl, ksb, ksh, ksl, kcb, kcl, D, K_R2, BLOCK_R, K_BH, K_BT, K_W, NORM, K_ROPE)


def _side_meta(prefix: str, d: int, r2: int, has_w: bool, rope: bool) -> dict:
    """Per-side constexprs of the norm/rope kernels (tile widths are powers of two, at least 2)."""
    return {
        f"{prefix}_R2": r2, f"{prefix}_BH": triton.next_power_of_2(max(r2, 2)),
        f"{prefix}_BT": triton.next_power_of_2(max(d - 2 * r2, 2)), f"{prefix}_W": has_w, f"{prefix}_ROPE": rope,
    }


class _Side:
    """One tensor of a norm/rope forward launch: its (B, H, L, D) view, weight, table and output."""

    def __init__(self, x, weight, cos, sin, norm, block_r):
        self.x = x if x.stride(-1) == 1 else x.contiguous()
        self.b, self.h, self.l, d = x.shape
        self.rows = self.b * self.h * self.l
        self.weight = weight if weight is None or weight.is_contiguous() else weight.contiguous()
        self.rope = cos is not None
        self.r2 = cos.shape[-1] if self.rope else 0
        if 2 * self.r2 > d:
            raise ValueError(f"RoPE rotates {2 * self.r2} dims but the head dim is {d}")
        self.cos, self.sin = (_table(cos, self.b, self.l), _table(sin, self.b, self.l)) if self.rope else (x, x)
        self.cb, self.cl = (self.cos.stride(0), self.cos.stride(1)) if self.rope else (0, 0)
        self.has_w = norm and weight is not None
        self.progs = triton.cdiv(self.rows, block_r)
        self.rstd = torch.empty(self.rows if norm else 1, device=x.device, dtype=torch.float32)
        self.y = torch.empty(x.shape, device=x.device, dtype=x.dtype)

    def args(self) -> tuple:
        """Positional kernel arguments of this side (forward)."""
        x = self.x
        return (x, self.y, self.weight if self.has_w else x, self.cos, self.sin, self.rstd, self.rows)

    def meta(self, prefix: str) -> dict:
        """Per-side constexprs."""
        return _side_meta(prefix, self.x.shape[-1], self.r2, self.has_w, self.rope)


class _BwdSide:
    """One tensor of a norm/rope backward launch: saved input, incoming gradient, outputs dx and dW."""

    def __init__(self, x, dy, weight, cos, sin, rstd, rope, norm, block_r, cap):
        dy = torch.zeros_like(x) if dy is None else dy  # the other output was unused
        self.x, self.dy = x, (dy if dy.stride(-1) == 1 else dy.contiguous())
        self.weight, self.cos, self.sin, self.rstd, self.rope = weight, cos, sin, rstd, rope
        self.r2 = cos.shape[-1] if rope else 0
        self.has_w = norm and weight is not None
        self.rows = x.shape[0] * x.shape[1] * x.shape[2]
        self.progs = max(1, min(cap, triton.cdiv(self.rows, block_r)))
        # Per-program partial dW rows, summed on the host: no atomics, deterministic.
        self.dwp = torch.empty((self.progs, x.shape[-1]) if self.has_w else (1,), device=x.device,
                               dtype=torch.float32)
        self.dx = torch.empty(x.shape, device=x.device, dtype=x.dtype)

    def args(self) -> tuple:
        """Positional kernel arguments of this side (backward)."""
        x, dy = self.x, self.dy
        return (
            dy, x, self.dx, self.weight if self.has_w else x, self.cos, self.sin, self.rstd, self.dwp,
            self.progs, self.rows, x.shape[1], x.shape[2], dy.stride(0), dy.stride(1), dy.stride(2),
            x.stride(0), x.stride(1), x.stride(2),
            self.cos.stride(0) if self.rope else 0, self.cos.stride(1) if self.rope else 0,
        )

    def meta(self, prefix: str) -> dict:
        """Per-side constexprs."""
        return _side_meta(prefix, self.x.shape[-1], self.r2, self.has_w, self.rope)

    def dweight(self):
        """dW in the weight's dtype, or None."""
        return self.dwp.sum(0).to(self.weight.dtype) if self.has_w else None


def _table(t: torch.Tensor, b: int, length: int) -> torch.Tensor:
    """cos/sin (L, R) or (B, L, R) as a (B, L, R) view with unit last stride (batch stride 0 if shared)."""
    t = t if t.stride(-1) == 1 else t.contiguous()
    if t.dim() == 2:
        t = t[None]
    if t.shape[-2] != length:
        raise ValueError(f"RoPE table has {t.shape[-2]} positions for a sequence of {length}")
    return t.expand(b, length, t.shape[-1])


class NormRope(torch.autograd.Function):
    """RMSNorm (optional) + RoPE (optional) for one or two (B, H, L, D) tensors in one launch each way."""

    @staticmethod
    def forward(ctx, q, k, q_weight, k_weight, q_cos, q_sin, k_cos, k_sin, eps, norm):
        d = q.shape[-1]
        if k is not None and k.shape[-1] != d:
            raise ValueError(f"q and k head dims differ: {d} vs {k.shape[-1]}")
        block_r = rows_per_block(d)
        two = k is not None
        sq = _Side(q, q_weight, q_cos, q_sin, norm, block_r)
        sk = _Side(k, k_weight, k_cos, k_sin, norm, block_r) if two else sq
        grid = (sq.progs + (sk.progs if two else 0),)
        with device_guard(q):
            _nr_fwd[grid](
                *sq.args(), sq.progs, sq.h, sq.l, *sq.x.stride()[:3], sq.cb, sq.cl,
                *sk.args(), sk.h, sk.l, *sk.x.stride()[:3], sk.cb, sk.cl,
                eps, D=d, BLOCK_R=block_r, NORM=norm, TWO=two, **sq.meta("Q"), **sk.meta("K"),
                num_warps=warps_for(block_r, triton.next_power_of_2(d)),
            )
        ctx.save_for_backward(sq.x, sk.x, sq.weight, sk.weight, sq.cos, sq.sin, sk.cos, sk.sin, sq.rstd, sk.rstd)
        ctx.flags = (two, norm, sq.rope, sk.rope, block_r)
        return sq.y, (sk.y if two else None)

    @staticmethod
    def backward(ctx, dq, dk):
        qx, kx, qw, kw, qcos, qsin, kcos, ksin, qrstd, krstd = ctx.saved_tensors
        two, norm, q_rope, k_rope, block_r = ctx.flags
        d = qx.shape[-1]
        cap = num_programs_cap(qx.device)
        sq = _BwdSide(qx, dq, qw, qcos, qsin, qrstd, q_rope, norm, block_r, cap)
        sk = _BwdSide(kx, dk, kw, kcos, ksin, krstd, k_rope, norm, block_r, cap) if two else sq
        grid = (sq.progs + (sk.progs if two else 0),)
        with device_guard(qx):
            _nr_bwd[grid](
                *sq.args(), *sk.args(), D=d, BLOCK_R=block_r, NORM=norm, TWO=two, **sq.meta("Q"), **sk.meta("K"),
                num_warps=warps_for(block_r, triton.next_power_of_2(d)),
            )
        if not two:
            return sq.dx, None, sq.dweight(), None, None, None, None, None, None, None
        return sq.dx, sk.dx, sq.dweight(), sk.dweight(), None, None, None, None, None, None


def norm_rope(q, k=None, q_weight=None, k_weight=None, q_cos=None, q_sin=None, k_cos=None, k_sin=None,
              eps=1e-6, norm=True):
    """Fused RMSNorm/RoPE on q (and k) (B, H, L, D); returns (q, k) with k None when not given."""
    return NormRope.apply(q, k, q_weight, k_weight, q_cos, q_sin, k_cos, k_sin, eps, norm)
