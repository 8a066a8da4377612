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
