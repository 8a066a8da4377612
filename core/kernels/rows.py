"""Shared pieces of the Triton row kernels (norm_rope, adaln, gated): tile geometry, program counts,
and the (B, W) / (B, L, W) modulation tensors that adaLN and the gated residual broadcast over tokens.

This module imports triton at import time: load it only from the triton path of the dispatcher.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from triton import knobs

from . import tiles

INTERPRETED = bool(knobs.runtime.interpret)


@functools.cache
def _sm_count(index: int) -> int:
    """Streaming multiprocessors of a GPU (cached: this sits on the launch path)."""
    return torch.cuda.get_device_properties(index).multi_processor_count


def num_programs_cap(device: torch.device) -> int:
    """Programs for the persistent backward loops: 4 per SM on the GPU, a handful in the interpreter."""
    if INTERPRETED or device.type != "cuda":
        return 3
    return 4 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def rows_per_block(width: int) -> int:
    """Rows per program: `tiles.rows_per_block` on the GPU (interpreter: 4 rows, to exercise multi-block tails)."""
    if INTERPRETED:
        return 4
    return tiles.rows_per_block(width)


warps_for = tiles.warps_for  # one warp per 256 values of the tile, 4 to 16


@triton.jit
def load_modulation(PTR, b, rows, cols, rmask, cmask, sb, sl, sw, PER_TOKEN: tl.constexpr):
    """A modulation tile (BLOCK_R, BLOCK_W) fp32: per token, or one row broadcast over the tokens."""
    if PER_TOKEN:
        ptrs = PTR + b.to(tl.int64) * sb + rows[:, None].to(tl.int64) * sl + cols[None, :] * sw
        val = tl.load(ptrs, mask=rmask[:, None] & cmask[None, :], other=0.0)
    else:
        val = tl.load(PTR + b.to(tl.int64) * sb + cols * sw, mask=cmask, other=0.0)[None, :]
    return val.to(tl.float32)


def modulation_view(mod: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Broadcast a modulation to x (B, L, W) without copying; True when it varies across tokens."""
    m = mod[:, None, :] if mod.dim() == 2 else mod
    m = m.expand(x.shape)
    return m, x.shape[1] > 1 and m.stride(1) != 0


def row_geometry(x: torch.Tensor) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_W, num_warps) for rows of width W."""
    block_w = triton.next_power_of_2(x.shape[-1])
    block_r = rows_per_block(x.shape[-1])
    return block_r, block_w, warps_for(block_r, block_w)


def split_rows(x: torch.Tensor, block_r: int) -> tuple[int, int]:
    """Split each batch element's L tokens into chunks for the reducing backward: (chunks, rows each).

    Enough chunks to fill the GPU, few enough that the partial sums stay small next to the inputs.
    """
    b, length = x.shape[0], x.shape[1]
    blocks = triton.cdiv(length, block_r)
    # ~4 programs per SM keep enough loads in flight; three chunks per element in the interpreter.
    target = 3 * b if INTERPRETED or x.device.type != "cuda" else num_programs_cap(x.device)
    chunks = max(1, min(blocks, triton.cdiv(target, b)))
    rows = triton.cdiv(triton.cdiv(length, chunks), block_r) * block_r
    return triton.cdiv(length, rows), rows


def reduce_partials(part: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
    """(B, chunks, W) fp32 partial sums -> gradient shaped and typed like the (broadcast) modulation."""
    return part.sum(1, keepdim=True).sum_to_size(as_3d(mod).shape).reshape(mod.shape).to(mod.dtype)


def per_token_grad(full: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
    """(B, L, W) gradient -> shaped and typed like the modulation (summing broadcast dims)."""
    return full.sum_to_size(as_3d(mod).shape).reshape(mod.shape).to(mod.dtype)


def as_3d(mod: torch.Tensor) -> torch.Tensor:
    """(B, W) -> (B, 1, W); other shapes unchanged."""
    return mod[:, None, :] if mod.dim() == 2 else mod
