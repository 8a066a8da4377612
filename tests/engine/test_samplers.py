"""Samplers: order of accuracy on a linear ODE, dopri5 tolerance and evaluation count, the diffusers
adapter against euler, classifier-free guidance algebra and batching, and param validation."""

from __future__ import annotations

import math

import pytest
import torch

from vssflow.core.errors import RecipeError
from vssflow.core.sampling import GuidedVelocity, LinearODE, guidance_plan
from vssflow.registry import create

ORDERS = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4, "diffusers-flow-euler": 1}


def _error(name: str, steps: int, x0: torch.Tensor, **params) -> float:
    field = LinearODE()
    result = create("sampler", name, steps=steps, **params)(field, x0)
    return float((result.x.double() - field.solution(x0.double())).abs().max())


@pytest.mark.parametrize("name", sorted(ORDERS))
@pytest.mark.parametrize("warp", [{}, {"shift": 2.0, "sway": -0.5}], ids=["uniform-grid", "shifted-swayed-grid"])
def test_fixed_step_samplers_converge_at_their_order(name, warp):
    dtype = torch.float32 if name == "diffusers-flow-euler" else torch.float64  # diffusers steps in float32
    x0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=dtype)
    errors = [_error(name, n, x0, **warp) for n in (8, 16, 32)]
    ratios = [errors[i] / errors[i + 1] for i in range(2)]
    expected = 2 ** ORDERS[name]
    assert all(0.8 * expected < r < 1.25 * expected for r in ratios), (errors, ratios)


def test_step_counts_and_evaluations():
    x0 = torch.randn(2, 3)
    for name, evals in (("euler", 1), ("midpoint", 2), ("heun", 2), ("rk4", 4)):
        result = create("sampler", name, steps=5)(LinearODE(), x0)
        assert result.nfe == 5 * evals and len(result.times) == 6


@pytest.mark.parametrize("tol", [1e-3, 1e-5, 1e-7])
def test_dopri5_meets_its_tolerance_and_reports_evaluations(tol):
    field = LinearODE()
    x0 = torch.randn(8, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    calls = {"n": 0}

    def counted(t, x):
        calls["n"] += 1
        return field(t, x)

    result = create("sampler", "dopri5", atol=tol, rtol=tol)(counted, x0)
    err = (result.x - field.solution(x0)).abs()
    scale = tol + tol * field.solution(x0).abs()
    # a global error within a small multiple of the local tolerance
    assert float((err / scale).max()) < 10.0
    assert result.nfe == calls["n"] > 0
    assert result.times[0] == 0 and result.times[-1] == 1 and (result.times.diff() > 0).all()


def test_dopri5_spends_more_evaluations_for_tighter_tolerances():
    x0 = torch.randn(4, 4, dtype=torch.float64)
    nfe = [create("sampler", "dopri5", atol=t, rtol=t)(LinearODE(), x0).nfe for t in (1e-3, 1e-6, 1e-9)]
    assert nfe[0] < nfe[1] < nfe[2]


def test_dopri5_gives_up_after_max_steps():
    with pytest.raises(RuntimeError, match="max_steps"):
        create("sampler", "dopri5", atol=1e-12, rtol=1e-12, max_steps=3)(LinearODE(a=-40.0), torch.randn(2, 2))


@pytest.mark.parametrize("warp", [{}, {"shift": 3.0}, {"sway": -1.0}], ids=["plain", "shift", "sway"])
def test_diffusers_adapter_matches_euler_step_for_step(warp):
    x0 = torch.randn(3, 5, 2, generator=torch.Generator().manual_seed(2))
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))

    def field(t, x):  # a nonlinear, time-dependent field
        return net(torch.cat([x, torch.full_like(x[..., :1], float(t))], dim=-1))

    with torch.no_grad():
        ours = create("sampler", "euler", steps=12, **warp)(field, x0, trajectory=True)
        theirs = create("sampler", "diffusers-flow-euler", steps=12, **warp)(field, x0, trajectory=True)
    assert len(ours.trajectory) == len(theirs.trajectory) == 12
    torch.testing.assert_close(theirs.times, ours.times, atol=1e-6, rtol=0)
    for a, b in zip(ours.trajectory, theirs.trajectory, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def _velocities(keep_sets):
    """Distinct velocities per kept-condition set, to check the guidance algebra."""
    table = {frozenset(): 1.0, frozenset({"a"}): 10.0, frozenset({"a", "b"}): 100.0, frozenset({"a", "b", "c"}): 1000.0}
    return {k: table[k] for k in keep_sets}


def test_single_scale_guidance_is_standard_cfg_in_two_passes():
    plan = guidance_plan(["a", "b", "c"], 3.0)
    assert {t.keep: t.weight for t in plan} == {frozenset(): -2.0, frozenset({"a", "b", "c"}): 3.0}
    assert [t.keep for t in guidance_plan(["a", "b"], 1.0)] == [frozenset({"a", "b"})]  # no guidance: one pass
    assert [t.keep for t in guidance_plan(["a", "b"], 0.0)] == [frozenset()]  # unconditional


def test_per_condition_guidance_adds_conditions_in_order():
    plan = guidance_plan(["a", "b", "c"], 2.0, {"b": 5.0})
    v = _velocities([t.keep for t in plan])
    guided = sum(t.weight * v[t.keep] for t in plan)
    vn, va, vab, vabc = 1.0, 10.0, 100.0, 1000.0
    assert guided == pytest.approx(vn + 2.0 * (va - vn) + 5.0 * (vab - va) + 2.0 * (vabc - vab))
    assert len(plan) == 4
    with pytest.raises(ValueError, match="does not have"):
        guidance_plan(["a"], 2.0, {"z": 1.0})


def test_asymmetric_per_condition_scales_weight_each_difference_with_its_own_scale():
    # every scale different, first != last: using a neighbour's scale for any term changes the sum
    plan = guidance_plan(["a", "b", "c"], 1.0, {"a": 2.0, "b": 5.0, "c": 3.0})
    assert {t.keep: t.weight for t in plan} == {
        frozenset(): 1.0 - 2.0, frozenset({"a"}): 2.0 - 5.0, frozenset({"a", "b"}): 5.0 - 3.0,
        frozenset({"a", "b", "c"}): 3.0,
    }
    v = _velocities([t.keep for t in plan])
    guided = sum(t.weight * v[t.keep] for t in plan)
    vn, va, vab, vabc = 1.0, 10.0, 100.0, 1000.0
    assert guided == pytest.approx(vn + 2.0 * (va - vn) + 5.0 * (vab - va) + 3.0 * (vabc - vab))  # 2660
    two = guidance_plan(["a", "b"], 1.0, {"a": 4.0, "b": 1.5})  # v(none) + 4 (v(a) - v(none)) + 1.5 (v(ab) - v(a))
    assert {t.keep: t.weight for t in two} == {frozenset(): -3.0, frozenset({"a"}): 2.5, frozenset({"a", "b"}): 1.5}


def test_guided_velocity_batches_every_variant_into_one_call():
    calls = []

    def net(t, x):
        calls.append(x.shape[0])
        return x * t[:, None, None] + torch.arange(x.shape[0], dtype=x.dtype)[:, None, None]

    field = GuidedVelocity(net, [-2.0, 3.0])
    x = torch.ones(4, 2, 3)
    v = field(0.5, x)
    assert calls == [8] and field.nfe == 1
    # variant k of sample i sits at row k * B + i
    expected = -2.0 * (0.5 + torch.arange(4.0)) + 3.0 * (0.5 + torch.arange(4.0, 8.0))
    torch.testing.assert_close(v[:, 0, 0], expected)


def test_sampler_params_are_validated():
    with pytest.raises(RecipeError, match="steps"):
        create("sampler", "euler", steps=0)
    with pytest.raises(RecipeError, match="sway"):
        create("sampler", "heun", sway=2.0)
    with pytest.raises(RecipeError, match="atol"):
        create("sampler", "dopri5", atol=-1.0)
    with pytest.raises(RecipeError, match="did you mean steps"):
        create("sampler", "rk4", step=3)
    sampler = create("sampler", "euler", steps=4, guidance=2.0)
    assert sampler.replace(steps=9).steps == 9 and sampler.replace(steps=9).guidance == 2.0
    with pytest.raises(ValueError, match="steps"):
        sampler.replace(steps=-1)
    assert math.isclose(float(create("sampler", "euler", steps=4, shift=2.0).times()[2]), 0.5 / (2 - 0.5))
