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

Construction happens once, with final sizes: assembly (registry/assemble.py) resolves the encoder's
output dim and fps and the backbone's width and context dim into `AggregatorDims`, and constructs each
aggregator as `Aggregator(dims, **recipe_params)`; it then constructs the backbone with the channels the
aggregators add. Nothing rebuilds layers after construction. At run time the model calls each aggregator
as `aggregator(condition, keep, spec)`: the encoded `Condition`, which samples keep it (B,) bool, and the
SequenceSpec of this call's latent grid.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .errors import ContractError
from .interfaces import Condition, Conformable
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
class AggregatorDims:
    """Final sizes of one condition branch, resolved by assembly before the aggregator is constructed.

    in_dim: the encoder's feature dim D; fps: its frame rate (None: tokens without a time axis);
    width: the backbone's hidden width W; context_dim: the backbone's cross-attention key/value dim Dc.
    """

    in_dim: int
    fps: float | None
    width: int
    context_dim: int


# Small sizes for a standalone aggregator (conformance checks, docs examples, tests).
EXAMPLE_DIMS = AggregatorDims(in_dim=12, fps=10.0, width=16, context_dim=8)
EXAMPLE_SPEC = SequenceSpec(16000, 640, 1.0)  # 25 latent frames per second, one second


class Aggregator(nn.Module, Conformable):
    """Turns one encoded condition (B, L, D) into a `Conditioning` on one route, with a learned null embedding.

    Subclasses take `dims` (plus their own recipe params) in `__init__`, create every layer there with its
    final size (including `self.null`), and implement `forward(condition, keep, spec)`, which must use the
    null embedding for samples where `keep` is False. `name` is used in error messages.
    """

    name: ClassVar[str] = "aggregator"
    requires_fps: ClassVar[bool] = False  # frame-aligned routes need a time axis

    def __init__(self, dims: AggregatorDims) -> None:
        super().__init__()
        if self.requires_fps and dims.fps is None:
            raise ContractError(
                f"aggregator {self.name!r} needs a time-aligned condition (an encoder with an fps); "
                "route token-like conditions (speaker, global features) by cross-attn, sequence-concat or global"
            )
        self.dims = dims

    @property
    def channels(self) -> int:
        """Channels this aggregator concatenates to the latent (0 unless it is a channel route)."""
        return 0

    @property
    def uses_context(self) -> bool:
        """True when this aggregator feeds cross-attention, so the backbone needs those layers."""
        return False

    def forward(self, condition: Condition, keep: Tensor, spec: SequenceSpec) -> Conditioning:
        """condition: features (B, L, D), mask (B, L); keep (B,) bool; spec: this call's latent grid
        (spec.num_frames = T) -> Conditioning on this aggregator's route."""
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

    def to_latent_grid(self, condition: Condition, spec: SequenceSpec, mode: str) -> tuple[Tensor, Tensor]:
        """Resample the condition's (B, L, D) at its fps onto the latent grid (B, T, D), padding never read.

        The grid mask (B, T) is False where the source frame is padding or past the condition's end, so a
        condition shorter than the audio leaves the rest of the window to the null embedding.
        """
        return to_latent_grid(condition, self.dims.fps, spec, mode)

    # conformance -----------------------------------------------------------------------------------------
    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """A random condition at `dims` over `EXAMPLE_SPEC`'s window; the second sample is shorter, and the
        last one is not kept (so the null embedding is used and gets a gradient)."""
        fps = self.dims.fps
        length = EXAMPLE_SPEC.condition_frames(fps) if fps else 3
        features = torch.randn(batch_size, length, self.dims.in_dim, generator=generator)
        mask = torch.ones(batch_size, length, dtype=torch.bool)
        if batch_size > 1:
            mask[1, max(1, length // 2):] = False
        keep = torch.ones(batch_size, dtype=torch.bool)
        keep[-1] = batch_size == 1
        return {"condition": Condition(features, mask, fps), "keep": keep, "spec": EXAMPLE_SPEC}

    def output_tensors(self, output: Any) -> dict[str, Tensor]:
        """Every non-empty field of the Conditioning (routes, masks, positions)."""
        if isinstance(output, Conditioning):
            return {f.name: getattr(output, f.name) for f in fields(output) if getattr(output, f.name) is not None}
        return super().output_tensors(output)

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """Shapes beyond the route contract (default: none). The conformance kit always holds the output to
        the contract (`route_shapes`); override to also fix a token count, say."""
        return {}


def route_shapes(aggregator: Aggregator, inputs: dict[str, Any], output: Conditioning) -> dict[str, tuple[int, ...]]:
    """The shapes the route contract requires of `output`, for every route it fills: channel (B, T, channels),
    additive (B, T, W), global_embedding (B, W), context (B, Lc, Dc) and prefix (B, Lp, W) with their masks
    (B, L) and positions (L,); T from the call's spec, the token counts from the output itself."""
    b, t, d = inputs["condition"].features.shape[0], inputs["spec"].num_frames, aggregator.dims
    shapes: dict[str, tuple[int, ...]] = {}
    if output.channel is not None:
        shapes["channel"] = (b, t, aggregator.channels)
    if output.additive is not None:
        shapes["additive"] = (b, t, d.width)
    if output.global_embedding is not None:
        shapes["global_embedding"] = (b, d.width)
    if output.context is not None:
        lc = output.context.shape[1]
        shapes["context"] = (b, lc, d.context_dim)
        shapes["context_mask"] = (b, lc)
        shapes["context_pos"] = (lc,)
    if output.prefix is not None:
        lp = output.prefix.shape[1]
        shapes["prefix"] = (b, lp, d.width)
        shapes["prefix_mask"] = (b, lp)
        shapes["prefix_pos"] = (lp,)
    return shapes


def grid_indices(spec: SequenceSpec, src_fps: float, src_len: int) -> Tensor:
    """Index of the source frame (at `src_fps`) under the centre of each latent frame of `spec`. (T,)

    Latent frame i covers [i, i + 1) / latent_fps seconds; its centre (i + 0.5) / latent_fps falls in source
    frame floor(centre * src_fps), clamped to the source.
    """
    centres = (torch.arange(spec.num_frames, dtype=torch.float64) + 0.5) / spec.latent_fps  # seconds
    idx = torch.floor(centres * src_fps).long()
    return idx.clamp_(0, max(src_len - 1, 0))


def to_latent_grid(condition: Condition, fps: float | None, spec: SequenceSpec, mode: str) -> tuple[Tensor, Tensor]:
    """Resample a condition's features (B, L, D) at `fps` onto the latent grid of `spec`: (B, T, D), and a grid
    mask (B, T) that is False where the source frame is padding or past the condition's end.

    `nearest` takes the frame under each latent frame's centre (keeps discrete embeddings such as phonemes
    crisp); `linear` interpolates between source frame centres. Padded source frames are first replaced by
    the last valid one (`hold_last_valid`), so padding is never read.
    """
    if fps is None:
        raise ContractError("resampling onto the latent grid needs a condition with an fps")
    features, mask = hold_last_valid(condition.features, condition.mask), condition.mask
    b, length, _ = features.shape
    t_frames = spec.num_frames
    idx = grid_indices(spec, fps, length).to(features.device)  # (T,)
    if mode == "nearest":
        grid = features.index_select(1, idx)  # (B, T, D)
    elif mode == "linear":
        centres = (torch.arange(t_frames, device=features.device, dtype=torch.float32) + 0.5) / spec.latent_fps
        pos = (centres * fps - 0.5).clamp(0, max(length - 1, 0))  # fractional source index (T,)
        lo = pos.floor().long()
        hi = (lo + 1).clamp(max=length - 1)
        w = (pos - lo.float()).view(1, -1, 1).to(features.dtype)
        grid = features.index_select(1, lo) * (1 - w) + features.index_select(1, hi) * w  # (B, T, D)
    else:
        raise ValueError(f"unknown resampling mode {mode!r}; use 'nearest' or 'linear'")
    centres64 = (torch.arange(t_frames, device=features.device, dtype=torch.float64) + 0.5) / spec.latent_fps
    covered = (centres64 * fps < length).expand(b, t_frames)  # (B, T): the source still has a frame there
    return grid, covered if mask is None else mask.index_select(1, idx) & covered


def condition_keep(condition: Condition, present: Tensor | None = None, drop: Tensor | None = None) -> Tensor:
    """Which samples keep a condition (B,) bool: present, not dropped, and at least one valid frame."""
    features = condition.features
    keep = torch.ones(features.shape[0], dtype=torch.bool, device=features.device)
    if present is not None:
        keep = keep & present.to(device=features.device, dtype=torch.bool)
    if drop is not None:
        keep = keep & ~drop.to(device=features.device, dtype=torch.bool)
    if condition.mask is not None:
        keep = keep & condition.mask.any(1)
    return keep


# ----------------------------------------------------------------------------------------------------------
# backbones


class Backbone(nn.Module, Conformable):
    """The velocity network v(x_t, t, conditioning). x (B, T, C), t (B,), mask (B, T) -> v (B, T, C).

    Constructed once by assembly with its recipe params plus the final runtime sizes, as keyword arguments:
    `latent_channels` (the codec's C), `cond_channels` (the channels the channel-concat aggregators add)
    and `cross_attention` (whether any condition feeds cross-attention). Its params model must provide
    `width` and may provide `context_dim` (default: width): aggregators are sized from them.
    """

    width: int
    context_dim: int
    latent_channels: int
    cond_channels: int

    def forward(  # noqa: D102
        self, x: Tensor, t: Tensor, cond: Conditioning | None = None, mask: Tensor | None = None
    ) -> Tensor:
        raise NotImplementedError


# Runtime sizes for a standalone backbone (conformance checks): what assembly passes besides the params.
EXAMPLE_BACKBONE_SIZES: dict[str, Any] = {"latent_channels": 4, "cond_channels": 3, "cross_attention": True}
