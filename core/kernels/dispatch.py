"""Backend selection for the kernels: "auto" | "triton" | "sdpa" | "reference", with logged fallbacks.

Rules (docs/kernels.md has the long form):
- "auto" reads VSSFLOW_ATTENTION_BACKEND first (if set); otherwise it is "triton" on CUDA (when triton is
  installed) and "sdpa" elsewhere.
- "triton" that cannot run (CPU without TRITON_INTERPRET=1, unsupported head dim or dtype, old GPU, ...)
  becomes "sdpa", and the reason is logged ONCE on logging.getLogger("vssflow.kernels").
- "sdpa" means torch.nn.functional.scaled_dot_product_attention for attention and the plain PyTorch
  implementation for the other ops (they have no SDPA); "reference" is the float32 matmul-softmax truth.
This module never imports triton: `import vssflow.core.kernels` stays cheap on machines without it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys

import torch

from . import tiles

BACKENDS = ("auto", "triton", "sdpa", "reference")
ENV_VAR = "VSSFLOW_ATTENTION_BACKEND"
ATTENTION_HEAD_DIMS = (32, 64, 128)
# Row kernels hold a whole row in registers; wider rows would spill, so they take the PyTorch path. The
# limit per op and GPU family is tiles.max_row_width (adaLN and the gated residual stop earlier on the GPU).
MAX_ROW_WIDTH = tiles.MAX_ROW_WIDTH
OPS = ("attention", "rms_norm", "rope", "qk_norm_rope", "adaln_modulate", "gated_residual")

logger = logging.getLogger("vssflow.kernels")
_warned: set[str] = set()


def interpret_enabled() -> bool:
    """True when TRITON_INTERPRET asks triton to run kernels on the CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def triton_available() -> bool:
    """True when triton is installed (checked without importing it)."""
    return importlib.util.find_spec("triton") is not None


def warn_once(reason: str) -> None:
    """Log one line per distinct fallback reason for the life of the process."""
    if reason not in _warned:
        _warned.add(reason)
        logger.warning("vssflow.kernels: %s; falling back to sdpa", reason)


def device_guard(t: torch.Tensor):
    """Context that makes t's GPU current: triton launches on the current device, not the tensor's."""
    if t.device.type == "cuda" and t.device.index is not None and t.device.index != torch.cuda.current_device():
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


def _kernel_modules_interpreted() -> bool | None:
    """Whether already-imported kernel modules were built for the interpreter (None: none imported)."""
    for name in ("vssflow.core.kernels.flash_attention", "vssflow.core.kernels.rows"):
        mod = sys.modules.get(name)
        if mod is not None:
            return bool(getattr(mod, "INTERPRETED", False))
    return None


def triton_unsupported(
    device: torch.device,
    op: str = "attention",
    dtype: torch.dtype | None = None,
    head_dim: int | None = None,
    width: int | None = None,
) -> str | None:
    """Why the triton path cannot serve this call, or None when it can."""
    if not triton_available():
        return "triton is not installed"
    if device.type == "cpu":
        if not interpret_enabled():
            return "triton on CPU needs TRITON_INTERPRET=1"
        if _kernel_modules_interpreted() is False:
            return "triton kernels were compiled for the GPU before TRITON_INTERPRET=1 was set"
    elif device.type != "cuda":
        return f"triton needs a CUDA device, got {device.type}"
    on_gpu = device.type == "cuda" and not interpret_enabled()
    if on_gpu and torch.cuda.get_device_capability(device) < (8, 0):
        return "triton kernels need compute capability >= 8.0"
    if op == "attention":
        allowed = (torch.float16, torch.bfloat16) if on_gpu else (torch.float16, torch.bfloat16, torch.float32)
        if dtype is not None and dtype not in allowed:
            where = "on CUDA" if on_gpu else "in the interpreter"
            return f"triton attention does not take {dtype} {where}"
        if head_dim is not None and head_dim not in ATTENTION_HEAD_DIMS:
            return f"triton attention supports head dims {ATTENTION_HEAD_DIMS}, got {head_dim}"
    else:
        if dtype is not None and dtype not in (torch.float16, torch.bfloat16, torch.float32):
            return f"triton {op} does not take {dtype}"
        limit = MAX_ROW_WIDTH
        if on_gpu and op in tiles.ROW_OPS:
            limit = tiles.max_row_width(op, tiles.arch_family(torch.cuda.get_device_capability(device)))
        if width is not None and width > limit:
            return f"triton {op} supports rows up to {limit} wide, got {width}"
    return None


def resolve_backend(backend: str | None, device: torch.device | str, **why) -> str:
    """Concrete backend ("triton" | "sdpa" | "reference") for a call; `why` = op, dtype, head_dim, width."""
    unknown = set(why) - {"op", "dtype", "head_dim", "width"}
    if unknown:
        raise TypeError(f"resolve_backend got unknown keywords {sorted(unknown)}")
    op = why.get("op", "attention")
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; expected one of {OPS}")
    device = torch.device(device)
    name = "auto" if backend is None else str(backend).strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r}; expected one of {BACKENDS}")
    if name == "auto":
        env = os.environ.get(ENV_VAR, "").strip().lower()
        if env:
            if env not in BACKENDS:
                raise ValueError(f"{ENV_VAR}={env!r} is not one of {BACKENDS}")
            name = env
    if name == "auto":
        name = "triton" if device.type == "cuda" and triton_available() else "sdpa"
    if name == "triton":
        reason = triton_unsupported(
            device, op, why.get("dtype"), why.get("head_dim"), why.get("width")
        )
        if reason is not None:
            warn_once(f"{op}: {reason}")
            name = "sdpa"
    return name
