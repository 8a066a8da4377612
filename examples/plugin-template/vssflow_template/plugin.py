"""Hook implementations: what vssflow calls through the `vssflow` entry point of this distribution."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from vssflow.registry import hookimpl


class ColorStatsParams(BaseModel):
    """Constructor arguments of ColorStatsEncoder."""

    model_config = ConfigDict(extra="forbid")
    dim: Annotated[int, Field(gt=0)] = 64
    fps: Annotated[float, Field(gt=0)] = 10.0
    size: Annotated[int, Field(gt=0)] = 64


class GatedAdditiveParams(BaseModel):
    """Recipe arguments of GatedAdditiveAggregator (vssflow passes `dims` besides them)."""

    model_config = ConfigDict(extra="forbid")
    hidden: Annotated[int, Field(gt=0)] = 128


def _color_stats(**params):
    from .components import ColorStatsEncoder  # torch is imported only when a component is built

    return ColorStatsEncoder(**params)


def _gated_additive(dims, **params):
    from .components import GatedAdditiveAggregator

    return GatedAdditiveAggregator(dims, **params)


@hookimpl
def register_encoders(register):
    """Register the template encoder."""
    register(
        "color-stats",
        _color_stats,
        params=ColorStatsParams,
        description="Per-frame colour mean/spread projected to features (template plugin).",
        tiny={"dim": 8, "size": 16},
    )


@hookimpl
def register_aggregators(register):
    """Register the template aggregator."""
    register(
        "gated-additive",
        _gated_additive,
        params=GatedAdditiveParams,
        description="Frame-aligned condition added to hidden states through a zero-initialised gate (template).",
        tiny={"hidden": 16},
    )
