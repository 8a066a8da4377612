"""Recipes: two-phase validation, error messages, inheritance, overrides, and every shipped recipe."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from tests.conftest import RECIPES, run_cli
from vssflow.core.errors import RecipeError
from vssflow.registry.recipe import apply_overrides, deep_merge, load_recipe

VALID = """
name: mini
task: v2s
audio: {sample_rate: 16000, duration_s: 2.0, codec: {name: log-mel}, vocoder: {name: griffin-lim}}
conditions:
  video: {encoder: {name: tiny-cnn}, aggregator: {name: cross-attn}}
backbone: {name: dit}
sampler: {name: euler}
train: {batch_size: 2, steps: 10}
"""


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def edited(**changes: object) -> str:
    """VALID with dotted keys replaced (value None deletes)."""
    data = yaml.safe_load(VALID)
    return yaml.safe_dump(apply_overrides(data, [f"{k}={yaml.safe_dump(v).strip()}" for k, v in changes.items()]))


def test_valid_recipe_fills_defaults(tmp_path):
    recipe = load_recipe(write(tmp_path, VALID))
    assert recipe.flow.t_sampling == "uniform" and recipe.train.batch_size == 2
    # component params are filled from each plugin's params model
    assert recipe.backbone.params and recipe.sampler.params
    again = load_recipe(write(tmp_path, recipe.to_yaml(), "resolved.yaml"))
    assert again.model_dump() == recipe.model_dump()


@pytest.mark.parametrize(
    "text, expected",
    [
        (VALID.replace("conditions:", "conditons:"), r"conditons: unknown key \(did you mean conditions\?\)"),
        (VALID.replace("batch_size: 2", "batch_sise: 2"), r"train\.batch_sise: unknown key \(did you mean batch_size\?\)"),
        (VALID.replace("steps: 10", "steps: many"), r"train\.steps: Input should be a valid integer.*'many'"),
        (VALID.replace("name: cross-attn", "name: cross-atn"),
         r"conditions\.video\.aggregator\.name: no aggregator named 'cross-atn' \(did you mean cross-attn"),
        (VALID.replace("duration_s: 2.0", "duration_s: -1"), r"audio\.duration_s: Input should be greater than 0"),
        (VALID.replace("task: v2s", "task: v2a"), r"task: Input should be .*\(did you mean v2s"),
        (VALID.replace("{name: euler}", "{name: euler, params: {stepz: 4}}"),
         r"sampler\.params\.stepz: unknown key \(did you mean steps\?\)"),
        (VALID.replace("{name: euler}", "{name: euler, params: {steps: 0}}"),
         r"sampler\.params\.steps: Input should be greater than"),
        (VALID.replace("name: mini\n", ""), r"name: missing required key"),
    ],
    ids=["key", "nested-key", "type", "component", "range", "literal", "param-key", "param-range", "missing"],
)
def test_bad_recipes_give_one_clear_line(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(RecipeError, match=expected) as info:
        load_recipe(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    out = run_cli("recipe", "check", str(path))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and str(path) in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 2


def test_yaml_syntax_error_names_line(tmp_path):
    path = write(tmp_path, "name: x\ntask: [v2s\n")
    with pytest.raises(RecipeError, match=r"r\.yaml:\d+:\d+: invalid YAML"):
        load_recipe(path)


def test_base_inheritance_overrides_and_deletion(tmp_path):
    write(tmp_path, VALID.replace("conditions:", "conditions:\n  extra: {encoder: {name: motion}, aggregator: {name: channel-concat}}"), "base.yaml")
    child = write(
        tmp_path,
        """
        base: base.yaml
        name: child
        train: {steps: 99}
        conditions: {extra: null}
        """,
        "child.yaml",
    )
    recipe = load_recipe(child, ["train.lr=0.001", "conditions.video.dropout=0.25"])
    assert recipe.name == "child" and recipe.base == "base.yaml"
    assert recipe.train.steps == 99 and recipe.train.batch_size == 2  # merged, not replaced
    assert recipe.train.lr == 0.001 and recipe.conditions["video"].dropout == 0.25
    assert list(recipe.conditions) == ["video"]


def test_base_cycle_is_an_error(tmp_path):
    write(tmp_path, "base: b.yaml\nname: a\n", "a.yaml")
    write(tmp_path, "base: a.yaml\nname: b\n", "b.yaml")
    with pytest.raises(RecipeError, match="inheritance cycle"):
        load_recipe(tmp_path / "a.yaml")


def test_set_override_errors():
    with pytest.raises(RecipeError, match="expected dotted.key=value"):
        apply_overrides({}, ["train.steps"])
    with pytest.raises(RecipeError, match="is a value"):
        apply_overrides({"task": "v2s"}, ["task.x=1"])
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}
    # switching a component drops the old component's params; keeping it merges them
    enc = {"encoder": {"name": "tiny-cnn", "params": {"fps": 10, "channels": 8}}}
    assert deep_merge(enc, {"encoder": {"name": "timm-video"}}) == {"encoder": {"name": "timm-video"}}
    assert deep_merge(enc, {"encoder": {"params": {"fps": 5}}})["encoder"]["params"] == {"fps": 5, "channels": 8}


def test_recipe_show_prints_resolved_yaml(tmp_path):
    path = write(tmp_path, VALID)
    out = run_cli("recipe", "show", str(path), "--set", "train.steps=7")
    assert out.returncode == 0, out.stderr
    shown = yaml.safe_load(out.stdout)
    assert shown["train"]["steps"] == 7 and shown["flow"]["cond_dropout"] == 0.1
    assert "parameters" in out.stdout


SHIPPED = sorted(RECIPES.rglob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(RECIPES)) for p in SHIPPED])
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.name
