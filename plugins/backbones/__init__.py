"""Built-in backbones: `dit` (vssflow.core.dit.DiT)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Positive = Annotated[int, Field(gt=0)]


class DiTParams(BaseModel):
    """Recipe params of the `dit` backbone; runtime sizes (latent and condition channels, whether any condition
    uses cross-attention) come from assembly at construction."""

    model_config = ConfigDict(extra="forbid")

    depth: Positive = 4
    width: Positive = 256
    heads: Positive = 4
    head_dim: Positive | None = None  # None: width // heads
    ffn: Literal["gelu", "swiglu"] = "swiglu"
    ffn_hidden: Positive | None = None  # None: 4 x width
    ffn_bias: bool = True
    timestep: Literal["adaln", "token"] = "adaln"  # adaLN-Zero, or one prepended token (the paper)
    time_dim: Positive = 256  # sinusoidal features before the timestep MLP
    rope: Literal["none", "full", "partial"] = "partial"
    rope_dims: Positive | None = None  # rotated dims per head when partial; None: head_dim // 2
    rope_base: Annotated[float, Field(gt=1)] = 10000.0
    qk_norm: bool = False  # RMSNorm on queries and keys (per head)
    qkv_bias: bool = False
    context_dim: Positive | None = None  # cross-attention key/value input dim; None: width
    cross_kv_heads: Positive | None = None  # grouped KV heads in cross-attention; None: heads
    cross_rope: Literal["none", "queries", "both"] = "queries"  # "both": RoPE on keys of timed conditions
    attention: Literal["auto", "triton", "sdpa", "reference"] = "auto"
    norm_eps: Annotated[float, Field(gt=0)] = 1e-6

    @model_validator(mode="after")
    def _consistent(self) -> DiTParams:
        head_dim = self.head_dim or self.width // self.heads
        if self.head_dim is None and self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}; set head_dim")
        rot = {"none": 0, "full": head_dim, "partial": self.rope_dims or head_dim // 2}[self.rope]
        if rot % 2 or rot > head_dim:
            raise ValueError(f"rope_dims must be even and <= head_dim {head_dim}, got {rot}")
        if self.cross_kv_heads is not None and self.heads % self.cross_kv_heads:
            raise ValueError(f"heads {self.heads} must be a multiple of cross_kv_heads {self.cross_kv_heads}")
        return self


def make_dit(**params: object):
    """A DiT from validated recipe params plus the runtime sizes assembly resolves (latent_channels,
    cond_channels, cross_attention)."""
    from vssflow.core.dit import DiT  # torch stays out of `vssflow --help`

    return DiT(**params)


def register(register) -> None:
    """Register the built-in backbones."""
    register(
        "dit",
        make_dit,
        params=DiTParams,
        description="Diffusion Transformer: adaLN-Zero or time token, RoPE, QK-norm, GQA cross-attention",
        tiny={"depth": 2, "width": 32, "heads": 2, "ffn_hidden": 64, "time_dim": 32, "qk_norm": True,
              "cross_kv_heads": 1, "cross_rope": "both"},
    )
