"""Built-in adapters: `lora` (low-rank updates of linear and conv layers, through the peft library)."""

from __future__ import annotations

from .params import LoraParams


def _lora(**params):
    from .lora import LoraAdapter

    return LoraAdapter(**params)


_lora.__doc__ = "Build a LoraAdapter from validated params."


def register(register) -> None:
    """Register the built-in adapters."""
    register("lora", _lora, params=LoraParams,
             description="LoRA (peft) on the DiT's attention and FFN projections; optional aggregators/encoders",
             tiny={"rank": 2, "alpha": 4.0})
