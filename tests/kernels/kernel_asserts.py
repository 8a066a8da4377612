"""Verbose comparisons for kernel tests (Liger-Kernel style): on failure, say where and by how much."""

from __future__ import annotations

import torch

# (atol, rtol) of a kernel against the float32 reference, per input dtype.
TOLERANCES = {
    torch.float32: (2e-5, 2e-5),
    torch.float16: (4e-3, 4e-3),
    torch.bfloat16: (3e-2, 3e-2),
}


def tolerances(dtype: torch.dtype, scale: float = 1.0) -> tuple[float, float]:
    """(atol, rtol) for a dtype, optionally loosened by `scale` (gradients chain more roundings)."""
    atol, rtol = TOLERANCES[dtype]
    return atol * scale, rtol * scale


def assert_verbose_allclose(
    actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float, name: str = "tensor", show: int = 5
) -> None:
    """allclose that reports the worst index, max abs/rel error and how many elements fail."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    a_nan, e_nan = torch.isnan(a), torch.isnan(e)
    if not torch.equal(a_nan, e_nan):
        idx = torch.nonzero(a_nan != e_nan)[0].tolist()
        raise AssertionError(f"{name}: NaN mismatch ({int(a_nan.sum())} NaN in actual, {int(e_nan.sum())} "
                             f"in expected), first at {idx}")
    a_inf, e_inf = torch.isinf(a), torch.isinf(e)
    if not torch.equal(a_inf, e_inf) or not torch.equal(a[a_inf], e[e_inf]):
        raise AssertionError(f"{name}: Inf mismatch ({int(a_inf.sum())} vs {int(e_inf.sum())})")
    finite = ~(a_nan | a_inf)
    diff = torch.where(finite, (a - e).abs(), torch.zeros_like(a))
    bound = atol + rtol * e.abs()
    bad = (diff > bound) & finite
    n_bad = int(bad.sum())
    if n_bad == 0:
        return
    rel = diff / e.abs().clamp_min(1e-12)
    worst = int(torch.argmax(diff - bound))
    worst_idx = list(torch.unravel_index(torch.tensor(worst), a.shape))
    worst_idx = [int(i) for i in worst_idx]
    lines = [
        f"{name}: {n_bad} / {a.numel()} elements ({100.0 * n_bad / max(a.numel(), 1):.3f}%) exceed "
        f"atol={atol:g} + rtol={rtol:g} * |expected|",
        f"  max abs error {float(diff.max()):.4g}, max rel error {float(rel[bad].max()):.4g}",
        f"  worst at {worst_idx}: actual {float(a.flatten()[worst]):.6g}, expected {float(e.flatten()[worst]):.6g}",
    ]
    for flat in torch.nonzero(bad.flatten()).flatten()[:show].tolist():
        idx = [int(i) for i in torch.unravel_index(torch.tensor(flat), a.shape)]
        lines.append(f"  at {idx}: actual {float(a.flatten()[flat]):.6g}, expected {float(e.flatten()[flat]):.6g}")
    raise AssertionError("\n".join(lines))


def assert_no_worse_than(
    actual: torch.Tensor, baseline: torch.Tensor, truth: torch.Tensor, name: str, floor: float = 1e-5
) -> None:
    """flash-attn style check for big shapes: |actual - truth| <= 2 * max|baseline - truth| + floor.

    `baseline` is the same math done naively in the kernel's low precision, so the bound scales with the
    problem instead of a guessed tolerance.
    """
    ref_err = float((baseline.double() - truth.double()).abs().max()) if truth.numel() else 0.0
    assert_verbose_allclose(actual, truth, atol=2 * ref_err + floor, rtol=0.0, name=name)
