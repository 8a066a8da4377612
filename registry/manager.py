"""The one PluginManager: loads built-ins and entry-point plugins, runs their hooks, fills the catalog.

Hooks run in registration order: the built-ins first, then installed plugins sorted by distribution. A later
plugin that registers a name already taken is charged with the clash (that one component is rejected), unless
it passed override=True, in which case its component replaces the earlier one. A plugin that fails to import,
raises inside a hook, or declares a params model with an invalid default is recorded in `failures()`;
whatever it had registered in that hook is discarded, and every other plugin keeps working.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy
from pydantic import BaseModel

from vssflow.core.errors import PluginError, VssflowError

from . import hookspecs
from .catalog import (
    Catalog,
    ComponentInfo,
    ComponentSpec,
    NoParams,
    Provenance,
    check_defaults,
    validate_params,
)

ENTRY_POINT_GROUP = "vssflow"
BUILTIN_PLUGIN = "vssflow"
BUILTIN_MODULE = "vssflow.plugins.builtin"
ENV_LOAD = "VSSFLOW_LOAD_PLUGINS"


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded or whose hook raised."""

    plugin: str
    distribution: str
    stage: str  # "import" or the hook name
    error: str

    def as_dict(self) -> dict[str, str]:
        """JSON-friendly form."""
        return {"plugin": self.plugin, "distribution": self.distribution, "stage": self.stage, "error": self.error}


def _short_error(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({last[0].filename}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _building_on_meta() -> bool:
    """Whether components are being built under `torch.device("meta")` (never imports torch itself)."""
    torch = sys.modules.get("torch")
    return torch is not None and torch.get_default_device().type == "meta"


def _same_kind(exc: Exception, message: str) -> VssflowError:
    """`message` as the same vssflow error class (a ContractError stays one), any other exception as PluginError."""
    if isinstance(exc, VssflowError):
        try:
            return type(exc)(message)
        except Exception:  # noqa: BLE001 - a subclass with its own constructor arguments
            pass
    return PluginError(message)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


class Registry:
    """Plugin manager plus catalog. Use the module-level functions; this is built once per process."""

    def __init__(self, load_entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager("vssflow")
        self.pm.add_hookspecs(hookspecs)
        self.catalog = Catalog()
        self.provenance: dict[str, Provenance] = {}
        self._failures: list[PluginFailure] = []
        self._load_builtin()
        if load_entry_points:
            self._load_entry_points()
        for kind in hookspecs.KINDS:
            self._run_hook(kind)

    # loading ---------------------------------------------------------------------------------------------
    def _load_builtin(self) -> None:
        module = importlib.import_module(BUILTIN_MODULE)
        self.pm.register(module, name=BUILTIN_PLUGIN)
        self.provenance[BUILTIN_PLUGIN] = Provenance(BUILTIN_PLUGIN, "vssflow", _version("vssflow"))

    def _load_entry_points(self) -> None:
        allowed = os.environ.get(ENV_LOAD)
        allow = None if allowed is None else {a.strip() for a in allowed.split(",") if a.strip()}
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
        for ep in sorted(eps, key=lambda e: (e.dist.name if e.dist is not None else "", e.name)):
            dist = ep.dist.name if ep.dist is not None else "unknown"
            if ep.name == BUILTIN_PLUGIN and dist == "vssflow":
                continue  # already registered first, under the same hooks
            if allow is not None and ep.name not in allow and dist not in allow:
                continue
            if self.pm.has_plugin(ep.name):
                self._failures.append(
                    PluginFailure(ep.name, dist, "import", f"another plugin is already registered as {ep.name!r}")
                )
                continue
            try:
                plugin = ep.load()
                self.pm.register(plugin, name=ep.name)
            except Exception as exc:  # a broken plugin is reported, never fatal
                self._failures.append(PluginFailure(ep.name, dist, "import", _short_error(exc)))
                continue
            version = ep.dist.version if ep.dist is not None else "unknown"
            self.provenance[ep.name] = Provenance(ep.name, dist, version)

    def register_plugin(self, plugin: object, name: str, distribution: str = "local", version: str = "0") -> None:
        """Register an in-process plugin object or module (tests, notebooks) and run its hooks."""
        self.pm.register(plugin, name=name)
        self.provenance[name] = Provenance(name, distribution, version)
        for kind in hookspecs.KINDS:
            self._run_hook(kind, only=name)

    def _run_hook(self, kind: str, only: str | None = None) -> None:
        """Run one hook of every plugin (or of `only`), in registration order: the built-ins first, so a
        later plugin that reuses a name is the one charged with the clash (or, with override=True, the one
        whose component is kept)."""
        hook_name = hookspecs.HOOKS[kind]
        # pluggy 1.x lists implementations in registration order (it calls them in reverse)
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            if only is not None and impl.plugin_name != only:
                continue
            prov = self.provenance[impl.plugin_name]
            staged: list[tuple[ComponentSpec, bool]] = []
            try:
                impl.function(register=self._register_callback(kind, prov, staged))
            except Exception as exc:  # nothing of a hook that raised is kept
                self._failures.append(PluginFailure(prov.plugin, prov.distribution, hook_name, _short_error(exc)))
                continue
            for spec, override in staged:
                try:
                    self.catalog.add(spec, override=override)
                except PluginError as exc:  # a clash rejects this one component, and nothing else
                    self._failures.append(PluginFailure(prov.plugin, prov.distribution, hook_name, str(exc)))

    def _register_callback(
        self, kind: str, prov: Provenance, staged: list[tuple[ComponentSpec, bool]]
    ) -> Callable[..., None]:
        def register(
            name: str,
            factory: Callable[..., Any],
            params: type[BaseModel] | None = None,
            description: str = "",
            override: bool = False,
            tiny: dict[str, Any] | None = None,
        ) -> None:
            """Register one component of this hook's kind."""
            if not isinstance(name, str) or not name:
                raise PluginError(f"plugin {prov.plugin}: component names must be non-empty strings, got {name!r}")
            if not callable(factory):
                raise PluginError(f"plugin {prov.plugin}: factory for {kind} {name!r} is not callable")
            model = params or NoParams
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                raise PluginError(f"plugin {prov.plugin}: params for {kind} {name!r} must be a pydantic model class")
            check_defaults(model, f"plugin {prov.plugin!r} ({prov.distribution}): {kind} {name!r}")
            desc = description or (factory.__doc__ or "").strip().splitlines()[0:1]
            desc = desc if isinstance(desc, str) else (desc[0] if desc else "")
            spec = ComponentSpec(kind, name, factory, model, desc, prov, dict(tiny or {}))
            staged.append((spec, override))

        return register

    # queries ---------------------------------------------------------------------------------------------
    def failures(self) -> list[PluginFailure]:
        """Plugins that failed to import or register."""
        return list(self._failures)

    def create(self, kind: str, name: str, /, runtime: dict[str, Any] | None = None, **params: Any) -> Any:
        """Build a component from validated params and stamp it with its ComponentInfo.

        `runtime`: constructor arguments that assembly resolves rather than the recipe (an aggregator's
        `dims`, a backbone's `latent_channels`), passed to the factory besides the params.
        """
        spec = self.catalog.get(kind, name)
        validated = validate_params(spec, params, where=f"{kind} {name!r} params")
        resolved = validated.model_dump()
        try:
            obj = spec.factory(**(runtime or {}), **resolved)
        except Exception as exc:
            if not isinstance(exc, VssflowError) and _building_on_meta():
                raise  # shapes-only construction: the caller builds such a component on a real device instead
            text = str(exc.args[0]) if isinstance(exc, KeyError) and len(exc.args) == 1 else str(exc)  # no repr
            text = text.removeprefix(f"{kind} {name!r}: ")  # named once, in front
            what = text if isinstance(exc, VssflowError) else f"{type(exc).__name__}: {text}"
            message = (
                f"{kind} {name!r} from {spec.provenance.distribution} {spec.provenance.version} failed to build: "
                + " ".join(what.split())
            )
            raise _same_kind(exc, message) from exc
        info = ComponentInfo(kind, name, resolved, spec.provenance.distribution, spec.provenance.version)
        try:
            object.__setattr__(obj, "vssflow_component", info)
        except (AttributeError, TypeError):
            pass  # immutable objects (functions, builtins) stay unstamped
        return obj


_REGISTRY: Registry | None = None
_LOCK = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _REGISTRY
    with _LOCK:
        if _REGISTRY is None:
            _REGISTRY = Registry()
        return _REGISTRY


def reset_registry() -> None:
    """Forget the registry so the next use reloads every plugin (tests, VSSFLOW_LOAD_PLUGINS changes)."""
    global _REGISTRY
    with _LOCK:
        _REGISTRY = None
