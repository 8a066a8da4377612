"""FlowModel: classifier-free dropout statistics, absent conditions, conditions encoded once, CFG batched
into one backbone call per step, seeded determinism, and padding-free losses."""

from __future__ import annotations

import pytest
import torch

from tests.engine.components import FeatureEncoder, make_model
from vssflow.core.flow import FlowMatching
from vssflow.core.sequence import SequenceSpec
from vssflow.registry import create

SPEC = SequenceSpec(16000, 640, 1.0)  # 25 latent frames


def _model(seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    conditions = {
        "video": (FeatureEncoder(6, 10.0), "cross-attn", {"projection": "linear"}),
        "sync": (FeatureEncoder(4, 25.0), "channel-concat", {"dim": 3, "projection": "linear"}),
        "speaker": (FeatureEncoder(5, None), "global", {}),
    }
    model = make_model(conditions, SPEC, backbone={"timestep": "token"}, **kwargs)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # leave the zero init so the output depends on everything
        for p in model.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model


def _conditions(b: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "video": {"x": torch.randn(b, 10, 6, generator=g), "mask": torch.ones(b, 10, dtype=torch.bool),
                  "present": torch.ones(b, dtype=torch.bool)},
        "sync": {"x": torch.randn(b, 25, 4, generator=g), "mask": torch.ones(b, 25, dtype=torch.bool),
                 "present": torch.ones(b, dtype=torch.bool)},
        "speaker": {"x": torch.randn(b, 1, 5, generator=g), "present": torch.ones(b, dtype=torch.bool)},
    }


def _batch(b: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed + 100)
    return {"latent": torch.randn(b, 25, 4, generator=g), "conditions": _conditions(b, seed),
            "seeds": torch.arange(b) + 1000 * seed}


def test_dropout_is_per_sample_and_per_condition():
    model = _model(dropout={"video": 0.3, "sync": 0.0, "speaker": 0.5}, cond_dropout=0.2)
    drop = model.sample_dropout(40_000, generator=torch.Generator().manual_seed(0))
    rate = {k: v.float().mean().item() for k, v in drop.items()}
    assert rate["sync"] == pytest.approx(0.2, abs=0.01)  # only the joint drop
    assert rate["video"] == pytest.approx(1 - 0.7 * 0.8, abs=0.01)
    assert rate["speaker"] == pytest.approx(1 - 0.5 * 0.8, abs=0.01)
    both = (drop["video"] & drop["speaker"]).float().mean().item()
    assert both == pytest.approx(0.2 + 0.8 * 0.3 * 0.5, abs=0.01)  # independent apart from the joint drop
    assert drop["video"][:100].unique().numel() == 2  # samples of one batch decide separately
    assert (drop["sync"] <= drop["video"]).all() and (drop["sync"] <= drop["speaker"]).all()


def test_per_batch_dropout_decides_once_per_batch():
    model = _model(cond_dropout=0.5, dropout_mode="per-batch")
    decisions = []
    for i in range(400):
        drop = model.sample_dropout(16, generator=torch.Generator().manual_seed(i))
        assert all(v.unique().numel() == 1 for v in drop.values())
        decisions.append(bool(drop["video"][0]))
    assert sum(decisions) / len(decisions) == pytest.approx(0.5, abs=0.08)


def test_a_missing_condition_is_the_same_as_absent_samples():
    model = _model().eval()
    b = 3
    x, t = torch.randn(b, 25, 4), torch.rand(b)
    conds = _conditions(b)
    conds["speaker"]["present"] = torch.zeros(b, dtype=torch.bool)
    with_absent = model.aggregate(model.encode_conditions(conds, b), b, 25)
    del conds["speaker"]
    missing = model.aggregate(model.encode_conditions(conds, b), b, 25)
    torch.testing.assert_close(model.velocity(x, t, with_absent), model.velocity(x, t, missing))


def test_a_dropped_condition_is_the_same_as_an_absent_one_in_the_model():
    model = _model().eval()
    b = 2
    encoded = model.encode_conditions(_conditions(b), b)
    x, t = torch.randn(b, 25, 4), torch.rand(b)
    dropped = model.aggregate(encoded, b, 25, {n: torch.ones(b, dtype=torch.bool) for n in model.names})
    absent = model.aggregate({}, b, 25)
    kept = model.aggregate(encoded, b, 25, {n: torch.zeros(b, dtype=torch.bool) for n in model.names})
    torch.testing.assert_close(model.velocity(x, t, dropped), model.velocity(x, t, absent))
    assert not torch.allclose(model.velocity(x, t, kept), model.velocity(x, t, absent))


def test_generate_encodes_once_and_calls_the_backbone_once_per_step_with_all_guidance_variants():
    model = _model(sampler=create("sampler", "euler", steps=6, guidance=3.0, condition_guidance={"sync": 5.0})).eval()
    calls = []
    model.backbone.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    out = model.generate(_conditions(2), seed=0, decode=False)
    assert [e.calls for e in model.encoders.values()] == [1, 1, 1]
    # recipe order video, sync, speaker; scales 3, 5, 3 -> variants {}, {video}, {video, sync}, all
    assert calls == [4 * 2] * 6 and out.nfe == 6
    assert out.latent.shape == (2, 25, 4)
    plain = model.generate(_conditions(2), seed=0, guidance=1.0, condition_guidance={}, decode=False)
    assert calls[-1] == 2 and plain.nfe == 6  # no guidance: the conditional pass only


def test_with_every_condition_dropped_guidance_changes_nothing_so_one_pass_suffices():
    """The demo generates its 'no conditions' row at guidance 1: every guidance variant is then the same
    null-conditioned velocity, so the guided sum equals it (up to rounding) at half the backbone rows."""
    model = _model(sampler=create("sampler", "euler", steps=6, guidance=3.0, condition_guidance={"sync": 5.0})).eval()
    calls = []
    model.backbone.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    guided = model.generate({}, batch_size=2, seed=0, decode=False)
    single = model.generate({}, batch_size=2, seed=0, guidance=1.0, condition_guidance={}, decode=False)
    assert calls == [4 * 2] * 6 + [2] * 6
    torch.testing.assert_close(single.latent, guided.latent, atol=1e-5, rtol=1e-5)
    conditioned = model.generate(_conditions(2), seed=0, decode=False)
    assert not torch.allclose(conditioned.latent, guided.latent, atol=1e-3)  # guidance does act when conditioned


def test_guided_velocity_of_the_model_is_the_chain_of_its_variants_with_asymmetric_scales():
    sampler = create("sampler", "euler", steps=2, guidance=1.0, condition_guidance={"video": 2.0, "sync": 5.0,
                                                                                    "speaker": 3.0})
    model = _model(sampler=sampler).eval()
    b, conds = 2, _conditions(2)
    g = torch.Generator().manual_seed(9)
    x, t = torch.randn(b, 25, 4, generator=g), 0.3
    encoded = model.encode_conditions(conds, b)

    def v(*kept):  # the model's velocity with only `kept` conditions (recipe order video, sync, speaker)
        drop = {n: torch.full((b,), n not in kept) for n in model.names}
        return model.velocity(x, torch.full((b,), t), model.aggregate(encoded, b, 25, drop))

    with torch.no_grad():
        vn, vv, vvs, vall = v(), v("video"), v("video", "sync"), v("video", "sync", "speaker")
        want = vn + 2.0 * (vv - vn) + 5.0 * (vvs - vv) + 3.0 * (vall - vvs)
        got = model.guided_velocity(conds, b, 25)(t, x)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_a_feature_dim_mismatch_names_the_condition_its_encoder_and_its_aggregator():
    from vssflow.core.errors import ContractError

    model = _model().eval()
    conds = _conditions(2)
    conds["sync"] = {"x": torch.randn(2, 25, 5), "present": torch.ones(2, dtype=torch.bool), "encoded": True}
    with pytest.raises(ContractError) as err:
        model.aggregate(model.encode_conditions(conds, 2), 2, 25)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("condition 'sync': encoder 'FeatureEncoder' gave features of dim 5, "
                              "but aggregator 'channel-concat' was built for dim 4")


def test_generate_is_deterministic_under_a_seed_and_decodes():
    model = _model(sampler=create("sampler", "heun", steps=3, guidance=2.0)).eval()
    a = model.generate(_conditions(2), seed=5)
    b = model.generate(_conditions(2), seed=5)
    c = model.generate(_conditions(2), seed=6)
    assert torch.equal(a.latent, b.latent) and not torch.equal(a.latent, c.latent)
    assert a.mel.shape == (2, 4, 25)
    assert model.generate(_conditions(2), seed=5, duration=0.5, decode=False).latent.shape == (2, 13, 4)



def test_per_sample_seeds_make_generation_independent_of_the_batch():
    model = _model(sampler=create("sampler", "euler", steps=3, guidance=2.0)).eval()
    conds = _conditions(2)
    pair = model.generate(conds, seeds=[11, 12], decode=False).latent
    second = {k: {n: (t[1:] if isinstance(t, torch.Tensor) else t) for n, t in v.items()} for k, v in conds.items()}
    alone = model.generate(second, seeds=[12], decode=False).latent
    torch.testing.assert_close(alone[0], pair[1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(pair[0], pair[1])
    with pytest.raises(ValueError, match="2 seeds for a batch of 1"):
        model.generate(second, seeds=[1, 2], decode=False)

def test_seeded_losses_do_not_depend_on_batch_split():
    model = _model(cond_dropout=0.3).train()
    batch = _batch(4)
    full, drop = model.loss_terms(batch)
    halves = []
    for sl in (slice(0, 2), slice(2, 4)):
        part = {"latent": batch["latent"][sl], "seeds": batch["seeds"][sl],
                "conditions": {k: {kk: vv[sl] for kk, vv in v.items()} for k, v in batch["conditions"].items()}}
        halves.append(model.loss_terms(part)[0].per_sample)
    torch.testing.assert_close(torch.cat(halves), full.per_sample)
    again, _ = model.loss_terms(batch)
    assert torch.equal(again.loss, full.loss)


@pytest.mark.parametrize("loss_mask", [True, False])
def test_padding_does_not_change_the_loss_of_a_sample(loss_mask):
    model = _model(flow=FlowMatching(loss_mask=loss_mask)).eval()  # eval: no dropout
    batch = _batch(1)
    short = {**batch, "latent": batch["latent"][:, :15], "latent_lengths": torch.tensor([15])}
    short["conditions"] = {k: dict(v) for k, v in batch["conditions"].items()}
    short["conditions"]["sync"] = {"x": batch["conditions"]["sync"]["x"][:, :15],
                                   "mask": torch.ones(1, 15, dtype=torch.bool), "present": torch.ones(1, dtype=torch.bool)}
    padded = {**short, "latent": torch.cat([short["latent"], 30 * torch.randn(1, 10, 4)], 1)}
    padded["conditions"] = {**short["conditions"], "sync": {
        "x": torch.cat([short["conditions"]["sync"]["x"], 30 * torch.randn(1, 10, 4)], 1),
        "mask": torch.arange(25)[None] < 15, "present": torch.ones(1, dtype=torch.bool)}}
    a, b = model.loss(short), model.loss(padded)
    assert torch.allclose(a, b, atol=1e-6) == loss_mask


def test_loss_reaches_every_trainable_parameter_and_frozen_encoders_get_none():
    model = _model(cond_dropout=0.5).train()
    model.loss(_batch(4)).backward()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(model.get_parameter(n).grad is not None for n in trainable)
    assert all(e.frozen for e in model.encoders.values())
