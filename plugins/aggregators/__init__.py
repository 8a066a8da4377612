"""Built-in aggregators: how a condition enters the backbone (docs/engine.md, "Aggregation routes").

Each is constructed once by assembly with `AggregatorDims` (the encoder's dim/fps, the backbone's
width/context dim) and these params (vssflow.core.conditioning.Aggregator).
"""

from __future__ import annotations

import importlib
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Projection = Literal["none", "linear", "mlp"]
Resample = Literal["nearest", "linear"]


class ProjectionParams(BaseModel):
    """How condition features are projected: none (identity), linear, or a 2-layer SiLU MLP."""

    model_config = ConfigDict(extra="forbid")

    projection: Projection = "mlp"
    mlp_ratio: Annotated[float, Field(gt=0)] = 2.0  # MLP hidden size = ratio x output dim (public code: 2)
    bias: bool = False


class CrossAttnParams(ProjectionParams):
    """`cross-attn` params."""

    to_grid: bool = False  # resample a timed condition onto the latent grid first (public code, CLIP)
    resample: Resample = "nearest"


class ChannelConcatParams(ProjectionParams):
    """`channel-concat` params."""

    dim: Annotated[int, Field(gt=0)] | None = None  # channels added to the input; None: the encoder's dim
    resample: Resample = "nearest"


class AdditiveParams(ProjectionParams):
    """`additive` params."""

    resample: Resample = "nearest"


class SequenceConcatParams(ProjectionParams):
    """`sequence-concat` params."""


class GlobalParams(ProjectionParams):
    """`global` params."""

    mode: Literal["add", "token"] = "add"  # add to the timestep conditioning, or one prepended token


def _lazy(module: str, cls: str):
    """A factory importing its class on first use, so registering stays free of torch."""

    def factory(**params):
        return getattr(importlib.import_module(f"vssflow.plugins.aggregators.{module}"), cls)(**params)

    factory.__doc__ = f"Build a {cls} from validated params."
    return factory


_TINY = {"projection": "linear"}

BUILTINS = [
    ("cross-attn", "cross_attn", "CrossAttnAggregator", CrossAttnParams,
     "Condition tokens as cross-attention keys/values (semantic, loosely timed conditions)", _TINY),
    ("channel-concat", "channel_concat", "ChannelConcatAggregator", ChannelConcatParams,
     "Frame-aligned features on the latent grid, concatenated on channels (VSSFlow's dense route)",
     {"dim": 6, "projection": "mlp"}),
    ("sequence-concat", "sequence_concat", "SequenceConcatAggregator", SequenceConcatParams,
     "Condition tokens joined to the audio tokens in self-attention", _TINY),
    ("additive", "additive", "AdditiveAggregator", AdditiveParams,
     "Frame-aligned features projected and added to the hidden states", {"resample": "linear"}),
    ("global", "global_condition", "GlobalAggregator", GlobalParams,
     "Pooled vector added to the timestep conditioning, or one prepended token", {"mode": "token"}),
]


def register(register) -> None:
    """Register the built-in aggregators."""
    for name, module, cls, params, description, tiny in BUILTINS:
        register(name, _lazy(module, cls), params=params, description=description, tiny=tiny)
