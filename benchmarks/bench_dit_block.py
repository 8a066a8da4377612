"""One DiT block three ways: eager PyTorch, vssflow's fused Triton ops, and torch.compile(eager).

    python benchmarks/bench_dit_block.py            # on a GPU: ms per block, forward and forward+backward
    python benchmarks/bench_dit_block.py --cpu-smoke  # tiny CPU check that eager and fused agree

The block (self-attention DiT with adaLN-Zero style modulation):
    adaLN modulate -> QKV -> qk RMSNorm + partial RoPE -> attention -> out proj -> gated residual
    -> adaLN modulate -> MLP -> gated residual
The fused path only swaps the norm/rope/attention/residual ops; the matmuls are the same nn.Linear calls,
so the difference is what the kernels save (launches, memory round trips), not a different model.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from vssflow.core.kernels import adaln_modulate, attention, gated_residual, qk_norm_rope, rope_cos_sin

PAPER = {"batch": 32, "tokens": 251, "width": 1536, "heads": 24, "rot_dim": 32}


class DiTBlock(nn.Module):
    """Self-attention DiT block; `impl` picks eager PyTorch ops or the vssflow kernels (backend=...)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, rot_dim: int = 32):
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.rot_dim = rot_dim
        self.ada = nn.Linear(width, 6 * width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.fc1 = nn.Linear(width, int(width * mlp_ratio))
        self.fc2 = nn.Linear(int(width * mlp_ratio), width)
        self.q_norm = nn.Parameter(torch.ones(self.head_dim))
        self.k_norm = nn.Parameter(torch.ones(self.head_dim))

    def forward(self, x, c, cos, sin, mask=None, impl: str = "eager"):
        """x (B, L, W), c (B, W), cos/sin (L, rot/2), mask (B, L) or None -> (B, L, W)."""
        b, length, w = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(F.silu(c)).chunk(6, dim=-1)  # (B, W) each
        if impl == "eager":
            h = _eager_modulate(x, shift1, scale1)
        else:
            h = adaln_modulate(x, shift1, scale1, backend=impl)
        qkv = self.qkv(h).view(b, length, 3, self.heads, self.head_dim)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (B, H, L, D) strided views
        if impl == "eager":
            q, k = _eager_rms(q, self.q_norm), _eager_rms(k, self.k_norm)
            q, k = _eager_rope(q, cos, sin), _eager_rope(k, cos, sin)
            attn_mask = None if mask is None else mask[:, None, None, :]
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        else:
            q, k = qk_norm_rope(q, k, self.q_norm, self.k_norm, cos, sin, backend=impl, k_cos=cos, k_sin=sin)
            a = attention(q, k, v, key_padding_mask=mask, backend=impl)
        a = self.proj(a.transpose(1, 2).reshape(b, length, w))
        if impl == "eager":
            x = x + gate1[:, None] * a
            x = x + gate2[:, None] * self.fc2(F.gelu(self.fc1(_eager_modulate(x, shift2, scale2)), approximate="tanh"))
            return x
        x = gated_residual(x, gate1, a, backend=impl)
        h = adaln_modulate(x, shift2, scale2, backend=impl)
        return gated_residual(x, gate2, self.fc2(F.gelu(self.fc1(h), approximate="tanh")), backend=impl)


def _eager_modulate(x, shift, scale):
    """Eager adaLN: F.layer_norm then modulation (three kernels)."""
    return F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + scale[:, None]) + shift[:, None]


def _eager_rms(x, weight):
    """Eager RMSNorm over the head dim."""
    return F.rms_norm(x, x.shape[-1:], weight, eps=1e-6)


def _eager_rope(x, cos, sin):
    """Eager half-split partial RoPE."""
    half = cos.shape[-1]
    x1, x2, rest = x[..., :half], x[..., half : 2 * half], x[..., 2 * half :]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1)


def make_problem(batch, tokens, width, heads, rot_dim, device, dtype, seed=0):
    """A block in `dtype` plus inputs: x (B, L, W), c (B, W), RoPE tables."""
    torch.manual_seed(seed)
    block = DiTBlock(width, heads, rot_dim=rot_dim).to(device, dtype)
    x = torch.randn(batch, tokens, width, device=device, dtype=dtype, requires_grad=True)
    c = torch.randn(batch, width, device=device, dtype=dtype, requires_grad=True)
    cos, sin = rope_cos_sin(torch.arange(tokens, device=device, dtype=torch.float32), rot_dim)
    return block, x, c, cos, sin


def bench_block(batch=32, tokens=251, width=1536, heads=24, rot_dim=32, dtype=torch.bfloat16, compile_=True):
    """Time eager / fused / compiled on the current GPU; returns rows of results."""
    import triton.testing

    device = torch.device("cuda")
    block, x, c, cos, sin = make_problem(batch, tokens, width, heads, rot_dim, device, dtype)
    variants = {"eager": lambda: block(x, c, cos, sin, impl="eager"),
                "fused (triton)": lambda: block(x, c, cos, sin, impl="triton")}
    if compile_:
        compiled = torch.compile(lambda x, c: block(x, c, cos, sin, impl="eager"))
        variants["torch.compile(eager)"] = lambda: compiled(x, c)
    ref = variants["eager"]().float()
    rows = []
    params = [x, c, *block.parameters()]
    dout = torch.randn_like(x)
    for name, fn in variants.items():
        err = (fn().float() - ref).abs().max().item()  # also warms up / compiles

        def fwd_bwd(fn=fn):
            fn().backward(dout)

        with torch.no_grad():
            fwd = triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")
        fwd_bwd()  # compile the backward before timing
        both = triton.testing.do_bench(fwd_bwd, warmup=25, rep=200, grad_to_none=params, return_mode="median")
        rows.append({"variant": name, "fwd_ms": fwd, "fwd_bwd_ms": both, "max_abs_diff_vs_eager": err})
    base = rows[0]
    for r in rows:
        r["fwd_speedup_vs_eager"] = base["fwd_ms"] / r["fwd_ms"]
        r["fwd_bwd_speedup_vs_eager"] = base["fwd_bwd_ms"] / r["fwd_bwd_ms"]
    return rows


def block_markdown(rows, title):
    """Markdown table of bench_block rows."""
    lines = [f"### {title}", "", "| variant | fwd ms | fwd x eager | fwd+bwd ms | fwd+bwd x eager | max abs diff |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['fwd_ms']:.3f} | {r['fwd_speedup_vs_eager']:.2f} | "
                     f"{r['fwd_bwd_ms']:.3f} | {r['fwd_bwd_speedup_vs_eager']:.2f} | {r['max_abs_diff_vs_eager']:.3g} |")
    return "\n".join(lines)


def cpu_smoke() -> None:
    """Eager vs the kernel paths on a tiny CPU block (triton too under TRITON_INTERPRET=1): same numbers."""
    from vssflow.core.kernels.dispatch import interpret_enabled

    block, x, c, cos, sin = make_problem(2, 37, 128, 4, 16, torch.device("cpu"), torch.float32)
    out = {}
    for impl in ("eager", "sdpa", "reference") + (("triton",) if interpret_enabled() else ()):
        t0 = time.perf_counter()
        y = block(x, c, cos, sin, impl=impl)
        y.sum().backward()
        out[impl] = (y.detach(), (time.perf_counter() - t0) * 1e3)
    for impl, (y, ms) in out.items():
        diff = (y - out["eager"][0]).abs().max().item()
        print(f"  dit block {impl:10s} fwd+bwd {ms:7.2f} ms (CPU, untuned)  max|diff vs eager| {diff:.2e}")
        assert math.isfinite(diff) and diff < 1e-4, f"{impl} disagrees with eager"


def main() -> None:
    """CLI entry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny CPU agreement check, no timings claimed")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    args = parser.parse_args()
    if args.cpu_smoke:
        cpu_smoke()
        return
    if not torch.cuda.is_available():
        print("bench_dit_block: a CUDA GPU is needed for timings (try --cpu-smoke); nothing to do.")
        return
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    rows = bench_block(**PAPER, dtype=dtype, compile_=not args.no_compile)
    print(block_markdown(rows, f"DiT block {PAPER} {args.dtype} on {torch.cuda.get_device_name()}"))


if __name__ == "__main__":
    main()
