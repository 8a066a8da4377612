"""Hook implementations for the built-in components (entry point `vssflow` of the vssflow distribution).

Each hook defers to `vssflow.plugins.<kind>s.register`, so built-ins go through exactly the path a
third-party plugin takes.
"""

from __future__ import annotations

import importlib

from vssflow.registry.hookspecs import hookimpl


def _register_kind(package: str, register) -> None:
    importlib.import_module(f"vssflow.plugins.{package}").register(register)


@hookimpl
def register_encoders(register):
    """Built-in encoders."""
    _register_kind("encoders", register)


@hookimpl
def register_aggregators(register):
    """Built-in aggregators."""
    _register_kind("aggregators", register)


@hookimpl
def register_backbones(register):
    """Built-in backbones."""
    _register_kind("backbones", register)


@hookimpl
def register_samplers(register):
    """Built-in samplers."""
    _register_kind("samplers", register)


@hookimpl
def register_codecs(register):
    """Built-in codecs."""
    _register_kind("codecs", register)


@hookimpl
def register_vocoders(register):
    """Built-in vocoders."""
    _register_kind("vocoders", register)


@hookimpl
def register_datasets(register):
    """Built-in datasets."""
    _register_kind("datasets", register)


@hookimpl
def register_metrics(register):
    """Built-in metrics."""
    _register_kind("metrics", register)


@hookimpl
def register_judges(register):
    """Built-in judges."""
    _register_kind("judges", register)


@hookimpl
def register_adapters(register):
    """Built-in adapters."""
    _register_kind("adapters", register)
