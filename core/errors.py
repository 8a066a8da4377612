"""Errors a user can cause. The CLI prints their message as one line and exits non-zero, no traceback."""

from __future__ import annotations


class VssflowError(Exception):
    """Base class for user-facing errors; the message names the thing and the fix."""

    exit_code = 2


class RecipeError(VssflowError):
    """A recipe file, key or value is wrong."""


class PluginError(VssflowError):
    """A plugin failed to load, register or build a component."""


class ComponentNotFoundError(VssflowError, KeyError):
    """No component of that kind and name is registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0] if self.args else ""


class MediaError(VssflowError):
    """A media file is missing, unreadable, empty or corrupt."""


class ContractError(VssflowError):
    """An input does not meet a component's declared input contract (rate, dim, fps, ...)."""


class CheckpointError(VssflowError):
    """A checkpoint is missing, truncated, unsafe or from an incompatible recipe."""
