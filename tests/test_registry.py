"""Registry: registration, provenance, collisions, validation, broken plugins, VSSFLOW_LOAD_PLUGINS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import pytest
from pydantic import BaseModel, Field

from tests.conftest import run_cli
from vssflow.core.errors import ComponentNotFoundError, ContractError, PluginError, RecipeError
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
    assert len(failures) == 1 and failures[0].plugin == "second"  # charged to the later plugin
    assert "'first'" in failures[0].error and "'second'" in failures[0].error and "override=True" in failures[0].error
    assert registry.catalog.get("encoder", "thing").provenance.plugin == "first"
    registry.register_plugin(_plugin(override=True), name="third", distribution="dist-c")
    spec = registry.catalog.get("encoder", "thing")
    assert spec.provenance.plugin == "third" and spec.replaces.plugin == "first"


def test_a_clash_rejects_only_the_clashing_component(registry):
    module = types.SimpleNamespace()

    def hook(register):
        register("extra", Thing, params=WidthParams)
        register("additive", Thing, params=WidthParams)
        register("extra-2", Thing, params=WidthParams)

    module.register_aggregators = hookimpl(hook)
    before = registry.catalog.names("aggregator")
    registry.register_plugin(module, name="late", distribution="dist-late")
    assert [(f.plugin, f.distribution) for f in registry.failures()] == [("late", "dist-late")]
    assert registry.catalog.get("aggregator", "additive").provenance.plugin == "vssflow"
    assert registry.catalog.names("aggregator") == sorted([*before, "extra", "extra-2"])


class SixteenParams(BaseModel):
    dim: int = "sixteen"  # an invalid default pydantic does not check by itself


class FineAndRequired(BaseModel):
    path: str  # required: no default to check
    dim: int = 16
    names: list[str] = Field(default_factory=lambda: ["a"])


def test_invalid_param_default_fails_registration_charged_to_the_plugin(registry):
    module = types.SimpleNamespace()

    def hook(register):
        register("sixteen", Thing, params=SixteenParams)

    module.register_encoders = hookimpl(hook)
    registry.register_plugin(module, name="sloppy", distribution="dist-sloppy", version="0.1")
    [failure] = registry.failures()
    assert (failure.plugin, failure.distribution) == ("sloppy", "dist-sloppy")
    assert "encoder 'sixteen'" in failure.error and "dim='sixteen'" in failure.error and "\n" not in failure.error
    assert "sixteen" not in registry.catalog.names("encoder")
    fine = types.SimpleNamespace(
        register_encoders=hookimpl(lambda register: register("fine", Thing, params=FineAndRequired))
    )
    registry.register_plugin(fine, name="ok")
    assert "fine" in registry.catalog.names("encoder") and len(registry.failures()) == 1


@pytest.mark.parametrize("error", [ZeroDivisionError, KeyError, RuntimeError, ContractError])
def test_any_factory_exception_is_one_line_naming_component_and_distribution(registry, error):
    """Any exception becomes one line naming the component and its distribution: a PluginError, or the same
    vssflow error class (a ContractError stays a ContractError)."""
    def factory(width: int):
        raise error("weights folder\nis empty")

    module = types.SimpleNamespace(
        register_encoders=hookimpl(lambda register: register("boom", factory, params=WidthParams))
    )
    registry.register_plugin(module, name="p1", distribution="dist-boom", version="2.0")
    with pytest.raises(error if issubclass(error, ContractError) else PluginError) as info:
        registry.create("encoder", "boom")
    text = str(info.value)
    assert text.startswith("encoder 'boom' from dist-boom 2.0 failed to build: ") and "\n" not in text
    assert "weights folder is empty" in text


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


CLASH = """
from pydantic import BaseModel
from vssflow.registry import hookimpl

class P(BaseModel):
    gain: float = 1.0

class ThirdPartyAdditive:
    def __init__(self, gain):
        self.gain = gain

@hookimpl
def register_aggregators(register):
    register("additive", ThirdPartyAdditive, params=P, description="third-party additive"{override})
    register("{extra}", ThirdPartyAdditive, params=P, description="third-party extra")
"""


def _by_plugin(report: dict) -> dict[str, dict[str, list[str]]]:
    return {p["name"]: {k: [c["name"] for c in v] for k, v in p["components"].items()} for p in report["plugins"]}


def test_installed_plugin_reusing_a_builtin_name(plugin_dist):
    """Two installed distributions besides vssflow: one reuses `additive` without override (charged with the
    clash, every built-in intact), one with override=True (its component replaces the built-in)."""
    site = plugin_dist("vssflow-clash", "vssflow_clash", CLASH.format(override="", extra="clash-extra"))
    plugin_dist("vssflow-replace", "vssflow_replace", CLASH.format(override=", override=True", extra="replace-extra"))
    builtin = _by_plugin(json.loads(run_cli("plugins", "--json", env_extra={"VSSFLOW_LOAD_PLUGINS": ""}).stdout))

    clash_only = json.loads(
        run_cli("plugins", "--json", pythonpath=site, env_extra={"VSSFLOW_LOAD_PLUGINS": "vssflow-clash"}).stdout
    )
    [failure] = clash_only["failures"]
    assert failure["plugin"] == "vssflow-clash" and failure["distribution"] == "vssflow-clash"
    assert "'additive'" in failure["error"] and "override=True" in failure["error"]
    listed = _by_plugin(clash_only)
    assert listed["vssflow"] == builtin["vssflow"]  # every built-in intact, `additive` still the built-in
    assert listed["vssflow-clash"] == {"aggregator": ["clash-extra"]}

    both = json.loads(run_cli("plugins", "--json", pythonpath=site).stdout)
    assert [f["plugin"] for f in both["failures"]] == ["vssflow-clash"]
    listed = _by_plugin(both)
    assert listed["vssflow-replace"] == {"aggregator": ["additive", "replace-extra"]}
    replacing = next(p for p in both["plugins"] if p["name"] == "vssflow-replace")["components"]["aggregator"]
    assert [c.get("replaces") for c in replacing] == ["vssflow", None]
    assert listed["vssflow"]["aggregator"] == [n for n in builtin["vssflow"]["aggregator"] if n != "additive"]
    assert {k: v for k, v in listed["vssflow"].items() if k != "aggregator"} == {
        k: v for k, v in builtin["vssflow"].items() if k != "aggregator"
    }
    code = (
        "from vssflow.registry import create, get_spec\n"
        "a = create('aggregator', 'additive', gain=2.0)\n"
        "print(type(a).__name__, a.vssflow_component.distribution, get_spec('aggregator', 'additive').replaces.plugin)"
    )
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    env.pop("VSSFLOW_LOAD_PLUGINS", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.stdout.split() == ["ThirdPartyAdditive", "vssflow-replace", "vssflow"], out.stderr
