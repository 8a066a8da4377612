"""Every built-in component passes the same conformance check a third-party plugin runs (timm's habit),
and the check itself catches broken components."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from vssflow.core.conditioning import Aggregator, AggregatorDims, Conditioning
from vssflow.core.interfaces import Condition, Encoder, InputContract
from vssflow.registry import get_registry, hookimpl
from vssflow.testing import ConformanceError, check_component, conformance_cases

CASES = conformance_cases(distribution="vssflow")


def test_there_are_builtins_of_every_kind():
    kinds = {kind for kind, _ in CASES}
    assert kinds == {"encoder", "aggregator", "backbone", "sampler", "codec", "vocoder", "dataset", "metric", "judge",
                     "adapter"}


@pytest.mark.parametrize("kind, name", CASES, ids=[f"{k}:{n}" for k, n in CASES])
def test_builtin_component_conforms(kind, name):
    if kind in ("metric", "judge"):
        _skip_without_optional_packages(kind, name)
    if kind == "adapter":
        pytest.importorskip("peft", reason="adapters need the finetune extra")
    report = check_component(kind, name)
    assert "determinism" in report.checks or "sample" in report.checks or "merge" in report.checks


def _skip_without_optional_packages(kind: str, name: str) -> None:
    """A metric or judge whose optional package is not installed is skipped, as `vssflow evaluate` does."""
    from vssflow.plugins.judges import REQUIRES
    from vssflow.plugins.judges.deps import missing
    from vssflow.plugins.metrics import available
    from vssflow.registry import get_spec

    if kind == "metric":
        ok, why = available(name, dict(get_spec(kind, name).tiny or {}))
    else:
        absent = missing(REQUIRES.get(name, ()))
        ok, why = not absent, f"judge {name!r} needs {', '.join(absent)}"
    if not ok:
        pytest.skip(why)


class _Base(Encoder):
    modality = "features"
    calls = 0

    def __init__(self, flaw: str = "none"):
        super().__init__()
        self.flaw, self.dim, self.fps = flaw, 4, 25.0
        self.proj = nn.Linear(3, 4)
        self.unused = nn.Linear(3, 4)

    @property
    def contract(self):
        return InputContract("features", fps=25.0, dim=3)

    def example_inputs(self, batch_size=2, generator=None):
        return {"x": torch.randn(batch_size, 5, 3, generator=generator)}

    def expected_shapes(self, inputs):
        return {} if self.flaw == "no-shapes" else {"features": (inputs["x"].shape[0], 5, 4)}

    def forward(self, x, mask=None):
        y = self.proj(x)
        if self.flaw != "unused-param":
            y = y + (0 if self.flaw == "zero-path" else 0.1) * self.unused(x)
        if self.flaw == "nan":
            y = y / 0.0 * 0.0
        if self.flaw == "nondeterministic":
            _Base.calls += 1  # hidden state that survives re-seeding
            y = y + _Base.calls
        if self.flaw == "shape":
            y = y[:, :4]
        return Condition(y, None, self.fps)


class _GatedAggregator(Aggregator):
    """Frames -> additive through tanh(gate) * MLP; `dead-gate` zero-initialises both the MLP's last layer and
    the gate, so neither ever gets a gradient; `none` zero-initialises the gate only (it learns first)."""

    name = "flawed-test-aggregator"
    requires_fps = True

    def __init__(self, dims: AggregatorDims, flaw: str = "none"):
        super().__init__(dims)
        self.proj = nn.Sequential(nn.Linear(dims.in_dim, 8), nn.SiLU(), nn.Linear(8, dims.width))
        self.null = nn.Parameter(torch.zeros(dims.in_dim))
        self.gate = nn.Parameter(torch.zeros(dims.width))
        if flaw == "dead-gate":
            nn.init.zeros_(self.proj[2].weight)
            nn.init.zeros_(self.proj[2].bias)

    def forward(self, condition, keep, spec):
        grid, grid_mask = self.to_latent_grid(condition, spec, "nearest")
        return Conditioning(additive=torch.tanh(self.gate) * self.proj(self.frames_or_null(grid, grid_mask, keep)))


@pytest.fixture(scope="module")
def flawed():
    from pydantic import BaseModel

    class P(BaseModel):
        flaw: str = "none"

    plugin = types.SimpleNamespace(
        register_encoders=hookimpl(lambda register: register("flawed-test-encoder", _Base, params=P)),
        register_aggregators=hookimpl(lambda register: register("flawed-test-aggregator", _GatedAggregator, params=P)),
    )
    get_registry().register_plugin(plugin, name="conformance-selftest", distribution="tests")
    return "flawed-test-encoder"


def test_a_correct_component_passes(flawed):
    check_component("encoder", flawed, {"flaw": "none"})


@pytest.mark.parametrize(
    "flaw, check",
    [("nan", "finite"), ("unused-param", "backward"), ("nondeterministic", "determinism"), ("shape", "shapes"),
     ("no-shapes", "shapes"), ("zero-path", "learns")],
)
def test_the_check_catches_broken_components(flawed, flaw, check):
    with pytest.raises(ConformanceError, match=f"'{check}'"):
        check_component("encoder", flawed, {"flaw": flaw})


def test_a_zero_gate_over_a_live_layer_learns_and_over_a_zero_layer_does_not(flawed):
    report = check_component("aggregator", "flawed-test-aggregator", {"flaw": "none"})
    assert "learns" in report.checks
    with pytest.raises(ConformanceError, match=r"'learns': .*gate.*proj\.2\.weight|'learns': .*proj\.2"):
        check_component("aggregator", "flawed-test-aggregator", {"flaw": "dead-gate"})


def test_aggregator_outputs_are_held_to_the_route_contract(flawed):
    dims = AggregatorDims(in_dim=5, fps=None, width=16, context_dim=8)
    with pytest.raises(ConformanceError, match="time-aligned"):  # a frame route needs an fps
        check_component("aggregator", "flawed-test-aggregator", {"flaw": "none"}, runtime={"dims": dims},
                        build_default=False)
    report = check_component("aggregator", "cross-attn", {"projection": "linear"}, runtime={"dims": dims})
    assert "shapes" in report.checks
