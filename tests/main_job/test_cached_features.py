"""Cached features of an encoder stand in for running it: the model gets the same condition."""

from __future__ import annotations

import torch

from tests.main_job.conftest import MICRO
from vssflow.registry.assemble import build


def test_encoded_entries_skip_the_encoder_and_match_its_output():
    model = build(str(MICRO)).model.eval()
    frames = torch.rand(2, 5, 3, 16, 16)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    raw = {"video": {"x": frames, "mask": mask, "present": torch.tensor([True, True])}}
    from_raw = model.encode_conditions(raw, 2)["video"].condition
    cached = {"video": {"x": from_raw.features, "mask": from_raw.mask, "present": torch.tensor([True, True]),
                        "encoded": True}}
    from_cache = model.encode_conditions(cached, 2)["video"].condition
    assert torch.equal(from_cache.features, from_raw.features) and from_cache.fps == from_raw.fps
    assert torch.equal(from_cache.valid, from_raw.valid)


def test_a_condition_no_sample_carries_is_absent_and_its_encoder_does_not_run():
    model = build(str(MICRO)).model.eval()
    calls = []
    model.encoders["video"].register_forward_hook(lambda *a: calls.append(1))
    absent = {"video": {"x": torch.zeros(2, 1, 3, 16, 16), "mask": torch.zeros(2, 1, dtype=torch.bool),
                        "present": torch.zeros(2, dtype=torch.bool)}}
    assert model.encode_conditions(absent, 2) == {} and calls == []
