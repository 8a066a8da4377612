"""Which kernel configurations each GPU architecture may launch: the one place that decides.

The attention autotuner (`flash_attention.py`) keeps only `pick_tiles(...)` for the GPU it runs on, the
dispatcher sends rows wider than `max_row_width(...)` to PyTorch, and `benchmarks/aot_compile_check.py`
compiles exactly `attention_tiles(...)` and the row kernels at `rows_per_block` / `warps_for` up to
`max_row_width(...)` for every family in `ARCHS`, failing on any register spill or on shared memory over
`SMEM_LIMIT`: what the check passes is what the kernels can pick.

Two families, chosen by compute capability (`arch_family`): sm_90 (Hopper; data-center Blackwell 10.x runs
it too) and sm_80 (Ampere/Ada 8.x, and 12.x); the compile check covers sm_90 and sm_80 themselves. A tile
is (BLOCK_M, BLOCK_N, num_warps, num_stages). The sm_80 family runs the same tiles minus those ptxas spills
for sm_80 (no wgmma there: mma.sync fragments live in registers) and those over its 163 KiB of shared
memory (`_DROP`). GPUs with 99 KiB per block (sm_86, sm_89, sm_120) run the sm_80 family; the tiles that do
not fit there fail to launch and the autotuner skips them (every head dim and mask keeps one that fits).

Pure Python (no torch, no triton): the pruner's decisions are unit-tested on the CPU with a fake capability.
"""

from __future__ import annotations

Tile = tuple[int, int, int, int]  # (BLOCK_M, BLOCK_N, num_warps, num_stages)

ARCHS = (90, 80)
# Shared memory one block may use (the opt-in maximum), bytes.
SMEM_LIMIT = {90: 232448, 80: 166912}
HEAD_DIMS = (32, 64, 128)
KERNELS = ("fwd", "dkdv", "dq")

# Forward: the query block stays resident, keys and values stream through num_stages buffers.
_FWD = {
    32: [(128, 128, 8, 3), (128, 64, 8, 3), (128, 64, 4, 3), (128, 128, 8, 4), (64, 64, 4, 3), (64, 32, 4, 3),
         (32, 32, 4, 2)],
    64: [(128, 128, 8, 3), (128, 64, 8, 3), (128, 64, 8, 4), (128, 128, 8, 4), (64, 64, 4, 3), (64, 64, 4, 4),
         (64, 32, 4, 3), (32, 32, 4, 2)],
    128: [(128, 128, 8, 3), (128, 64, 8, 3), (128, 64, 8, 4), (128, 64, 8, 2), (128, 32, 8, 3), (64, 64, 4, 3),
          (64, 64, 4, 4), (64, 32, 4, 3), (32, 32, 4, 2)],
}
# dK/dV: the key block (BLOCK_N) stays resident with its two fp32 accumulators; queries (BLOCK_M) stream.
_DKDV = {
    32: [(32, 128, 8, 3), (64, 128, 8, 3), (32, 64, 4, 3), (64, 64, 4, 3), (16, 64, 4, 3), (16, 32, 4, 2)],
    64: [(32, 128, 8, 3), (64, 128, 8, 3), (64, 128, 8, 2), (32, 128, 8, 4), (16, 128, 8, 3), (32, 64, 4, 3),
         (32, 64, 8, 3), (16, 64, 4, 3), (16, 32, 4, 2)],
    128: [(32, 128, 8, 3), (32, 128, 8, 2), (32, 128, 8, 4), (16, 128, 8, 3), (32, 64, 8, 3), (16, 64, 4, 3)],
}
# dQ: the query block stays resident; keys stream.
_DQ = {
    32: [(128, 32, 4, 3), (128, 64, 8, 3), (64, 64, 4, 3), (128, 32, 8, 4), (64, 32, 4, 4), (32, 32, 4, 2),
         (32, 16, 4, 2)],
    64: [(128, 64, 8, 3), (128, 32, 8, 3), (128, 32, 8, 4), (128, 64, 8, 2), (64, 64, 4, 3), (64, 32, 4, 4),
         (32, 32, 4, 2), (32, 16, 4, 2)],
    128: [(128, 64, 8, 3), (128, 32, 8, 3), (128, 32, 8, 4), (128, 64, 8, 2), (64, 64, 8, 3), (64, 32, 4, 3),
          (32, 32, 4, 2), (32, 16, 4, 2)],
}
TILES = {"fwd": _FWD, "dkdv": _DKDV, "dq": _DQ}

# Tiles a family does not run: family -> kernel -> head dim -> tile -> the HAS_MASK values it is dropped for.
# A tile is dropped when it spills for either dtype (fp16 and bf16 differ). Spills measured with ptxas
# (benchmarks/results/aot_compile_check-*.md); on sm_80 128x128 at head dim 128 also needs more shared
# memory (224 KiB) than the 163 KiB there.
BOTH, MASKED, UNMASKED = (False, True), (True,), (False,)
_DROP = {
    90: {"fwd": {128: {(128, 128, 8, 3): MASKED}}, "dkdv": {128: {(32, 128, 8, 4): MASKED}}},
    80: {
        "fwd": {128: {(128, 128, 8, 3): BOTH, (128, 64, 8, 2): MASKED, (64, 64, 4, 3): UNMASKED,
                      (64, 64, 4, 4): UNMASKED, (64, 32, 4, 3): UNMASKED}},
        "dkdv": {
            32: {(64, 128, 8, 3): MASKED, (64, 64, 4, 3): MASKED},
            64: {(32, 128, 8, 3): MASKED, (64, 128, 8, 3): BOTH, (64, 128, 8, 2): BOTH, (32, 128, 8, 4): MASKED,
                 (32, 64, 4, 3): MASKED, (32, 64, 8, 3): MASKED},
            128: {(32, 128, 8, 3): BOTH, (32, 128, 8, 2): BOTH, (32, 128, 8, 4): MASKED, (16, 128, 8, 3): MASKED,
                  (16, 64, 4, 3): MASKED},
        },
        "dq": {128: {(128, 64, 8, 3): UNMASKED, (128, 64, 8, 2): UNMASKED, (64, 64, 8, 3): UNMASKED,
                     (64, 32, 4, 3): UNMASKED}},
    },
}


def arch_family(capability: tuple[int, int]) -> int:
    """The vetted family for a compute capability: 90 for Hopper and data-center Blackwell (9.x, 10.x: 227 KiB
    of shared memory per block), 80 for the rest (8.x, and 11.x/12.x parts with Ampere-sized shared memory)."""
    major, minor = capability
    if major < 8:
        raise ValueError(f"the Triton kernels need compute capability >= 8.0, got {major}.{minor}")
    return 90 if major in (9, 10) else 80


def attention_tiles(kernel: str, head_dim: int, has_mask: bool, arch: int) -> list[Tile]:
    """The tiles `kernel` ("fwd" | "dkdv" | "dq") may autotune over at this head dim, mask flag and family."""
    if kernel not in TILES:
        raise ValueError(f"unknown attention kernel {kernel!r}; expected one of {KERNELS}")
    if head_dim not in HEAD_DIMS:
        raise ValueError(f"attention head dim must be one of {HEAD_DIMS}, got {head_dim}")
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture family {arch}; expected one of {ARCHS}")
    drop = _DROP[arch].get(kernel, {}).get(head_dim, {})
    return [t for t in TILES[kernel][head_dim] if bool(has_mask) not in drop.get(t, ())]


def all_attention_tiles(kernel: str) -> list[Tile]:
    """Every tile `kernel` can run anywhere (the autotuner's config list, before pruning), sorted."""
    return sorted({t for per_dim in TILES[kernel].values() for t in per_dim})


def pick_tiles(kernel: str, head_dim: int, has_mask: bool, capability: tuple[int, int], lq_key: int,
               lk_key: int) -> list[Tile]:
    """The tiles the autotuner times for one call: the family's tiles for this head dim and mask, minus those
    far larger than a short problem (lq_key, lk_key: the power-of-two length buckets)."""
    tiles = attention_tiles(kernel, head_dim, has_mask, arch_family(capability))
    small = [t for t in tiles if t[0] <= max(lq_key, 32) and t[1] <= max(lk_key, 32)]
    return small or tiles


def rows_per_block(width: int) -> int:
    """Rows per program of the row kernels on the GPU: ~2K values per tile, at most 32 rows.

    These kernels are memory bound; small tiles at ~8 values per thread keep registers under ~100 so
    several programs share an SM and hide latency. (64 rows of width 32 made ptxas spill 12 B in the fp16
    RMSNorm backward on sm_80.)
    """
    return max(1, min(32, 2048 // _next_power_of_2(width)))


def warps_for(block_rows: int, block_width: int) -> int:
    """One warp per 256 values of the tile (~8 per thread), 4 to 16."""
    return min(16, max(4, block_rows * block_width // 256))


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


# Row kernels hold whole rows in registers (tile: `rows_per_block`, `warps_for`). The widest row each op takes
# on each family: a width is allowed when its forward and backward compile without spills in every dtype the
# op takes (fp32, fp16, bf16); wider rows take the PyTorch path. Measured: adaLN spills in the backward at
# 8192 (fp32 on sm_90, bf16 on sm_80), the gated residual at 16384, RMSNorm with a weight at 16384 (fp32,
# sm_90), q/k norm + RoPE at 8192 (bf16, sm_90) and 16384 (fp32, sm_80); RoPE alone is clean to 16384.
ROW_OPS = ("rms_norm", "rope", "qk_norm_rope", "adaln_modulate", "gated_residual")
MAX_ROW_WIDTH = 16384
_ROW_MAX = {
    90: {"adaln_modulate": 4096, "gated_residual": 8192, "qk_norm_rope": 4096, "rms_norm": 8192},
    80: {"adaln_modulate": 4096, "gated_residual": 8192, "qk_norm_rope": 8192},
}


def max_row_width(op: str, arch: int) -> int:
    """The widest row (last dim) the Triton kernel of `op` takes on this family."""
    if op not in ROW_OPS:
        raise ValueError(f"unknown row op {op!r}; expected one of {ROW_OPS}")
    return _ROW_MAX[arch].get(op, MAX_ROW_WIDTH)


def row_widths(op: str, arch: int) -> list[int]:
    """The power-of-two widths the compile check covers for `op`: 32 up to its maximum on this family."""
    return [2**i for i in range(5, 15) if 2**i <= max_row_width(op, arch)]
