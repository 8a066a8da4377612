"""Every built-in component passes the same conformance check a third-party plugin runs (timm's habit),
and the check itself catches broken components."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from vssflow.core.interfaces import Condition, Encoder, InputContract
from vssflow.registry import get_registry, hookimpl
from vssflow.testing import ConformanceError, check_component, conformance_cases

CASES = conformance_cases(distribution="vssflow")


def test_there_are_builtins_of_every_kind():
    kinds = {kind for kind, _ in CASES}
    assert kinds == {"encoder", "aggregator", "backbone", "sampler", "codec", "vocoder", "dataset", "metric", "judge"}


@pytest.mark.parametrize("kind, name", CASES, ids=[f"{k}:{n}" for k, n in CASES])
def test_builtin_component_conforms(kind, name):
    report = check_component(kind, name)
    assert "determinism" in report.checks or "sample" in report.checks


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
        return {"features": (inputs["x"].shape[0], 5, 4)}

    def forward(self, x, mask=None):
        y = self.proj(x)
        if self.flaw != "unused-param":
            y = y + 0 * self.unused(x)
        if self.flaw == "nan":
            y = y / 0.0 * 0.0
        if self.flaw == "nondeterministic":
            _Base.calls += 1  # hidden state that survives re-seeding
            y = y + _Base.calls
        if self.flaw == "shape":
            y = y[:, :4]
        return Condition(y, None, self.fps)


@pytest.fixture(scope="module")
def flawed():
    from pydantic import BaseModel

    class P(BaseModel):
        flaw: str = "none"

    plugin = types.SimpleNamespace(
        register_encoders=hookimpl(lambda register: register("flawed-test-encoder", _Base, params=P))
    )
    get_registry().register_plugin(plugin, name="conformance-selftest", distribution="tests")
    return "flawed-test-encoder"


def test_a_correct_component_passes(flawed):
    check_component("encoder", flawed, {"flaw": "none"})


@pytest.mark.parametrize(
    "flaw, check",
    [("nan", "finite"), ("unused-param", "backward"), ("nondeterministic", "determinism"), ("shape", "shapes")],
)
def test_the_check_catches_broken_components(flawed, flaw, check):
    with pytest.raises(ConformanceError, match=f"'{check}'"):
        check_component("encoder", flawed, {"flaw": flaw})
