"""vssflow.registry: plugin manager, hookspecs, component catalog, recipe schema and recipe assembly.

Public API:
    create(kind, name, runtime=None, **params)  build a registered component from validated params
    list_components(kind=None)        registered ComponentSpecs
    hookimpl                          decorator for plugin hook implementations
"""

from __future__ import annotations

from typing import Any

from .catalog import ComponentInfo, ComponentSpec, Provenance
from .hookspecs import KINDS, hookimpl
from .manager import PluginFailure, Registry, get_registry, reset_registry


def create(kind: str, name: str, /, runtime: dict[str, Any] | None = None, **params: Any) -> Any:
    """Build component `name` of `kind` with `params` validated against its params model; `runtime` holds the
    constructor arguments assembly resolves (an aggregator's `dims`, a backbone's latent channels)."""
    return get_registry().create(kind, name, runtime, **params)


def list_components(kind: str | None = None) -> list[ComponentSpec]:
    """Registered components, optionally of one kind."""
    return get_registry().catalog.specs(kind)


def get_spec(kind: str, name: str) -> ComponentSpec:
    """The registered spec of one component (ComponentNotFoundError with close matches if absent)."""
    return get_registry().catalog.get(kind, name)


def plugin_failures() -> list[PluginFailure]:
    """Plugins that failed to import or register in this process."""
    return get_registry().failures()


__all__ = [
    "KINDS",
    "ComponentInfo",
    "ComponentSpec",
    "PluginFailure",
    "Provenance",
    "Registry",
    "create",
    "get_registry",
    "get_spec",
    "hookimpl",
    "list_components",
    "plugin_failures",
    "reset_registry",
]
