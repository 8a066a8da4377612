"""Params of the built-in adapters (no torch: registering stays light)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# The DiT's attention and feed-forward projections (core/dit.py): self-attention qkv/out, cross-attention
# q/kv/out, FFN fc1/fc2. Aggregators (`aggregators.<condition>.*`) and trainable encoders
# (`encoders.<condition>.*`) are opt-in by pattern.
DEFAULT_TARGETS = ["backbone.blocks.*.attn.*", "backbone.blocks.*.cross.*", "backbone.blocks.*.ffn.*"]


class LoraParams(BaseModel):
    """LoRA: W x + (alpha / rank) B A x, A (rank x in) and B (out x rank), B zero at the start."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(8, gt=0, description="rank r of the update B A")
    alpha: float = Field(16.0, gt=0, description="scale numerator: the update is multiplied by alpha / rank")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter's input (0 keeps resume bit-exact)")
    targets: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGETS), min_length=1,
                               description="glob patterns over module names (fnmatch), e.g. backbone.blocks.*.attn.*")
    rslora: bool = Field(False, description="rank-stabilised scale alpha / sqrt(rank) (Kalajdzievski 2023)")
