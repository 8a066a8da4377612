"""Fused row kernels (RMSNorm, RoPE, qk-norm+RoPE, adaLN modulation, gated residual) against the
plain PyTorch references: outputs and the gradients of every input and weight."""

from __future__ import annotations

import math

import pytest
import torch

from tests.kernels.kernel_asserts import assert_verbose_allclose, tolerances
from vssflow.core.kernels import (
    adaln_modulate,
    apply_rope,
    gated_residual,
    qk_norm_rope,
    resolve_backend,
    rms_norm,
    rope_cos_sin,
)
from vssflow.core.kernels.dispatch import interpret_enabled

HAS_CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if HAS_CUDA else "cpu")
DTYPES = [torch.float32, torch.bfloat16]
cuda = pytest.mark.cuda
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


def require_triton(op: str, dtype: torch.dtype) -> None:
    """The triton path must really run (no silent fallback) for these comparisons to mean anything."""
    if DEVICE.type == "cpu" and not interpret_enabled():
        pytest.skip("TRITON_INTERPRET is disabled")
    assert resolve_backend("triton", DEVICE, op=op, dtype=dtype) == "triton"


def rand(*shape, dtype, seed=0):
    """A reproducible random tensor on the test device."""
    g = torch.Generator().manual_seed(seed + sum(shape))
    return torch.randn(*shape, generator=g).to(DEVICE, dtype)


def check_op(fn, inputs: dict, dtype: torch.dtype, what: str, loosen: float = 1.0):
    """Run fn(**inputs, backend=...) on triton and reference; compare outputs and every input's grad."""
    results = {}
    for backend in ("triton", "reference"):
        leaves = {
            k: (v.detach().clone().requires_grad_(True) if isinstance(v, torch.Tensor) and v.is_floating_point()
                else v)
            for k, v in inputs.items()
        }
        out = fn(**leaves, backend=backend)
        outs = out if isinstance(out, tuple) else (out,)
        g = torch.Generator().manual_seed(123)
        douts = [torch.randn(o.shape, generator=g).to(o.device, o.dtype) for o in outs]
        torch.autograd.backward(outs, douts)
        grads = {k: v.grad for k, v in leaves.items() if isinstance(v, torch.Tensor) and v.grad is not None}
        results[backend] = (outs, grads)
    (t_out, t_grads), (r_out, r_grads) = results["triton"], results["reference"]
    assert set(t_grads) == set(r_grads), f"{what}: gradients for {sorted(t_grads)} vs {sorted(r_grads)}"
    assert r_grads, f"{what}: nothing to differentiate"
    atol, rtol = tolerances(dtype, loosen)
    for i, (a, e) in enumerate(zip(t_out, r_out, strict=True)):
        assert a.dtype == e.dtype
        assert_verbose_allclose(a, e, atol, rtol, name=f"{what} out[{i}]")
    gatol, grtol = tolerances(dtype, 2 * loosen)
    for name in r_grads:
        assert_verbose_allclose(t_grads[name], r_grads[name], gatol, grtol, name=f"{what} d{name}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (2, 5, 37), (2, 3, 130)], ids=str)
@pytest.mark.parametrize("with_weight", [True, False])
def test_rms_norm(dtype, shape, with_weight):
    require_triton("rms_norm", dtype)
    inputs = {"x": rand(*shape, dtype=dtype), "weight": rand(shape[-1], dtype=dtype, seed=1) if with_weight else None}
    check_op(lambda x, weight, backend: rms_norm(x, weight, eps=1e-6, backend=backend), inputs, dtype,
             f"rms_norm {shape}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rot_dim", [16, 32, 64], ids=lambda r: f"rot{r}")
def test_apply_rope_partial_and_full(dtype, rot_dim):
    require_triton("rope", dtype)
    length = 11
    cos, sin = rope_cos_sin(torch.arange(length, dtype=torch.float32, device=DEVICE) * 0.4, rot_dim)
    inputs = {"x": rand(2, 3, length, 64, dtype=dtype)}
    check_op(lambda x, backend: apply_rope(x, cos, sin, backend=backend), inputs, dtype, f"rope{rot_dim}")


def test_apply_rope_per_batch_table():
    """(B, L, R) tables: every batch element at its own (fractional) positions."""
    dtype = torch.float32
    require_triton("rope", dtype)
    pos = torch.stack([torch.arange(9.0), torch.arange(9.0) * 2.5 + 3.0]).to(DEVICE)  # (B, L)
    tables = [rope_cos_sin(p, 24) for p in pos]
    cos = torch.stack([c for c, _ in tables])  # (B, L, 12)
    sin = torch.stack([s for _, s in tables])
    inputs = {"x": rand(2, 2, 9, 32, dtype=dtype)}
    check_op(lambda x, backend: apply_rope(x, cos, sin, backend=backend), inputs, dtype, "rope per-batch")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "case", ["self", "cross_k_table", "cross_no_k_rope", "cross_no_k_rope_equal", "no_weights", "rope_only"]
)
def test_qk_norm_rope(dtype, case):
    require_triton("qk_norm_rope", dtype)
    lq, lk = (13, 13) if case in ("self", "no_weights", "rope_only", "cross_no_k_rope_equal") else (13, 5)
    d = 64
    q = rand(2, 4, lq, d, dtype=dtype)
    k = rand(2, 2, lk, d, dtype=dtype, seed=1)  # grouped KV heads: fewer k heads
    cos, sin = rope_cos_sin(torch.arange(lq, dtype=torch.float32, device=DEVICE), 32)
    extra = {}
    if case in ("self", "no_weights", "rope_only"):
        extra = {"k_cos": cos, "k_sin": sin}  # self-attention passes its table for both sides
    if case == "cross_k_table":
        # keys at another frame rate: positions expressed in audio-frame units
        extra = dict(zip(("k_cos", "k_sin"), rope_cos_sin(torch.arange(lk, device=DEVICE) * 2.6, 32), strict=True))
    weights = case not in ("no_weights", "rope_only")
    inputs = {
        "q": q, "k": k,
        "q_weight": rand(d, dtype=dtype, seed=2) if weights else None,
        "k_weight": rand(d, dtype=dtype, seed=3) if weights else None,
    }

    def fn(q, k, q_weight, k_weight, backend):
        return qk_norm_rope(q, k, q_weight, k_weight, cos, sin, eps=1e-6, norm=case != "rope_only",
                            backend=backend, **extra)

    check_op(fn, inputs, dtype, f"qk_norm_rope {case}")


def test_qk_norm_rope_strided_views_of_fused_qkv():
    """q and k read straight out of a (B, L, 3, H, D) projection without a copy."""
    dtype = torch.float32
    require_triton("qk_norm_rope", dtype)
    b, length, h, d = 2, 10, 2, 32
    qkv = rand(b, length, 3, h, d, dtype=dtype)
    cos, sin = rope_cos_sin(torch.arange(length, dtype=torch.float32, device=DEVICE), 16)
    w = rand(d, dtype=dtype, seed=9)

    def fn(qkv, w, backend):
        q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
        return qk_norm_rope(q, k, w, w, cos, sin, backend=backend, k_cos=cos, k_sin=sin)

    check_op(fn, {"qkv": qkv, "w": w}, dtype, "qk_norm_rope strided")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shift_kind,scale_kind", [("batch", "batch"), ("token", "batch"), ("batch", "token"),
                                                   ("batch1", "token")])
def test_adaln_modulate(dtype, shift_kind, scale_kind):
    require_triton("adaln_modulate", dtype)
    b, length, w = 2, 13, 40

    def mod(kind, seed):
        shape = {"batch": (b, w), "batch1": (b, 1, w), "token": (b, length, w)}[kind]
        return rand(*shape, dtype=dtype, seed=seed)

    inputs = {"x": rand(b, length, w, dtype=dtype) * 3 + 1, "shift": mod(shift_kind, 1), "scale": mod(scale_kind, 2)}
    check_op(lambda x, shift, scale, backend: adaln_modulate(x, shift, scale, eps=1e-6, backend=backend),
             inputs, dtype, f"adaln {shift_kind}/{scale_kind}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("gate_kind", ["batch", "token", "batch1"])
def test_gated_residual(dtype, gate_kind):
    require_triton("gated_residual", dtype)
    b, length, w = 2, 9, 37
    gate_shape = {"batch": (b, w), "token": (b, length, w), "batch1": (b, 1, w)}[gate_kind]
    inputs = {"x": rand(b, length, w, dtype=dtype), "gate": rand(*gate_shape, dtype=dtype, seed=1),
              "y": rand(b, length, w, dtype=dtype, seed=2)}
    check_op(lambda x, gate, y, backend: gated_residual(x, gate, y, backend=backend), inputs, dtype,
             f"gated {gate_kind}")


def test_gated_residual_fp32_gate_on_bf16_stream():
    """Mixed dtypes: an fp32 modulation on a bf16 residual stream keeps the stream's dtype."""
    require_triton("gated_residual", torch.bfloat16)
    inputs = {"x": rand(2, 5, 24, dtype=torch.bfloat16), "gate": rand(2, 24, dtype=torch.float32, seed=1),
              "y": rand(2, 5, 24, dtype=torch.bfloat16, seed=2)}
    check_op(lambda x, gate, y, backend: gated_residual(x, gate, y, backend=backend), inputs, torch.bfloat16,
             "gated mixed")


# ---------------------------------------------------------------------------------------------------------
# RoPE tables: conventions and the property attention relies on.


def test_rope_cos_sin_shapes_and_rotate_half_convention():
    cos, sin = rope_cos_sin(torch.tensor([0.0, 1.5]), 4)
    assert cos.shape == sin.shape == (2, 2) and cos.dtype == torch.float32
    torch.testing.assert_close(cos[0], torch.ones(2))
    # Half-split pairs (i, i + rot/2): e_0 at angle t goes to cos t * e_0 + sin t * e_2.
    x = torch.zeros(1, 1, 2, 6)
    x[..., 0] = 1.0
    x[..., 5] = 7.0  # beyond rot_dim: passes through
    y = apply_rope(x, cos, sin, backend="reference")
    t = 1.5  # inv_freq[0] = 1
    torch.testing.assert_close(y[0, 0, 1], torch.tensor([math.cos(t), 0.0, math.sin(t), 0.0, 0.0, 7.0]))


def test_rope_scores_depend_only_on_position_difference():
    """<rope(q, m), rope(k, n)> is a function of m - n, also for fractional positions."""
    d, rot = 32, 16
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, d, generator=g, dtype=torch.float64), torch.randn(1, 1, 1, d, generator=g,
                                                                                dtype=torch.float64)

    def score(m, n):
        cm, sm = rope_cos_sin(torch.tensor([m]), rot, dtype=torch.float64)
        cn, sn = rope_cos_sin(torch.tensor([n]), rot, dtype=torch.float64)
        return float((apply_rope(q, cm, sm, backend="reference") * apply_rope(k, cn, sn, backend="reference")).sum())

    assert score(3.25, 1.0) == pytest.approx(score(103.25, 101.0), rel=1e-9, abs=1e-9)
    assert score(3.25, 1.0) != pytest.approx(score(3.25, 2.0), rel=1e-6)


# ---------------------------------------------------------------------------------------------------------
# Real sizes on a GPU (the paper model: width 1536 = 24 heads x 64, 251 audio tokens, batch 32).


@cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_cuda_fused_ops_real_sizes(dtype):
    b, length, lk, h, d, w = 32, 251, 101, 24, 64, 1536
    cos, sin = rope_cos_sin(torch.arange(length, dtype=torch.float32, device=DEVICE), 32)
    kc, ks = rope_cos_sin(torch.arange(lk, dtype=torch.float32, device=DEVICE) * 2.5, 32)
    check_op(lambda q, k, qw, kw, backend: qk_norm_rope(q, k, qw, kw, cos, sin, backend=backend, k_cos=kc,
                                                        k_sin=ks),
             {"q": rand(b, h, length, d, dtype=dtype), "k": rand(b, h, lk, d, dtype=dtype, seed=1),
              "qw": rand(d, dtype=dtype, seed=2), "kw": rand(d, dtype=dtype, seed=3)},
             dtype, "cuda qk_norm_rope", loosen=2)
    check_op(lambda x, shift, scale, backend: adaln_modulate(x, shift, scale, backend=backend),
             {"x": rand(b, length, w, dtype=dtype), "shift": rand(b, w, dtype=dtype, seed=1),
              "scale": rand(b, w, dtype=dtype, seed=2)}, dtype, "cuda adaln", loosen=2)
    check_op(lambda x, gate, y, backend: gated_residual(x, gate, y, backend=backend),
             {"x": rand(b, length, w, dtype=dtype), "gate": rand(b, w, dtype=dtype, seed=1),
              "y": rand(b, length, w, dtype=dtype, seed=2)}, dtype, "cuda gated", loosen=2)
    check_op(lambda x, weight, backend: rms_norm(x, weight, backend=backend),
             {"x": rand(b, length, w, dtype=dtype), "weight": rand(w, dtype=dtype, seed=1)}, dtype, "cuda rms",
             loosen=2)
