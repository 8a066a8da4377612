"""`dopri5`: adaptive Dormand-Prince 5(4) with error control (atol, rtol) and a count of evaluations."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vssflow.core.sampling import ODEFn, Sampler, SampleResult, Tableau, combine, rk_stages

from .params import AdaptiveParams

DOPRI5 = Tableau(
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=(
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
    ),
    b=(35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0),
    order=5,
    b_err=(5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40),
)
SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 10.0


def _rms(x: Tensor) -> float:
    return float(x.double().pow(2).mean().sqrt())


class Dopri5Sampler(Sampler):
    """Dormand-Prince 5(4): local error (RMS of err / (atol + rtol |x|)) kept <= 1 per accepted step.

    The fifth-order solution is propagated (local extrapolation) and the last stage is reused as the next
    step's first (FSAL), so an accepted step costs 6 evaluations. `SampleResult.nfe` counts them all,
    rejected steps and the initial-step probe included; `times` lists the accepted times.
    """

    params_model = AdaptiveParams
    tableau = DOPRI5

    def __init__(
        self, atol: float = 1e-5, rtol: float = 1e-5, max_steps: int = 10000, first_step: float | None = None,
        **guidance: Any,
    ) -> None:
        super().__init__(atol=atol, rtol=rtol, max_steps=max_steps, first_step=first_step, **guidance)
        self.atol, self.rtol, self.max_steps, self.first_step = float(atol), float(rtol), int(max_steps), first_step

    def _scale(self, x: Tensor, y: Tensor) -> Tensor:
        return self.atol + self.rtol * torch.maximum(x.abs(), y.abs())

    def _initial_step(self, fn: ODEFn, x0: Tensor, f0: Tensor) -> float:
        """Hairer, Norsett & Wanner, Solving ODEs I, II.4: a step whose first-order error is ~1% of tolerance."""
        scale = self._scale(x0, x0)
        d0, d1 = _rms(x0 / scale), _rms(f0 / scale)
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        f1 = fn(h0, x0 + h0 * f0)
        d2 = _rms((f1 - f0) / scale) / h0
        big = max(d1, d2)
        h1 = max(1e-6, h0 * 1e-3) if big <= 1e-15 else (0.01 / big) ** (1.0 / (self.tableau.order))
        return min(100 * h0, h1, 1.0)

    def sample(self, fn: ODEFn, x0: Tensor, trajectory: bool = False) -> SampleResult:
        """Integrate from 0 to 1 with adaptive steps."""
        t, x = 0.0, x0
        k1 = fn(t, x)
        nfe = 1
        h = self.first_step
        if h is None:
            h = self._initial_step(fn, x0, k1)
            nfe += 1
        times, path, tried = [0.0], [] if trajectory else None, 0
        while t < 1.0:
            tried += 1
            if tried > self.max_steps:
                raise RuntimeError(
                    f"dopri5 took more than max_steps={self.max_steps} steps before t=1 (reached t={t:.4f}); "
                    "loosen atol/rtol or raise max_steps"
                )
            h = min(h, 1.0 - t)
            ks = rk_stages(fn, self.tableau, t, h, x, k1=k1)
            nfe += len(ks) - 1
            x_new = combine(x, h, self.tableau.b, ks)
            err = combine(torch.zeros_like(x), h, [b - e for b, e in zip(self.tableau.b, self.tableau.b_err, strict=True)], ks)
            ratio = _rms(err / self._scale(x, x_new))
            if ratio <= 1.0:
                t = 1.0 if 1.0 - (t + h) < 1e-12 else t + h
                x, k1 = x_new, ks[-1]
                times.append(t)
                if path is not None:
                    path.append(x)
            factor = MAX_FACTOR if ratio == 0 else SAFETY * ratio ** (-1.0 / self.tableau.order)
            h *= min(MAX_FACTOR, max(MIN_FACTOR, factor if ratio <= 1.0 else min(1.0, factor)))
        return SampleResult(x, nfe, torch.tensor(times, dtype=torch.float64), path)
