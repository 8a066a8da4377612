"""The component catalog: what is registered, by whom, with which params model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from vssflow.core.errors import ComponentNotFoundError, PluginError, RecipeError

from .hookspecs import KINDS
from .messages import close_matches, describe_validation_error


class NoParams(BaseModel):
    """Params model of a component that takes no parameters."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Provenance:
    """Where a component came from: the plugin (pluggy name) and its distribution and version."""

    plugin: str
    distribution: str
    version: str


@dataclass(frozen=True)
class ComponentSpec:
    """One registered component."""

    kind: str
    name: str
    factory: Callable[..., Any]
    params: type[BaseModel]
    description: str
    provenance: Provenance
    tiny: dict[str, Any] = field(default_factory=dict)
    replaces: Provenance | None = None  # the component this one overrode (override=True)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {
            "kind": self.kind,
            "name": self.name,
            "description": self.description,
            "plugin": self.provenance.plugin,
            "distribution": self.provenance.distribution,
            "version": self.provenance.version,
            "params": self.params.model_json_schema().get("properties", {}),
            **({"replaces": self.replaces.plugin} if self.replaces is not None else {}),
        }


@dataclass(frozen=True)
class ComponentInfo:
    """Stamped on every built component as `.vssflow_component`: what it is and its resolved params."""

    kind: str
    name: str
    params: dict[str, Any]
    distribution: str
    version: str


class Catalog:
    """Components by kind and name. Collisions are errors naming both plugins unless override=True."""

    def __init__(self) -> None:
        self._specs: dict[str, dict[str, ComponentSpec]] = {kind: {} for kind in KINDS}

    def add(self, spec: ComponentSpec, override: bool = False) -> None:
        """Add one component, checking collisions."""
        if spec.kind not in self._specs:
            raise PluginError(f"plugin {spec.provenance.plugin}: unknown component kind {spec.kind!r}")
        existing = self._specs[spec.kind].get(spec.name)
        if existing is not None and not override:
            raise PluginError(
                f"plugin {spec.provenance.plugin!r} ({spec.provenance.distribution}): {spec.kind} {spec.name!r} is "
                f"already registered by plugin {existing.provenance.plugin!r} ({existing.provenance.distribution}); "
                "rename yours, or pass override=True to replace it"
            )
        if existing is not None:
            spec = replace(spec, replaces=existing.provenance)
        self._specs[spec.kind][spec.name] = spec

    def get(self, kind: str, name: str) -> ComponentSpec:
        """The spec for kind/name, or ComponentNotFoundError with close matches."""
        if kind not in self._specs:
            raise ComponentNotFoundError(f"unknown component kind {kind!r}{close_matches(kind, KINDS)}")
        try:
            return self._specs[kind][name]
        except KeyError:
            known = sorted(self._specs[kind])
            hint = close_matches(name, known) or (f" (known: {', '.join(known)})" if known else "")
            raise ComponentNotFoundError(f"no {kind} named {name!r}{hint}") from None

    def names(self, kind: str) -> list[str]:
        """Registered names of one kind, sorted."""
        return sorted(self._specs[kind])

    def specs(self, kind: str | None = None) -> list[ComponentSpec]:
        """All specs, or those of one kind, sorted by kind then name."""
        kinds = KINDS if kind is None else (kind,)
        return [self._specs[k][n] for k in kinds for n in sorted(self._specs[k])]


def validate_params(spec: ComponentSpec, params: dict[str, Any], where: str = "") -> BaseModel:
    """Validate params against the component's params model; RecipeError naming the dotted key on failure.

    Unknown keys are errors even when the plugin's model would ignore them: a typo must never pass silently.
    """
    prefix = f"{where}." if where else ""
    allowed = set(spec.params.model_fields) | {
        f.alias for f in spec.params.model_fields.values() if f.alias is not None
    }
    if spec.params.model_config.get("extra") != "allow":
        for key in params:
            if key not in allowed:
                hint = close_matches(key, sorted(allowed)) or (
                    f" (allowed: {', '.join(sorted(allowed))})" if allowed else " (it takes no params)"
                )
                raise RecipeError(f"{prefix}{key}: unknown key{hint} [{spec.kind} {spec.name!r}]")
    try:
        return spec.params.model_validate(params)
    except ValidationError as err:
        raise RecipeError(
            describe_validation_error(err, spec.params, prefix=prefix, subject=f"{spec.kind} {spec.name!r}")
        ) from None


def check_defaults(model: type[BaseModel], owner: str) -> None:
    """PluginError naming `owner` when a default of the params model does not validate against its own field
    (`dim: int = "sixteen"`): caught when the plugin registers, not later under a recipe key nobody wrote."""
    given: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if info.is_required():
            continue
        try:
            given[info.alias or name] = info.get_default(call_default_factory=True)
        except Exception:  # noqa: BLE001 - a factory that needs the other fields: pydantic checks it at use
            continue
    try:
        model.model_validate(given)
    except ValidationError as err:
        bad = [e for e in err.errors() if e["type"] != "missing"]
        if bad:
            key = ".".join(str(p) for p in bad[0]["loc"]) or "(model)"
            raise PluginError(
                f"{owner}: params model {model.__name__} has an invalid default {key}={bad[0].get('input')!r} "
                f"({bad[0]['msg']}); fix the default in the plugin"
            ) from None
