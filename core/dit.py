"""DiT backbone: the velocity network of vssflow (registered as backbone `dit`).

    x (B, T, C) noisy latent  ++ conditioning.channel (B, T, Cc)  --proj_in-->  h (B, T, W)
    h += conditioning.additive                       (frame-aligned features, same grid)
    c  = time_embed(t) + conditioning.global_embedding                      (B, W)
    tokens = [c as one token if timestep == "token"] ++ conditioning.prefix ++ h     (B, P + T, W)
    depth x block:  self-attention (RoPE on audio positions, optional QK RMSNorm)
                    cross-attention to conditioning.context (B, Lc, Dc), grouped KV heads
                    feed-forward (GELU or SwiGLU)
    final: norm, linear W -> C (zero-initialised), audio tokens only                  (B, T, C)

Timestep conditioning: `adaln` modulates every sub-layer from c (adaLN-Zero: gates and final layer start
at zero, Peebles & Xie); `token` prepends c as one token and uses plain affine LayerNorms (VSSFlow and
Stable Audio Open). Both run through one block: under `token` the "modulation" is the LayerNorm affine and
the gate is 1. Cross-attention is never modulated (its LayerNorm is affine in both modes).

RoPE positions are latent-frame units: audio frame i sits at i; prefix tokens at their condition's frame
positions, or 0 (identity rotation) when they have no time axis, like the time token. `cross_rope` says
what cross-attention rotates: "queries" (default) rotates the audio queries only, as the public VSSFlow
code does; "both" also rotates keys of conditions that have an fps at their frame positions, so the
attention score depends on the audio-to-video time offset; "none" rotates neither.

Projecting straight to C equals the public code's full-width output sliced back to the latent channels.
The public model's 1x1 residual convs around proj_in/proj_out are linear maps merged into them, so they
are not separate layers here.

Shapes: B batch, T latent frames, C latent channels, Cc channel-concat channels, W width, H heads,
Hkv cross-attention KV heads, Dh head dim, Lc context tokens, P prefix tokens. Masks: True = valid.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import kernels
from .conditioning import Backbone, Conditioning
from .errors import ContractError

# ----------------------------------------------------------------------------------------------------------
# embeddings


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features of 1000 t (DiT's frequency embedding on [0, 1000]). (B,) -> (B, dim)"""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]  # (B, dim/2)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 2*half)
    return F.pad(emb, (0, dim - 2 * half))


class TimestepEmbedder(nn.Module):
    """t in [0, 1] -> (B, W): sinusoidal features, then Linear-SiLU-Linear."""

    def __init__(self, width: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: Tensor) -> Tensor:  # noqa: D102
        freq = timestep_embedding(t, self.freq_dim)  # (B, F)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))  # (B, W)


# ----------------------------------------------------------------------------------------------------------
# blocks


def _heads(x: Tensor, heads: int) -> Tensor:
    """(B, L, H*Dh) -> (B, H, L, Dh)"""
    b, length, _ = x.shape
    return x.view(b, length, heads, -1).transpose(1, 2)


def _merge(x: Tensor) -> Tensor:
    """(B, H, L, Dh) -> (B, L, H*Dh)"""
    b, h, length, d = x.shape
    return x.transpose(1, 2).reshape(b, length, h * d)


class SelfAttention(nn.Module):
    """Multi-head self-attention with optional QK RMSNorm and RoPE on the first rot dims of each head."""

    def __init__(self, width: int, heads: int, head_dim: int, qk_norm: bool, bias: bool, backend: str) -> None:
        super().__init__()
        self.heads, self.head_dim, self.backend = heads, head_dim, backend
        self.qkv = nn.Linear(width, 3 * heads * head_dim, bias=bias)
        self.out = nn.Linear(heads * head_dim, width, bias=bias)
        self.q_norm = nn.Parameter(torch.ones(head_dim)) if qk_norm else None
        self.k_norm = nn.Parameter(torch.ones(head_dim)) if qk_norm else None

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None, mask: Tensor | None) -> Tensor:  # noqa: D102
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # 3 x (B, L, H*Dh)
        q, k, v = _heads(q, self.heads), _heads(k, self.heads), _heads(v, self.heads)  # (B, H, L, Dh)
        cos, sin = rope if rope is not None else (None, None)
        if self.q_norm is not None or cos is not None:
            q, k = kernels.qk_norm_rope(
                q, k, self.q_norm, self.k_norm, cos, sin, norm=self.q_norm is not None, backend=self.backend,
                k_cos=cos, k_sin=sin,
            )  # (B, H, L, Dh)
        y = kernels.attention(q, k, v, key_padding_mask=mask, backend=self.backend)  # (B, H, L, Dh)
        return self.out(_merge(y))  # (B, L, W)


class CrossAttention(nn.Module):
    """Audio queries attend to condition tokens; keys/values come from the context dim with Hkv heads."""

    def __init__(
        self, width: int, context_dim: int, heads: int, kv_heads: int, head_dim: int, qk_norm: bool, bias: bool,
        backend: str,
    ) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim, self.backend = heads, kv_heads, head_dim, backend
        self.q = nn.Linear(width, heads * head_dim, bias=bias)
        self.kv = nn.Linear(context_dim, 2 * kv_heads * head_dim, bias=bias)
        self.out = nn.Linear(heads * head_dim, width, bias=bias)
        self.q_norm = nn.Parameter(torch.ones(head_dim)) if qk_norm else None
        self.k_norm = nn.Parameter(torch.ones(head_dim)) if qk_norm else None

    def forward(  # noqa: D102
        self,
        x: Tensor,
        context: Tensor,
        context_mask: Tensor | None,
        q_rope: tuple[Tensor, Tensor] | None,
        k_rope: tuple[Tensor, Tensor] | None,
    ) -> Tensor:
        q = _heads(self.q(x), self.heads)  # (B, H, L, Dh)
        k, v = self.kv(context).chunk(2, dim=-1)  # 2 x (B, Lc, Hkv*Dh)
        k, v = _heads(k, self.kv_heads), _heads(v, self.kv_heads)  # (B, Hkv, Lc, Dh)
        cos, sin = q_rope if q_rope is not None else (None, None)
        k_cos, k_sin = k_rope if k_rope is not None else (None, None)
        if self.q_norm is not None or cos is not None or k_cos is not None:
            q, k = kernels.qk_norm_rope(
                q, k, self.q_norm, self.k_norm, cos, sin, norm=self.q_norm is not None, backend=self.backend,
                k_cos=k_cos, k_sin=k_sin,
            )  # (B, H, L, Dh), (B, Hkv, Lc, Dh)
        y = kernels.attention(q, k, v, key_padding_mask=context_mask, backend=self.backend)  # (B, H, L, Dh)
        return self.out(_merge(y))  # (B, L, W)


class GeluFFN(nn.Module):
    """Linear -> GELU (tanh) -> Linear."""

    def __init__(self, width: int, hidden: int, bias: bool) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, hidden, bias=bias), nn.Linear(hidden, width, bias=bias)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))  # (B, L, W)


class SwiGLUFFN(nn.Module):
    """Linear to 2 x hidden -> value * SiLU(gate) -> Linear (diffusers' swiglu layout)."""

    def __init__(self, width: int, hidden: int, bias: bool) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, 2 * hidden, bias=bias), nn.Linear(hidden, width, bias=bias)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        value, gate = self.fc1(x).chunk(2, dim=-1)  # 2 x (B, L, hidden)
        return self.fc2(value * F.silu(gate))  # (B, L, W)


FFNS: dict[str, type[nn.Module]] = {"gelu": GeluFFN, "swiglu": SwiGLUFFN}


class AdaLNModulation(nn.Module):
    """adaLN-Zero: (shift, scale, gate) per sub-layer from the conditioning vector; zero at init."""

    def __init__(self, width: int, chunks: int) -> None:
        super().__init__()
        self.chunks = chunks
        self.linear = nn.Linear(width, chunks * width)

    def forward(self, c: Tensor) -> tuple[Tensor, ...]:  # noqa: D102
        return self.linear(F.silu(c)).chunk(self.chunks, dim=-1)  # chunks x (B, W)

    def zero_(self) -> None:
        """Zero weights and bias: every gate and modulation starts at 0 (adaLN-Zero)."""
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)


class AffineModulation(nn.Module):
    """The plain-LayerNorm case: learned per-channel shift/scale (LayerNorm's affine) and a gate of 1."""

    def __init__(self, width: int, chunks: int) -> None:
        super().__init__()
        self.chunks = chunks
        # rows alternate (shift, scale) per sub-layer; the gate slot of each triple is a constant 1
        self.affine = nn.Parameter(torch.zeros(2 * (chunks // 3) + (chunks % 3), width))

    def forward(self, c: Tensor) -> tuple[Tensor, ...]:  # noqa: D102
        b = c.shape[0]
        rows = [r.expand(b, -1) for r in self.affine.to(c.dtype)]  # each (B, W)
        ones = torch.ones_like(rows[0])
        out: list[Tensor] = []
        for i in range(self.chunks // 3):
            out += [rows[2 * i], rows[2 * i + 1], ones]
        out += rows[2 * (self.chunks // 3):]  # a final layer has (shift, scale) only
        return tuple(out)

    def zero_(self) -> None:
        """Start as an identity affine (LayerNorm's weight 1, bias 0)."""
        nn.init.zeros_(self.affine)


MODULATIONS: dict[str, type[nn.Module]] = {"adaln": AdaLNModulation, "token": AffineModulation}


class DiTBlock(nn.Module):
    """Self-attention, optional cross-attention, feed-forward; pre-norm residuals, modulated by c."""

    def __init__(
        self,
        width: int,
        heads: int,
        head_dim: int,
        ffn: str,
        ffn_hidden: int,
        ffn_bias: bool,
        timestep: str,
        qk_norm: bool,
        qkv_bias: bool,
        context_dim: int | None,
        cross_kv_heads: int,
        backend: str,
        eps: float,
    ) -> None:
        super().__init__()
        self.eps, self.backend = eps, backend
        self.modulation = MODULATIONS[timestep](width, 6)
        self.attn = SelfAttention(width, heads, head_dim, qk_norm, qkv_bias, backend)
        self.cross_norm: nn.LayerNorm | None = None
        self.cross: CrossAttention | None = None
        if context_dim is not None:
            self.cross_norm = nn.LayerNorm(width, eps=eps)
            self.cross = CrossAttention(width, context_dim, heads, cross_kv_heads, head_dim, qk_norm, qkv_bias, backend)
        self.ffn = FFNS[ffn](width, ffn_hidden, ffn_bias)

    def forward(  # noqa: D102
        self,
        x: Tensor,
        c: Tensor,
        rope: tuple[Tensor, Tensor] | None,
        mask: Tensor | None,
        context: Tensor | None,
        context_mask: Tensor | None,
        q_rope: tuple[Tensor, Tensor] | None,
        k_rope: tuple[Tensor, Tensor] | None,
    ) -> Tensor:
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = self.modulation(c)  # 6 x (B, W)
        h = kernels.adaln_modulate(x, shift_a, scale_a, self.eps, self.backend)  # (B, L, W)
        x = kernels.gated_residual(x, gate_a, self.attn(h, rope, mask), self.backend)  # (B, L, W)
        if self.cross is not None and context is not None:
            x = x + self.cross(self.cross_norm(x), context, context_mask, q_rope, k_rope)  # (B, L, W)
        h = kernels.adaln_modulate(x, shift_f, scale_f, self.eps, self.backend)  # (B, L, W)
        return kernels.gated_residual(x, gate_f, self.ffn(h), self.backend)  # (B, L, W)


class FinalLayer(nn.Module):
    """Modulated norm, then a zero-initialised linear to the latent channels."""

    def __init__(self, width: int, out_channels: int, timestep: str, eps: float, backend: str) -> None:
        super().__init__()
        self.eps, self.backend = eps, backend
        self.modulation = MODULATIONS[timestep](width, 2)
        self.linear = nn.Linear(width, out_channels)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:  # noqa: D102
        shift, scale = self.modulation(c)  # 2 x (B, W)
        return self.linear(kernels.adaln_modulate(x, shift, scale, self.eps, self.backend))  # (B, T, C)


# ----------------------------------------------------------------------------------------------------------
# model

ROPE_DIMS = {"none": lambda head_dim, dims: 0, "full": lambda head_dim, dims: head_dim,
             "partial": lambda head_dim, dims: dims if dims is not None else head_dim // 2}
# cross_rope -> (rotate queries, rotate keys of timed conditions)
CROSS_ROPE = {"none": (False, False), "queries": (True, False), "both": (True, True)}


class DiT(Backbone):
    """Diffusion Transformer over latent frames with adaLN-Zero or prepended-token timestep conditioning."""

    def __init__(
        self,
        *,
        depth: int = 4,
        width: int = 256,
        heads: int = 4,
        head_dim: int | None = None,
        ffn: str = "swiglu",
        ffn_hidden: int | None = None,
        ffn_bias: bool = True,
        timestep: str = "adaln",
        time_dim: int = 256,
        rope: str = "partial",
        rope_dims: int | None = None,
        rope_base: float = 10000.0,
        qk_norm: bool = False,
        qkv_bias: bool = False,
        context_dim: int | None = None,
        cross_kv_heads: int | None = None,
        cross_rope: str = "queries",
        attention: str = "auto",
        norm_eps: float = 1e-6,
        latent_channels: int,
        cond_channels: int = 0,
        cross_attention: bool = True,
    ) -> None:
        super().__init__()
        head_dim = head_dim if head_dim is not None else width // heads
        cross_kv_heads = cross_kv_heads if cross_kv_heads is not None else heads
        rot_dim = ROPE_DIMS[rope](head_dim, rope_dims)
        if rot_dim % 2 or rot_dim > head_dim:
            raise ContractError(f"dit: RoPE needs an even number of dims <= head_dim {head_dim}, got {rot_dim}")
        if heads % cross_kv_heads:
            raise ContractError(f"dit: heads ({heads}) must be a multiple of cross_kv_heads ({cross_kv_heads})")
        self.width, self.heads, self.head_dim, self.depth = width, heads, head_dim, depth
        self.context_dim = context_dim if context_dim is not None else width
        self.rot_dim, self.rope_base = rot_dim, rope_base
        self.rotate_cross_q, self.rotate_cross_k = CROSS_ROPE[cross_rope]
        self.time_token = timestep == "token"
        self.eps = norm_eps
        self.time_embed = TimestepEmbedder(width, time_dim)
        self.blocks = nn.ModuleList(
            DiTBlock(
                width=width, heads=heads, head_dim=head_dim, ffn=ffn, ffn_hidden=ffn_hidden or 4 * width,
                ffn_bias=ffn_bias, timestep=timestep, qk_norm=qk_norm, qkv_bias=qkv_bias,
                context_dim=self.context_dim if cross_attention else None, cross_kv_heads=cross_kv_heads,
                backend=attention, eps=norm_eps,
            )
            for _ in range(depth)
        )
        self.latent_channels, self.cond_channels = latent_channels, cond_channels
        self.proj_in = nn.Linear(latent_channels + cond_channels, width)
        self.final = FinalLayer(width, latent_channels, timestep, norm_eps, attention)
        self.initialize_weights()

    @property
    def has_cross_attention(self) -> bool:
        """Whether the blocks carry cross-attention layers."""
        return any(b.cross is not None for b in self.blocks)

    # forward -------------------------------------------------------------------------------------------------
    def _rope(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor] | None:
        """cos/sin tables (L, rot/2) for positions (L,), or None without RoPE."""
        if self.rot_dim == 0:
            return None
        cos, sin = kernels.rope_cos_sin(positions.float(), self.rot_dim, self.rope_base)
        return cos.to(dtype), sin.to(dtype)

    def forward(self, x: Tensor, t: Tensor, cond: Conditioning | None = None, mask: Tensor | None = None) -> Tensor:
        """Velocity for noisy latents x (B, T, C) at times t (B,) under `cond`; mask (B, T) True = valid."""
        cond = cond if cond is not None else Conditioning()
        b, frames, _ = x.shape
        if t.dim() == 0:
            t = t.expand(b)
        h = x if cond.channel is None else torch.cat([x, cond.channel.to(x.dtype)], dim=-1)  # (B, T, C + Cc)
        if h.shape[-1] != self.proj_in.in_features:
            raise ContractError(
                f"dit: built for {self.latent_channels} latent + {self.cond_channels} condition channels, "
                f"got {x.shape[-1]} + {h.shape[-1] - x.shape[-1]}"
            )
        h = self.proj_in(h)  # (B, T, W)
        if cond.additive is not None:
            h = h + cond.additive.to(h.dtype)  # (B, T, W)
        c = self.time_embed(t).to(h.dtype)  # (B, W)
        if cond.global_embedding is not None:
            c = c + cond.global_embedding.to(h.dtype)  # (B, W)

        audio_pos = torch.arange(frames, device=x.device, dtype=torch.float32)  # (T,)
        audio_mask = mask if mask is not None else torch.ones(b, frames, dtype=torch.bool, device=x.device)
        tokens, masks, positions = [h], [audio_mask], [audio_pos]
        if cond.prefix is not None:
            pmask = cond.prefix_mask if cond.prefix_mask is not None else torch.ones(cond.prefix.shape[:2], dtype=torch.bool, device=x.device)
            ppos = cond.prefix_pos if cond.prefix_pos is not None else torch.zeros(cond.prefix.shape[1], device=x.device)
            tokens.insert(0, cond.prefix.to(h.dtype))  # (B, Lp, W)
            masks.insert(0, pmask)
            positions.insert(0, ppos.float())
        if self.time_token:
            tokens.insert(0, c[:, None])  # (B, 1, W)
            masks.insert(0, torch.ones(b, 1, dtype=torch.bool, device=x.device))
            positions.insert(0, torch.zeros(1, device=x.device))
        prefix_len = sum(tok.shape[1] for tok in tokens) - frames
        h = torch.cat(tokens, dim=1)  # (B, P + T, W)
        needs_mask = mask is not None or cond.prefix_mask is not None
        full_mask = torch.cat(masks, dim=1) if needs_mask else None  # (B, P + T)
        pos = torch.cat(positions)  # (P + T,)

        rope = self._rope(pos, h.dtype)  # (P + T, rot/2) x 2
        q_rope = rope if self.rotate_cross_q else None
        k_rope = None
        if self.rotate_cross_k and cond.context is not None and cond.context_pos is not None:
            k_rope = self._rope(cond.context_pos, h.dtype)  # (Lc, rot/2) x 2
        context = None if cond.context is None else cond.context.to(h.dtype)  # (B, Lc, Dc)
        if context is not None and not self.has_cross_attention:
            raise ContractError("dit: conditioning has cross-attention context but the backbone was built without it")
        for block in self.blocks:
            h = block(h, c, rope, full_mask, context, cond.context_mask, q_rope, k_rope)  # (B, P + T, W)
        return self.final(h[:, prefix_len:], c)  # (B, T, C)

    # conformance ---------------------------------------------------------------------------------------------
    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Random latents, times, condition channels and a context (if built with them); a padded second sample."""
        frames = 6
        x = torch.randn(batch_size, frames, self.latent_channels, generator=generator)
        t = torch.rand(batch_size, generator=generator)
        mask = torch.ones(batch_size, frames, dtype=torch.bool)
        cond = Conditioning()
        if self.cond_channels:
            cond.channel = torch.randn(batch_size, frames, self.cond_channels, generator=generator)
        if self.has_cross_attention:
            cond.context = torch.randn(batch_size, 3, self.context_dim, generator=generator)
            cond.context_mask = torch.ones(batch_size, 3, dtype=torch.bool)
            cond.context_pos = torch.arange(3, dtype=torch.float32) * 2.0
        if batch_size > 1:
            mask[1, frames // 2:] = False
            if cond.context_mask is not None:
                cond.context_mask[1, 2:] = False
        return {"x": x, "t": t, "cond": cond, "mask": mask}

    def expected_shapes(self, inputs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """The velocity has the latent's shape."""
        return {"output": tuple(inputs["x"].shape)}

    # init ----------------------------------------------------------------------------------------------------
    def initialize_weights(self) -> None:
        """Xavier linears, N(0, 0.02) time MLP, zero adaLN modulations and final layer (adaLN-Zero)."""
        self.apply(_init_linear)
        for layer in (self.time_embed.mlp[0], self.time_embed.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        for block in self.blocks:
            block.modulation.zero_()
        self.final.modulation.zero_()
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
