"""Negative conditioning: where a guidance variant leaves a condition out, its negative value replaces the
null embedding, so one condition gives v(neg) + w (v(pos) - v(neg)) and the per-condition chain keeps its
meaning; a negative that is the null (no sample carries it) changes nothing, bit for bit."""

from __future__ import annotations

import pytest
import torch

from tests.engine.test_model import _conditions, _model
from vssflow.core.errors import ContractError
from vssflow.registry import create


def _velocity(model, encoded, b, x, t, kept, negative=None):
    """The model's velocity with `kept` conditions positive, the others negative where given, else null."""
    chosen = dict(encoded)
    drop = {}
    for n in model.names:
        if n in kept:
            drop[n] = torch.zeros(b, dtype=torch.bool)
        elif negative and n in negative:
            chosen[n], drop[n] = negative[n], torch.zeros(b, dtype=torch.bool)
        else:
            drop[n] = torch.ones(b, dtype=torch.bool)
    return model.velocity(x, torch.full((b,), t), model.aggregate(chosen, b, 25, drop))


def test_one_scale_with_a_negative_is_cfg_against_the_negative():
    model = _model(sampler=create("sampler", "euler", steps=2, guidance=3.0)).eval()
    b, conds, neg = 2, _conditions(2), _conditions(2, seed=7)
    negative = {"video": neg["video"]}
    g = torch.Generator().manual_seed(3)
    x, t = torch.randn(b, 25, 4, generator=g), 0.4
    with torch.no_grad():
        enc, enc_neg = model.encode_conditions(conds, b), model.encode_conditions(negative, b)
        v_pos = _velocity(model, enc, b, x, t, set(model.names))
        v_neg = _velocity(model, enc, b, x, t, set(), enc_neg)  # video negative, sync and speaker null
        got = model.guided_velocity(conds, b, 25, negative=negative)(t, x)
        plain = model.guided_velocity(conds, b, 25)(t, x)
    torch.testing.assert_close(got, v_neg + 3.0 * (v_pos - v_neg), atol=1e-4, rtol=1e-4)
    assert (got - plain).abs().max() > 1e-3  # the negative branch is used


def test_a_negative_in_the_chain_replaces_only_its_own_null():
    sampler = create("sampler", "euler", steps=2, guidance=1.0,
                     condition_guidance={"video": 2.0, "sync": 5.0, "speaker": 3.0})
    model = _model(sampler=sampler).eval()
    b, conds = 2, _conditions(2)
    negative = {"sync": _conditions(2, seed=11)["sync"]}
    g = torch.Generator().manual_seed(9)
    x, t = torch.randn(b, 25, 4, generator=g), 0.3
    with torch.no_grad():
        enc, enc_neg = model.encode_conditions(conds, b), model.encode_conditions(negative, b)

        def v(*kept):
            return _velocity(model, enc, b, x, t, set(kept), enc_neg)

        vn, vv, vvs, vall = v(), v("video"), v("video", "sync"), v("video", "sync", "speaker")
        want = vn + 2.0 * (vv - vn) + 5.0 * (vvs - vv) + 3.0 * (vall - vvs)
        got = model.guided_velocity(conds, b, 25, negative=negative)(t, x)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_a_negative_that_is_the_null_equals_plain_guidance_exactly():
    model = _model(sampler=create("sampler", "heun", steps=3, guidance=2.5)).eval()
    conds = _conditions(2)
    null = dict(_conditions(2, seed=5)["video"], present=torch.zeros(2, dtype=torch.bool))
    plain = model.generate(conds, seed=1)
    same = model.generate(conds, seed=1, negative={"video": null})
    other = model.generate(conds, seed=1, negative={"video": _conditions(2, seed=5)["video"]})
    assert torch.equal(plain.latent, same.latent)
    assert not torch.allclose(plain.latent, other.latent, atol=1e-4)


def test_a_negative_for_some_samples_only_leaves_the_others_unchanged():
    model = _model(sampler=create("sampler", "euler", steps=3, guidance=2.5)).eval()
    conds = _conditions(2)
    half = dict(_conditions(2, seed=5)["video"], present=torch.tensor([True, False]))
    plain = model.generate(conds, seeds=[1, 2])
    mixed = model.generate(conds, seeds=[1, 2], negative={"video": half})
    torch.testing.assert_close(plain.latent[1], mixed.latent[1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(plain.latent[0], mixed.latent[0], atol=1e-4)


def test_a_negative_for_an_unknown_condition_is_one_line_naming_it():
    model = _model(sampler=create("sampler", "euler", steps=2, guidance=2.0)).eval()
    with pytest.raises(ContractError) as err:
        model.generate(_conditions(2), seed=0, negative={"caption": _conditions(2)["video"]})
    assert "'caption'" in str(err.value) and "\n" not in str(err.value)


def test_a_negative_of_another_length_is_padded_without_changing_either_branch():
    model = _model(sampler=create("sampler", "euler", steps=2, guidance=3.0)).eval()
    b, conds = 2, _conditions(2)
    short = {"x": torch.randn(b, 6, 6, generator=torch.Generator().manual_seed(4)),
             "mask": torch.ones(b, 6, dtype=torch.bool), "present": torch.ones(b, dtype=torch.bool)}
    x, t = torch.randn(b, 25, 4, generator=torch.Generator().manual_seed(5)), 0.6
    with torch.no_grad():
        enc, enc_neg = model.encode_conditions(conds, b), model.encode_conditions({"video": short}, b)
        v_pos = _velocity(model, enc, b, x, t, set(model.names))
        v_neg = _velocity(model, enc, b, x, t, set(), enc_neg)  # unpadded negative
        got = model.guided_velocity(conds, b, 25, negative={"video": short})(t, x)
        # no positive video at all: its branch is the null, the negative still used where it is left out
        without = {k: v for k, v in conds.items() if k != "video"}
        enc_without = model.encode_conditions(without, b)
        v_pos0 = _velocity(model, enc_without, b, x, t, set(model.names))
        v_neg0 = _velocity(model, enc_without, b, x, t, set(), enc_neg)
        got0 = model.guided_velocity(without, b, 25, negative={"video": short})(t, x)
    torch.testing.assert_close(got, v_neg + 3.0 * (v_pos - v_neg), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got0, v_neg0 + 3.0 * (v_pos0 - v_neg0), atol=1e-4, rtol=1e-4)
