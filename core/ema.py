"""Exponential moving average of the trainable weights, kept in float32 beside the model."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Exponential moving average of trainable parameters (float32 shadows), with the usual warm-up."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """shadow <- d * shadow + (1 - d) * param, with d ramping up over the first steps."""
        d = min(self.decay, (1 + step) / (10 + step))
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.shadow[n].lerp_(p.detach().float(), 1 - d)

    def state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """EMA values of the trainable parameters, in their dtype. Frozen weights and buffers are not
        repeated: a checkpoint reader overlays these on model.safetensors."""
        params = dict(model.named_parameters())
        return {k: v.to(params[k].dtype) for k, v in self.shadow.items()}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        """Restore shadows from `state_dict` output."""
        for n in self.shadow:
            if n in state:
                self.shadow[n] = state[n].detach().float().clone()
