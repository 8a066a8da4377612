"""DiT backbone: shapes, zero init, padding invariance, timestep routes, RoPE choices, GQA, sizes."""

from __future__ import annotations

import math

import pytest
import torch

from tests.engine.components import small_dit
from vssflow.core.conditioning import Conditioning
from vssflow.core.dit import DiT


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Leave the zero init so outputs depend on every layer."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))


def _context(b: int, lc: int, dim: int, g: torch.Generator) -> Conditioning:
    return Conditioning(
        context=torch.randn(b, lc, dim, generator=g),
        context_mask=torch.ones(b, lc, dtype=torch.bool),
        context_pos=torch.arange(lc, dtype=torch.float32) * 2.5,
    )


def test_timestep_features_are_dit_sinusoids_of_1000_t():
    from vssflow.core.dit import timestep_embedding

    # dim 4: frequencies 10000^(-k/2) = 1, 0.01; at t = 0.001 the arguments are 1000 t f = 1 and 0.01
    emb = timestep_embedding(torch.tensor([0.001]), 4)
    want = torch.tensor([[math.cos(1.0), math.cos(0.01), math.sin(1.0), math.sin(0.01)]])
    torch.testing.assert_close(emb, want)


def test_zero_init_gives_zero_velocity_and_output_shape():
    dit = small_dit(latent_channels=3, cond_channels=2, cross_attention=True)
    g = torch.Generator().manual_seed(0)
    cond = _context(2, 4, dit.context_dim, g)
    cond.channel = torch.randn(2, 7, 2, generator=g)
    v = dit(torch.randn(2, 7, 3, generator=g), torch.rand(2, generator=g), cond)
    assert v.shape == (2, 7, 3) and torch.count_nonzero(v) == 0
    assert all(torch.count_nonzero(b.modulation.linear.weight) == 0 for b in dit.blocks)


@pytest.mark.parametrize("timestep", ["adaln", "token"])
@pytest.mark.parametrize("rope", ["none", "full", "partial"])
def test_padding_never_changes_valid_outputs(timestep, rope):
    dit = small_dit(timestep=timestep, rope=rope, qk_norm=True, cross_rope="both", cross_kv_heads=2)
    _randomise(dit)
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 6, 3, generator=g), torch.rand(2, generator=g)
    cond = _context(2, 4, dit.context_dim, g)
    cond.prefix = torch.randn(2, 2, dit.width, generator=g)
    cond.prefix_mask = torch.ones(2, 2, dtype=torch.bool)
    cond.prefix_pos = torch.tensor([0.0, 3.0])
    ref = dit(x, t, cond)

    padded = Conditioning(
        context=torch.cat([cond.context, 50 * torch.randn(2, 3, dit.context_dim, generator=g)], 1),
        context_mask=torch.cat([cond.context_mask, torch.zeros(2, 3, dtype=torch.bool)], 1),
        context_pos=torch.cat([cond.context_pos, torch.tensor([1.0, 2.0, 3.0])]),
        prefix=torch.cat([cond.prefix, 50 * torch.randn(2, 1, dit.width, generator=g)], 1),
        prefix_mask=torch.tensor([[True, True, False]] * 2),
        prefix_pos=torch.tensor([0.0, 3.0, 9.0]),
    )
    x_pad = torch.cat([x, 50 * torch.randn(2, 5, 3, generator=g)], 1)
    mask = torch.cat([torch.ones(2, 6, dtype=torch.bool), torch.zeros(2, 5, dtype=torch.bool)], 1)
    out = dit(x_pad, t, padded, mask)
    torch.testing.assert_close(out[:, :6], ref, atol=1e-5, rtol=1e-5)


def test_batch_elements_are_independent():
    dit = small_dit()
    _randomise(dit)
    g = torch.Generator().manual_seed(2)
    x, t, cond = torch.randn(3, 5, 3, generator=g), torch.rand(3, generator=g), _context(3, 4, dit.context_dim, g)
    full = dit(x, t, cond)
    one = dit(x[1:2], t[1:2], Conditioning(context=cond.context[1:2], context_mask=cond.context_mask[1:2],
                                            context_pos=cond.context_pos))
    torch.testing.assert_close(full[1:2], one, atol=1e-5, rtol=1e-5)


def test_without_rope_the_backbone_is_permutation_equivariant_and_with_rope_it_is_not():
    g = torch.Generator().manual_seed(3)
    x, t = torch.randn(1, 8, 3, generator=g), torch.rand(1, generator=g)
    perm = torch.randperm(8, generator=g)
    for rope, equivariant in (("none", True), ("partial", False)):
        dit = small_dit(rope=rope, cross_attention=False)
        _randomise(dit)
        same = torch.allclose(dit(x[:, perm], t)[:, :], dit(x, t)[:, perm], atol=1e-5)
        assert same == equivariant


def test_rope_positions_are_latent_frames_with_the_time_token_and_untimed_tokens_at_zero(monkeypatch):
    from vssflow.core import kernels

    seen = []
    real = kernels.rope_cos_sin

    def record(positions, *args, **kwargs):
        seen.append(positions.tolist())
        return real(positions, *args, **kwargs)

    monkeypatch.setattr(kernels, "rope_cos_sin", record)
    dit = small_dit(timestep="token", cross_rope="both")
    cond = Conditioning(prefix=torch.randn(1, 2, 32), prefix_pos=torch.tensor([0.75, 3.25]),
                        context=torch.randn(1, 2, 32), context_pos=torch.tensor([0.0, 5.75]))
    dit(torch.randn(1, 4, 3), torch.rand(1), cond)
    # self-attention: time token at 0, prefix tokens at their positions, audio frame i at i; then the keys
    assert seen == [[0.0, 0.75, 3.25, 0.0, 1.0, 2.0, 3.0], [0.0, 5.75]]


def test_cross_rope_on_keys_makes_attention_depend_on_key_positions():
    g = torch.Generator().manual_seed(4)
    x, t = torch.randn(1, 5, 3, generator=g), torch.rand(1, generator=g)
    ctx = torch.randn(1, 4, 32, generator=g)
    results = {}
    for mode in ("queries", "both"):
        dit = small_dit(cross_rope=mode)
        _randomise(dit)
        a = dit(x, t, Conditioning(context=ctx, context_pos=torch.tensor([0.0, 1.0, 2.0, 3.0])))
        b = dit(x, t, Conditioning(context=ctx, context_pos=torch.tensor([0.0, 5.0, 9.0, 20.0])))
        results[mode] = torch.allclose(a, b, atol=1e-6)
    assert results == {"queries": True, "both": False}


@pytest.mark.parametrize("timestep", ["token", "adaln"])
def test_cross_rope_queries_leaves_keys_unrotated_when_the_context_is_as_long_as_the_queries(timestep):
    # The paper's case: 1 time token + T audio frames of queries against T + 1 context tokens. Keys must stay
    # unrotated: the result equals that of the same context with one extra masked token (lengths differ).
    dit = small_dit(timestep=timestep, cross_rope="queries", qk_norm=True, rope="full")
    _randomise(dit)
    g = torch.Generator().manual_seed(6)
    frames = 5
    queries = frames + (1 if timestep == "token" else 0)
    x, t = torch.randn(2, frames, 3, generator=g), torch.rand(2, generator=g)
    ctx = torch.randn(2, queries, 32, generator=g)
    pos = torch.arange(queries, dtype=torch.float32)
    equal = dit(x, t, Conditioning(context=ctx, context_mask=torch.ones(2, queries, dtype=torch.bool),
                                   context_pos=pos))
    longer = dit(x, t, Conditioning(
        context=torch.cat([ctx, torch.randn(2, 1, 32, generator=g)], 1),
        context_mask=torch.cat([torch.ones(2, queries, dtype=torch.bool), torch.zeros(2, 1, dtype=torch.bool)], 1),
        context_pos=torch.cat([pos, torch.tensor([float(queries)])]),
    ))
    torch.testing.assert_close(equal, longer, atol=1e-5, rtol=1e-5)
    both = small_dit(timestep=timestep, cross_rope="both", qk_norm=True, rope="full")
    both.load_state_dict(dit.state_dict())
    rotated = both(x, t, Conditioning(context=ctx, context_mask=torch.ones(2, queries, dtype=torch.bool),
                                      context_pos=pos))
    assert not torch.allclose(rotated, equal, atol=1e-4)  # rotating the keys does change the result


def test_grouped_kv_heads_shrink_the_cross_attention_projection():
    full = small_dit(heads=4, cross_kv_heads=4, context_dim=16)
    grouped = small_dit(heads=4, cross_kv_heads=1, context_dim=16)
    assert full.blocks[0].cross.kv.weight.shape == (2 * 4 * 8, 16)
    assert grouped.blocks[0].cross.kv.weight.shape == (2 * 1 * 8, 16)
    _randomise(grouped)
    g = torch.Generator().manual_seed(5)
    cond = Conditioning(context=torch.randn(2, 3, 16, generator=g))
    assert torch.isfinite(grouped(torch.randn(2, 4, 3, generator=g), torch.rand(2, generator=g), cond)).all()


def test_construction_sizes_input_output_and_cross_attention_once():
    dit = small_dit(latent_channels=5, cond_channels=7, cross_attention=False)
    assert dit.proj_in.in_features == 12 and dit.final.linear.out_features == 5
    assert not dit.has_cross_attention and not hasattr(dit, "bind")
    assert small_dit(latent_channels=5, cond_channels=7, cross_attention=True).has_cross_attention


def test_paper_backbone_size():
    with torch.device("meta"):
        dit = DiT(depth=10, width=1536, heads=24, head_dim=64, ffn="swiglu", ffn_hidden=6144, timestep="token",
                  rope="partial", rope_dims=32, context_dim=768, cross_kv_heads=12, latent_channels=128,
                  cond_channels=1824, cross_attention=True)
    w, ctx, kv = 1536, 768, 12 * 64
    per_block = 4 * w * w + 4 * w + (2 * w * w + 2 * ctx * kv + 2 * w) + (w * 2 * 6144 + 2 * 6144 + 6144 * w + w)
    extra = (256 * w + w + w * w + w) + (1952 * w + w) + (2 * w + w * 128 + 128)
    assert sum(p.numel() for p in dit.parameters()) == 10 * per_block + extra
