"""How conditions enter the backbone: the `Conditioning` an aggregator produces, and the Aggregator and
Backbone base classes that meet through it.

Routes (one field of `Conditioning` each; an aggregator fills one, the model merges them):
  channel   (B, T, Cc)  frame-aligned features concatenated to the noisy latent before the input projection
  additive  (B, T, W)   frame-aligned features added to the hidden states after the input projection
  context   (B, Lc, Dc) keys/values of the cross-attention layers, with context_mask (B, Lc)
  prefix    (B, Lp, W)  tokens joined to the audio tokens in self-attention, with prefix_mask (B, Lp)
  global_embedding (B, W) added to the timestep embedding (adaLN vector, or the prepended time token)

Shapes: B batch, T latent frames, C latent channels, W backbone width, Dc context dim, L condition frames.
Masks are bool, True = valid. Positions (`context_pos`, `prefix_pos`) are in latent-frame units: a token
of a condition at f fps sits at frame (j + 0.5) * latent_fps / f - 0.5; tokens without a time axis sit at
0, where RoPE is the identity.

An aggregator is created from its recipe params alone (that is all the registry passes), then `bind`
gives it the runtime dims: the encoder's output dim and fps, the backbone width and context dim, and the
SequenceSpec. Until bound it is bound to `EXAMPLE_BINDING`, so a bare `create("aggregator", name)` is a
working module for the conformance check.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .errors import ContractError
from .interfaces import Conformable
from .sequence import SequenceSpec

_ROUTED = ("channel", "additive", "context", "prefix", "global_embedding")


@dataclass
class Conditioning:
    """Conditions in the shapes the backbone consumes; every field is optional (None: route unused)."""

    channel: Tensor | None = None  # (B, T, Cc)
    additive: Tensor | None = None  # (B, T, W)
    context: Tensor | None = None  # (B, Lc, Dc)
    context_mask: Tensor | None = None  # (B, Lc)
    context_pos: Tensor | None = None  # (Lc,) float, latent-frame units
    prefix: Tensor | None = None  # (B, Lp, W)
    prefix_mask: Tensor | None = None  # (B, Lp)
    prefix_pos: Tensor | None = None  # (Lp,) float, latent-frame units
    global_embedding: Tensor | None = None  # (B, W)

    @property
    def batch_size(self) -> int | None:
        """B, or None when every route is empty."""
        for name in _ROUTED:
            value = getattr(self, name)
            if value is not None:
                return value.shape[0]
        return None

    def tensors(self) -> dict[str, Tensor]:
        """The non-empty float fields by name (for conformance checks)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if isinstance(getattr(self, f.name), Tensor) and getattr(self, f.name).is_floating_point()
            and not f.name.endswith("_pos")
        }

    @staticmethod
    def merge(parts: Iterable[Conditioning]) -> Conditioning:
        """Combine the outputs of several aggregators: concatenate channels/context/prefix, sum the rest."""
        parts = list(parts)
        out = Conditioning()
        chans = [p.channel for p in parts if p.channel is not None]
        out.channel = torch.cat(chans, dim=-1) if chans else None  # (B, T, sum Cc)
        out.additive = _sum(p.additive for p in parts)
        out.global_embedding = _sum(p.global_embedding for p in parts)
        out.context, out.context_mask, out.context_pos = _join(
            [(p.context, p.context_mask, p.context_pos) for p in parts if p.context is not None]
        )
        out.prefix, out.prefix_mask, out.prefix_pos = _join(
            [(p.prefix, p.prefix_mask, p.prefix_pos) for p in parts if p.prefix is not None]
        )
        return out

    @staticmethod
    def stack(items: list[Conditioning]) -> Conditioning:
        """Concatenate same-structured conditionings along the batch (CFG variants in one forward)."""
        first = items[0]
        out = replace(first)
        for f in fields(first):
            if getattr(first, f.name) is not None and not f.name.endswith("_pos"):  # positions are per token
                setattr(out, f.name, torch.cat([getattr(c, f.name) for c in items], dim=0))
        return out


def _sum(values: Iterable[Tensor | None]) -> Tensor | None:
    total = None
    for v in values:
        if v is not None:
            total = v if total is None else total + v
    return total


def _join(parts: list[tuple[Tensor, Tensor | None, Tensor | None]]) -> tuple[Tensor | None, ...]:
    """Concatenate token sequences (B, L_i, D) with their masks and positions along L."""
    if not parts:
        return None, None, None
    tokens = torch.cat([x for x, _, _ in parts], dim=1)  # (B, sum L, D)
    masks = torch.cat(
        [m if m is not None else torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) for x, m, _ in parts], 1
    )
    pos = torch.cat(
        [p if p is not None else torch.zeros(x.shape[1], device=x.device) for x, _, p in parts]
    )
    return tokens, masks, pos


# ----------------------------------------------------------------------------------------------------------
# projections shared by aggregators


class MLP(nn.Sequential):
    """Linear -> SiLU -> Linear with a hidden size of `ratio` x the output (the public code's projections)."""

    def __init__(self, in_dim: int, out_dim: int, ratio: float = 2.0, bias: bool = False) -> None:
        hidden = max(1, round(out_dim * ratio))
        super().__init__(nn.Linear(in_dim, hidden, bias=bias), nn.SiLU(), nn.Linear(hidden, out_dim, bias=bias))


def _identity(in_dim: int, out_dim: int, ratio: float, bias: bool) -> nn.Module:
    if in_dim != out_dim:
        raise ContractError(
            f"projection 'none' keeps the condition's {in_dim} dims but {out_dim} are needed "
            "(use projection: linear or mlp, or set dim to the encoder's output dim)"
        )
    return nn.Identity()


# name (aggregator param `projection`) -> builder(in_dim, out_dim, mlp_ratio, bias)
PROJECTIONS: dict[str, Any] = {
    "none": _identity,
    "linear": lambda i, o, r, b: nn.Linear(i, o, bias=b),
    "mlp": lambda i, o, r, b: MLP(i, o, r, b),
}


def projection(kind: str, in_dim: int, out_dim: int, mlp_ratio: float = 2.0, bias: bool = False) -> nn.Module:
    """A condition projection by name: none (identity), linear, or mlp."""
    return PROJECTIONS[kind](in_dim, out_dim, mlp_ratio, bias)


def timed_positions(length: int, fps: float | None, latent_fps: float, device: torch.device | None = None) -> Tensor:
    """Positions (L,) of a condition's frames in latent-frame units (frame centres); zeros without an fps."""
    if fps is None:
        return torch.zeros(length, device=device)
    j = torch.arange(length, device=device, dtype=torch.float32)
    return (j + 0.5) * (latent_fps / fps) - 0.5


def hold_last_valid(features: Tensor, mask: Tensor | None) -> Tensor:
    """Replace each invalid frame by the nearest valid frame before it (or the first valid one), so that
    resampling near a padded end never reads padding. (B, L, D) -> (B, L, D)"""
    if mask is None:
        return features
    b, length, _ = features.shape
    idx = torch.arange(length, device=features.device).expand(b, length)  # (B, L)
    last = torch.where(mask, idx, torch.full_like(idx, -1)).cummax(dim=1).values  # (B, L)
    first = torch.where(mask, idx, torch.full_like(idx, length)).min(dim=1, keepdim=True).values  # (B, 1)
    src = torch.where(last >= 0, last, first).clamp_(0, length - 1)  # (B, L)
    return features.gather(1, src[..., None].expand_as(features))


def masked_mean(features: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over valid frames. (B, L, D) -> (B, D)"""
    if mask is None:
        return features.mean(1)
    w = mask.to(features.dtype)[..., None]  # (B, L, 1)
    return (features * w).sum(1) / w.sum(1).clamp_min(1.0)


# ----------------------------------------------------------------------------------------------------------
# aggregators


@dataclass(frozen=True)
class AggregatorBinding:
    """Runtime dims of one condition branch: encoder output dim/fps, backbone width/context dim, the grid."""

    in_dim: int
    fps: float | None
    width: int
    context_dim: int
    spec: SequenceSpec


# Small dims so an unbound aggregator is a cheap, working module (conformance, docs examples).
EXAMPLE_BINDING = AggregatorBinding(in_dim=12, fps=10.0, width=16, context_dim=8, spec=SequenceSpec(16000, 640, 1.0))


class Aggregator(nn.Module, Conformable):
    """Turns one encoded condition (B, L, D) into a `Conditioning` on one route, with a learned null embedding.

    Subclasses implement `build(binding)` (create layers, including `self.null`) and `route(...)`. The base
    `forward` decides per sample whether the condition is kept (present, not dropped, at least one valid
    frame) and hands that to `route`, which must use the null embedding where it is not.
    """

    name: ClassVar[str] = "aggregator"
    requires_fps: bool = False  # frame-aligned routes need a time axis (a subclass may decide per instance)
    binding: AggregatorBinding

    def __init__(self) -> None:
        super().__init__()

    def bind(self, binding: AggregatorBinding) -> Aggregator:
        """(Re)create the layers for these runtime dims; returns self."""
        if self.requires_fps and binding.fps is None:
            raise ContractError(
                f"aggregator {self.name!r} needs a time-aligned condition (an encoder with an fps); "
                "route token-like conditions (speaker, global features) by cross-attn, sequence-concat or global"
            )
        for child in list(self._modules):
            delattr(self, child)
        for pname in list(self._parameters):
            delattr(self, pname)
        self.binding = binding
        self.build(binding)
        return self

    def build(self, binding: AggregatorBinding) -> None:  # noqa: D102
        raise NotImplementedError

    @property
    def channels(self) -> int:
        """Channels this aggregator concatenates to the latent (0 unless it is a channel route)."""
        return 0

    @property
    def uses_context(self) -> bool:
        """True when this aggregator feeds cross-attention, so the backbone needs those layers."""
        return False

    def forward(
        self,
        features: Tensor,
        mask: Tensor | None = None,
        present: Tensor | None = None,
        drop: Tensor | None = None,
        num_frames: int | None = None,
    ) -> Conditioning:
        """features (B, L, D), mask (B, L), present/drop (B,) bool -> Conditioning on this route."""
        b, length, dim = features.shape
        if dim != self.binding.in_dim:
            raise ContractError(f"aggregator {self.name!r}: expected features of dim {self.binding.in_dim}, got {dim}")
        keep = torch.ones(b, dtype=torch.bool, device=features.device)
        if present is not None:
            keep = keep & present.to(device=features.device, dtype=torch.bool)
        if drop is not None:
            keep = keep & ~drop.to(device=features.device, dtype=torch.bool)
        if mask is not None:
            keep = keep & mask.any(1)
        frames = self.binding.spec.num_frames if num_frames is None else num_frames
        return self.route(features, mask, keep, frames)

    def route(self, features: Tensor, mask: Tensor | None, keep: Tensor, num_frames: int) -> Conditioning:  # noqa: D102
        raise NotImplementedError

    # helpers for subclasses ------------------------------------------------------------------------------
    def tokens_or_null(self, tokens: Tensor, mask: Tensor | None, keep: Tensor) -> tuple[Tensor, Tensor]:
        """Token routes: dropped samples become one null token (the rest masked). (B, L, D), (B, L)"""
        b, length, _ = tokens.shape
        mask = torch.ones(b, length, dtype=torch.bool, device=tokens.device) if mask is None else mask
        null_mask = torch.zeros_like(mask)
        null_mask[:, 0] = True
        k = keep[:, None]  # (B, 1)
        out = torch.where(k[..., None], tokens, self.null.to(tokens.dtype).expand_as(tokens))  # (B, L, D)
        return out, torch.where(k, mask, null_mask)

    def frames_or_null(self, frames: Tensor, grid_mask: Tensor | None, keep: Tensor) -> Tensor:
        """Frame routes: null embedding where the sample is not kept or the frame is not covered. (B, T, D)"""
        use = keep[:, None] if grid_mask is None else keep[:, None] & grid_mask  # (B, T)
        return torch.where(use[..., None], frames, self.null.to(frames.dtype).expand_as(frames))

    def to_latent_grid(self, features: Tensor, mask: Tensor | None, num_frames: int, mode: str) -> tuple[Tensor, Tensor | None]:
        """Resample (B, L, D) at the condition's fps onto the latent grid (B, T, D), padding never read.

        The grid mask (B, T) is False where the source frame is padding or past the condition's end, so a
        condition shorter than the audio leaves the rest of the window to the null embedding.
        """
        spec, fps = self.binding.spec, self.binding.fps
        b, length, _ = features.shape
        grid, grid_mask = spec.to_grid(hold_last_valid(features, mask), fps, mask, num_frames=num_frames, mode=mode)
        centres = (torch.arange(num_frames, device=features.device, dtype=torch.float64) + 0.5) / spec.latent_fps
        covered = (centres * fps < length).expand(b, num_frames)  # (B, T)
        return grid, covered if grid_mask is None else grid_mask & covered

    # conformance -----------------------------------------------------------------------------------------
    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Random features at the bound dims; the second sample is shorter, and the last one is dropped."""
        length = self.binding.spec.condition_frames(self.binding.fps) if self.binding.fps else 3
        features = torch.randn(batch_size, length, self.binding.in_dim, generator=generator)
        mask = torch.ones(batch_size, length, dtype=torch.bool)
        if batch_size > 1:
            mask[1, max(1, length // 2):] = False
        drop = torch.zeros(batch_size, dtype=torch.bool)
        drop[-1] = batch_size > 1  # so the null embedding is used and gets a gradient
        return {"features": features, "mask": mask, "present": torch.ones(batch_size, dtype=torch.bool), "drop": drop}

    def output_tensors(self, output: Any) -> dict[str, Tensor]:
        """The non-empty routes of the Conditioning."""
        if isinstance(output, Conditioning):
            return output.tensors()
        return super().output_tensors(output)


# ----------------------------------------------------------------------------------------------------------
# backbones


class Backbone(nn.Module, Conformable):
    """The velocity network v(x_t, t, conditioning). x (B, T, C), t (B,), mask (B, T) -> v (B, T, C).

    `bind(latent_channels, cond_channels, cross_attention)` sets the runtime dims after creation: the codec's
    latent channels, the channels the channel-concat aggregators add, and whether any condition uses
    cross-attention. `width` and `context_dim` tell aggregators what to produce.
    """

    width: int
    context_dim: int
    latent_channels: int
    cond_channels: int

    def bind(self, latent_channels: int, cond_channels: int = 0, cross_attention: bool = True) -> Backbone:  # noqa: D102
        raise NotImplementedError

    def forward(  # noqa: D102
        self, x: Tensor, t: Tensor, cond: Conditioning | None = None, mask: Tensor | None = None
    ) -> Tensor:
        raise NotImplementedError
