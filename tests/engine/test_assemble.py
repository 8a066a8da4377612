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


# Trainable parameters per recipe, measured before the construct-once redesign: construction changed, sizes
# must not. A condition moved from channel-concat to cross-attn changes the count by hand-computable terms
# (next test).
ABLATION_TRAINABLE = {
    "all-concat": 454_326_656,
    "all-cross": 450_132_832,
    "cross-rope-keys": 453_147_008,
    "final": 453_147_008,
    "phonemes-cross": 454_327_392,
    "public-quirks": 453_147_008,
    "swapped": 450_132_096,
    "v2s-only": 453_147_008,  # the final model, one task's clips only: same size by construction
    "visualtts-only": 453_147_008,
}


@pytest.mark.parametrize("path", sorted((RECIPES / "ablations").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_ablation_recipe_has_its_exact_size(path):
    counts = count_parameters(path)
    assert counts["trainable"] == ABLATION_TRAINABLE[path.stem], counts
    assert counts["frozen"] == 110_641_770  # VAE, vocoder and feature extractors, the same in every ablation


def test_phonemes_cross_differs_from_the_paper_by_the_moved_route():
    d, w, ctx = 32, 1536, 768  # phoneme features, backbone width, context dim
    concat = d * w + d  # its d columns of proj_in (projection: none) and its null vector
    cross = d * 2 * ctx + 2 * ctx * ctx + ctx  # bias-free MLP d -> 2 ctx -> ctx and a null token
    assert ABLATION_TRAINABLE["phonemes-cross"] - 453_147_008 == cross - concat


def test_assembly_constructs_each_component_once_with_final_sizes(monkeypatch):
    from vssflow.registry import manager

    made = []
    original = manager.Registry.create

    def spy(self, kind, name, /, runtime=None, **params):
        made.append((kind, name, sorted(runtime or {})))
        return original(self, kind, name, runtime, **params)

    monkeypatch.setattr(manager.Registry, "create", spy)
    model = build("unified-tiny").model
    kinds = [k for k, _, _ in made]
    assert kinds.count("backbone") == 1 and kinds.count("aggregator") == len(model.names)
    assert ("backbone", "dit", ["cond_channels", "cross_attention", "latent_channels"]) in made
    for name in model.names:
        agg, enc = model.aggregators[name], model.encoders[name]
        assert (agg.dims.in_dim, agg.dims.fps, agg.dims.width) == (enc.dim, enc.fps, model.backbone.width)
    assert model.backbone.proj_in.in_features == model.latent_channels + sum(a.channels for a in model.aggregators.values())
    assert not any(hasattr(m, "bind") for m in model.modules())


@pytest.mark.parametrize("name", ["v2s-tiny", "visualtts-tiny", "unified-tiny", "vssflow-paper"])
def test_state_dict_keys_and_shapes_are_those_of_0_1_1_checkpoints(name):
    # Checkpoints written before the construct-once redesign hold exactly these tensors, so they still load.
    import json
    from pathlib import Path

    before = json.loads((Path(__file__).parent / "data" / "state_dict_0.1.1.json").read_text())[name]
    recipe = RECIPES / f"{name}.yaml" if name == "vssflow-paper" else name
    now = {k: list(v.shape) for k, v in build(recipe, device="meta").model.state_dict().items()}
    assert now == before


def test_recipe_errors_name_the_key(tmp_path):
    with pytest.raises(RecipeError, match=r"sampler\.params\.condition_guidance\.lips: no condition named 'lips'"):
        build("v2s-tiny", overrides=["sampler.params.condition_guidance={lips: 2.0}"])
    with pytest.raises(RecipeError, match=r"conditions\.video\.aggregator: .*time-aligned"):
        recipe = load_recipe("visualtts-tiny", ["conditions.speaker.aggregator.name=channel-concat"])
        build(recipe.model_copy(update={"conditions": {"video": recipe.conditions["speaker"]}}))
