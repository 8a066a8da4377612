"""The audio-prompt route: known-span draws, the loss on unknown frames only, the known frames kept exactly
at generation, and the prompt kept in every guidance variant."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vssflow.core.prompt import SPAN_KINDS, draw_known_spans, known_span, prompt_generators

MICRO_PROMPT = Path(__file__).resolve().parents[1] / "main_job" / "micro-prompt.yaml"


@pytest.fixture(scope="module")
def model():
    from vssflow.registry.assemble import build

    return build(MICRO_PROMPT).model


def test_span_kinds_give_what_they_name():
    assert known_span(10, 12, "prefix", 0.3, 0.5).nonzero().flatten().tolist() == [0, 1, 2]
    assert known_span(10, 12, "suffix", 0.3, 0.5).nonzero().flatten().tolist() == [7, 8, 9]
    middle = known_span(10, 12, "middle", 0.3, 0.0)
    assert middle.tolist() == [True, False, False, False] + [True] * 6 + [False, False]  # gap after frame 0
    assert not known_span(10, 12, "none", 0.3, 0.5).any()
    for kind in SPAN_KINDS:  # never everything: every sample has frames to learn from
        assert known_span(10, 12, kind, 0.99, 1.0)[:10].sum() <= 9


def test_span_draws_follow_the_weights_and_the_seeds():
    valid = torch.ones(400, 50, dtype=torch.bool)
    valid[::2, 40:] = False
    gens = prompt_generators(torch.arange(400), 400, None)
    known = draw_known_spans(valid, gens, {"prefix": 1.0, "none": 1.0}, 0.2, 0.4)
    assert not (known & ~valid).any()
    has = known.any(1)
    assert 150 < int(has.sum()) < 250  # half prefix, half none
    assert known[has, 0].all()  # prefixes start at frame 0
    share = known[has].sum(1).float() / valid[has].sum(1).float()
    assert share.min() >= 0.2 - 0.03 and share.max() <= 0.4 + 0.03
    again = draw_known_spans(valid, prompt_generators(torch.arange(400), 400, None), {"prefix": 1.0, "none": 1.0}, 0.2, 0.4)
    assert torch.equal(known, again)


def test_the_loss_counts_only_the_frames_that_are_not_given(model):
    model.train()
    wav = 0.1 * torch.randn(2, model.spec.num_samples, generator=torch.Generator().manual_seed(0))
    batch = {"wav": wav, "conditions": {}, "seeds": torch.tensor([3, 4])}
    x1, mask = model.encode_latent(batch)
    known = torch.zeros_like(mask)
    known[0, :40], known[1, 60:] = True, True
    batch["conditions"] = {"prompt": {"x": x1, "known": known, "present": known.any(1)}}

    def perfect_where_unknown(x, t, conditioning, mask=None):  # exact velocity on unknown frames, junk elsewhere
        v = (x1 - x) / (1 - t).view(-1, 1, 1)
        return torch.where(known[..., None], torch.full_like(v, 1e3), v)

    original = model.velocity
    model.velocity = perfect_where_unknown
    try:
        assert float(model.loss(batch)) < 1e-8
        batch["conditions"] = {}  # drawn spans: still only unknown frames count
        terms, _ = model.loss_terms(batch)
    finally:
        model.velocity = original
    cond, loss_mask = model.training_prompts({"conditions": {}, "seeds": torch.tensor([3, 4])}, x1, mask)
    assert torch.equal(loss_mask, mask & ~cond["prompt"]["known"])
    model.eval()


def test_the_prompt_is_outside_the_joint_dropout(model):
    names = model.names
    u = torch.zeros(3, len(names) + 1)  # column 0 < cond_dropout: the joint drop for every sample
    u[:, 1 + names.index("prompt")] = 1.0  # the prompt's own dropout does not fire
    drop = model.dropout_from_uniforms(u)
    assert all(bool(drop[n].all()) for n in names if n != "prompt")
    assert not drop["prompt"].any()


def test_generation_keeps_the_given_frames_and_the_decoded_prefix_is_the_codec_round_trip(model):
    model.eval()
    prompt = 0.2 * torch.randn(1, model.spec.num_samples, generator=torch.Generator().manual_seed(1))
    z = model.codec.encode(prompt)
    given = 40
    known = torch.zeros(z.shape[:2], dtype=torch.bool)
    known[:, :given] = True
    out = model.generate({"prompt": {"x": z, "known": known, "present": torch.tensor([True])}}, batch_size=1,
                         steps=2, seed=0)
    assert torch.equal(out.latent[:, :given], z[:, :given])
    round_trip = model.codec.decode(z)
    assert torch.allclose(out.mel[..., :given], round_trip[..., :given])
    assert not torch.allclose(out.latent[:, given:], z[:, given:])


def test_the_prompt_is_context_in_every_guidance_variant(model):
    seen = []
    original = model.aggregate

    def spy(encoded, batch_size, num_frames, drop=None, device=None):
        seen.append(bool(drop["prompt"].any()))
        return original(encoded, batch_size, num_frames, drop, device)

    model.aggregate = spy
    try:
        z = torch.zeros(1, model.spec.num_frames, model.latent_channels)
        known = torch.zeros(1, model.spec.num_frames, dtype=torch.bool)
        known[:, :10] = True
        model.generate({"prompt": {"x": z, "known": known}}, batch_size=1, steps=1, guidance=3.0, seed=0)
    finally:
        model.aggregate = original
    assert len(seen) == 2 and not any(seen)  # conditioned and unconditioned variants both keep the prompt
