"""Ahead-of-time compile check of every Triton kernel configuration, without a GPU (CI: `make aot-check`).

    python benchmarks/aot_compile_check.py --quiet                 # what CI runs: sm_90 and sm_80, every dtype
    python benchmarks/aot_compile_check.py --arch 90 --dtype bf16 --jobs 4 --json out.json --markdown-dir out/

Each configuration the kernels can launch is compiled with `triton.compile` for a `GPUTarget` (no device
needed, offline) down to a cubin by Triton's bundled ptxas, with Triton's own ptxas options; the ptxas log
gives the registers and spills, Triton's metadata the shared memory. The configurations come from
`core/kernels/tiles.py`, the same tables the kernels use, per GPU family:

  attention  every tile `tiles.attention_tiles` lets the autotuner time for the family, per head dim
             (32, 64, 128) and mask flag, for the forward, the dK/dV and the dQ kernels, plus the backward
             preprocess;
  row ops    adaLN, gated residual (forward and backward, shared or per-token modulation), RMSNorm, RoPE
             (full and partial rotation) and the fused q/k RMSNorm + RoPE (with and without a weight,
             forward and backward) at the tile geometry `tiles.rows_per_block` / `tiles.warps_for` give, for
             every power-of-two width from 32 up to the op's `tiles.max_row_width` on the family.

A configuration fails when ptxas reports spill stores or loads, or its shared memory exceeds the
architecture's per-block limit (227 KiB on sm_90, 163 KiB on sm_80). The exit status is 1 if any fails.
It prints one table row per configuration (only the failing ones with --quiet) and a summary;
benchmarks/results/aot_compile_check-*.md hold the full tables and docs/kernels.md quotes the summary.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

from vssflow.core.kernels import tiles  # pure Python: which configurations each GPU family may launch

SMEM_LIMIT = tiles.SMEM_LIMIT  # bytes of shared memory one block may use (opt-in maximum)
DTYPES = ("bf16", "fp16", "fp32")
ATTENTION_DTYPES = ("bf16", "fp16")  # the GPU attention takes no fp32


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
    """Every tile `tiles.attention_tiles` lets the autotuner time on this family, per head dim and mask."""
    cases = []
    for dt in (d for d in dtypes if d in ATTENTION_DTYPES):
        io_ptrs = {"Q": dt, "K": dt, "V": dt, "Out": dt, "DO": dt, "DQ": dt, "DK": dt, "DV": dt,
                   "LSE": "*fp32", "DELTA": "*fp32", "MASK": "*u8", "WINDOW": "*i32"}
        io_ptrs = {k: (v if v.startswith("*") else "*" + v) for k, v in io_ptrs.items()}
        for name in tiles.KERNELS:
            fn = {"fwd": "_attn_fwd", "dkdv": "_attn_bwd_dkdv", "dq": "_attn_bwd_dq"}[name]
            for d in tiles.HEAD_DIMS:
                for mask in (False, True):
                    for m, n, w, s in tiles.attention_tiles(name, d, mask, arch):
                        cases.append(Case(f"flash_attention:{fn}", {"HEAD_DIM": d, "BLOCK_M": m, "BLOCK_N": n,
                                                                     "HAS_MASK": mask, "UPCAST": False},
                                          io_ptrs, w, s, arch, f"{name} d{d} {m}x{n} w{w} s{s}{' mask' if mask else ''} {dt}"))
        for d in tiles.HEAD_DIMS:
            cases.append(Case("flash_attention:_bwd_preprocess", {"HEAD_DIM": d, "BLOCK_M": 64}, io_ptrs, 4, 3, arch,
                              f"preprocess d{d} {dt}"))
    return cases


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _norm_rope_cases(arch: int, p: str, width: int, two: bool, norm: bool, r2: int, has_w: bool, what: str):
    """Forward and backward of the norm/rope kernel for one side (rms_norm, apply_rope) or q and k."""
    block_r = tiles.rows_per_block(width)
    warps = tiles.warps_for(block_r, _pow2(width))
    side = {"R2": r2, "BH": _pow2(max(r2, 2)), "BT": _pow2(max(width - 2 * r2, 2)),
            "W": has_w, "ROPE": r2 > 0}
    meta = {"D": width, "BLOCK_R": block_r, "NORM": norm, "TWO": two,
            **{f"Q_{k}": v for k, v in side.items()}, **{f"K_{k}": v for k, v in side.items()}}
    fwd_ptrs = {f"{s}{n}": (p if n in ("X", "Y", "W") else "*fp32") for s in "QK" for n in ("X", "Y", "W", "COS", "SIN", "RSTD")}
    bwd_ptrs = {f"{s}{n}": (p if n in ("DY", "X", "DX", "W") else "*fp32")
                for s in "QK" for n in ("DY", "X", "DX", "W", "COS", "SIN", "RSTD", "DWP")}
    return [Case("norm_rope:_nr_fwd", meta, fwd_ptrs, warps, 3, arch, f"{what} fwd"),
            Case("norm_rope:_nr_bwd", meta, bwd_ptrs, warps, 3, arch, f"{what} bwd")]


def row_cases(arch: int, dtypes: tuple[str, ...]) -> list[Case]:
    """The row kernels at the geometry rows.py picks, for every power-of-two width the op takes on this
    family (`tiles.row_widths`): wider rows take the PyTorch path."""
    cases = []
    for dt in dtypes:
        p = "*" + dt
        for width in tiles.row_widths("adaln_modulate", arch):
            block_r, block_w = tiles.rows_per_block(width), _pow2(width)
            warps = tiles.warps_for(block_r, block_w)
            for tok in (False, True):
                flags = {"BLOCK_R": block_r, "BLOCK_W": block_w, "SH_TOK": tok, "SC_TOK": tok}
                cases.append(Case("adaln:_adaln_fwd", flags,
                                  {"X": p, "Y": p, "SHIFT": p, "SCALE": p, "MEAN": "*fp32", "RSTD": "*fp32"},
                                  warps, 3, arch, f"adaln fwd W{width}{' per-token' if tok else ''} {dt}"))
                cases.append(Case("adaln:_adaln_bwd", flags,
                                  {"DY": p, "X": p, "SCALE": p, "MEAN": "*fp32", "RSTD": "*fp32", "DX": p,
                                   "DSCALE": "*fp32", "DSHIFT": "*fp32"},
                                  warps, 3, arch, f"adaln bwd W{width}{' per-token' if tok else ''} {dt}"))
        for width in tiles.row_widths("gated_residual", arch):
            block_r, block_w = tiles.rows_per_block(width), _pow2(width)
            warps = tiles.warps_for(block_r, block_w)
            for tok in (False, True):
                flags = {"BLOCK_R": block_r, "BLOCK_W": block_w, "G_TOK": tok}
                cases.append(Case("gated:_gated_fwd", flags, {"X": p, "G": p, "Y": p, "OUT": p},
                                  warps, 3, arch, f"gated fwd W{width}{' per-token' if tok else ''} {dt}"))
                cases.append(Case("gated:_gated_bwd", flags, {"DO": p, "G": p, "Y": p, "DY": p, "DG": "*fp32"},
                                  warps, 3, arch, f"gated bwd W{width}{' per-token' if tok else ''} {dt}"))
        for width in tiles.row_widths("rms_norm", arch):
            for has_w in (False, True):
                cases += _norm_rope_cases(arch, p, width, False, True, 0, has_w,
                                          f"rms_norm W{width}{' weight' if has_w else ''} {dt}")
        for width in tiles.row_widths("rope", arch):
            for r2 in (width // 2, width // 4):  # full and partial rotation
                cases += _norm_rope_cases(arch, p, width, False, False, r2, False, f"rope W{width} rot{2 * r2} {dt}")
        for width in tiles.row_widths("qk_norm_rope", arch):
            for r2 in (width // 2, width // 4):
                for has_w in (False, True):
                    cases += _norm_rope_cases(arch, p, width, True, True, r2, has_w,
                                              f"qk norm+rope W{width} rot{2 * r2}{' weight' if has_w else ''} {dt}")
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


def _key(case: Case) -> str:
    """Identity of a compile: two cases with the same key produce the same cubin."""
    return json.dumps([case.kernel, sorted(case.constexprs.items()), sorted(case.pointers.items()), case.num_warps,
                       case.num_stages, case.arch])


def enumerate_cases(archs: tuple[int, ...], dtypes: tuple[str, ...], only: str | None = None) -> list[Case]:
    """Every configuration the kernels may launch on these families, each compile once."""
    cases, seen = [], set()
    for arch in archs:
        found = (attention_cases(arch, dtypes) if only != "rows" else []) + \
                (row_cases(arch, dtypes) if only != "attention" else [])
        for case in found:
            if _key(case) not in seen:
                seen.add(_key(case))
                cases.append(case)
    return cases


def dtype_of(case: Case) -> str:
    """The tensor dtype a configuration was compiled for (named in its label)."""
    return next(word for word in case.label.split() if word in DTYPES)


def report(done: list[Case], header: str) -> tuple[list[str], list[str], int]:
    """Markdown table rows, summary lines and the number of failing configurations."""
    rows = ["| sm | configuration | registers | spills (B) | shared (KiB) | verdict |",
            "| --- | --- | --- | --- | --- | --- |"]
    failed = 0
    by_arch = {}
    for case in done:
        v = verdict(case)
        failed += v != "ok"
        r = case.result
        rows.append(f"| {case.arch} | {case.label} | {r.get('registers', '-')} | {r.get('spill_bytes', '-')} | "
                    f"{r.get('shared', 0) / 1024:.0f} | {v} |")
        if "shared" in r:
            agg = by_arch.setdefault(case.arch, {"max_shared": 0, "max_registers": 0, "n": 0, "failed": 0})
            agg["max_shared"] = max(agg["max_shared"], r["shared"])
            agg["max_registers"] = max(agg["max_registers"], r["registers"] or 0)
            agg["n"] += 1
            agg["failed"] += v != "ok"
    summary = [f"{len(done)} configurations, {failed} failing{header}"]
    for arch, agg in sorted(by_arch.items(), reverse=True):
        summary.append(f"sm_{arch}: {agg['n']} configurations ({agg['failed']} failing), at most "
                       f"{agg['max_registers']} registers per thread, {agg['max_shared'] / 1024:.0f} KiB shared memory "
                       f"(limit {SMEM_LIMIT[arch] // 1024} KiB)")
    return rows, summary, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, action="append", choices=sorted(SMEM_LIMIT),
                        help="compute capability x10 (repeatable; default 90 and 80)")
    parser.add_argument("--dtype", action="append", choices=DTYPES,
                        help="repeatable; default all three (fp32: the row kernels only, the GPU attention takes none)")
    parser.add_argument("--only", choices=["attention", "rows"], help="one family only")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compilers")
    parser.add_argument("--json", help="also write every result to this JSON file")
    parser.add_argument("--markdown-dir", help="also write aot_compile_check-<dtype>.md per dtype to this folder")
    parser.add_argument("--quiet", action="store_true", help="print only failing configurations and the summary")
    args = parser.parse_args()
    archs, dtypes = tuple(args.arch or tiles.ARCHS), tuple(args.dtype or DTYPES)

    cases = enumerate_cases(archs, dtypes, args.only)
    os.environ.pop("TRITON_INTERPRET", None)  # the kernel modules must be built for the GPU, not the interpreter
    scratch = None
    if "TRITON_CACHE_DIR" not in os.environ:  # a private cache, removed afterwards (every case is compiled)
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # thousands of small cache files
        scratch = tempfile.mkdtemp(prefix="vssflow-aot-", dir=shm)
        os.environ["TRITON_CACHE_DIR"] = scratch
    started = time.perf_counter()
    # The attention kernels take seconds each, the row kernels a fraction: start the slow ones first so the
    # workers finish together; results come back in the enumeration order.
    order = sorted(range(len(cases)), key=lambda i: not cases[i].kernel.startswith("flash_attention"))
    try:
        with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            compiled = dict(zip(order, pool.map(compile_case, [cases[i] for i in order]), strict=True))
    finally:
        if scratch is not None:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
    done = [compiled[i] for i in range(len(cases))]
    seconds = time.perf_counter() - started
    import triton

    cpu = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))  # the workers and their ptxas runs included
    rows, summary, failed = report(done, f", in {seconds:.0f} s wall, {cpu:.0f} s of CPU (triton "
                                         f"{triton.__version__}, {args.jobs} jobs)")
    shown = rows if not args.quiet else rows[:2] + [r for r in rows[2:] if not r.endswith("| ok |")]
    print("\n".join(shown) + "\n\n" + "\n".join(summary))
    if args.markdown_dir:
        argv = list(sys.argv[1:])
        for flag in ("--json", "--markdown-dir"):  # where the files went is not part of the command
            if flag in argv:
                i = argv.index(flag)
                argv = argv[:i] + argv[i + 2:]
        command = "python benchmarks/aot_compile_check.py " + " ".join(argv)
        for dt in dtypes:
            mine = [c for c in done if dtype_of(c) == dt]
            dt_rows, dt_summary, dt_failed = report(mine, f" for {dt}")
            with open(os.path.join(args.markdown_dir, f"aot_compile_check-{dt}.md"), "w") as fh:
                fh.write(f"# Ahead-of-time compile check (no GPU), {dt}\n\nCommand: `{command}` (triton "
                         f"{triton.__version__}, its bundled ptxas; exit status {1 if failed else 0}). The whole "
                         f"run: {summary[0]}.\n\n" + "\n".join(dt_rows) + "\n\n" + "\n".join(dt_summary) + "\n")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([{**asdict(c), "verdict": verdict(c)} for c in done], fh, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
