"""Training from a recipe: run directory, model, data, trainer, validation samples; one or many processes.

    vssflow.training.train("unified-tiny", out_dir="runs/tiny", overrides=["train.steps=100"])

Under torchrun (WORLD_SIZE > 1) every process runs the same call; rank 0 writes the run directory.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from vssflow.core.errors import RecipeError
from vssflow.registry.recipe import Recipe, load_recipe

log = logging.getLogger("vssflow.train")


def dataset_for(recipe: Recipe, model: Any, split: str | None = None) -> Any:
    """The recipe's dataset bound to the model's conditions and audio window (optionally another split)."""
    from vssflow.core.phonemes import PhonemeTokenizer
    from vssflow.registry import create, get_spec

    if recipe.data is None:
        raise RecipeError(
            f"recipe {recipe.name!r} has no data section; add `data: {{name: synthetic-av, params: {{root: data/synth}}}}` "
            "or `--set data.name=manifest --set data.params.path=M.jsonl`"
        )
    params = dict(recipe.data.params)
    if split is not None and "split" in get_spec("dataset", recipe.data.name).params.model_fields:
        params["split"] = split
    dataset = create("dataset", recipe.data.name, **params)
    conditions = {name: enc.contract for name, enc in model.encoders.items()}
    tasks = {name: c.tasks for name, c in recipe.conditions.items() if c.tasks}
    options: dict[str, Any] = {"condition_tasks": tasks, "tokenizer": PhonemeTokenizer()}
    if recipe.data.features_cache:
        options["features"] = _cached_features(recipe, model)
    return dataset.configure(conditions=conditions, spec=model.spec, **options)


def _cached_features(recipe: Recipe, model: Any) -> dict[str, Path]:
    from vssflow.core.feature_cache import cached_dirs

    return cached_dirs(recipe.data.features_cache, dict(model.encoders))


def item_weights(recipe: Recipe, dataset: Any) -> list[float] | None:
    """Per-clip sampling weights from data.task_weights (None: natural proportions)."""
    if recipe.data is None or not recipe.data.task_weights:
        return None
    tasks = dataset.tasks()
    counts = Counter(tasks)
    return [recipe.data.task_weights.get(t, 0.0) / counts[t] for t in tasks]


def run_metadata(recipe: Recipe, tokenizer: Any | None) -> dict[str, Any]:
    """What a checkpoint records beside its weights: versions, recipe identity, tokenizer inventory."""
    import hashlib

    import vssflow

    meta = {
        "vssflow_version": vssflow.__version__,
        "recipe_name": recipe.name,
        "recipe_sha256": hashlib.sha256(recipe.to_yaml().encode()).hexdigest(),
        "task": recipe.task,
        "conditions": list(recipe.conditions),
    }
    if tokenizer is not None:
        meta["tokenizer"] = tokenizer.to_dict()
    return meta


def _setup_distributed(device: str | None) -> tuple[Any, torch.device]:
    from vssflow.core.trainer import DistInfo

    dist_info = DistInfo.from_env()
    if dist_info.world > 1:
        import torch.distributed as dist

        use_cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        dev = torch.device(f"cuda:{dist_info.local_rank}") if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(dev)
        return dist_info, dev
    return dist_info, torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _validator(recipe: Recipe, model: Any, out_dir: Path, clips: int = 2):
    """Samples a few validation clips, writes wav + spectrogram png, logs to TensorBoard when installed."""
    val = None

    def validate(module: Any, step: int) -> dict[str, float]:
        nonlocal val
        from vssflow.core.media import write_audio
        from vssflow.registry import create
        from vssflow.report import spectrogram_png

        if val is None:
            ds = dataset_for(recipe, model, split="val")
            val = ds.collate([ds[i] for i in range(min(clips, len(ds)))])
        device = next(module.parameters()).device
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in val.items()}
        conds = {n: {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in c.items()}
                 for n, c in batch["conditions"].items()}
        was_training = module.training
        module.eval()
        out = module.generate(conds, seed=0)
        module.train(was_training)
        folder = out_dir / "validation" / f"step-{step:07d}"
        sr = model.spec.sample_rate
        wav = out.wav.float().cpu()
        dist = create("metric", "mel-distance", sample_rate=sr)(wav, batch["wav"].cpu(), lengths=batch["wav_lengths"].cpu())
        for i, clip_id in enumerate(val["ids"]):
            write_audio(folder / f"{clip_id}.wav", wav[i], sr)
            spectrogram_png(wav[i].numpy(), sr, folder / f"{clip_id}.png")
        return {"mel_distance": float(dist.mean())}

    return validate


def train(
    recipe: str | Path | Recipe,
    out_dir: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    resume: bool = False,
    device: str | None = None,
    max_steps: int | None = None,
    progress: bool = True,
) -> Path | None:
    """Train a recipe; returns the final checkpoint directory (None on ranks other than 0)."""
    from vssflow.cli.plugins import plugins_report
    from vssflow.core.trainer import Trainer
    from vssflow.registry.assemble import build

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    out = Path(out_dir or Path("runs") / recipe.name)
    last = out / "checkpoints" / "last"
    if not resume and last.exists():
        raise RecipeError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    if recipe.train.init_from and not last.exists():
        from vssflow.core.checkpoint import Checkpoint

        Checkpoint(recipe.train.init_from)  # a missing or broken train.init_from fails before any work
    dist_info, dev = _setup_distributed(device)
    assembly = build(recipe, device=dev)
    model = assembly.model
    dataset = dataset_for(recipe, model)
    durations = None
    if recipe.data is not None and recipe.data.bucketing:  # similar lengths per batch, padded to the longest
        if not (hasattr(dataset, "configure") and hasattr(dataset, "durations")):
            raise RecipeError(f"data.bucketing: dataset {recipe.data.name!r} does not report clip durations "
                              f"(a core.data.ClipDataset does); set data.bucketing to false")
        dataset = dataset.configure(pad_audio="longest")
        durations = dataset.durations()
    if dist_info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "recipe.yaml").write_text(recipe.to_yaml())
        (out / "plugins.json").write_text(json.dumps(plugins_report(), indent=2))
    trainer = Trainer(
        model, recipe.train, dataset, dataset.collate, out,
        meta=run_metadata(recipe, dataset.tokenizer if _has_transcripts(model) else None),
        recipe_yaml=recipe.to_yaml(), item_weights=item_weights(recipe, dataset), item_durations=durations,
        validate=_validator(recipe, model, out) if recipe.train.val_every else None,
        device=dev, dist=dist_info, progress=progress,
    )
    if resume and not trainer.resume():
        log.info("nothing to resume in %s; starting fresh", out)
    if recipe.train.init_from and trainer.step == 0:
        _init_from(model, recipe.train.init_from)
    result = trainer.fit(max_steps)
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()
    return result


def _has_transcripts(model: Any) -> bool:
    return any(getattr(enc, "modality", None) == "transcript" for enc in model.encoders.values())


def _init_from(model: Any, path: str) -> None:
    """Fine-tuning: start from another run's weights (EMA if present); layers that do not fit are reported."""
    from vssflow.core.checkpoint import Checkpoint

    state = Checkpoint(path).model_state(ema=True)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    skipped = len(own) - len(usable)
    log.info("initialised from %s (%d tensors, %d left at their initial values)", path, len(usable), skipped)


def main_rank() -> bool:
    """True on the process that writes files (rank 0, or when not distributed)."""
    return int(os.environ.get("RANK", "0")) == 0
