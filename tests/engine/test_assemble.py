"""Recipe assembly: the shipped recipes build, train a step and generate; the paper recipe's size; errors
name the recipe key."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import RECIPES
from tests.engine.components import raw_conditions
from vssflow.core.errors import RecipeError
from vssflow.registry.assemble import build, count_parameters
from vssflow.registry.recipe import load_recipe

TINY = ["v2s-tiny", "visualtts-tiny", "unified-tiny"]


@pytest.mark.parametrize("name", TINY)
def test_tiny_recipe_trains_a_step_and_generates_audio(name):
    assembly = build(name)
    model = assembly.model
    b, s = 2, assembly.spec.num_samples
    conds = raw_conditions(assembly, b)
    batch = {"wav": 0.1 * torch.randn(b, s), "wav_lengths": torch.tensor([s, s // 2]), "conditions": conds,
             "seeds": torch.tensor([3, 4])}
    model.train()
    loss = model.loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.backbone.parameters())
    model.eval()
    out = model.generate(conds, steps=2, seed=0, duration=1.0)
    assert out.latent.shape == (b, assembly.spec.frames_for(1.0), model.latent_channels)
    assert out.wav is not None and out.wav.shape[0] == b and torch.isfinite(out.wav).all()


def test_build_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = build("v2s-tiny"), build("v2s-tiny")
    assert torch.equal(torch.random.get_rng_state(), state)
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    c = build("v2s-tiny", seed=1)
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.model.parameters(), c.model.parameters(), strict=True))


def test_paper_recipe_matches_the_public_model_size():
    counts = count_parameters(RECIPES / "vssflow-paper.yaml")
    assert abs(counts["trainable"] / 464e6 - 1) < 0.05, counts
    assert counts["by_part"]["encoder.video"] == 0  # precomputed features: frozen extractors excluded
    assert counts["by_part"]["aggregator.lip"] > 4e6  # the 1024 -> 2048 -> 1024 projection counts


def test_paper_recipe_routes_1952_input_channels():
    backbone = build(RECIPES / "vssflow-paper.yaml", device="meta").model.backbone
    assert backbone.proj_in.in_features == 128 + 1024 + 32 + 768
    assert backbone.final.linear.out_features == 128 and backbone.time_token


@pytest.mark.parametrize("path", sorted((RECIPES / "ablations").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_ablation_recipe_counts(path):
    counts = count_parameters(path)
    assert 4.0e8 < counts["trainable"] < 5.0e8


def test_recipe_errors_name_the_key(tmp_path):
    with pytest.raises(RecipeError, match=r"sampler\.params\.condition_guidance\.lips: no condition named 'lips'"):
        build("v2s-tiny", overrides=["sampler.params.condition_guidance={lips: 2.0}"])
    with pytest.raises(RecipeError, match=r"conditions\.video\.aggregator: .*time-aligned"):
        recipe = load_recipe("visualtts-tiny", ["conditions.speaker.aggregator.name=channel-concat"])
        build(recipe.model_copy(update={"conditions": {"video": recipe.conditions["speaker"]}}))
