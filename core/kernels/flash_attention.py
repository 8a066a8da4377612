"""Triton flash attention (forward + backward) with key padding masks, any lengths and grouped KV heads.

Layout: q (B, H, Lq, D), k/v (B, Hkv, Lk, D), any strides with a unit stride on D; D in {32, 64, 128}.
Forward is FlashAttention-2: one program per (query block, batch*head), online softmax in base 2
(scores prescaled by scale * log2(e) so the inner loop uses exp2), fp32 accumulators. It stores the
log2-sum-exp per query row for the backward, which recomputes the probabilities:
  - `_bwd_preprocess`: delta = rowsum(o * do)
  - `_attn_bwd_dkdv`: one program per (key block, batch*kv head) sweeps the queries of every q head of
    its group, so grouped KV heads need no reduction afterwards; key blocks without a valid key skip it
  - `_attn_bwd_dq`: one program per (query block, batch*head) sweeps the keys.
Masks: one small launch turns the (B, Lk) mask into a [first, last] valid-key window per batch element;
every loop only visits key blocks overlapping that window (left/right padding costs nothing) and applies
the mask bits, loaded per key block, inside it. A query with no valid key gets output 0 and lse = +inf, so the backward's exp2(s - lse)
is exactly 0 for it and its gradients vanish without a NaN.

This module imports triton at import time: load it only from the triton path of the dispatcher.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from triton import knobs

from . import tiles
from .dispatch import device_guard

# The interpreter is chosen when a kernel is decorated, so it is fixed for this module's lifetime.
INTERPRETED = bool(knobs.runtime.interpret)
LOG2E = 1.4426950408889634
# Tiles the interpreter uses: small enough to exercise multi-block loops and tails on tiny tests.
_INTERP_BLOCK = 16


def _bucket(n: int) -> int:
    """Autotune key for a length: the next power of two, so new lengths reuse a tuned config."""
    return triton.next_power_of_2(max(int(n), 16))


@triton.jit
def _mm(a, b, UPCAST: tl.constexpr):
    """a @ b in fp32; UPCAST routes bf16 through fp32 because the interpreter's dot lacks bf16."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b)


@triton.jit
def _mma(a, b, acc, UPCAST: tl.constexpr):
    """acc + a @ b in fp32, accumulating in place in the MMA; UPCAST as in `_mm`."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc)


@triton.jit
def _fwd_block(
    acc, l_i, m_i, q, k_ptrs, v_ptrs, mask_ptr, start_n, kv_end, offs_n, stride_kl, stride_vl, qk_scale,
    BLOCK_N: tl.constexpr, BOUNDED: tl.constexpr, MASKED: tl.constexpr, UPCAST: tl.constexpr,
):
    """One key block of the online softmax; BOUNDED/MASKED add the tail bound and the mask bits."""
    cols = start_n + offs_n  # (BLOCK_N,)
    if BOUNDED:
        inb = cols < kv_end
        k = tl.load(k_ptrs + start_n * stride_kl, mask=inb[:, None], other=0.0)  # (BLOCK_N, D)
        v = tl.load(v_ptrs + start_n * stride_vl, mask=inb[:, None], other=0.0)
    else:
        k = tl.load(k_ptrs + start_n * stride_kl)
        v = tl.load(v_ptrs + start_n * stride_vl)
    s = _mm(q, tl.trans(k), UPCAST)  # (BLOCK_M, BLOCK_N)
    if MASKED:
        valid = tl.load(mask_ptr + cols, mask=inb, other=0) != 0
        s = tl.where(valid[None, :], s * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # A row that has seen no valid key yet keeps m = -inf; subtracting 0 instead keeps exp2 at 0.
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_sub[:, None])
    elif BOUNDED:
        s = tl.where(inb[None, :], s * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_sub = m_new
        p = tl.exp2(s - m_sub[:, None])
    else:
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        m_sub = m_new
        p = tl.exp2(s * qk_scale - m_sub[:, None])
    alpha = tl.exp2(m_i - m_sub)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = _mma(p.to(v.dtype), v, acc * alpha[:, None], UPCAST)
    return acc, l_i, m_new


@triton.jit
def _attn_fwd(
    Q, K, V, Out, LSE, MASK, WINDOW,
    stride_qb, stride_qh, stride_ql,
    stride_kb, stride_kh, stride_kl,
    stride_vb, stride_vh, stride_vl,
    stride_ob, stride_oh, stride_ol,
    stride_mb,
    H, GROUP, Lq, Lk, qk_scale,
    LQ_KEY, LK_KEY,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_MASK: tl.constexpr, UPCAST: tl.constexpr,
):
    """Forward: O (B, H, Lq, D) and LSE (B, H, Lq) in log2 units (+inf for rows without a valid key)."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    hk = h // GROUP
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < Lq
    q_ptrs = Q + b.to(tl.int64) * stride_qb + h * stride_qh + offs_m[:, None] * stride_ql + offs_d[None, :]
    q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)  # (BLOCK_M, D)
    k_ptrs = K + b.to(tl.int64) * stride_kb + hk * stride_kh + offs_n[:, None] * stride_kl + offs_d[None, :]
    v_ptrs = V + b.to(tl.int64) * stride_vb + hk * stride_vh + offs_n[:, None] * stride_vl + offs_d[None, :]

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    if HAS_MASK:
        # Only key blocks that overlap the [first, last] valid-key window are visited.
        kv_start = tl.load(WINDOW + 2 * b)
        kv_end = tl.load(WINDOW + 2 * b + 1)
        lo = (kv_start // BLOCK_N) * BLOCK_N
        mask_ptr = MASK + b.to(tl.int64) * stride_mb
        for start_n in range(lo, kv_end, BLOCK_N):
            acc, l_i, m_i = _fwd_block(
                acc, l_i, m_i, q, k_ptrs, v_ptrs, mask_ptr, start_n, kv_end, offs_n, stride_kl, stride_vl,
                qk_scale, BLOCK_N, True, True, UPCAST,
            )
    else:
        # Full blocks skip every bound check; only the last, partial block pays for it.
        n_full = (Lk // BLOCK_N) * BLOCK_N
        for start_n in range(0, n_full, BLOCK_N):
            acc, l_i, m_i = _fwd_block(
                acc, l_i, m_i, q, k_ptrs, v_ptrs, MASK, start_n, Lk, offs_n, stride_kl, stride_vl,
                qk_scale, BLOCK_N, False, False, UPCAST,
            )
        if n_full < Lk:
            acc, l_i, m_i = _fwd_block(
                acc, l_i, m_i, q, k_ptrs, v_ptrs, MASK, n_full, Lk, offs_n, stride_kl, stride_vl,
                qk_scale, BLOCK_N, True, False, UPCAST,
            )
    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, float("inf"), m_i + tl.log2(tl.where(empty, 1.0, l_i)))
    o_ptrs = Out + b.to(tl.int64) * stride_ob + h * stride_oh + offs_m[:, None] * stride_ol + offs_d[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None])
    tl.store(LSE + pid_bh.to(tl.int64) * Lq + offs_m, lse, mask=row_ok)


@triton.jit
def _bwd_preprocess(
    Out, DO, DELTA, stride_ob, stride_oh, stride_ol, stride_db, stride_dh, stride_dl, H, Lq,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """delta = rowsum(o * do) in fp32, (B, H, Lq)."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < Lq
    o = tl.load(Out + b.to(tl.int64) * stride_ob + h * stride_oh + offs_m[:, None] * stride_ol + offs_d[None, :],
                mask=row_ok[:, None], other=0.0).to(tl.float32)
    do = tl.load(DO + b.to(tl.int64) * stride_db + h * stride_dh + offs_m[:, None] * stride_dl + offs_d[None, :],
                 mask=row_ok[:, None], other=0.0).to(tl.float32)
    tl.store(DELTA + pid_bh.to(tl.int64) * Lq + offs_m, tl.sum(o * do, 1), mask=row_ok)


@triton.jit
def _attn_bwd_dkdv(
    Q, K, V, DO, LSE, DELTA, DK, DV, MASK, WINDOW,
    stride_qb, stride_qh, stride_ql,
    stride_kb, stride_kh, stride_kl,
    stride_vb, stride_vh, stride_vl,
    stride_db, stride_dh, stride_dl,
    stride_mb,
    H, HKV, GROUP, Lq, Lk, qk_scale, sm_scale,
    LQ_KEY, LK_KEY,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_MASK: tl.constexpr, UPCAST: tl.constexpr,
):
    """dK, dV for one key block of one KV head, summed over the q heads of its group."""
    pid_n = tl.program_id(0)
    pid_bhk = tl.program_id(1)
    b = pid_bhk // HKV
    hk = pid_bhk % HKV
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    col_ok = offs_n < Lk
    k = tl.load(K + b.to(tl.int64) * stride_kb + hk * stride_kh + offs_n[:, None] * stride_kl + offs_d[None, :],
                mask=col_ok[:, None], other=0.0)  # (BLOCK_N, D)
    v = tl.load(V + b.to(tl.int64) * stride_vb + hk * stride_vh + offs_n[:, None] * stride_vl + offs_d[None, :],
                mask=col_ok[:, None], other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    q_stop = Lq
    if HAS_MASK:
        valid = tl.load(MASK + b.to(tl.int64) * stride_mb + offs_n, mask=col_ok, other=0) != 0
        # A key block without a valid key contributes nothing: skip its whole sweep (dK = dV = 0).
        q_stop = Lq * tl.max(valid.to(tl.int32), 0)
    for g in range(0, GROUP):
        h = hk * GROUP + g
        q_base = Q + b.to(tl.int64) * stride_qb + h * stride_qh
        do_base = DO + b.to(tl.int64) * stride_db + h * stride_dh
        row_base = (b * H + h).to(tl.int64) * Lq
        for start_m in range(0, q_stop, BLOCK_M):
            rows = start_m + offs_m
            row_ok = rows < Lq
            q = tl.load(q_base + rows[:, None] * stride_ql + offs_d[None, :], mask=row_ok[:, None], other=0.0)
            do = tl.load(do_base + rows[:, None] * stride_dl + offs_d[None, :], mask=row_ok[:, None], other=0.0)
            # Rows past Lq read lse = +inf, so their probabilities are exactly 0.
            lse = tl.load(LSE + row_base + rows, mask=row_ok, other=float("inf"))
            delta = tl.load(DELTA + row_base + rows, mask=row_ok, other=0.0)
            s_t = _mm(k, tl.trans(q), UPCAST)  # (BLOCK_N, BLOCK_M)
            p_t = tl.exp2(s_t * qk_scale - lse[None, :])
            if HAS_MASK:
                p_t = tl.where(valid[:, None], p_t, 0.0)
            dv = _mma(p_t.to(do.dtype), do, dv, UPCAST)
            dp_t = _mm(v, tl.trans(do), UPCAST)  # (BLOCK_N, BLOCK_M)
            ds_t = p_t * (dp_t - delta[None, :])
            dk = _mma(ds_t.to(q.dtype), q, dk, UPCAST)
    dk = dk * sm_scale
    dk_ptrs = DK + pid_bhk.to(tl.int64) * Lk * HEAD_DIM + offs_n[:, None] * HEAD_DIM + offs_d[None, :]
    dv_ptrs = DV + pid_bhk.to(tl.int64) * Lk * HEAD_DIM + offs_n[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(dk_ptrs, dk.to(DK.dtype.element_ty), mask=col_ok[:, None])
    tl.store(dv_ptrs, dv.to(DV.dtype.element_ty), mask=col_ok[:, None])


@triton.jit
def _dq_block(
    dq, q, do, lse, delta, k_ptrs, v_ptrs, mask_ptr, start_n, kv_end, offs_n, stride_kl, stride_vl, qk_scale,
    BOUNDED: tl.constexpr, MASKED: tl.constexpr, UPCAST: tl.constexpr,
):
    """dQ contribution of one key block."""
    cols = start_n + offs_n
    if BOUNDED:
        inb = cols < kv_end
        k = tl.load(k_ptrs + start_n * stride_kl, mask=inb[:, None], other=0.0)
        v = tl.load(v_ptrs + start_n * stride_vl, mask=inb[:, None], other=0.0)
    else:
        k = tl.load(k_ptrs + start_n * stride_kl)
        v = tl.load(v_ptrs + start_n * stride_vl)
    s = _mm(q, tl.trans(k), UPCAST)  # (BLOCK_M, BLOCK_N)
    p = tl.exp2(s * qk_scale - lse[:, None])
    if MASKED:
        valid = tl.load(mask_ptr + cols, mask=inb, other=0) != 0
        p = tl.where(valid[None, :], p, 0.0)
    elif BOUNDED:
        p = tl.where(inb[None, :], p, 0.0)
    dp = _mm(do, tl.trans(v), UPCAST)  # (BLOCK_M, BLOCK_N)
    ds = p * (dp - delta[:, None])
    return _mma(ds.to(k.dtype), k, dq, UPCAST)


@triton.jit
def _attn_bwd_dq(
    Q, K, V, DO, LSE, DELTA, DQ, MASK, WINDOW,
    stride_qb, stride_qh, stride_ql,
    stride_kb, stride_kh, stride_kl,
    stride_vb, stride_vh, stride_vl,
    stride_db, stride_dh, stride_dl,
    stride_mb,
    H, GROUP, Lq, Lk, qk_scale, sm_scale,
    LQ_KEY, LK_KEY,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_MASK: tl.constexpr, UPCAST: tl.constexpr,
):
    """dQ for one query block of one head."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    hk = h // GROUP
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < Lq
    q = tl.load(Q + b.to(tl.int64) * stride_qb + h * stride_qh + offs_m[:, None] * stride_ql + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + b.to(tl.int64) * stride_db + h * stride_dh + offs_m[:, None] * stride_dl + offs_d[None, :],
                 mask=row_ok[:, None], other=0.0)
    lse = tl.load(LSE + pid_bh.to(tl.int64) * Lq + offs_m, mask=row_ok, other=float("inf"))
    delta = tl.load(DELTA + pid_bh.to(tl.int64) * Lq + offs_m, mask=row_ok, other=0.0)
    k_ptrs = K + b.to(tl.int64) * stride_kb + hk * stride_kh + offs_n[:, None] * stride_kl + offs_d[None, :]
    v_ptrs = V + b.to(tl.int64) * stride_vb + hk * stride_vh + offs_n[:, None] * stride_vl + offs_d[None, :]
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    if HAS_MASK:
        kv_start = tl.load(WINDOW + 2 * b)
        kv_end = tl.load(WINDOW + 2 * b + 1)
        lo = (kv_start // BLOCK_N) * BLOCK_N
        mask_ptr = MASK + b.to(tl.int64) * stride_mb
        for start_n in range(lo, kv_end, BLOCK_N):
            dq = _dq_block(dq, q, do, lse, delta, k_ptrs, v_ptrs, mask_ptr, start_n, kv_end, offs_n,
                           stride_kl, stride_vl, qk_scale, True, True, UPCAST)
    else:
        n_full = (Lk // BLOCK_N) * BLOCK_N
        for start_n in range(0, n_full, BLOCK_N):
            dq = _dq_block(dq, q, do, lse, delta, k_ptrs, v_ptrs, MASK, start_n, Lk, offs_n,
                           stride_kl, stride_vl, qk_scale, False, False, UPCAST)
        if n_full < Lk:
            dq = _dq_block(dq, q, do, lse, delta, k_ptrs, v_ptrs, MASK, n_full, Lk, offs_n,
                           stride_kl, stride_vl, qk_scale, True, False, UPCAST)
    dq = dq * sm_scale
    dq_ptrs = DQ + pid_bh.to(tl.int64) * Lq * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(dq_ptrs, dq.to(DQ.dtype.element_ty), mask=row_ok[:, None])


# ---------------------------------------------------------------------------------------------------------
# Autotuning (GPU only). The tiles per kernel, head dim, mask and GPU family live in tiles.py, which the
# ahead-of-time compile check enumerates too (no spills, shared memory within the family's limit). The key
# buckets lengths to powers of two, so a new length reuses its bucket's pick instead of re-tuning; picks
# are cached on disk across processes.

_KEY = ["LQ_KEY", "LK_KEY", "HEAD_DIM", "HAS_MASK", "GROUP"]
_tuned: dict[str, object] = {}


def _tile(c) -> tuple[int, int, int, int]:
    """A config as (BLOCK_M, BLOCK_N, num_warps, num_stages)."""
    return c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages


def _pruner(name: str):
    """Keep the configs `tiles.pick_tiles` allows on the GPU of this launch."""

    def prune(configs, named_args, **kwargs):
        d = kwargs.get("HEAD_DIM", named_args.get("HEAD_DIM"))
        has_mask = bool(kwargs.get("HAS_MASK", named_args.get("HAS_MASK")))
        capability = torch.cuda.get_device_capability(named_args["Q"].device)
        keep = set(tiles.pick_tiles(name, d, has_mask, capability, named_args["LQ_KEY"], named_args["LK_KEY"]))
        return [c for c in configs if _tile(c) in keep]

    return prune


def _kernel(name: str):
    """The launchable kernel: autotuned on the GPU, the plain interpreted function otherwise."""
    base = {"fwd": _attn_fwd, "dkdv": _attn_bwd_dkdv, "dq": _attn_bwd_dq}[name]
    if INTERPRETED:
        return base
    if name not in _tuned:
        configs = [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
                   for m, n, w, s in tiles.all_attention_tiles(name)]
        _tuned[name] = triton.autotune(
            configs=configs, key=_KEY, prune_configs_by={"early_config_prune": _pruner(name)}, cache_results=True
        )(base)
    return _tuned[name]


def _meta(**fixed) -> dict:
    """Launch meta-parameters: fixed tiles in the interpreter, none (autotuned) on the GPU."""
    return {"BLOCK_M": _INTERP_BLOCK, "BLOCK_N": _INTERP_BLOCK, **fixed} if INTERPRETED else fixed


def _unit_last(t: torch.Tensor) -> torch.Tensor:
    """Kernels index the last dim densely; anything else gets one copy."""
    return t if t.stride(-1) == 1 else t.contiguous()


@triton.jit
def _mask_window_kernel(MASK, WINDOW, Lk, stride_mb, BLOCK: tl.constexpr):
    """WINDOW[b] = (first valid key, last valid key + 1); (Lk, 0) when element b has no valid key."""
    b = tl.program_id(0)
    first = tl.full([], Lk, tl.int32)
    last = tl.full([], 0, tl.int32)
    for start in range(0, Lk, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        valid = tl.load(MASK + b.to(tl.int64) * stride_mb + idx, mask=idx < Lk, other=0) != 0
        first = tl.minimum(first, tl.min(tl.where(valid, idx, Lk), 0))
        last = tl.maximum(last, tl.max(tl.where(valid, idx + 1, 0), 0))
    tl.store(WINDOW + 2 * b, first)
    tl.store(WINDOW + 2 * b + 1, last)


def _mask_window(mask: torch.Tensor, lk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, Lk) bool -> uint8 mask bits (a zero-copy view) and the valid-key window (B, 2) int32, one launch."""
    mask = mask if mask.stride(-1) == 1 else mask.contiguous()
    bits = mask.view(torch.uint8)
    window = torch.empty((mask.shape[0], 2), device=mask.device, dtype=torch.int32)
    block = min(triton.next_power_of_2(max(lk, 16)), 16 if INTERPRETED else 4096)
    _mask_window_kernel[(mask.shape[0],)](bits, window, lk, bits.stride(0), BLOCK=block)
    return bits, window


def _flash_fwd(q, k, v, mask, scale):
    """Launch the forward; returns o (B, H, Lq, D), lse (B, H, Lq) fp32 in log2 units, mask bits, window."""
    b, h, lq, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    o = torch.empty((b, h, lq, d), device=q.device, dtype=q.dtype)
    lse = torch.empty((b, h, lq), device=q.device, dtype=torch.float32)
    bits, window = (None, None) if mask is None else _mask_window(mask, lk)
    upcast = INTERPRETED and q.dtype == torch.bfloat16

    def grid(meta):
        return (triton.cdiv(lq, meta["BLOCK_M"]), b * h)

    _kernel("fwd")[grid](
        q, k, v, o, lse, o if bits is None else bits, o if window is None else window,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        o.stride(0), o.stride(1), o.stride(2),
        0 if bits is None else bits.stride(0),
        h, h // hkv, lq, lk, scale * LOG2E,
        _bucket(lq), _bucket(lk),
        **_meta(HEAD_DIM=d, HAS_MASK=bits is not None, UPCAST=upcast),
    )
    return o, lse, bits, window


def _flash_bwd(do, q, k, v, o, lse, bits, window, scale, need_dq=True, need_dkv=True):
    """Launch the backward; returns dq, dk, dv shaped like q, k, v (None for those not needed)."""
    b, h, lq, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    delta = torch.empty_like(lse)
    pre_block = 16 if INTERPRETED else 64
    _bwd_preprocess[(triton.cdiv(lq, pre_block), b * h)](
        o, do, delta, o.stride(0), o.stride(1), o.stride(2), do.stride(0), do.stride(1), do.stride(2),
        h, lq, HEAD_DIM=d, BLOCK_M=pre_block,
    )
    dq = torch.empty((b, h, lq, d), device=q.device, dtype=q.dtype) if need_dq else None
    dk = torch.empty((b, hkv, lk, d), device=k.device, dtype=k.dtype) if need_dkv else None
    dv = torch.empty((b, hkv, lk, d), device=v.device, dtype=v.dtype) if need_dkv else None
    has_mask = bits is not None
    if not has_mask:
        bits, window = lse, lse  # never read: HAS_MASK is False
    upcast = INTERPRETED and q.dtype == torch.bfloat16
    common = (
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        do.stride(0), do.stride(1), do.stride(2),
        bits.stride(0) if has_mask else 0,
    )
    meta = _meta(HEAD_DIM=d, HAS_MASK=has_mask, UPCAST=upcast)

    def grid_kv(m):
        return (triton.cdiv(lk, m["BLOCK_N"]), b * hkv)

    def grid_q(m):
        return (triton.cdiv(lq, m["BLOCK_M"]), b * h)

    if need_dkv:  # frozen keys/values (e.g. a fixed conditioning) skip the dK/dV sweep entirely
        _kernel("dkdv")[grid_kv](
            q, k, v, do, lse, delta, dk, dv, bits, window, *common,
            h, hkv, h // hkv, lq, lk, scale * LOG2E, scale, _bucket(lq), _bucket(lk), **meta,
        )
    if need_dq:
        _kernel("dq")[grid_q](
            q, k, v, do, lse, delta, dq, bits, window, *common,
            h, h // hkv, lq, lk, scale * LOG2E, scale, _bucket(lq), _bucket(lk), **meta,
        )
    return dq, dk, dv


class FlashAttention(torch.autograd.Function):
    """Autograd wrapper: saves q, k, v, o and the per-row log-sum-exp; recomputes P in the backward."""

    @staticmethod
    def forward(ctx, q, k, v, key_padding_mask, scale):
        q, k, v = _unit_last(q), _unit_last(k), _unit_last(v)
        mask = None
        if key_padding_mask is not None:
            mask = key_padding_mask.to(device=q.device, dtype=torch.bool)
        with device_guard(q):
            o, lse, bits, window = _flash_fwd(q, k, v, mask, scale)
        ctx.save_for_backward(q, k, v, o, lse, bits, window)
        ctx.scale = scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, bits, window = ctx.saved_tensors
        need_dq = ctx.needs_input_grad[0]
        need_dkv = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        with device_guard(q):
            dq, dk, dv = _flash_bwd(_unit_last(do), q, k, v, o, lse, bits, window, ctx.scale, need_dq, need_dkv)
        return dq, dk, dv, None, None


def flash_attention(q, k, v, key_padding_mask=None, scale=None):
    """Fused attention, q (B, H, Lq, D), k/v (B, Hkv, Lk, D), mask (B, Lk) True = valid -> (B, H, Lq, D)."""
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"attention scale must be finite, got {scale}")
    return FlashAttention.apply(q, k, v, key_padding_mask, scale)
