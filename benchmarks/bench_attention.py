"""Attention benchmark: vssflow's Triton flash attention against every SDPA backend, plus one DiT block.

    python benchmarks/bench_attention.py              # GPU: full table, saved under benchmarks/results/
    python benchmarks/bench_attention.py --quick      # GPU: fewer shapes
    python benchmarks/bench_attention.py --cpu-smoke  # CPU: tiny sdpa vs reference agreement check

Sections:
  (a) the paper model: batch 32, 24 heads, head dim 64; 251 audio tokens self-attention, and 251 audio
      queries x 101 video keys cross-attention (with and without a key padding mask, and with the paper
      recipe's 12 grouped KV heads);
  (b) long sequences: batch 4, 16 heads, head dim 128 (and 64), 1k .. 16k tokens;
  (c) one whole DiT block: eager PyTorch vs fused vssflow kernels vs torch.compile(eager).
Times are medians of triton.testing.do_bench (warm-up included, L2 flushed between runs); all ratios are
taken in the same process. FLOPs count the nominal 4*B*H*Lq*Lk*D forward (x3.5 for forward+backward),
also for masked problems. Results go to benchmarks/results/attention_<gpu>_<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import platform
import re
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vssflow.core.kernels import attention

RESULTS = Path(__file__).resolve().parent / "results"
SDPA_BACKENDS = ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION", "MATH")
# The math backend materialises B*H*L*L scores; past this many score elements it only measures the OOM.
MATH_MAX_SCORES = 2**31


def flops(b, h, lq, lk, d, mode):
    """Nominal attention FLOPs: two matmuls forward; the backward does 2.5x the forward."""
    fwd = 4.0 * b * h * lq * lk * d
    return fwd if mode == "fwd" else 3.5 * fwd


def make(b, h, lq, lk, d, dtype, masked, hkv=None, seed=0):
    """q, k, v requiring grad, a dout and an optional right-padding mask (lengths in [Lk/2, Lk])."""
    hkv = h if hkv is None else hkv
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(b, h, lq, d, device="cuda", dtype=dtype, generator=g).requires_grad_()
    k = torch.randn(b, hkv, lk, d, device="cuda", dtype=dtype, generator=g).requires_grad_()
    v = torch.randn(b, hkv, lk, d, device="cuda", dtype=dtype, generator=g).requires_grad_()
    dout = torch.randn(b, h, lq, d, device="cuda", dtype=dtype, generator=g)
    mask = None
    if masked:
        lengths = torch.randint(lk // 2, lk + 1, (b,), device="cuda", generator=g)
        mask = torch.arange(lk, device="cuda")[None, :] < lengths[:, None]
    return q, k, v, dout, mask


def contenders(mask, gqa):
    """name -> attention(q, k, v) callables: ours, then each SDPA backend pinned with sdpa_kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    out = {"vssflow triton": lambda q, k, v: attention(q, k, v, key_padding_mask=mask, backend="triton")}
    attn_mask = None if mask is None else mask[:, None, None, :]
    for name in SDPA_BACKENDS:
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            continue

        def run(q, k, v, backend=backend):
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=gqa)

        out[f"sdpa {name.lower().replace('_attention', '')}"] = run
    return out


def time_case(fn, q, k, v, dout, mode):
    """Median ms of forward (no grad) or forward+backward; None with a reason when it cannot run."""
    import triton.testing

    try:
        if mode == "fwd":
            with torch.no_grad():
                fn(q, k, v)
                return triton.testing.do_bench(lambda: fn(q, k, v), warmup=25, rep=100, return_mode="median"), ""

        def step():
            fn(q, k, v).backward(dout)

        step()
        return triton.testing.do_bench(step, warmup=25, rep=100, grad_to_none=[q, k, v],
                                       return_mode="median"), ""
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None, "OOM"
    except RuntimeError as err:  # a backend that does not take this problem (mask, dtype, head dim)
        return None, "n/a: " + str(err).splitlines()[0][:60]


def bench_case(label, b, h, lq, lk, d, dtype, masked, hkv=None):
    """All contenders on one problem; returns result rows and prints them."""
    q, k, v, dout, mask = make(b, h, lq, lk, d, dtype, masked, hkv)
    ref = attention(q, k, v, key_padding_mask=mask, backend="sdpa").float()
    rows = []
    for name, fn in contenders(mask, k.shape[1] != h).items():
        row = {"case": label, "contender": name, "B": b, "H": h, "Hkv": k.shape[1], "Lq": lq, "Lk": lk, "D": d,
               "masked": masked}
        if name == "sdpa math" and b * h * lq * lk > MATH_MAX_SCORES:
            row.update(fwd_ms=None, fwd_bwd_ms=None, note="skipped: scores too large")
            rows.append(row)
            continue
        try:
            with torch.no_grad():
                err = (fn(q, k, v).float() - ref).abs().max().item()
        except RuntimeError as e:
            err, row["note"] = None, "n/a: " + str(e).splitlines()[0][:60]
        row["max_abs_diff"] = err
        for mode in ("fwd", "fwd_bwd"):
            ms, note = time_case(fn, q, k, v, dout, mode) if err is not None else (None, "")
            row[f"{mode}_ms"] = ms
            row[f"{mode}_tflops"] = None if ms is None else flops(b, h, lq, lk, d, mode) / ms / 1e9
            if note:
                row["note"] = note
        rows.append(row)
    for mode in ("fwd", "fwd_bwd"):
        sdpa = [r[f"{mode}_ms"] for r in rows if r["contender"].startswith("sdpa") and r.get(f"{mode}_ms")]
        best = min(sdpa) if sdpa else None
        for r in rows:
            r[f"{mode}_vs_best_sdpa"] = best / r[f"{mode}_ms"] if best and r.get(f"{mode}_ms") else None
    print_rows(rows)
    return rows


def _fmt(x, spec):
    """Format a number or a dash."""
    return "-" if x is None else format(x, spec)


def markdown(rows):
    """Rows as a markdown table (ratio > 1 means faster than the fastest SDPA backend)."""
    lines = ["| case | contender | fwd ms | fwd TFLOP/s | fwd x best sdpa | fwd+bwd ms | fwd+bwd TFLOP/s | "
             "fwd+bwd x best sdpa | note |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['contender']} | {_fmt(r.get('fwd_ms'), '.3f')} | {_fmt(r.get('fwd_tflops'), '.0f')} | "
            f"{_fmt(r.get('fwd_vs_best_sdpa'), '.2f')} | {_fmt(r.get('fwd_bwd_ms'), '.3f')} | "
            f"{_fmt(r.get('fwd_bwd_tflops'), '.0f')} | {_fmt(r.get('fwd_bwd_vs_best_sdpa'), '.2f')} | "
            f"{r.get('note', '')} |"
        )
    return "\n".join(lines)


def print_rows(rows):
    """Plain-text rows as they complete."""
    for r in rows:
        print(f"{r['case']:<28} {r['contender']:<16} fwd {_fmt(r.get('fwd_ms'), '8.3f')} ms "
              f"{_fmt(r.get('fwd_tflops'), '5.0f')} TF/s x{_fmt(r.get('fwd_vs_best_sdpa'), '.2f'):<5} | fwd+bwd "
              f"{_fmt(r.get('fwd_bwd_ms'), '8.3f')} ms {_fmt(r.get('fwd_bwd_tflops'), '5.0f')} TF/s "
              f"x{_fmt(r.get('fwd_bwd_vs_best_sdpa'), '.2f'):<5} {r.get('note', '')}", flush=True)


def tuned_configs():
    """The autotuner's picks per kernel, for the record."""
    from vssflow.core.kernels import flash_attention as fa

    out = {}
    for name, kern in fa._tuned.items():
        out[name] = {str(key): str(cfg) for key, cfg in getattr(kern, "cache", {}).items()}
    return out


def cpu_smoke() -> int:
    """Tiny CPU run: sdpa and reference agree (masks, GQA, empty rows), timings only indicative."""
    print("CPU smoke: sdpa vs reference (timings are CPU eager, not a benchmark)")
    g = torch.Generator().manual_seed(0)
    for b, h, hkv, lq, lk, d in [(2, 4, 4, 25, 25, 64), (2, 4, 2, 25, 11, 64), (1, 2, 2, 7, 130, 128)]:
        q = torch.randn(b, h, lq, d, generator=g)
        k, v = torch.randn(b, hkv, lk, d, generator=g), torch.randn(b, hkv, lk, d, generator=g)
        mask = torch.rand(b, lk, generator=g) > 0.3
        mask[0] = False
        res = {}
        for backend in ("sdpa", "reference"):
            t0 = time.perf_counter()
            res[backend] = attention(q, k, v, key_padding_mask=mask, backend=backend)
            res[backend + "_ms"] = (time.perf_counter() - t0) * 1e3
        diff = (res["sdpa"] - res["reference"]).abs().max().item()
        print(f"  B{b} H{h}/{hkv} Lq{lq} Lk{lk} D{d}: sdpa {res['sdpa_ms']:.2f} ms, reference "
              f"{res['reference_ms']:.2f} ms, max|diff| {diff:.2e}, NaN-free {not res['sdpa'].isnan().any().item()}")
        if not diff < 1e-4 or res["sdpa"].isnan().any():
            print("CPU smoke FAILED")
            return 1
    try:
        from bench_dit_block import cpu_smoke as block_smoke

        block_smoke()
    except AssertionError as err:
        print(f"CPU smoke FAILED: {err}")
        return 1
    print("CPU smoke OK")
    return 0


def main() -> int:
    """CLI entry."""
    parser = argparse.ArgumentParser(description="vssflow attention benchmark")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny CPU agreement check (no GPU needed)")
    parser.add_argument("--quick", action="store_true", help="fewer shapes (paper shapes, 1k and 4k)")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    parser.add_argument("--sections", default="abc", help="any of a (paper), b (long), c (DiT block)")
    parser.add_argument("--long-head-dims", default="128,64", help="head dims for section (b)")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    if args.cpu_smoke:
        return cpu_smoke()
    if not torch.cuda.is_available():
        print("bench_attention: a CUDA GPU is needed for the benchmark (CPU: --cpu-smoke). Nothing to do.")
        return 0
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    gpu = torch.cuda.get_device_name()
    print(f"# {gpu}, {args.dtype}, torch {torch.__version__}, "
          f"triton {__import__('triton').__version__}, CUDA {torch.version.cuda}")
    rows = []
    if "a" in args.sections:
        rows += bench_case("paper self 251", 32, 24, 251, 251, 64, dtype, False)
        rows += bench_case("paper self 251 masked", 32, 24, 251, 251, 64, dtype, True)
        rows += bench_case("paper cross 251x101", 32, 24, 251, 101, 64, dtype, False)
        rows += bench_case("paper cross 251x101 masked", 32, 24, 251, 101, 64, dtype, True)
        # the paper recipe's cross-attention: 24 query heads over 12 KV heads
        rows += bench_case("paper cross 251x101 GQA 24/12", 32, 24, 251, 101, 64, dtype, True, hkv=12)
    if "b" in args.sections:
        lengths = [1024, 4096] if args.quick else [1024, 2048, 4096, 8192, 16384]
        for d in (int(x) for x in args.long_head_dims.split(",")):
            for n in lengths:
                rows += bench_case(f"long {n // 1024}k D{d}", 4, 16, n, n, d, dtype, False)
    block_rows = []
    if "c" in args.sections:
        from bench_dit_block import PAPER, bench_block, block_markdown

        block_rows = bench_block(**PAPER, dtype=dtype)
        print(block_markdown(block_rows, "DiT block"))
    if args.no_save:
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = _dt.date.today().isoformat()
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower()
    meta = {"gpu": gpu, "date": stamp, "dtype": args.dtype, "torch": torch.__version__,
            "triton": __import__("triton").__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "argv": sys.argv[1:]}
    base = RESULTS / f"attention_{slug}_{stamp}"
    with open(base.with_suffix(".json"), "w") as f:
        json.dump({"meta": meta, "attention": rows, "dit_block": block_rows, "tuned_configs": tuned_configs()},
                  f, indent=2, default=lambda x: None if isinstance(x, float) and math.isnan(x) else str(x))
    md = [f"# Attention benchmark: {gpu}, {args.dtype}, {stamp}", "",
          f"torch {meta['torch']}, triton {meta['triton']}, CUDA {meta['cuda']}. Ratios: best SDPA time / ours "
          "(> 1 = we are faster).", "", markdown(rows)]
    if block_rows:
        md += ["", block_markdown(block_rows, "DiT block (paper shapes)")]
    base.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(f"saved {base.with_suffix('.json')} and {base.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
