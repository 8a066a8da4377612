"""Params of the built-in samplers (pydantic), shared by registration and `Sampler.replace`."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Scale = Annotated[float, Field(ge=0)]


class GuidanceParams(BaseModel):
    """Classifier-free guidance: one scale, and optional per-condition scales (core/sampling.py)."""

    model_config = ConfigDict(extra="forbid")

    guidance: Scale = 1.0  # 1: conditional velocity only; 0: unconditional; > 1: guided
    condition_guidance: dict[str, Scale] = Field(default_factory=dict)  # condition name -> its scale


class FixedStepParams(GuidanceParams):
    """A fixed grid of `steps` steps, warped by a timestep shift and F5-TTS sway."""

    steps: Annotated[int, Field(gt=0, le=10000)] = 25
    shift: Annotated[float, Field(gt=0)] = 1.0  # > 1: more steps near noise (SD3 / diffusers `shift`)
    sway: Annotated[float, Field(ge=-1, le=1)] = 0.0  # < 0: more steps near noise (F5-TTS uses -1)


class AdaptiveParams(GuidanceParams):
    """Adaptive step size from an embedded error estimate."""

    atol: Annotated[float, Field(gt=0)] = 1e-5
    rtol: Annotated[float, Field(gt=0)] = 1e-5
    max_steps: Annotated[int, Field(gt=0)] = 10000  # accepted + rejected steps before giving up
    first_step: Annotated[float, Field(gt=0, le=1)] | None = None  # None: Hairer's initial-step heuristic
