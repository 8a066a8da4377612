"""The flow-matching objective: probability path, target velocity, time sampling, masked loss.

Convention (the only one in vssflow, see `vssflow.core`): t = 0 is noise, t = 1 is data,
x_t = t * x1 + (1 - t) * x0 with x0 ~ N(0, I), target velocity v = x1 - x0.

Shapes: B batch, T latent frames, C latent channels. Masks are bool, True = valid.

`FlowMatching` takes the network as `fn(t, x) -> v` (t (B,), x (B, T, C)), so it knows nothing of
conditions or backbones: the model closes over them (MMAudio's flow_matching.py shape).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

VelocityFn = Callable[[Tensor, Tensor], Tensor]


def shift_time(t: Tensor, shift: float) -> Tensor:
    """Timestep shift in the noise-level form sigma' = shift * sigma / (1 + (shift - 1) * sigma), sigma = 1 - t.

    In t it reads t' = t / (shift - (shift - 1) * t). shift > 1 moves t towards 0 (noise), so training and
    sampling spend more time at high noise; this is SD3's and diffusers' `shift` with the same value.
    """
    if shift == 1.0:
        return t
    return t / (shift - (shift - 1.0) * t)


def sway_time(t: Tensor, coef: float) -> Tensor:
    """F5-TTS sway sampling t' = t + coef * (cos(pi t / 2) - 1 + t); coef < 0 puts more steps near noise."""
    if coef == 0.0:
        return t
    return t + coef * (torch.cos(0.5 * math.pi * t) - 1.0 + t)


def _uniform(n: int, generator: torch.Generator | None, device: torch.device, mean: float, std: float) -> Tensor:
    return torch.rand(n, generator=generator, device=device)


def _logit_normal(n: int, generator: torch.Generator | None, device: torch.device, mean: float, std: float) -> Tensor:
    return torch.sigmoid(mean + std * torch.randn(n, generator=generator, device=device))


# name (recipe `flow.t_sampling`) -> draw(n, generator, device, mean, std) in [0, 1]
TIME_SAMPLERS: dict[str, Callable[..., Tensor]] = {"uniform": _uniform, "logit-normal": _logit_normal}


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Mean squared error over valid frames and all channels: (scalar over the batch, per sample (B,)).

    Every valid element weighs the same in the scalar, so a long clip counts more than a short one, as in
    an unmasked mean over a batch without padding.
    """
    err = (pred.float() - target.float()).pow(2)  # (B, T, C)
    if mask is None:
        return err.mean(), err.flatten(1).mean(1)
    weight = mask.to(err.dtype)[..., None]  # (B, T, 1)
    per_elem = err * weight
    count = weight.sum((1, 2)) * err.shape[-1]  # (B,) valid elements per sample
    per_sample = per_elem.sum((1, 2)) / count.clamp_min(1.0)
    return per_elem.sum() / count.sum().clamp_min(1.0), per_sample


@dataclass
class FlowLoss:
    """One evaluation of the objective: scalar loss, per-sample loss (B,), the times used (B,), and how many
    elements the scalar averages (data parallelism re-weights ranks by it so that the global mean is exact)."""

    loss: Tensor
    per_sample: Tensor
    t: Tensor
    count: Tensor


class FlowMatching:
    """Rectified-flow path x_t = t x1 + (1 - t) x0, its velocity target, time sampling and masked MSE."""

    def __init__(
        self,
        t_sampling: str = "uniform",
        t_mean: float = 0.0,
        t_std: float = 1.0,
        t_shift: float = 1.0,
        loss_mask: bool = True,
    ) -> None:
        if t_sampling not in TIME_SAMPLERS:
            raise ValueError(f"unknown t_sampling {t_sampling!r}; expected one of {sorted(TIME_SAMPLERS)}")
        self.t_sampling, self.t_mean, self.t_std, self.t_shift = t_sampling, t_mean, t_std, t_shift
        self.loss_mask = loss_mask

    def sample_time(self, n: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> Tensor:
        """Training times (n,) in [0, 1]: the configured distribution, then the timestep shift."""
        t = TIME_SAMPLERS[self.t_sampling](n, generator, torch.device(device), self.t_mean, self.t_std)
        return shift_time(t, self.t_shift)

    @staticmethod
    def interpolate(x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        """x_t = t x1 + (1 - t) x0 with t (B,) broadcast over the other dims."""
        t = t.view(-1, *([1] * (x1.dim() - 1))).to(x1.dtype)
        return t * x1 + (1 - t) * x0

    @staticmethod
    def target(x0: Tensor, x1: Tensor) -> Tensor:
        """The velocity the network regresses: v = x1 - x0."""
        return x1 - x0

    def loss(
        self,
        fn: VelocityFn,
        x1: Tensor,
        mask: Tensor | None = None,
        generator: torch.Generator | None = None,
        t: Tensor | None = None,
        x0: Tensor | None = None,
    ) -> FlowLoss:
        """Regress fn(t, x_t) on x1 - x0 (t and x0 drawn unless given); padding (mask False) never counts
        unless loss_mask=False."""
        b = x1.shape[0]
        t = self.sample_time(b, x1.device, generator) if t is None else t  # (B,)
        if x0 is None:
            x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)  # (B, T, C)
        xt = self.interpolate(x0, x1, t)  # (B, T, C)
        pred = fn(t, xt)  # (B, T, C)
        used = mask if self.loss_mask else None
        loss, per_sample = masked_mse(pred, self.target(x0, x1), used)
        count = (used.sum() * x1.shape[-1] if used is not None else torch.tensor(x1.numel())).to(torch.float32)
        return FlowLoss(loss, per_sample, t, count.clamp_min(1.0))
