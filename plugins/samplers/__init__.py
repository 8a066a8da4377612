"""Built-in samplers: fixed-step euler, midpoint, heun, rk4; adaptive dopri5; diffusers-flow-euler."""

from __future__ import annotations

import importlib

from .params import AdaptiveParams, FixedStepParams


def _lazy(module: str, cls: str):
    """A factory importing its class on first use, so registering stays free of torch."""

    def factory(**params):
        return getattr(importlib.import_module(f"vssflow.plugins.samplers.{module}"), cls)(**params)

    factory.__doc__ = f"Build a {cls} from validated params."
    return factory


_TINY_FIXED = {"steps": 4, "guidance": 2.0}
BUILTINS = [
    ("euler", "runge_kutta", "EulerSampler", FixedStepParams, "Fixed-step Euler (order 1)", _TINY_FIXED),
    ("midpoint", "runge_kutta", "MidpointSampler", FixedStepParams, "Fixed-step explicit midpoint (order 2)", _TINY_FIXED),
    ("heun", "runge_kutta", "HeunSampler", FixedStepParams, "Fixed-step Heun (order 2)", _TINY_FIXED),
    ("rk4", "runge_kutta", "Rk4Sampler", FixedStepParams, "Fixed-step classical Runge-Kutta (order 4)", _TINY_FIXED),
    ("dopri5", "dopri5", "Dopri5Sampler", AdaptiveParams,
     "Adaptive Dormand-Prince 5(4) with atol/rtol; reports function evaluations", {"atol": 1e-4, "rtol": 1e-4}),
    ("diffusers-flow-euler", "diffusers_euler", "DiffusersFlowEulerSampler", FixedStepParams,
     "diffusers' FlowMatchEulerDiscreteScheduler, converted to t = 0 noise and explicit sigmas",
     {"steps": 4, "shift": 3.0}),
]


def register(register) -> None:
    """Register the built-in samplers."""
    for name, module, cls, params, description, tiny in BUILTINS:
        register(name, _lazy(module, cls), params=params, description=description, tiny=tiny)
