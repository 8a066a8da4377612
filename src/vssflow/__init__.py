"""vssflow: a plugin framework for video-conditioned sound and speech generation with flow matching.

Subpackages: `vssflow.core` (engine), `vssflow.registry` (plugins, recipes), `vssflow.plugins` (built-ins).
The names below load lazily, so importing vssflow (and starting the CLI) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.1"

_LAZY = {
    "load_recipe": "vssflow.registry.recipe",
    "recipe_from_dict": "vssflow.registry.recipe",
    "build": "vssflow.registry.assemble",
    "create": "vssflow.registry",
    "list_components": "vssflow.registry",
    "hookimpl": "vssflow.registry",
    "train": "vssflow.training",
    "load_pipeline": "vssflow.generation",
    "ClipRequest": "vssflow.generation",
    "run_demo": "vssflow.demo",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vssflow' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
