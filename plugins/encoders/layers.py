"""Small building blocks shared by the built-in encoders: per-frame CNN, masked temporal conv, ConvNeXt-V2.

Shapes: N frames flattened over batch and time, B batch, L frames, D features. Masks: True = valid.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vssflow.core.errors import ContractError


def component_label(module: Any, kind: str = "encoder") -> str:
    """`encoder 'tiny-cnn'` when built through the registry, else the class name (for error messages)."""
    info = getattr(module, "vssflow_component", None)
    return f"{kind} {info.name!r}" if info is not None else f"{kind} {type(module).__name__}"


def check_fps(module: Any, declared: float | None, given: float | None) -> None:
    """ContractError when the input says it was sampled at another fps than the encoder declares."""
    if declared is not None and given is not None and abs(float(given) - float(declared)) > 1e-3:
        raise ContractError(
            f"{component_label(module)}: expected input at {declared:g} fps, got {float(given):g} fps "
            f"(re-read the input at the encoder's fps)"
        )


def norm_groups(channels: int) -> int:
    """GroupNorm group count for `channels` (8, 4, 2 or 1, whichever divides)."""
    # GroupNorm rather than BatchNorm: statistics independent of the batch, so outputs are too
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class FrameCNN(nn.Module):
    """Per-frame 2D conv stack (stride 2 per stage) + global average pool + linear: (N, C, H, W) -> (N, D)."""

    def __init__(self, in_channels: int, channels: tuple[int, ...], out_dim: int):
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for ch in channels:
            layers += [nn.Conv2d(prev, ch, 3, stride=2, padding=1), nn.GroupNorm(norm_groups(ch), ch), nn.SiLU()]
            prev = ch
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(prev, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, D)."""
        return self.proj(self.convs(x).mean(dim=(-2, -1)))


class TemporalConv(nn.Module):
    """Pre-norm residual 1D conv over time; invalid frames are zeroed first so padding never leaks in."""

    def __init__(self, dim: int, kernel_size: int = 3, dilation: int = 1):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(dim, dim, kernel_size, padding=dilation * (kernel_size - 1) // 2, dilation=dilation)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, L, D), mask (B, L) -> (B, L, D)."""
        h = F.silu(self.norm(x))
        if mask is not None:
            h = h * mask[..., None].to(h.dtype)
        return x + self.conv(h.transpose(1, 2)).transpose(1, 2)


class GRN(nn.Module):
    """Global response normalisation over time (ConvNeXt-V2), zero-initialised so a block starts as identity."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (B, L, D)."""
        gx = torch.norm(x, p=2, dim=1, keepdim=True)  # (B, 1, D)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    """Depthwise conv, LayerNorm, MLP with GRN, residual (the F5-TTS text refiner block). (B, L, D) -> (B, L, D)."""

    def __init__(self, dim: int, intermediate_dim: int, kernel_size: int = 7):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, intermediate_dim)
        self.grn = GRN(intermediate_dim)
        self.down = nn.Linear(intermediate_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (B, L, D)."""
        h = self.dwconv(x.transpose(1, 2)).transpose(1, 2)  # (B, L, D)
        h = self.grn(F.gelu(self.up(self.norm(h))))  # (B, L, I)
        return x + self.down(h)


def luma(frames: Tensor) -> Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> (..., 1, H, W) ITU-R BT.601 luma."""
    if frames.dtype in (torch.float32, torch.float64):
        # three plane-wise multiply-adds in the order a sum over the channel dim takes (the same bits), without its
        # broadcast product and strided reduction over (..., 3, H, W): about half the time on CPU
        return frames[..., 0:1, :, :] * 0.299 + frames[..., 1:2, :, :] * 0.587 + frames[..., 2:3, :, :] * 0.114
    # half precision: the reduction accumulates in float32 and rounds once
    return (frames * frames.new_tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(dim=-3, keepdim=True)


def _band(taps: tuple[float, ...], n: int, pad: str, like: Tensor) -> Tensor:
    """(n, n) matrix A with (A @ x)[j] = sum_i taps[i] * x[j + i - r], edges replicated or zero."""
    return _band_cpu(taps, n, pad).to(device=like.device, dtype=like.dtype)


@functools.lru_cache(maxsize=64)
def _band_cpu(taps: tuple[float, ...], n: int, pad: str) -> Tensor:
    r = len(taps) // 2
    a = torch.zeros(n, n, dtype=torch.float64)
    for j in range(n):
        for i, tap in enumerate(taps):
            k = j + i - r
            if 0 <= k < n:
                a[j, k] += tap
            elif pad == "replicate":
                a[j, min(max(k, 0), n - 1)] += tap
    return a


def _filter2d(x: Tensor, taps_h: tuple[float, ...], taps_w: tuple[float, ...], pad: str = "replicate") -> Tensor:
    """Separable correlation of (..., H, W) with taps along H then W, same size out, as two small matmuls.

    Banded matrices rather than convolutions: the images here are small (tens of pixels), where a GEMM
    over all frames at once beats a per-image 1-channel convolution many times over on CPU.
    """
    h, w = x.shape[-2:]
    return _band(taps_h, h, pad, x) @ x @ _band(taps_w, w, pad, x).transpose(0, 1)


def lucas_kanade_motion(y: Tensor, mask: Tensor, grid: int, window: int = 5, eps: float = 1e-3) -> Tensor:
    """Parameter-free motion statistics: Lucas-Kanade flow pooled on a grid, and its change over time.

    y: luma (B, L, 1, H, W); mask (B, L) True = valid frame. Returns (B, L, 4 * grid * grid): per cell the
    mean flow (vx, vy) in pixels per frame between frame t-1 and t, weighted by where the image changes and
    has texture, then the per-cell acceleration (v_t - v_{t-1}). Impacts, bounces and starts are spikes in
    the acceleration; flows are clamped to +-window (beyond it LK cannot measure).
    The first valid frame and frames after padding have zero flow and acceleration.
    """
    b, length, _, h, w = y.shape
    binomial = (0.0625, 0.25, 0.375, 0.25, 0.0625)  # 5-tap blur: keeps LK's small-motion assumption
    y = _filter2d(y.float(), binomial, binomial)
    prev = torch.cat([y[:, :1], y[:, :-1]], dim=1)
    pair = (mask & torch.cat([mask[:, :1] & False, mask[:, :-1]], dim=1)).to(y.dtype)  # (B, L) both valid
    it = ((y - prev) * pair[:, :, None, None, None]).flatten(0, 1)  # (N, 1, H, W) temporal derivative
    mid = (0.5 * (y + prev)).flatten(0, 1)
    ix = _filter2d(mid, (0.25, 0.5, 0.25), (-0.5, 0.0, 0.5))  # Sobel / 8
    iy = _filter2d(mid, (-0.5, 0.0, 0.5), (0.25, 0.5, 0.25))
    # windowed sums of the five products at once (zero outside the image; the solve is scale-free)
    ones = (1.0,) * window
    products = torch.cat([ix * ix, iy * iy, ix * iy, ix * it, iy * it], dim=1)  # (N, 5, H, W)
    sums = _filter2d(products, ones, ones, "constant")
    sxx, syy, sxy, sxt, syt = sums.unbind(1)
    trace = sxx + syy
    det = sxx * syy - sxy * sxy + eps * trace * trace + 1e-12  # Tikhonov-regularised 2x2 solve
    vx = ((sxy * syt - syy * sxt) / det).clamp(-window, window)
    vy = ((sxy * sxt - sxx * syt) / det).clamp(-window, window)
    weight = trace * (it[:, 0].abs() > 1e-3).to(it.dtype)  # where there is texture and change (N, H, W)
    pooled = F.adaptive_avg_pool2d(torch.stack([weight, vx * weight, vy * weight], dim=1), grid)  # (N, 3, g, g)
    flow = (pooled[:, 1:] / (pooled[:, :1] + 1e-8)).reshape(b, length, 2 * grid * grid)
    accel = flow - torch.cat([torch.zeros_like(flow[:, :1]), flow[:, :-1]], dim=1)
    accel = accel * (pair * torch.cat([pair[:, :1] * 0, pair[:, :-1]], dim=1))[..., None]  # two valid pairs
    return torch.cat([flow, accel], dim=-1).to(y.dtype)


class MotionStatsCache:
    """Per-clip memo of `lucas_kanade_motion`: parameter-free, so a clip's statistics never change and are
    computed once, not at every training step that draws the clip again.

    Keyed by a digest of the clip's luma frames and frame mask (the exact input, so crops, augmentations and
    other windows of a clip are other keys and can never be served stale); the least recently used entry goes
    first beyond `capacity` clips. Only CPU tensors are memoised (on a GPU the statistics cost less than the
    copy a digest needs). Each row is computed alone, so a clip's statistics do not depend on its batch.
    """

    def __init__(self, capacity: int):
        from collections import OrderedDict

        self.capacity = int(capacity)
        self.entries: OrderedDict[bytes, Tensor] = OrderedDict()
        self.hits = self.misses = 0

    @staticmethod
    def key(y: Tensor, mask: Tensor, grid: int, window: int) -> bytes:
        """Digest of one clip's luma (L, 1, H, W), mask (L,) and the settings."""
        import hashlib

        digest = hashlib.blake2b(digest_size=20)
        digest.update(repr((tuple(y.shape), str(y.dtype), grid, window)).encode())
        digest.update(y.detach().contiguous().numpy().tobytes())
        digest.update(mask.detach().to(torch.uint8).contiguous().numpy().tobytes())
        return digest.digest()

    def __call__(self, y: Tensor, mask: Tensor, grid: int, window: int) -> Tensor:
        """lucas_kanade_motion(y, mask, grid, window), (B, L, 4 * grid^2), from the memo where possible."""
        if self.capacity <= 0 or y.device.type != "cpu" or y.requires_grad:
            return lucas_kanade_motion(y, mask, grid, window)
        rows = []
        for i in range(y.shape[0]):
            k = self.key(y[i], mask[i], grid, window)
            stats = self.entries.get(k)
            if stats is None:
                self.misses += 1
                stats = lucas_kanade_motion(y[i : i + 1], mask[i : i + 1], grid, window)[0]
                self.entries[k] = stats
                if len(self.entries) > self.capacity:
                    self.entries.popitem(last=False)
            else:
                self.hits += 1
                self.entries.move_to_end(k)
            rows.append(stats)
        return torch.stack(rows)
