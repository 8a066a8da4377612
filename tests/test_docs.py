"""docs/plugins.md documents every hookspec with its exact signature, and the register callback."""

from __future__ import annotations

import inspect
import re

import pytest

from tests.conftest import ROOT
from vssflow.registry import hookspecs

DOC = (ROOT / "docs" / "plugins.md").read_text()
SPECS = [name for name in dir(hookspecs) if name.startswith("register_")]


def test_hookspecs_match_kinds():
    assert sorted(SPECS) == sorted(hookspecs.HOOKS.values())


@pytest.mark.parametrize("name", SPECS)
def test_every_hookspec_is_documented_with_its_signature(name):
    signature = f"{name}{inspect.signature(getattr(hookspecs, name))}"
    assert f"### {signature}" in DOC, f"docs/plugins.md needs a '### {signature}' section"


def test_no_documented_hook_is_missing_from_the_code():
    documented = set(re.findall(r"^### (register_\w+)\(", DOC, flags=re.M))
    assert documented == set(SPECS)


def test_register_callback_signature_is_documented():
    from vssflow.registry.manager import Registry

    reg = Registry(load_entry_points=False)
    callback = reg._register_callback("encoder", reg.provenance["vssflow"], [])
    params = ", ".join(
        p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
        for p in inspect.signature(callback).parameters.values()
    )
    params = params.replace("'", '"')
    assert f"`register({params})`" in DOC


AGGREGATOR_MEMBERS = ["__init__", "forward", "to_latent_grid", "frames_or_null", "tokens_or_null"]
CONFORMABLE_MEMBERS = ["example_inputs", "expected_shapes", "output_tensors"]


def _documented(cls, name: str) -> str:
    sig = str(inspect.signature(getattr(cls, name))).replace("'", "")
    return f"`{name}{sig}`".replace("|", "\\|")


@pytest.mark.parametrize("name", AGGREGATOR_MEMBERS)
def test_every_aggregator_method_is_documented_with_its_signature(name):
    from vssflow.core.conditioning import Aggregator

    assert _documented(Aggregator, name) in DOC, f"docs/plugins.md needs {_documented(Aggregator, name)}"


@pytest.mark.parametrize("name", CONFORMABLE_MEMBERS)
def test_every_conformance_method_is_documented_with_its_signature(name):
    from vssflow.core.interfaces import Conformable

    assert _documented(Conformable, name) in DOC, f"docs/plugins.md needs {_documented(Conformable, name)}"


def test_documented_check_component_signature_is_the_real_one():
    from vssflow.testing import check_component

    params = ", ".join(
        p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
        for p in inspect.signature(check_component).parameters.values()
    )
    assert f"`check_component({params})`".replace("\n", " ") in " ".join(DOC.split())


def test_the_aggregator_example_passes_the_conformance_kit():
    import types

    from vssflow.registry import get_registry
    from vssflow.testing import check_component

    block = re.search(r"```python\n# docs example: aggregator\n(.*?)```", DOC, flags=re.S)
    assert block, "docs/plugins.md lost its aggregator example"
    module = types.ModuleType("vssflow_docs_example")
    exec(compile(block.group(1), "docs/plugins.md", "exec"), module.__dict__)  # noqa: S102 - our own docs
    get_registry().register_plugin(module, name="docs-example", distribution="docs")
    report = check_component("aggregator", "gated-sum")
    assert {"shapes", "backward", "learns", "determinism"} <= set(report.checks)
    # the paragraph after the example is true: a zero last layer behind the zero gate fails `learns`
    from torch import nn

    dead = module.GatedSum
    original = dead.__init__

    def zero_last(self, dims, hidden=32):
        original(self, dims, hidden)
        nn.init.zeros_(self.proj[2].weight)
        nn.init.zeros_(self.proj[2].bias)

    from vssflow.testing import ConformanceError

    dead.__init__ = zero_last
    try:
        with pytest.raises(ConformanceError, match="'learns'"):
            check_component("aggregator", "gated-sum")
    finally:
        dead.__init__ = original
