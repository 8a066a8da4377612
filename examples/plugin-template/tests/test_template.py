"""The template's components pass vssflow's conformance suite and are usable from a recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vssflow.registry import create, get_spec

HERE = Path(__file__).resolve().parent.parent


def test_components_come_from_this_distribution():
    for kind, name in (("encoder", "color-stats"), ("aggregator", "gated-additive")):
        prov = get_spec(kind, name).provenance
        assert prov.distribution == "vssflow-plugin-template" and prov.version == "0.1.0"


@pytest.mark.parametrize("kind, name", [("encoder", "color-stats"), ("aggregator", "gated-additive")])
def test_conformance(vssflow_conformance, kind, name):
    vssflow_conformance(kind, name)


def test_color_stats_follow_the_video():
    enc = create("encoder", "color-stats", dim=4, size=8)
    dark, bright = torch.zeros(1, 2, 3, 8, 8), torch.ones(1, 2, 3, 8, 8)
    a, b = enc(dark).features, enc(bright).features
    assert a.shape == (1, 2, 4) and not torch.allclose(a, b)


def test_recipe_uses_the_plugin_by_name():
    from vssflow.registry.recipe import load_recipe

    recipe = load_recipe(HERE / "recipes" / "template-tiny.yaml")
    assert recipe.conditions["video"].encoder.name == "color-stats"
    assert recipe.conditions["video"].aggregator.name == "gated-additive"


def test_gated_additive_starts_closed_and_learns_to_open():
    from vssflow.core.conditioning import EXAMPLE_SPEC, AggregatorDims
    from vssflow.core.interfaces import Condition

    agg = create("aggregator", "gated-additive", {"dims": AggregatorDims(6, 10.0, 8, 8)}, hidden=16)
    cond = Condition(torch.randn(2, 10, 6), None, 10.0)
    keep = torch.ones(2, dtype=torch.bool)
    out = agg(cond, keep, EXAMPLE_SPEC).additive
    assert out.shape == (2, EXAMPLE_SPEC.num_frames, 8) and torch.count_nonzero(out) == 0  # closed at init
    (out * torch.randn_like(out)).sum().backward()
    assert agg.gate.grad.abs().sum() > 0  # the gate gets a gradient at step 1


def test_template_recipe_builds_with_final_sizes():
    from vssflow.registry.assemble import build

    model = build(HERE / "recipes" / "template-tiny.yaml").model
    agg = model.aggregators["video"]
    assert agg.dims.in_dim == model.encoders["video"].dim == 32 and agg.dims.width == model.backbone.width
