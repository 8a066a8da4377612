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
    if recipe.data.video_cache_mb:  # a small set drawn many times: decode each clip's video once
        options["video_cache_mb"] = recipe.data.video_cache_mb
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
        "plugins": plugin_distributions(recipe),
    }
    if tokenizer is not None:
        meta["tokenizer"] = tokenizer.to_dict()
    return meta


def plugin_distributions(recipe: Recipe) -> list[dict[str, Any]]:
    """The distributions (name, version) providing the recipe's components, so a checkpoint can say which
    `pip install` it needs."""
    from vssflow.registry import get_spec

    found: dict[str, dict[str, Any]] = {}
    for _, kind, ref in recipe.components():
        try:
            prov = get_spec(kind, ref.name).provenance
        except Exception:  # noqa: BLE001 - an unknown component fails later, in build, with its own message
            continue
        entry = found.setdefault(prov.distribution, {"distribution": prov.distribution, "version": prov.version,
                                                     "components": []})
        entry["components"].append(f"{kind} {ref.name}")
    return sorted(found.values(), key=lambda e: e["distribution"])


def needs_unused_parameters(recipe: Recipe) -> bool:
    """Whether some trainable parameters can miss a step's graph under DDP: a condition absent from whole
    batches (several tasks, or conditions restricted to some tasks)."""
    return len(recipe.tasks()) > 1 or any(c.tasks for c in recipe.conditions.values())


def local_processes(recipe: Recipe, processes: int | str, device: str | None) -> tuple[int, int]:
    """(processes, threads each) for `--processes` (vssflow.launch), after the checks."""
    from vssflow.launch import can_split, plan_processes

    if not can_split(processes, device):
        return 1, torch.get_num_threads()
    return plan_processes(processes, recipe.train.batch_size // max(1, recipe.train.grad_accum))


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
        mono, ref = (w.mean(1) if w.dim() == 3 else w for w in (wav, batch["wav"].cpu()))  # stereo: scored downmixed
        dist = create("metric", "mel-distance", sample_rate=sr)(mono, ref, lengths=batch["wav_lengths"].cpu())
        for i, clip_id in enumerate(val["ids"] if main_rank() else []):  # under FSDP every rank samples
            write_audio(folder / f"{clip_id}.wav", wav[i], sr)
            spectrogram_png(mono[i].numpy(), sr, folder / f"{clip_id}.png")
        return {"mel_distance": float(dist.mean())}

    return validate


def _resume_mode(resume: bool | str) -> str:
    if resume in (False, None, "", "no"):
        return "no"
    if resume in (True, "yes", "always"):
        return "yes"
    if resume == "auto":
        return "auto"
    raise RecipeError(f"--resume takes nothing or 'auto', got {resume!r}")


def train(
    recipe: str | Path | Recipe,
    out_dir: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    resume: bool | str = False,
    device: str | None = None,
    max_steps: int | None = None,
    progress: bool = True,
    processes: int | str = 1,
) -> Path | None:
    """Train a recipe; returns checkpoints/last (None on ranks other than 0).

    resume: False (a new run; refuses a folder that holds one), True (continue; an error when there is
    nothing to continue) or "auto" (continue if possible, else start). Nothing in the run folder changes
    until the recipe, the checkpoint and the data have been checked; rank 0 holds the run lock throughout.
    processes: on a CPU, train data-parallel in this many local processes (or "auto": one per core), each
    on its share of every batch (vssflow.launch); under torchrun leave it at 1.
    """
    from vssflow.core.files import OutputError
    from vssflow.core.runlock import RunLock

    mode = _resume_mode(resume)
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    if processes != 1:
        n, threads = local_processes(recipe, processes, device)
        if n > 1:
            from vssflow.launch import run_processes

            return run_processes(train, (recipe,), {"out_dir": out_dir, "resume": resume, "device": "cpu",
                                                    "max_steps": max_steps, "progress": progress},
                                 processes=n, threads=threads,
                                 after_crash="the run keeps its newest complete checkpoint: run the same command "
                                             "with --resume auto to continue from it")[0]
    out = Path(out_dir or Path("runs") / recipe.name)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: --out names an existing file, not a run folder; choose a folder")
    dist_info, dev = _setup_distributed(device)
    lock = RunLock(out)
    try:
        if dist_info.is_main and out.is_dir():
            lock.acquire()  # a busy run folder is refused before any work
        return _train_locked(recipe, out, mode, dist_info, dev, lock, max_steps, progress)
    finally:
        lock.release()


def _train_locked(
    recipe: Recipe, out: Path, mode: str, dist_info: Any, dev: torch.device, lock: Any, max_steps: int | None,
    progress: bool,
) -> Path | None:
    from vssflow.cli.plugins import plugins_report
    from vssflow.core.checkpoint import Checkpoint, CheckpointFolder
    from vssflow.core.files import ensure_dir, write_text_atomic
    from vssflow.core.trainer import Trainer
    from vssflow.generation import warn_unseen_guidance
    from vssflow.registry.assemble import build

    folder = CheckpointFolder(out / "checkpoints")
    newest = folder.newest()
    if newest is not None and mode == "no":
        raise RecipeError(
            f"{out} already holds a run (newest checkpoint {newest.name}); pass --resume to continue it "
            "(--resume auto: continue if possible, else start), or choose another --out"
        )
    if newest is None and mode == "yes":
        raise RecipeError(
            f"{out}: nothing to resume (no complete checkpoint in {out / 'checkpoints'}); drop --resume to start "
            "a new run there, or pass --resume auto"
        )
    resuming = newest is not None
    if resuming:
        previous = Checkpoint(newest).meta.get("recipe_name")
        if previous not in (None, recipe.name):
            raise RecipeError(
                f"{out} holds a run of recipe {previous!r}, not {recipe.name!r}; resume it with its own recipe "
                f"({out / 'recipe.yaml'}), or choose another --out"
            )
    if recipe.train.init_from and not resuming:
        Checkpoint(recipe.train.init_from)  # a missing or broken train.init_from fails before any work
    warn_unseen_guidance(recipe, recipe.sampler.params.get("condition_guidance") or {})
    assembly = build(recipe, device=dev)
    model = assembly.model
    weights, adapter_meta = None, {}
    if recipe.adapter is not None:  # train only the adapter, on train.init_from's frozen weights
        from vssflow.adapters import prepare_run

        if recipe.train.strategy == "fsdp":
            raise RecipeError("train.strategy: an adapter run trains a few megabytes of weights on a frozen model "
                              "and its checkpoints hold only the adapter; use ddp (the default), not fsdp")

        weights, adapter_meta = prepare_run(recipe, model, newest if resuming else None)
    dataset = dataset_for(recipe, model)
    durations = None
    if recipe.data is not None and recipe.data.bucketing:  # similar lengths per batch, padded to the longest
        if not (hasattr(dataset, "configure") and hasattr(dataset, "durations")):
            raise RecipeError(f"data.bucketing: dataset {recipe.data.name!r} does not report clip durations "
                              f"(a core.data.ClipDataset does); set data.bucketing to false")
        dataset = dataset.configure(pad_audio="longest")
        durations = dataset.durations()
    trainer = Trainer(
        model, recipe.train, dataset, dataset.collate, out,
        meta={**run_metadata(recipe, dataset.tokenizer if _has_transcripts(model) else None), **adapter_meta},
        recipe_yaml=recipe.to_yaml(), item_weights=item_weights(recipe, dataset), item_durations=durations,
        validate=_validator(recipe, model, out) if recipe.train.val_every else None,
        device=dev, dist=dist_info, progress=progress, find_unused=needs_unused_parameters(recipe),
        weights=weights,
    )
    if resuming:
        trainer.resume(newest)  # the checkpoint must fit the model and optimizer before anything is written
    elif mode == "auto":
        log.info("nothing to resume in %s; starting a new run", out)
    if recipe.train.init_from and trainer.step == 0 and recipe.adapter is None:
        _init_from(model, recipe.train.init_from)
    if dist_info.is_main:
        # everything is checked: only now does the run folder change
        ensure_dir(out)
        if not lock.held:
            lock.acquire()
            if not resuming and folder.holds_run():
                raise RecipeError(f"{out}: another trainer started a run here meanwhile; choose another --out")
        folder.clean_stale()
        write_text_atomic(out / "recipe.yaml", recipe.to_yaml())
        write_text_atomic(out / "plugins.json", json.dumps(plugins_report(), indent=2))
    if dist_info.is_main and dist_info.world > 1:
        log.info("training in %d processes of %d thread(s) each", dist_info.world, torch.get_num_threads())
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
    from vssflow.core.fsdp import like  # a model sharded by FSDP takes its rows of each tensor

    model.load_state_dict({k: like(v, own[k]) for k, v in usable.items()}, strict=False)
    skipped = len(own) - len(usable)
    log.info("initialised from %s (%d tensors, %d left at their initial values)", path, len(usable), skipped)


def main_rank() -> bool:
    """True on the process that writes files (rank 0, or when not distributed)."""
    return int(os.environ.get("RANK", "0")) == 0
