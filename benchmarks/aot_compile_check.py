"""Ahead-of-time compile check of every Triton kernel configuration, without a GPU.

    python benchmarks/aot_compile_check.py                      # sm_90 and sm_80, bf16 and fp16, all configs
    python benchmarks/aot_compile_check.py --arch 90 --dtype bf16 --jobs 4 --json out.json

Each configuration the kernels can launch is compiled with `triton.compile` for a `GPUTarget` (no device
needed) down to a cubin by Triton's bundled ptxas, with Triton's own ptxas options; the ptxas log gives the
registers and spills, Triton's metadata the shared memory. The configurations:

  attention  every autotune tile (BLOCK_M, BLOCK_N, num_warps, num_stages) the pruner keeps for each head dim
             (32, 64, 128), for the forward, the dK/dV and the dQ kernels, with and without a key mask, plus the
             backward preprocess;
  row ops    adaLN, gated residual (forward and backward, shared or per-token modulation) and the fused
             RMSNorm + RoPE (forward and backward, q and k, with and without a weight, full or partial
             rotation) at the tile geometry `core/kernels/rows.py` picks for widths 32 ... 16384.

A configuration fails when ptxas reports spill stores or loads, or its shared memory exceeds the
architecture's per-block limit (227 KiB on sm_90, 163 KiB on sm_80). The exit status is 1 if any fails.
It prints one table row per configuration and a summary; docs/kernels.md quotes the summary.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

SMEM_LIMIT = {90: 232448, 80: 166912}  # bytes of shared memory one block may use (opt-in maximum)
HEAD_DIMS = (32, 64, 128)
WIDTHS = tuple(2**i for i in range(5, 15))  # 32 ... 16384, the row kernels' range


@dataclass
class Case:
    """One configuration to compile."""

    kernel: str  # module:function
    constexprs: dict
    pointers: dict  # argument name -> pointer type; other arguments are i32 (fp32 when named *scale or eps)
    num_warps: int
    num_stages: int
    arch: int
    label: str = ""
    result: dict = field(default_factory=dict)


STRIDE = re.compile(r"^(stride_[a-z]+|[a-z]?s[a-z][bhl]|[qk][scd][bhl]|W)$")


def _attrs(fn, pointers: dict) -> dict:
    """What a real launch tells the compiler: pointers are 16-byte aligned (fresh torch allocations) and the
    strides of (B, L, W) / (B, H, L, D) tensors with power-of-two widths are multiples of 16, as Triton
    specialises them at launch. The mask's batch stride (its length) and the sequence lengths are not."""
    return {(i,): [["tt.divisibility", 16]] for i, p in enumerate(fn.params)
            if not p.is_constexpr and (p.name in pointers or (STRIDE.match(p.name) and p.name != "stride_mb"))}


def _sig(fn, pointers: dict) -> dict:
    floats = {"eps", "qk_scale", "sm_scale"}
    return {p.name: "constexpr" if p.is_constexpr else pointers.get(p.name, "fp32" if p.name in floats else "i32")
            for p in fn.params}


def attention_cases(arch: int, dtypes: tuple[str, ...]) -> list[Case]:
    from vssflow.core.kernels import flash_attention as fa

    cases = []
    for dt in dtypes:
        io_ptrs = {"Q": dt, "K": dt, "V": dt, "Out": dt, "DO": dt, "DQ": dt, "DK": dt, "DV": dt,
                   "LSE": "*fp32", "DELTA": "*fp32", "MASK": "*u8", "WINDOW": "*i32"}
        io_ptrs = {k: (v if v.startswith("*") else "*" + v) for k, v in io_ptrs.items()}
        for name, tiles in fa._TILES.items():
            fn = {"fwd": "_attn_fwd", "dkdv": "_attn_bwd_dkdv", "dq": "_attn_bwd_dq"}[name]
            for d in HEAD_DIMS:
                for m, n, w, s in tiles[d]:
                    for mask in (False, True):
                        cases.append(Case(f"flash_attention:{fn}", {"HEAD_DIM": d, "BLOCK_M": m, "BLOCK_N": n,
                                                                     "HAS_MASK": mask, "UPCAST": False},
                                          io_ptrs, w, s, arch, f"{name} d{d} {m}x{n} w{w} s{s}{' mask' if mask else ''} {dt}"))
        for d in HEAD_DIMS:
            cases.append(Case("flash_attention:_bwd_preprocess", {"HEAD_DIM": d, "BLOCK_M": 64}, io_ptrs, 4, 3, arch,
                              f"preprocess d{d} {dt}"))
    return cases


def row_cases(arch: int, dtypes: tuple[str, ...]) -> list[Case]:
    import triton

    from vssflow.core.kernels.rows import rows_per_block, warps_for

    cases = []
    for dt in dtypes:
        p = "*" + dt
        for width in WIDTHS:
            block_r, block_w = rows_per_block(width), triton.next_power_of_2(width)
            warps = warps_for(block_r, block_w)
            for tok in (False, True):
                flags = {"BLOCK_R": block_r, "BLOCK_W": block_w}
                cases.append(Case("adaln:_adaln_fwd", {**flags, "SH_TOK": tok, "SC_TOK": tok},
                                  {"X": p, "Y": p, "SHIFT": p, "SCALE": p, "MEAN": "*fp32", "RSTD": "*fp32"},
                                  warps, 3, arch, f"adaln fwd W{width}{' per-token' if tok else ''} {dt}"))
                cases.append(Case("adaln:_adaln_bwd", {**flags, "SH_TOK": tok, "SC_TOK": tok},
                                  {"DY": p, "X": p, "SCALE": p, "MEAN": "*fp32", "RSTD": "*fp32", "DX": p,
                                   "DSCALE": "*fp32", "DSHIFT": "*fp32"},
                                  warps, 3, arch, f"adaln bwd W{width}{' per-token' if tok else ''} {dt}"))
                cases.append(Case("gated:_gated_fwd", {**flags, "G_TOK": tok}, {"X": p, "G": p, "Y": p, "OUT": p},
                                  warps, 3, arch, f"gated fwd W{width}{' per-token' if tok else ''} {dt}"))
                cases.append(Case("gated:_gated_bwd", {**flags, "G_TOK": tok},
                                  {"DO": p, "G": p, "Y": p, "DY": p, "DG": "*fp32"},
                                  warps, 3, arch, f"gated bwd W{width}{' per-token' if tok else ''} {dt}"))
        for d in HEAD_DIMS:
            block_r = rows_per_block(d)
            warps = warps_for(block_r, triton.next_power_of_2(d))
            for r2 in (d // 2, d // 4):  # full and partial rotation
                for has_w in (False, True):
                    side = {"R2": r2, "BH": triton.next_power_of_2(max(r2, 2)),
                            "BT": triton.next_power_of_2(max(d - 2 * r2, 2)), "W": has_w, "ROPE": True}
                    meta = {**{f"Q_{k}": v for k, v in side.items()}, **{f"K_{k}": v for k, v in side.items()}}
                    fwd_ptrs = {f"{s}{n}": (p if n in ("X", "Y", "W") else "*fp32")
                                for s in "QK" for n in ("X", "Y", "W", "COS", "SIN", "RSTD")}
                    bwd_ptrs = {f"{s}{n}": (p if n in ("DY", "X", "DX", "W") else "*fp32")
                                for s in "QK" for n in ("DY", "X", "DX", "W", "COS", "SIN", "RSTD", "DWP")}
                    what = f"d{d} rot{2 * r2}{' weight' if has_w else ''} {dt}"
                    cases.append(Case("norm_rope:_nr_fwd", {"D": d, "BLOCK_R": block_r, "NORM": True, "TWO": True,
                                                            **meta}, fwd_ptrs, warps, 3, arch, f"norm+rope fwd {what}"))
                    cases.append(Case("norm_rope:_nr_bwd", {"D": d, "BLOCK_R": block_r, "NORM": True, "TWO": True,
                                                            **meta}, bwd_ptrs, warps, 3, arch, f"norm+rope bwd {what}"))
    return cases


PTXAS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
REGS = re.compile(r"Used (\d+) registers")


def compile_case(case: Case) -> Case:
    """Compile one configuration; fills case.result with registers, spills, shared memory, seconds."""
    import importlib

    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    knobs.nvidia.dump_ptxas_log = True  # Triton prints ptxas's -v log when it runs it
    knobs.compilation.always_compile = True  # never served from the cache (no log there)
    module, name = case.kernel.split(":")
    fn = getattr(importlib.import_module(f"vssflow.core.kernels.{module}"), name)
    src = ASTSource(fn, _sig(fn, case.pointers),
                    constexprs={(fn.arg_names.index(k),): v for k, v in case.constexprs.items()},
                    attrs=_attrs(fn, case.pointers))
    log = io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(log):
            kernel = triton.compile(src, target=GPUTarget("cuda", case.arch, 32),
                                    options={"num_warps": case.num_warps, "num_stages": case.num_stages})
    except Exception as exc:  # noqa: BLE001 - a configuration that does not compile is a failure to report
        case.result = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
        return case
    text = log.getvalue()
    spills = [int(a) + int(b) for a, b in PTXAS.findall(text)]
    regs = [int(r) for r in REGS.findall(text)]
    case.result = {"registers": max(regs) if regs else None, "spill_bytes": sum(spills),
                   "shared": int(kernel.metadata.shared), "seconds": round(time.perf_counter() - start, 2)}
    return case


def verdict(case: Case) -> str:
    r = case.result
    if "error" in r:
        return "ERROR " + r["error"]
    problems = []
    if r["registers"] is None:
        problems.append("no ptxas log")
    if r["spill_bytes"]:
        problems.append(f"spills {r['spill_bytes']} B")
    if r["shared"] > SMEM_LIMIT[case.arch]:
        problems.append(f"shared {r['shared'] // 1024} KiB > {SMEM_LIMIT[case.arch] // 1024} KiB")
    return "FAIL " + ", ".join(problems) if problems else "ok"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, action="append", choices=sorted(SMEM_LIMIT),
                        help="compute capability x10 (repeatable; default 90 and 80)")
    parser.add_argument("--dtype", action="append", choices=["bf16", "fp16"], help="default: both")
    parser.add_argument("--only", choices=["attention", "rows"], help="one family only")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compilers")
    parser.add_argument("--json", help="also write every result to this JSON file")
    args = parser.parse_args()
    archs, dtypes = tuple(args.arch or (90, 80)), tuple(args.dtype or ("bf16", "fp16"))

    cases = []
    for arch in archs:
        if args.only != "rows":
            cases += attention_cases(arch, dtypes)
        if args.only != "attention":
            cases += row_cases(arch, dtypes)
    scratch = None
    if "TRITON_CACHE_DIR" not in os.environ:  # a private cache, removed afterwards (every case is compiled)
        scratch = tempfile.mkdtemp(prefix="vssflow-aot-")
        os.environ["TRITON_CACHE_DIR"] = scratch
    started = time.perf_counter()
    try:
        with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            done = list(pool.map(compile_case, cases))
    finally:
        if scratch is not None:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
    failed = 0
    print("| sm | configuration | registers | spills (B) | shared (KiB) | verdict |\n| --- | --- | --- | --- | --- | --- |")
    for case in done:
        v = verdict(case)
        failed += v != "ok"
        r = case.result
        print(f"| {case.arch} | {case.label} | {r.get('registers', '-')} | {r.get('spill_bytes', '-')} | "
              f"{r.get('shared', 0) / 1024:.0f} | {v} |")
    by_arch = {}
    for case in done:
        if "shared" in case.result:
            agg = by_arch.setdefault(case.arch, {"max_shared": 0, "max_registers": 0})
            agg["max_shared"] = max(agg["max_shared"], case.result["shared"])
            agg["max_registers"] = max(agg["max_registers"], case.result["registers"] or 0)
    import triton

    print(f"\n{len(done)} configurations, {failed} failing, in {time.perf_counter() - started:.0f} s "
          f"(triton {triton.__version__}, {args.jobs} jobs)")
    for arch, agg in sorted(by_arch.items()):
        print(f"sm_{arch}: at most {agg['max_registers']} registers per thread, {agg['max_shared'] / 1024:.0f} KiB "
              f"shared memory (limit {SMEM_LIMIT[arch] // 1024} KiB)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([{**asdict(c), "verdict": verdict(c)} for c in done], fh, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
