"""Registry: registration, provenance, collisions, validation, broken plugins, VSSFLOW_LOAD_PLUGINS."""

from __future__ import annotations

import json
import types

import pytest
from pydantic import BaseModel, Field

from tests.conftest import run_cli
from vssflow.core.errors import ComponentNotFoundError, RecipeError
from vssflow.registry import KINDS, Registry, hookimpl
from vssflow.registry.hookspecs import HOOKS


class WidthParams(BaseModel):
    width: int = Field(8, gt=0)


class Thing:
    def __init__(self, width: int):
        self.width = width


def _plugin(register_name: str = "thing", override: bool = False, kind_hook: str = "register_encoders"):
    module = types.SimpleNamespace()

    def hook(register):
        register(register_name, Thing, params=WidthParams, description="A thing.", override=override)

    setattr(module, kind_hook, hookimpl(hook))
    return module


@pytest.fixture
def registry() -> Registry:
    return Registry(load_entry_points=False)


def test_every_kind_has_a_hook():
    assert set(HOOKS) == set(KINDS)
    assert all(h.startswith("register_") and h.endswith("s") for h in HOOKS.values())


def test_register_create_validate_and_stamp(registry):
    registry.register_plugin(_plugin(), name="p1", distribution="dist-one", version="1.2")
    obj = registry.create("encoder", "thing", width=3)
    assert obj.width == 3
    info = obj.vssflow_component
    assert (info.kind, info.name, info.distribution, info.version) == ("encoder", "thing", "dist-one", "1.2")
    assert info.params == {"width": 3}
    assert registry.create("encoder", "thing").width == 8  # default filled
    with pytest.raises(RecipeError, match=r"width.*greater than 0"):
        registry.create("encoder", "thing", width=0)
    with pytest.raises(RecipeError, match=r"widht: unknown key \(did you mean width\?\)"):
        registry.create("encoder", "thing", widht=4)


def test_unknown_names_suggest_close_matches(registry):
    registry.register_plugin(_plugin("cross-attn", kind_hook="register_aggregators"), name="p1")
    with pytest.raises(ComponentNotFoundError, match=r"did you mean cross-attn\?"):
        registry.create("aggregator", "cross-atn")
    with pytest.raises(ComponentNotFoundError, match=r"did you mean encoder"):
        registry.create("encoders", "x")


def test_collision_names_both_plugins_unless_override(registry):
    registry.register_plugin(_plugin(), name="first", distribution="dist-a")
    registry.register_plugin(_plugin(), name="second", distribution="dist-b")
    failures = registry.failures()
    assert len(failures) == 1
    assert "'first'" in failures[0].error and "'second'" in failures[0].error and "override=True" in failures[0].error
    assert registry.catalog.get("encoder", "thing").provenance.plugin == "first"
    registry.register_plugin(_plugin(override=True), name="third", distribution="dist-c")
    assert registry.catalog.get("encoder", "thing").provenance.plugin == "third"


def test_raising_hook_is_reported_and_its_partial_registrations_discarded(registry):
    module = types.SimpleNamespace()

    def hook(register):
        register("half-done", Thing, params=WidthParams)
        raise RuntimeError("boom")

    module.register_encoders = hookimpl(hook)
    registry.register_plugin(module, name="broken")
    registry.register_plugin(_plugin(), name="fine")
    assert [f.plugin for f in registry.failures()] == ["broken"]
    assert "RuntimeError: boom" in registry.failures()[0].error
    names = registry.catalog.names("encoder")
    assert "thing" in names and "half-done" not in names


def test_bad_registration_arguments_are_plugin_errors(registry):
    module = types.SimpleNamespace()

    def hook(register):
        register("x", Thing, params=dict)

    module.register_encoders = hookimpl(hook)
    registry.register_plugin(module, name="bad-params")
    assert "pydantic model" in registry.failures()[0].error
    assert "x" not in registry.catalog.names("encoder")


def test_builtins_listed_with_distribution_and_version():
    out = run_cli("plugins", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    builtin = next(p for p in report["plugins"] if p["name"] == "vssflow")
    assert builtin["distribution"] == "vssflow" and builtin["version"]
    for kind in ("encoder", "aggregator", "backbone", "sampler", "codec", "vocoder", "dataset", "metric"):
        assert builtin["components"].get(kind), f"no built-in {kind} listed"


BROKEN = """
raise ImportError("needs libfoo, which is not installed")
"""

GOOD = """
from pydantic import BaseModel
from vssflow.registry import hookimpl

class P(BaseModel):
    gain: float = 1.0

class Gain:
    def __init__(self, gain):
        self.gain = gain

@hookimpl
def register_metrics(register):
    register("gain-metric", Gain, params=P, description="Third-party metric.")
"""


def test_broken_plugin_does_not_take_the_cli_down(plugin_dist):
    site = plugin_dist("vssflow-broken", "vssflow_broken", BROKEN)
    plugin_dist("vssflow-good", "vssflow_good", GOOD)
    assert run_cli("--help", pythonpath=site).returncode == 0
    out = run_cli("plugins", "--json", pythonpath=site)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    failure = next(f for f in report["failures"] if f["plugin"] == "vssflow-broken")
    assert "needs libfoo" in failure["error"] and failure["stage"] == "import"
    good = next(p for p in report["plugins"] if p["name"] == "vssflow-good")
    assert good["distribution"] == "vssflow-good" and good["version"] == "0.3.1"
    assert [c["name"] for c in good["components"]["metric"]] == ["gain-metric"]
    text = run_cli("plugins", pythonpath=site)
    assert "FAILED vssflow-broken" in text.stdout


def test_load_plugins_env_limits_third_party(plugin_dist):
    site = plugin_dist("vssflow-broken", "vssflow_broken", BROKEN)
    plugin_dist("vssflow-good", "vssflow_good", GOOD)
    only_good = json.loads(
        run_cli("plugins", "--json", pythonpath=site, env_extra={"VSSFLOW_LOAD_PLUGINS": "vssflow-good"}).stdout
    )
    assert {p["name"] for p in only_good["plugins"]} >= {"vssflow", "vssflow-good"}
    assert only_good["failures"] == []
    builtin_only = json.loads(
        run_cli("plugins", "--json", pythonpath=site, env_extra={"VSSFLOW_LOAD_PLUGINS": ""}).stdout
    )
    assert [p["name"] for p in builtin_only["plugins"]] == ["vssflow"]
