"""Attention kernels against the float32 matmul-softmax reference: forward, dq, dk, dv, masks, GQA.

Without a GPU the Triton kernel runs on the CPU interpreter (tests/kernels/conftest.py) at tiny shapes;
`pytest -m cuda tests/kernels` runs the same checks at the model's real sizes.
"""

from __future__ import annotations

import pytest
import torch

from tests.kernels.kernel_asserts import assert_no_worse_than, assert_verbose_allclose, tolerances
from vssflow.core.kernels import attention, resolve_backend
from vssflow.core.kernels.dispatch import interpret_enabled

HAS_CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if HAS_CUDA else "cpu")
# The GPU kernel takes fp16/bf16; the interpreter also takes fp32 (the tightest check of the algorithm).
DTYPES = [torch.float16, torch.bfloat16] if HAS_CUDA else [torch.float32, torch.float16, torch.bfloat16]
cuda = pytest.mark.cuda
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


def require_triton(dtype: torch.dtype, head_dim: int) -> None:
    """Make sure "triton" really runs the kernel here; a silent fallback would make the test vacuous."""
    if DEVICE.type == "cpu" and not interpret_enabled():
        pytest.skip("TRITON_INTERPRET is disabled")
    got = resolve_backend("triton", DEVICE, op="attention", dtype=dtype, head_dim=head_dim)
    assert got == "triton", f"triton attention unavailable for {dtype}, D={head_dim} on {DEVICE}"


def make_inputs(b, h, hkv, lq, lk, d, dtype, mask_kind, seed=0):
    """q (B, H, Lq, D), k/v (B, Hkv, Lk, D) requiring grad, an optional (B, Lk) mask and a dout."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, lq, d, generator=g).to(DEVICE, dtype)
    k = torch.randn(b, hkv, lk, d, generator=g).to(DEVICE, dtype)
    v = torch.randn(b, hkv, lk, d, generator=g).to(DEVICE, dtype)
    dout = torch.randn(b, h, lq, d, generator=g).to(DEVICE, dtype)
    mask = None
    if mask_kind == "random":
        mask = torch.rand(b, lk, generator=g) > 0.3
        mask[:, 0] = True  # keep at least one valid key per element
    elif mask_kind == "padded":
        lengths = torch.randint(1, lk + 1, (b,), generator=g)
        mask = torch.arange(lk)[None, :] < lengths[:, None]
    elif mask_kind == "left_padded":  # valid keys at the end, e.g. left-aligned context windows
        lengths = torch.randint(1, lk + 1, (b,), generator=g)
        mask = torch.arange(lk)[None, :] >= (lk - lengths)[:, None]
    elif mask_kind == "empty_row":
        mask = torch.rand(b, lk, generator=g) > 0.5
        mask[0] = False  # batch element 0 has no valid key at all
    if mask is not None:
        mask = mask.to(DEVICE)
    return q, k, v, mask, dout


def run(backend, q, k, v, mask, dout, scale=None):
    """Forward + backward on fresh leaves; returns out, dq, dk, dv."""
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out = attention(q, k, v, key_padding_mask=mask, backend=backend, scale=scale)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), dout)
    return out, dq, dk, dv


def compare(actual, expected, dtype, what):
    """Forward and all three gradients, each with the dtype's tolerance (gradients a bit looser)."""
    for name, a, e, loosen in zip(("out", "dq", "dk", "dv"), actual, expected, (1, 2, 2, 2), strict=True):
        assert a.dtype == e.dtype, f"{what} {name}: dtype {a.dtype} != {e.dtype}"
        atol, rtol = tolerances(dtype, loosen)
        assert_verbose_allclose(a, e, atol, rtol, name=f"{what} {name}")


# (B, H, Hkv, Lq, Lk, D): 1-token queries and keys, odd lengths, cross-attention both ways, GQA, all D.
SHAPES = [
    (1, 1, 1, 1, 1, 32),
    (2, 2, 1, 7, 37, 32),
    (1, 2, 2, 37, 7, 64),
    (2, 2, 1, 40, 1, 64),
    (1, 2, 1, 33, 40, 128),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("mask_kind", [None, "random"])
def test_triton_matches_reference_fp32_or_fp16(shape, mask_kind):
    dtype = DTYPES[0]
    require_triton(dtype, shape[-1])
    inputs = make_inputs(*shape, dtype, mask_kind)
    compare(run("triton", *inputs), run("reference", *inputs), dtype, f"triton {shape} {mask_kind}")


@pytest.mark.parametrize("dtype", DTYPES[-2:], ids=str)
@pytest.mark.parametrize("mask_kind", ["padded", "left_padded", "empty_row"])
def test_triton_low_precision_with_masks(dtype, mask_kind):
    shape = (2, 2, 1, 21, 37, 64)
    require_triton(dtype, shape[-1])
    inputs = make_inputs(*shape, dtype, mask_kind, seed=1)
    compare(run("triton", *inputs), run("reference", *inputs), dtype, f"triton {dtype} {mask_kind}")


@pytest.mark.parametrize("backend", ["triton", "sdpa", "reference"])
def test_fully_masked_rows_are_zero_with_zero_grads(backend):
    dtype = DTYPES[0]
    if backend == "triton":
        require_triton(dtype, 32)
    q, k, v, mask, dout = make_inputs(2, 2, 1, 5, 19, 32, dtype, "empty_row", seed=2)
    out, dq, dk, dv = run(backend, q, k, v, mask, dout)
    for name, t in (("out", out), ("dq", dq), ("dk", dk), ("dv", dv)):
        assert torch.isfinite(t).all(), f"{backend} {name} has NaN/Inf"
        assert torch.count_nonzero(t[0]) == 0, f"{backend} {name} is not zero for the fully masked element"
    assert torch.count_nonzero(out[1]) > 0  # the other element is untouched
    # Masked keys of the live element receive no gradient either.
    dead = ~mask[1]
    assert torch.count_nonzero(dk[1][:, dead]) == 0 and torch.count_nonzero(dv[1][:, dead]) == 0


@pytest.mark.parametrize("mask_kind", [None, "random", "empty_row"])
def test_sdpa_matches_reference(mask_kind):
    dtype = torch.float32
    inputs = make_inputs(2, 4, 2, 13, 29, 32, dtype, mask_kind, seed=3)
    compare(run("sdpa", *inputs), run("reference", *inputs), dtype, f"sdpa {mask_kind}")


def test_triton_custom_scale_and_strided_inputs():
    """q/k/v sliced out of a fused (B, L, 3, H, D) projection (non-contiguous) and a non-default scale."""
    dtype = DTYPES[0]
    require_triton(dtype, 32)
    b, length, h, d = 2, 23, 2, 32
    g = torch.Generator().manual_seed(4)
    qkv = torch.randn(b, length, 3, h, d, generator=g).to(DEVICE, dtype)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (B, H, L, D) views
    assert not q.is_contiguous()
    mask = (torch.rand(b, length, generator=g) > 0.2).to(DEVICE)
    dout = torch.randn(b, h, length, d, generator=g).to(DEVICE, dtype)
    got = run("triton", q, k, v, mask, dout, scale=0.3)
    want = run("reference", q, k, v, mask, dout, scale=0.3)
    compare(got, want, dtype, "triton strided")


def test_backends_agree_on_cross_attention_gqa():
    dtype = DTYPES[0]
    require_triton(dtype, 64)
    inputs = make_inputs(2, 4, 2, 9, 26, 64, dtype, "padded", seed=5)
    ref = run("reference", *inputs)
    for backend in ("triton", "sdpa"):
        compare(run(backend, *inputs), ref, dtype, backend)


# ---------------------------------------------------------------------------------------------------------
# Real sizes on a GPU.

CUDA_SHAPES = [
    (32, 24, 24, 251, 251, 64),  # the paper model's audio self-attention
    (32, 24, 24, 251, 101, 64),  # audio queries x video keys
    (4, 16, 16, 1024, 1024, 128),
    (2, 16, 4, 2047, 1000, 128),  # GQA, odd lengths
    (3, 8, 8, 130, 4099, 32),
]


def lowp_attention(q, k, v, mask, dout):
    """The same attention done naively in the inputs' dtype: the error a kernel is allowed (x2)."""
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    rep = q.shape[1] // k.shape[1]
    kk, vv = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    s = (q @ kk.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if mask is not None:
        s = s.masked_fill(~mask[:, None, None, :], float("-inf"))
    p = torch.softmax(s.float(), -1).nan_to_num(0.0).to(q.dtype)
    out = p @ vv
    return (out, *torch.autograd.grad(out, (q, k, v), dout))


@cuda
@needs_cuda
@pytest.mark.parametrize("shape", CUDA_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("mask_kind", [None, "padded"])
def test_cuda_real_sizes(shape, dtype, mask_kind):
    require_triton(dtype, shape[-1])
    inputs = make_inputs(*shape, dtype, mask_kind, seed=6)
    got = run("triton", *inputs)
    truth = run("reference", *inputs)
    base = lowp_attention(*inputs)
    for name, a, t, bl in zip(("out", "dq", "dk", "dv"), got, truth, base, strict=True):
        assert_no_worse_than(a, bl, t, name=f"{shape} {dtype} {mask_kind} {name}", floor=1e-3)


@cuda
@needs_cuda
def test_cuda_auto_picks_triton_and_empty_rows(monkeypatch):
    monkeypatch.delenv("VSSFLOW_ATTENTION_BACKEND", raising=False)
    assert resolve_backend("auto", DEVICE, op="attention", dtype=torch.bfloat16, head_dim=64) in ("triton",)
    q, k, v, mask, dout = make_inputs(8, 4, 4, 300, 257, 64, torch.bfloat16, "empty_row", seed=7)
    out, dq, dk, dv = run("auto", q, k, v, mask, dout)
    for t in (out, dq, dk, dv):
        assert torch.isfinite(t).all() and torch.count_nonzero(t[0]) == 0


def test_triton_grads_only_for_inputs_that_need_them():
    """Frozen k/v (a fixed conditioning) skip the dK/dV kernel; frozen q skips dQ; values still match."""
    dtype = DTYPES[0]
    require_triton(dtype, 32)
    q, k, v, mask, dout = make_inputs(1, 2, 1, 9, 17, 32, dtype, "padded", seed=8)
    want = run("reference", q, k, v, mask, dout)
    qq = q.detach().clone().requires_grad_(True)
    (dq,) = torch.autograd.grad(attention(qq, k, v, key_padding_mask=mask, backend="triton"), (qq,), dout)
    assert_verbose_allclose(dq, want[1], *tolerances(dtype, 2), name="dq alone")
    kk, vv = k.detach().clone().requires_grad_(True), v.detach().clone().requires_grad_(True)
    dk, dv = torch.autograd.grad(attention(q, kk, vv, key_padding_mask=mask, backend="triton"), (kk, vv), dout)
    assert_verbose_allclose(dk, want[2], *tolerances(dtype, 2), name="dk alone")
    assert_verbose_allclose(dv, want[3], *tolerances(dtype, 2), name="dv alone")
