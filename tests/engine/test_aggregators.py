"""Aggregators: padding never leaks into valid outputs, absent/dropped samples use the null embedding,
frame routes follow the SequenceSpec grid, and every route passes conformance in several configurations."""

from __future__ import annotations

import pytest
import torch

from tests.engine.components import small_dit
from vssflow.core.conditioning import AggregatorDims, Conditioning, condition_keep, grid_indices
from vssflow.core.errors import ContractError
from vssflow.core.interfaces import Condition
from vssflow.core.sequence import SequenceSpec
from vssflow.registry import create
from vssflow.testing import check_component

SPEC = SequenceSpec(16000, 640, 1.0)  # 25 latent frames per second, 25 frames
CASES = [
    ("cross-attn", {}),
    ("cross-attn", {"to_grid": True, "resample": "linear"}),
    ("channel-concat", {"dim": 5}),
    ("channel-concat", {"projection": "none", "resample": "linear"}),
    ("sequence-concat", {}),
    ("additive", {"resample": "linear"}),
    ("global", {"mode": "add"}),
    ("global", {"mode": "token"}),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in p.items()) or 'default'}" for n, p in CASES]


def _agg(name, in_dim=4, fps=10.0, width=32, context_dim=16, **params):
    return create("aggregator", name, {"dims": AggregatorDims(in_dim, fps, width, context_dim)}, **params)


def _run(agg, features, mask=None, present=None, drop=None, num_frames=25):
    """Call an aggregator as the model does: a Condition, who keeps it, and the grid of `num_frames` frames."""
    condition = Condition(features, mask, agg.dims.fps)
    return agg(condition, condition_keep(condition, present, drop), SPEC.for_frames(num_frames))


def _bound(name, params, fps=10.0, in_dim=6, seed=0):
    torch.manual_seed(seed)
    agg = _agg(name, in_dim, fps, 32, 32, **params)
    dit = small_dit(cross_rope="both", qk_norm=True, cond_channels=agg.channels, cross_attention=agg.uses_context)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in [*agg.parameters(), *dit.parameters()]:
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return agg, dit


@pytest.mark.parametrize("name, params", CASES, ids=IDS)
def test_padding_never_changes_valid_velocities(name, params):
    agg, dit = _bound(name, params)
    g = torch.Generator().manual_seed(7)
    feats = torch.randn(2, 10, 6, generator=g)  # 1 s at 10 fps
    fmask = torch.ones(2, 10, dtype=torch.bool)
    fmask[1, 6:] = False  # sample 1: 0.6 s of condition ...
    x = torch.randn(2, 25, 3, generator=g)
    xmask = torch.ones(2, 25, dtype=torch.bool)
    xmask[1, 15:] = False  # ... and 0.6 s of audio
    t = torch.rand(2, generator=g)
    clean = feats.clone()
    clean[1, 6:] = 0.0
    ref = dit(x, t, _run(agg, clean, fmask, num_frames=25), xmask)

    noisy = torch.cat([feats, 40 * torch.randn(2, 4, 6, generator=g)], 1)  # garbage in every padded frame
    noisy[1, 6:] = 40 * torch.randn(8, 6, generator=g)
    nmask = torch.cat([fmask, torch.zeros(2, 4, dtype=torch.bool)], 1)
    x_pad = torch.cat([x, 40 * torch.randn(2, 5, 3, generator=g)], 1)
    x_pad[1, 15:] = 40 * torch.randn(15, 3, generator=g)
    xmask_pad = torch.cat([xmask, torch.zeros(2, 5, dtype=torch.bool)], 1)
    out = dit(x_pad, t, _run(agg, noisy, nmask, num_frames=30), xmask_pad)
    torch.testing.assert_close(out[:, :25][xmask], ref[xmask], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name, params", CASES, ids=IDS)
def test_absent_and_dropped_samples_use_the_null_embedding(name, params):
    agg, dit = _bound(name, params)
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(2, 10, 6, generator=g), torch.randn(2, 10, 6, generator=g)
    x, t = torch.randn(2, 25, 3, generator=g), torch.rand(2, generator=g)
    absent = torch.tensor([True, False])
    va = dit(x, t, _run(agg, a, present=absent))
    vb = dit(x, t, _run(agg, b, drop=~absent))  # dropping sample 1 == sample 1 absent
    torch.testing.assert_close(va[1], vb[1])
    assert not torch.allclose(va[0], vb[0])  # present samples still see their features
    fully = _run(agg, a, mask=torch.zeros(2, 10, dtype=torch.bool))  # no valid frame at all: treated as absent
    nulls = _run(agg, b, present=torch.zeros(2, dtype=torch.bool))
    for key, value in fully.tensors().items():
        torch.testing.assert_close(value, nulls.tensors()[key])


# 10 fps -> 25 latent frames per second: latent frame i covers [i/25, (i+1)/25) s and takes the video frame
# that holds its centre (i + 0.5) / 25 s, i.e. floor((i + 0.5) * 0.4); worked out by hand, not by the code.
CENTRE_INDICES_10_TO_25 = [0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 5, 6, 6, 7, 7, 7, 8, 8, 9, 9, 9]


def test_grid_resampling_takes_the_frame_under_each_latent_frame_centre():
    assert grid_indices(SPEC, 10.0, 10).tolist() == CENTRE_INDICES_10_TO_25
    agg = _agg("channel-concat", projection="none")
    feats = torch.arange(10.0)[None, :, None].expand(1, 10, 4)  # frame j carries the value j
    out = _run(agg, feats, num_frames=25).channel  # (1, 25, 4)
    assert out[0, :, 0].tolist() == CENTRE_INDICES_10_TO_25
    # linear: interpolate between frame centres; source position (i + 0.5) * 0.4 - 0.5, clamped to [0, 9]
    lin = _run(_agg("channel-concat", projection="none", resample="linear"), feats, num_frames=25).channel
    want = [min(max((i + 0.5) * 0.4 - 0.5, 0.0), 9.0) for i in range(25)]
    torch.testing.assert_close(lin[0, :, 0], torch.tensor(want))
    with torch.no_grad():
        agg.null.fill_(7.0)
    short = _run(agg, feats[:, :4], num_frames=25).channel  # 0.4 s of condition: later frames are null
    assert (short[0, 10:] == 7.0).all() and torch.equal(short[0, :10], out[0, :10])


def test_a_condition_covers_the_latent_frames_whose_centres_fall_inside_it():
    # 5 frames at 50 fps = 0.1 s. Latent frames (25 Hz) have centres at 0.02, 0.06, 0.10, ... s: frames 0 and 1
    # are covered; frame 2's centre is exactly at 0.1 s, the condition's end, so it is not (nor any later one).
    agg = _agg("channel-concat", fps=50.0, projection="none")
    with torch.no_grad():
        agg.null.fill_(-1.0)
    out = _run(agg, torch.arange(5.0)[None, :, None].expand(1, 5, 4) + 1.0, num_frames=6).channel[0, :, 0]
    assert out.tolist() == [2.0, 4.0, -1.0, -1.0, -1.0, -1.0]  # frames 1 and 3 (floor(0.02*50), floor(0.06*50))


def test_cross_attn_context_positions_are_latent_frames():
    cond = _run(_agg("cross-attn"), torch.randn(2, 10, 4))
    # token j of a 10 fps condition: centre (j + 0.5) / 10 s = frame (j + 0.5) * 2.5 - 0.5 of the 25 Hz grid
    assert cond.context_pos.tolist() == [0.75, 3.25, 5.75, 8.25, 10.75, 13.25, 15.75, 18.25, 20.75, 23.25]
    token = _agg("cross-attn", fps=None)
    assert torch.equal(_run(token, torch.randn(2, 1, 4)).context_pos, torch.zeros(1))


def test_frame_routes_need_a_timed_condition():
    for name in ("channel-concat", "additive"):
        with pytest.raises(ContractError, match="time-aligned"):
            _agg(name, fps=None)
    with pytest.raises(ContractError, match="to_grid needs a time-aligned"):
        _agg("cross-attn", fps=None, to_grid=True)
    with pytest.raises(ContractError, match="projection 'none'"):
        _agg("cross-attn", projection="none")


def test_aggregators_are_built_once_with_their_final_sizes():
    agg = _agg("channel-concat", in_dim=6, dim=5)
    assert agg.proj[0].in_features == 6 and agg.proj[2].out_features == 5 and agg.null.shape == (5,)
    assert agg.channels == 5 and not hasattr(agg, "bind")
    cross = _agg("cross-attn", in_dim=6, context_dim=16, projection="linear")
    assert cross.proj.weight.shape == (16, 6) and cross.uses_context


def test_merge_concatenates_channels_and_tokens_and_sums_vectors():
    a = Conditioning(channel=torch.ones(2, 5, 3), global_embedding=torch.ones(2, 4),
                     context=torch.ones(2, 2, 6), context_mask=torch.tensor([[True, False]] * 2))
    b = Conditioning(channel=torch.zeros(2, 5, 1), global_embedding=2 * torch.ones(2, 4),
                     context=torch.zeros(2, 3, 6), context_pos=torch.tensor([1.0, 2.0, 3.0]))
    m = Conditioning.merge([a, b])
    assert m.channel.shape == (2, 5, 4) and (m.global_embedding == 3).all()
    assert m.context.shape == (2, 5, 6) and m.context_mask.tolist()[0] == [True, False, True, True, True]
    assert m.context_pos.tolist() == [0.0, 0.0, 1.0, 2.0, 3.0]
    stacked = Conditioning.stack([m, m])
    assert stacked.channel.shape == (4, 5, 4) and stacked.context_pos.shape == (5,)


@pytest.mark.parametrize("name, params", CASES, ids=IDS)
def test_conformance_in_several_configurations(name, params):
    report = check_component("aggregator", name, params)
    assert "backward" in report.checks and "determinism" in report.checks
