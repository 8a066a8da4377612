"""Sampling: ODE integrators from noise (t = 0) to data (t = 1), and classifier-free guidance.

A sampler integrates dx/dt = fn(t, x) with t a Python float and x (B, ...). The model hands it a
`GuidedVelocity`, which evaluates every guidance variant (conditional, unconditional, partial) of the
batch in ONE network call and combines them linearly. Conditions are encoded before that, once.

Guidance (one scale, or one per condition). Conditions are added one at a time in recipe order; a
condition with scale w_i pushes along the difference its arrival makes:
    v = v(none) + sum_i w_i * (v(c_1..c_i) - v(c_1..c_{i-1}))
With every w_i = w this telescopes to standard CFG, v(none) + w * (v(all) - v(none)); with w = 1 it is
the plain conditional velocity. Consecutive conditions with equal scales share one pass, so k distinct
scale groups cost k + 1 network evaluations per step, batched together.

Negative values: "without condition i" means its learned null embedding, unless a negative value is given
for it; then every variant that leaves i out uses the negative instead (FlowModel.guided_velocity). For one
condition v = v(neg) + w (v(pos) - v(neg)); in the chain, v(none) and each v(c_1..c_{i-1}) carry the
negatives of the conditions they leave out, so each w_i still scales the step from c_i's negative to c_i.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from .flow import shift_time, sway_time
from .interfaces import Conformable

ODEFn = Callable[[float, Tensor], Tensor]


@dataclass(frozen=True)
class GuidanceTerm:
    """One network evaluation of a guided step: the conditions it keeps, and its weight in the sum."""

    keep: frozenset[str]
    weight: float


def guidance_plan(
    names: Sequence[str], guidance: float, per_condition: Mapping[str, float] | None = None
) -> list[GuidanceTerm]:
    """The weighted condition subsets whose velocities sum to the guided velocity (module docstring)."""
    per_condition = dict(per_condition or {})
    unknown = sorted(set(per_condition) - set(names))
    if unknown:
        raise ValueError(
            f"condition_guidance names {unknown}, which the model does not have (conditions: {', '.join(names) or 'none'})"
        )
    groups: list[tuple[list[str], float]] = []
    for name in names:
        scale = float(per_condition.get(name, guidance))
        if groups and groups[-1][1] == scale:
            groups[-1][0].append(name)
        else:
            groups.append(([name], scale))
    if not groups:
        return [GuidanceTerm(frozenset(), 1.0)]
    scales = [s for _, s in groups]
    terms = {frozenset(): 1.0 - scales[0]}
    kept: set[str] = set()
    for j, (members, scale) in enumerate(groups):
        kept |= set(members)
        nxt = scales[j + 1] if j + 1 < len(groups) else 0.0
        terms[frozenset(kept)] = terms.get(frozenset(kept), 0.0) + scale - nxt
    return [GuidanceTerm(k, w) for k, w in terms.items() if w != 0.0]


class GuidedVelocity:
    """fn(t, x) for a sampler: all guidance variants in one batched call of net(t (K*B,), x (K*B, ...))."""

    def __init__(self, net: Callable[[Tensor, Tensor], Tensor], weights: Sequence[float]) -> None:
        self.net, self.weights, self.nfe = net, list(weights), 0

    def __call__(self, t: float | Tensor, x: Tensor) -> Tensor:  # noqa: D102
        k, b = len(self.weights), x.shape[0]
        xx = x.repeat(k, *([1] * (x.dim() - 1)))  # (K*B, ...)
        tt = torch.full((k * b,), float(t), device=x.device, dtype=torch.float32)  # (K*B,) fp32 even for bf16 x
        v = self.net(tt, xx).view(k, *x.shape)  # (K, B, ...)
        self.nfe += 1
        out = self.weights[0] * v[0]
        for w, vi in zip(self.weights[1:], v[1:], strict=True):
            out = out + w * vi
        return out  # (B, ...)


@dataclass
class SampleResult:
    """What a sampler returns: x at t = 1, function evaluations, the times stepped through, and optionally
    the state after each step."""

    x: Tensor
    nfe: int
    times: Tensor
    trajectory: list[Tensor] | None = field(default=None, repr=False)


class LinearODE:
    """dx/dt = a x + b cos(t): a test field with a closed-form solution (conformance, accuracy tests)."""

    def __init__(self, a: float = -1.5, b: float = 2.0) -> None:
        self.a, self.b = a, b

    def __call__(self, t: float, x: Tensor) -> Tensor:  # noqa: D102
        return self.a * x + self.b * torch.cos(torch.as_tensor(float(t), dtype=x.dtype))

    def solution(self, x0: Tensor, t: float = 1.0) -> Tensor:
        """x(t) from x(0) = x0."""
        a, b = self.a, self.b
        tt = torch.as_tensor(t, dtype=torch.float64)
        # particular solution of x' = a x + b cos t: x_p = b (sin t - a cos t) / (1 + a^2)
        xp = b * (torch.sin(tt) - a * torch.cos(tt)) / (1 + a * a)
        xp0 = -b * a / (1 + a * a)
        return ((x0.double() - xp0) * torch.exp(a * tt) + xp).to(x0.dtype)


class Sampler(Conformable):
    """Integrates dx/dt = fn(t, x) from t = 0 (noise) to t = 1 (data) and carries the guidance settings.

    `config` is exactly the constructor's keyword arguments; `replace(**changes)` builds a copy with some
    changed, validated by `params_model` (a pydantic class the plugin sets) when there is one.
    """

    params_model: ClassVar[Any] = None

    def __init__(self, guidance: float = 1.0, condition_guidance: Mapping[str, float] | None = None, **config: Any):
        self.guidance = float(guidance)
        self.condition_guidance = dict(condition_guidance or {})
        self.config = {"guidance": self.guidance, "condition_guidance": dict(self.condition_guidance), **config}

    def replace(self, **changes: Any) -> Sampler:
        """A copy with some params changed (None values are ignored)."""
        merged = {**self.config, **{k: v for k, v in changes.items() if v is not None}}
        if self.params_model is not None:
            try:
                merged = self.params_model.model_validate(merged).model_dump()
            except Exception as exc:  # pydantic's ValidationError, without importing pydantic in core
                raise ValueError(f"{type(self).__name__}: invalid params {changes}: {exc}") from None
        clone = type(self)(**merged)
        info = getattr(self, "vssflow_component", None)
        if info is not None:
            clone.vssflow_component = type(info)(info.kind, info.name, merged, info.distribution, info.version)
        return clone

    def guidance_plan(self, names: Sequence[str]) -> list[GuidanceTerm]:
        """Guidance terms for a model with these condition names (in recipe order)."""
        return guidance_plan(names, self.guidance, self.condition_guidance)

    def __call__(self, fn: ODEFn, x0: Tensor, trajectory: bool = False) -> SampleResult:
        """Integrate from x0 at t = 0 to t = 1."""
        return self.sample(fn, x0, trajectory)

    def sample(self, fn: ODEFn, x0: Tensor, trajectory: bool = False) -> SampleResult:  # noqa: D102
        raise NotImplementedError

    # conformance ---------------------------------------------------------------------------------------------
    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """A linear test ODE and a random start."""
        return {"fn": LinearODE(), "x0": torch.randn(batch_size, 3, 2, generator=generator)}

    def output_tensors(self, output: Any) -> dict[str, Tensor]:
        """The end state."""
        return {"x1": output.x} if isinstance(output, SampleResult) else super().output_tensors(output)

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """The end state has the start's shape."""
        return {"x1": tuple(inputs["x0"].shape)}


@dataclass(frozen=True)
class Tableau:
    """An explicit Runge-Kutta scheme: nodes c, lower-triangular a, weights b (and b_err for an embedded
    lower-order estimate)."""

    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int
    b_err: tuple[float, ...] | None = None


def rk_stages(fn: ODEFn, tableau: Tableau, t: float, h: float, x: Tensor, k1: Tensor | None = None) -> list[Tensor]:
    """The stage derivatives k_i of one step of size h (k1 reused when given, e.g. first-same-as-last)."""
    ks: list[Tensor] = []
    for i, (ci, ai) in enumerate(zip(tableau.c, tableau.a, strict=True)):
        if i == 0 and k1 is not None:
            ks.append(k1)
            continue
        xi = x
        for aij, kj in zip(ai, ks, strict=False):
            if aij:
                xi = xi + (h * aij) * kj
        ks.append(fn(t + ci * h, xi))
    return ks


def combine(x: Tensor, h: float, weights: Sequence[float], ks: Sequence[Tensor]) -> Tensor:
    """x + h * sum_i w_i k_i."""
    out = x
    for w, k in zip(weights, ks, strict=False):
        if w:
            out = out + (h * w) * k
    return out


class FixedStepSampler(Sampler):
    """An explicit Runge-Kutta scheme on a fixed time grid, optionally warped by a shift and sway."""

    tableau: ClassVar[Tableau]

    def __init__(self, steps: int = 25, shift: float = 1.0, sway: float = 0.0, **guidance: Any) -> None:
        super().__init__(steps=steps, shift=shift, sway=sway, **guidance)
        self.steps, self.shift, self.sway = int(steps), float(shift), float(sway)

    def times(self) -> Tensor:
        """The grid t_0 = 0 < ... < t_steps = 1 (float64): uniform, then shifted, then swayed."""
        t = torch.linspace(0.0, 1.0, self.steps + 1, dtype=torch.float64)
        return sway_time(shift_time(t, self.shift), self.sway)

    def sample(self, fn: ODEFn, x0: Tensor, trajectory: bool = False) -> SampleResult:
        """Take `steps` steps of the scheme over the grid."""
        grid = self.times()
        x, nfe, path = x0, 0, [] if trajectory else None
        for t, t_next in zip(grid[:-1].tolist(), grid[1:].tolist(), strict=True):
            x, n = self.step(fn, t, t_next - t, x)
            nfe += n
            if path is not None:
                path.append(x)
        return SampleResult(x, nfe, grid, path)

    def step(self, fn: ODEFn, t: float, h: float, x: Tensor) -> tuple[Tensor, int]:
        """One step of size h from (t, x): the new state and the evaluations it took."""
        ks = rk_stages(fn, self.tableau, t, h, x)
        return combine(x, h, self.tableau.b, ks), len(ks)
