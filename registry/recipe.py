"""Recipe schema (pydantic, extra="forbid") and loading: YAML, `base:` inheritance, `--set` overrides,
two-phase validation (structure, then each component's params against its registered params model).

Errors are RecipeError with one line: `FILE: dotted.key: what is wrong (did you mean ...?)`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vssflow.core.errors import ComponentNotFoundError, RecipeError

from .catalog import Catalog, validate_params
from .manager import get_registry
from .messages import close_matches, describe_validation_error

Task = Literal["v2s", "visualtts"]
RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


class Strict(BaseModel):
    """Base of every recipe section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class ComponentRef(Strict):
    """A registered component by name, with params validated against the component's params model."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class AudioConfig(Strict):
    """The audio the model generates: rate, window length, codec (flow target) and vocoder."""

    sample_rate: Annotated[int, Field(gt=0)] = 16000
    duration_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    codec: ComponentRef = Field(default_factory=lambda: ComponentRef(name="log-mel"))
    # null or the default (griffin-lim, then unused) with a codec that decodes straight to a waveform (oobleck)
    vocoder: ComponentRef | None = Field(default_factory=lambda: ComponentRef(name="griffin-lim"))
    channels: Annotated[int, Field(ge=1, le=8)] = 1  # waveform channels: 1 mono, 2 stereo (the codec's)


class ConditionConfig(Strict):
    """One condition: an encoder, the aggregator (route into the backbone), and its CFG dropout."""

    encoder: ComponentRef
    aggregator: ComponentRef
    dropout: Annotated[float, Field(ge=0, le=1)] = 0.1  # per sample, independently of other conditions
    tasks: list[Task] | None = None  # tasks whose clips carry this condition; None = every task


class FlowConfig(Strict):
    """Flow-matching objective: time sampling, classifier-free dropout, loss masking."""

    t_sampling: Literal["uniform", "logit-normal"] = "uniform"
    t_mean: float = 0.0  # logit-normal location
    t_std: Annotated[float, Field(gt=0)] = 1.0  # logit-normal scale
    t_shift: Annotated[float, Field(gt=0)] = 1.0  # >1 spends more training time near noise
    cond_dropout: Annotated[float, Field(ge=0, le=1)] = 0.1  # drop every condition together
    dropout_mode: Literal["per-sample", "per-batch"] = "per-sample"  # per-batch reproduces the public code
    loss_mask: bool = True  # False counts padding in the loss, as the public code does


class TrainConfig(Strict):
    """Optimisation and bookkeeping."""

    batch_size: Annotated[int, Field(gt=0)] = 16
    lr: Annotated[float, Field(gt=0)] = 3e-4
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    steps: Annotated[int, Field(gt=0)] = 2000
    warmup_steps: Annotated[int, Field(ge=0)] = 0
    schedule: Literal["constant", "cosine"] = "constant"
    ema: Annotated[float, Field(ge=0, lt=1)] = 0.999
    grad_clip: Annotated[float, Field(gt=0)] | None = 1.0
    grad_accum: Annotated[int, Field(gt=0)] = 1
    precision: Literal["fp32", "bf16"] = "bf16"  # bf16 autocast applies on GPU only
    seed: int = 0
    log_every: Annotated[int, Field(gt=0)] = 10
    val_every: Annotated[int, Field(ge=0)] = 0  # 0: no periodic validation
    ckpt_every: Annotated[int, Field(ge=0)] = 500  # 0: only the final checkpoint
    num_workers: Annotated[int, Field(ge=0)] = 0
    init_from: str | None = None  # checkpoint directory to fine-tune from
    keep_last: Annotated[int, Field(ge=1)] | None = None  # newest step checkpoints kept (None: all)
    keep_every: Annotated[int, Field(gt=0)] | None = None  # also keep every step divisible by this
    strategy: Literal["ddp", "fsdp"] = "ddp"  # several processes: replicate the model (ddp) or shard it (fsdp)
    activation_checkpointing: bool = False  # recompute each backbone block's activations in the backward pass


class DataConfig(ComponentRef):
    """The dataset component, plus how tasks are mixed."""

    task_weights: dict[Task, Annotated[float, Field(ge=0)]] | None = None  # None: natural proportions
    bucketing: bool = False  # group clips of similar duration into batches
    features_cache: str | None = None  # directory of cached frozen-encoder features
    video_cache_mb: Annotated[float, Field(ge=0)] = 0  # decoded frames kept in memory per loading process; 0: off


class Recipe(Strict):
    """A whole model: audio, conditions and their routes, backbone, flow, sampler, training, data."""

    name: str
    base: str | None = None
    description: str = ""
    task: Literal["v2s", "visualtts", "unified"]
    audio: AudioConfig = Field(default_factory=AudioConfig)
    conditions: dict[str, ConditionConfig] = Field(default_factory=dict)
    backbone: ComponentRef
    flow: FlowConfig = Field(default_factory=FlowConfig)
    sampler: ComponentRef = Field(default_factory=lambda: ComponentRef(name="euler"))
    train: TrainConfig = Field(default_factory=TrainConfig)
    data: DataConfig | None = None
    adapter: ComponentRef | None = None  # fine-tune only this adapter (LoRA, ...) on train.init_from's weights

    def tasks(self) -> list[str]:
        """Tasks this recipe trains on."""
        return ["v2s", "visualtts"] if self.task == "unified" else [self.task]

    def components(self) -> Iterator[tuple[str, str, ComponentRef]]:
        """(dotted key, kind, ref) for every component the recipe names."""
        yield "audio.codec", "codec", self.audio.codec
        if self.audio.vocoder is not None:
            yield "audio.vocoder", "vocoder", self.audio.vocoder
        for cname, cond in self.conditions.items():
            yield f"conditions.{cname}.encoder", "encoder", cond.encoder
            yield f"conditions.{cname}.aggregator", "aggregator", cond.aggregator
        yield "backbone", "backbone", self.backbone
        yield "sampler", "sampler", self.sampler
        if self.data is not None:
            yield "data", "dataset", self.data
        if self.adapter is not None:
            yield "adapter", "adapter", self.adapter

    def to_yaml(self) -> str:
        """The recipe as YAML, every default filled in."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, default_flow_style=None, width=100)


# ----------------------------------------------------------------------------------------------------------
# loading


def find_recipe(path_or_name: str | Path) -> Path:
    """A recipe path, or the name of a built-in recipe in recipes/ (with or without .yaml)."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    for candidate in (RECIPES_DIR / f"{path_or_name}.yaml", RECIPES_DIR / str(path_or_name)):
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")) if RECIPES_DIR.is_dir() else []
    raise RecipeError(f"recipe not found: {path_or_name}{close_matches(str(path.stem), known)}")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read recipe ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{path}{where}: invalid YAML: {problem}") from None
    if data is None:
        raise RecipeError(f"{path}: recipe is empty")
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of keys, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge `override` into a copy of `base`: mappings merge, other values replace, None deletes a mapping key.

    A component reference that names another component (`{name: other, ...}`) replaces the inherited one
    whole: the old component's params mean nothing to the new one.
    """
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None and isinstance(out.get(key), dict):
            del out[key]
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and value.get("name", out[key].get("name")) != out[key].get("name"):
            out[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _resolve_bases(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise RecipeError(f"{path}: base: inheritance cycle ({chain})")
    data = _read_yaml(path)
    base = data.get("base")
    if base is None:
        return data
    if not isinstance(base, str):
        raise RecipeError(f"{path}: base: expected a path to another recipe, got {base!r}")
    base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
    if not base_path.is_file():
        base_path = find_recipe(base)
    parent = _resolve_bases(base_path, (*seen, path))
    merged = deep_merge(parent, data)
    merged["base"] = base
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """'a.b.c=value' -> (['a', 'b', 'c'], value parsed as a YAML scalar or flow collection)."""
    if "=" not in text:
        raise RecipeError(f"--set {text!r}: expected dotted.key=value, e.g. --set train.steps=100")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise RecipeError(f"--set {text!r}: empty key segment in {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply --set overrides in order (creating intermediate mappings)."""
    out = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                where = ".".join(parts[: i + 1])
                raise RecipeError(f"--set {text!r}: {where} is a value ({nxt!r}), not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def validate_structure(data: dict[str, Any], source: str) -> Recipe:
    """Phase 1: the recipe's own schema."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise RecipeError(f"{source}: {describe_validation_error(err, Recipe)}") from None


def validate_components(recipe: Recipe, source: str, catalog: Catalog) -> Recipe:
    """Phase 2: every named component exists in `catalog` and its params validate; defaults are filled in."""
    for key, kind, ref in recipe.components():
        try:
            spec = catalog.get(kind, ref.name)
        except ComponentNotFoundError as exc:
            raise RecipeError(f"{source}: {key}.name: {exc}") from None
        try:
            ref.params = validate_params(spec, ref.params, where=f"{key}.params").model_dump(mode="json")
        except RecipeError as exc:
            raise RecipeError(f"{source}: {exc}") from None
    for cname, cond in recipe.conditions.items():
        if cond.tasks is not None:
            unused = [t for t in cond.tasks if t not in recipe.tasks()]
            if unused:
                raise RecipeError(
                    f"{source}: conditions.{cname}.tasks: {unused[0]!r} is not trained by task {recipe.task!r}"
                )
    return recipe


def _catalog(catalog: Catalog | None) -> Catalog:
    """The given catalog, or the process-wide registry's."""
    return catalog if catalog is not None else get_registry().catalog


def load_recipe(
    path_or_name: str | Path, overrides: Iterable[str] = (), components: bool = True, catalog: Catalog | None = None
) -> Recipe:
    """Load, inherit, override and validate a recipe (components too, against `catalog` or the process-wide
    registry's, unless components=False)."""
    path = find_recipe(path_or_name)
    data = apply_overrides(_resolve_bases(path), overrides)
    recipe = validate_structure(data, str(path))
    return validate_components(recipe, str(path), _catalog(catalog)) if components else recipe


def recipe_from_dict(
    data: dict[str, Any], source: str = "<recipe>", components: bool = True, catalog: Catalog | None = None
) -> Recipe:
    """Validate a recipe given as a mapping (notebooks, tests)."""
    recipe = validate_structure(data, source)
    return validate_components(recipe, source, _catalog(catalog)) if components else recipe
