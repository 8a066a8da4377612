"""Optional packages of the `eval` extra: one check used by judges, metrics and `metrics.available`."""

from __future__ import annotations

import importlib.util

from vssflow.core.errors import PluginError

EXTRA_HINT = "pip install 'vssflow[eval]'"
# aisfx pins numpy/librosa versions this project cannot use, so the extra cannot list it
AISFX_HINT = "pip install --no-deps aisfx==0.1.2"


def missing(modules: tuple[str, ...]) -> list[str]:
    """The importable module names among `modules` that are not installed."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def hint(modules: tuple[str, ...]) -> str:
    """The install command that provides `modules`."""
    return AISFX_HINT if "aisfx" in modules else EXTRA_HINT


def require(what: str, modules: tuple[str, ...]) -> None:
    """PluginError naming `what`, the missing packages and the install command, if any is absent."""
    absent = missing(modules)
    if absent:
        raise PluginError(f"{what} needs {', '.join(absent)}: {hint(tuple(absent))}")
