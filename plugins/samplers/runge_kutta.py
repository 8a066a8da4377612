"""Fixed-step explicit Runge-Kutta samplers: euler (order 1), midpoint and heun (2), rk4 (4)."""

from __future__ import annotations

from vssflow.core.sampling import FixedStepSampler, Tableau

from .params import FixedStepParams

TABLEAUX: dict[str, Tableau] = {
    "euler": Tableau(c=(0.0,), a=((),), b=(1.0,), order=1),
    "midpoint": Tableau(c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0), order=2),
    "heun": Tableau(c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5), order=2),
    "rk4": Tableau(
        c=(0.0, 0.5, 0.5, 1.0),
        a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
        b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
        order=4,
    ),
}


def _sampler_class(name: str) -> type[FixedStepSampler]:
    cls = type(f"{name.capitalize()}Sampler", (FixedStepSampler,), {
        "tableau": TABLEAUX[name],
        "params_model": FixedStepParams,
        "__doc__": f"Fixed-step {name} (order {TABLEAUX[name].order}) from noise to data.",
        "__module__": __name__,
    })
    return cls


SAMPLERS: dict[str, type[FixedStepSampler]] = {name: _sampler_class(name) for name in TABLEAUX}
EulerSampler, MidpointSampler, HeunSampler, Rk4Sampler = (SAMPLERS[n] for n in ("euler", "midpoint", "heun", "rk4"))
