"""Triton row kernels for short sequences, where launches dominate: each op is one forward launch and one
backward launch (plus a tiny torch sum over per-program partials for broadcast weights).

- `qk_norm_rope`: RMSNorm over the head dim, then (partial) half-split RoPE, for q AND k in one launch
  (programs [0, Pq) handle q, [Pq, Pq + Pk) handle k). `rms_norm` and `apply_rope` are the same kernel
  with one side. Reads strided (B, H, L, D) views, e.g. heads sliced out of a fused QKV projection.
- `adaln_modulate`: LayerNorm without affine, then * (1 + scale) + shift.
- `gated_residual`: x + gate * y.
All math is fp32 in registers; inputs and outputs keep their dtype. cos/sin tables get no gradient here
(the dispatcher sends trainable tables to the PyTorch path).
This module imports triton at import time: load it only from the triton path of the dispatcher.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from triton import knobs

from .dispatch import device_guard

INTERPRETED = bool(knobs.runtime.interpret)


@functools.cache
def _sm_count(index: int) -> int:
    """Streaming multiprocessors of a GPU (cached: this sits on the launch path)."""
    return torch.cuda.get_device_properties(index).multi_processor_count


def _num_programs_cap(device: torch.device) -> int:
    """Programs for the persistent backward loops: 4 per SM on the GPU, a handful in the interpreter."""
    if INTERPRETED or device.type != "cuda":
        return 3
    return 4 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def _rows_per_block(width: int) -> int:
    """Rows per program: ~2K values per tile (interpreter: 4 rows, to exercise multi-block tails).

    These kernels are memory bound; small tiles at ~8 values per thread keep registers under ~100 so
    several programs share an SM and hide latency (checked with ptxas for sm_90).
    """
    if INTERPRETED:
        return 4
    return max(1, min(64, 2048 // triton.next_power_of_2(width)))


def _warps(block_rows: int, block_width: int) -> int:
    """One warp per 256 values of the tile (~8 per thread), 4 to 16."""
    return min(16, max(4, block_rows * block_width // 256))


# ---------------------------------------------------------------------------------------------------------
# RMSNorm + RoPE over rows of a (B, H, L, D) view.


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
        block_r = _rows_per_block(d)
        two = k is not None
        sq = _Side(q, q_weight, q_cos, q_sin, norm, block_r)
        sk = _Side(k, k_weight, k_cos, k_sin, norm, block_r) if two else sq
        grid = (sq.progs + (sk.progs if two else 0),)
        with device_guard(q):
            _nr_fwd[grid](
                *sq.args(), sq.progs, sq.h, sq.l, *sq.x.stride()[:3], sq.cb, sq.cl,
                *sk.args(), sk.h, sk.l, *sk.x.stride()[:3], sk.cb, sk.cl,
                eps, D=d, BLOCK_R=block_r, NORM=norm, TWO=two, **sq.meta("Q"), **sk.meta("K"),
                num_warps=_warps(block_r, triton.next_power_of_2(d)),
            )
        ctx.save_for_backward(sq.x, sk.x, sq.weight, sk.weight, sq.cos, sq.sin, sk.cos, sk.sin, sq.rstd, sk.rstd)
        ctx.flags = (two, norm, sq.rope, sk.rope, block_r)
        return sq.y, (sk.y if two else None)

    @staticmethod
    def backward(ctx, dq, dk):
        qx, kx, qw, kw, qcos, qsin, kcos, ksin, qrstd, krstd = ctx.saved_tensors
        two, norm, q_rope, k_rope, block_r = ctx.flags
        d = qx.shape[-1]
        cap = _num_programs_cap(qx.device)
        sq = _BwdSide(qx, dq, qw, qcos, qsin, qrstd, q_rope, norm, block_r, cap)
        sk = _BwdSide(kx, dk, kw, kcos, ksin, krstd, k_rope, norm, block_r, cap) if two else sq
        grid = (sq.progs + (sk.progs if two else 0),)
        with device_guard(qx):
            _nr_bwd[grid](
                *sq.args(), *sk.args(), D=d, BLOCK_R=block_r, NORM=norm, TWO=two, **sq.meta("Q"), **sk.meta("K"),
                num_warps=_warps(block_r, triton.next_power_of_2(d)),
            )
        if not two:
            return sq.dx, None, sq.dweight(), None, None, None, None, None, None, None
        return sq.dx, sk.dx, sq.dweight(), sk.dweight(), None, None, None, None, None, None


def norm_rope(q, k=None, q_weight=None, k_weight=None, q_cos=None, q_sin=None, k_cos=None, k_sin=None,
              eps=1e-6, norm=True):
    """Fused RMSNorm/RoPE on q (and k) (B, H, L, D); returns (q, k) with k None when not given."""
    return NormRope.apply(q, k, q_weight, k_weight, q_cos, q_sin, k_cos, k_sin, eps, norm)


# ---------------------------------------------------------------------------------------------------------
# adaLN modulation and the gated residual over (B, L, W).


@triton.jit
def _load_mod(PTR, b, rows, cols, rmask, cmask, sb, sl, sw, PER_TOKEN: tl.constexpr):
    """A modulation tile (BLOCK_R, BLOCK_W) fp32: per token, or one row broadcast over the tokens."""
    if PER_TOKEN:
        ptrs = PTR + b.to(tl.int64) * sb + rows[:, None].to(tl.int64) * sl + cols[None, :] * sw
        val = tl.load(ptrs, mask=rmask[:, None] & cmask[None, :], other=0.0)
    else:
        val = tl.load(PTR + b.to(tl.int64) * sb + cols * sw, mask=cmask, other=0.0)[None, :]
    return val.to(tl.float32)


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
    shift = _load_mod(SHIFT, b, rows, cols, rmask, cmask, shb, shl, shw, SH_TOK)
    scale = _load_mod(SCALE, b, rows, cols, rmask, cmask, scb, scl, scw, SC_TOK)
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
        scale = _load_mod(SCALE, b, rows, cols, rmask, cmask, scb, scl, scw, SC_TOK)
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
    g = _load_mod(G, b, rows, cols, rmask, cmask, sgb, sgl, sgw, G_TOK)
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
        g = _load_mod(G, b, rows, cols, rmask, cmask, sgb, sgl, sgw, G_TOK)
        tl.store(DY + tok[:, None] * W + cols[None, :], (do * g).to(DY.dtype.element_ty), mask=m2)
        if G_TOK:
            tl.store(DG + tok[:, None] * W + cols[None, :], do * y, mask=m2)
        else:
            dg_acc += tl.sum(do * y, 0)
    if not G_TOK:
        tl.store(DG + (b.to(tl.int64) * n_chunks + pid) * W + cols, dg_acc, mask=cmask)


def _mod_view(mod: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Broadcast a modulation to x (B, L, W) without copying; True when it varies across tokens."""
    m = mod[:, None, :] if mod.dim() == 2 else mod
    m = m.expand(x.shape)
    return m, x.shape[1] > 1 and m.stride(1) != 0


def _row_geometry(x: torch.Tensor) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_W, num_warps) for rows of width W."""
    block_w = triton.next_power_of_2(x.shape[-1])
    block_r = _rows_per_block(x.shape[-1])
    return block_r, block_w, _warps(block_r, block_w)


def _chunks(x: torch.Tensor, block_r: int) -> tuple[int, int]:
    """Split each batch element's L tokens into chunks for the reducing backward: (chunks, rows each).

    Enough chunks to fill the GPU, few enough that the partial sums stay small next to the inputs.
    """
    b, length = x.shape[0], x.shape[1]
    blocks = triton.cdiv(length, block_r)
    # ~4 programs per SM keep enough loads in flight; three chunks per element in the interpreter.
    target = 3 * b if INTERPRETED or x.device.type != "cuda" else _num_programs_cap(x.device)
    chunks = max(1, min(blocks, triton.cdiv(target, b)))
    rows = triton.cdiv(triton.cdiv(length, chunks), block_r) * block_r
    return triton.cdiv(length, rows), rows


def _reduce_partials(part: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
    """(B, chunks, W) fp32 partial sums -> gradient shaped and typed like the (broadcast) modulation."""
    return part.sum(1, keepdim=True).sum_to_size(_as_3d(mod).shape).reshape(mod.shape).to(mod.dtype)


def _per_token_grad(full: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
    """(B, L, W) gradient -> shaped and typed like the modulation (summing broadcast dims)."""
    return full.sum_to_size(_as_3d(mod).shape).reshape(mod.shape).to(mod.dtype)


def _as_3d(mod: torch.Tensor) -> torch.Tensor:
    """(B, W) -> (B, 1, W); other shapes unchanged."""
    return mod[:, None, :] if mod.dim() == 2 else mod


class AdaLNModulate(torch.autograd.Function):
    """LayerNorm (no affine) * (1 + scale) + shift over x (B, L, W), one launch forward and backward."""

    @staticmethod
    def forward(ctx, x, shift, scale, eps):
        x = x if x.stride(-1) == 1 else x.contiguous()
        b, length, w = x.shape
        sh, sh_tok = _mod_view(shift, x)
        sc, sc_tok = _mod_view(scale, x)
        block_r, block_w, warps = _row_geometry(x)
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
        sc, sc_tok = _mod_view(scale, x)
        block_r, block_w, warps = _row_geometry(x)
        chunks, rows = _chunks(x, block_r)
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
            g_shift = _per_token_grad(dy.float(), shift_like)
        else:
            g_shift = _reduce_partials(dshift, shift_like)
        g_scale = _per_token_grad(dscale, scale) if sc_tok else _reduce_partials(dscale, scale)
        return dx, g_shift, g_scale, None


class GatedResidual(torch.autograd.Function):
    """x + gate * y over (B, L, W), one launch forward and backward (dx is the incoming gradient)."""

    @staticmethod
    def forward(ctx, x, gate, y):
        x = x if x.stride(-1) == 1 else x.contiguous()
        y = y if y.stride(-1) == 1 else y.contiguous()
        b, length, w = x.shape
        g, g_tok = _mod_view(gate, x)
        block_r, block_w, warps = _row_geometry(x)
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
        g, g_tok = _mod_view(gate, y)
        block_r, block_w, warps = _row_geometry(y)
        chunks, rows = _chunks(y, block_r)
        dy = torch.empty((b, length, w), device=y.device, dtype=y.dtype)
        dg = torch.empty((b, length, w) if g_tok else (b, chunks, w), device=y.device, dtype=torch.float32)
        with device_guard(y):
            _gated_bwd[(chunks, b)](
                dout, g, y, dy, dg, length, w, rows, dout.stride(0), dout.stride(1), y.stride(0), y.stride(1),
                g.stride(0), g.stride(1), g.stride(2),
                BLOCK_R=block_r, BLOCK_W=block_w, G_TOK=g_tok, num_warps=warps,
            )
        dgate = _per_token_grad(dg, gate) if g_tok else _reduce_partials(dg, gate)
        return dout.to(ctx.x_dtype), dgate, dy
