"""Ablations: a base recipe, named variants (recipe overrides) and seeds; train, generate and score each run.

    vssflow ablate ablations/cpu-synthetic.yaml --out runs/cpu-synthetic

A grid file (YAML):

    name: aggregation-cpu
    base: ../unified-demo.yaml         # recipe (path relative to this file, or a built-in name)
    set: [train.steps=300]             # overrides for every variant
    seeds: [0, 1]                      # train.seed of each run
    data: {clips: 240, seconds: 4.0, families: [v2s, visualtts]}   # synthetic benchmark in OUT/data (optional)
    eval:
      every: 100                       # score every N steps (curves); the final step is always scored
      clips: 12                        # held-out clips per group (family) from the test and val splits
      metrics: [onset-f1, mel-distance, envelope-corr]               # default: every metric that can run
      steps: 16                        # sampling steps (default: the recipe's sampler)
    variants:
      final: {description: "concat: lip, sync, phonemes | cross: video, speaker"}
      all-cross:
        recipe: {conditions: {lip: {aggregator: {name: cross-attn}}}}  # merged like a recipe's `base:`
        set: [backbone.params.depth=2]                                   # and/or --set style overrides
        groups: [v2s]                  # score only these groups (e.g. a single-task variant)
    compare: [[final, all-cross]]      # paired differences (same clips, same noise) with 95% CIs

Layout of OUT: recipes/<variant>.yaml, runs/<variant>/seed-<s>/ (a training run directory, plus
eval/step-<N>/<group>/generated/*.wav and metrics.json, curve.jsonl, done.json), results.csv, results.md,
comparisons.csv, plots/*.png, index.html. Runs are done variant by variant; a killed ablation continues
from the last checkpoint and the last scored step of the run it was in. With `launcher: torchrun` (or
`--nproc N`) each training segment runs under torchrun; scoring runs in this process.
"""

from __future__ import annotations

import csv
import html
import json
import logging
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vssflow.core.errors import RecipeError, VssflowError

log = logging.getLogger("vssflow.ablate")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SynthData(_Strict):
    """The synthetic benchmark every variant trains and is scored on (generated once in OUT/data)."""

    clips: Annotated[int, Field(ge=4)] = 240
    seconds: Annotated[float, Field(ge=1.0)] = 4.0
    families: list[Literal["v2s", "visualtts", "mix"]] = Field(default_factory=lambda: ["v2s", "visualtts"])
    seed: int = 0
    size: Annotated[int, Field(ge=32, le=512, multiple_of=2)] = 96  # frame size in pixels
    workers: Annotated[int, Field(ge=1)] = 1


class EvalSpec(_Strict):
    """What is scored, and when."""

    every: Annotated[int, Field(ge=0)] = 0  # 0: only the final step
    clips: Annotated[int, Field(ge=1)] = 16  # per group
    splits: list[str] | None = Field(default_factory=lambda: ["test", "val"])  # None: every clip of the manifest
    manifest: str | None = None  # default: the synthetic benchmark's manifest.jsonl
    metrics: list[str] | None = None
    metric_params: dict[str, dict[str, Any]] = Field(default_factory=dict)  # {metric: {param: value}}
    fit_judges: bool = False  # train the logmel-cnn classifier judge on the data's train split (OUT/judges)
    groups: list[str] | None = None
    steps: Annotated[int, Field(gt=0)] | None = None
    guidance: float | None = None
    seed: int = 1234
    batch_size: Annotated[int, Field(gt=0)] = 8


class Variant(_Strict):
    """One row of the ablation: recipe overrides on top of the base."""

    description: str = ""
    base: str | None = None  # another recipe to start from (relative to the grid file); default: the grid's
    recipe: dict[str, Any] = Field(default_factory=dict)
    set: list[str] = Field(default_factory=list)
    groups: list[str] | None = None


class Grid(_Strict):
    """A grid file."""

    name: str
    description: str = ""
    base: str
    set: list[str] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=lambda: [0])
    data: SynthData | None = None
    eval: EvalSpec = Field(default_factory=EvalSpec)
    variants: dict[str, Variant]
    compare: list[tuple[str, str]] = Field(default_factory=list)
    order: Literal["variants", "seeds"] = "variants"  # seeds: every variant at the first seed, then the next
    launcher: Literal["local", "torchrun"] = "local"
    nproc: Annotated[int, Field(ge=1)] = 1
    device: str | None = None
    source: str = Field(default="", exclude=True)


def load_grid(path: str | Path) -> Grid:
    """Read and validate a grid file; errors are one line naming the file and the key."""
    from vssflow.registry.recipe import describe_validation_error

    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: grid file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a grid must be a mapping with base, variants, seeds")
    try:
        grid = Grid.model_validate(data)
    except ValidationError as err:
        raise RecipeError(f"{path}: {describe_validation_error(err, Grid)}") from None
    if not grid.variants:
        raise RecipeError(f"{path}: variants: name at least one variant")
    for name in grid.variants:
        if not name or "/" in name or name.startswith("."):
            raise RecipeError(f"{path}: variants: {name!r} is not usable as a folder name")
    for a, b in grid.compare:
        for v in (a, b):
            if v not in grid.variants:
                raise RecipeError(f"{path}: compare: unknown variant {v!r} (variants: {', '.join(grid.variants)})")
    if len(set(grid.seeds)) != len(grid.seeds) or not grid.seeds:
        raise RecipeError(f"{path}: seeds: give distinct seeds, e.g. [0, 1]")
    grid.source = str(path.resolve())
    return grid


def _base_path(grid: Grid, base: str | None = None) -> Path:
    from vssflow.registry.recipe import find_recipe

    base = base or grid.base
    local = Path(grid.source).parent / base
    return local.resolve() if local.is_file() else find_recipe(base).resolve()


def data_root(grid: Grid, out: Path) -> Path:
    """Where the grid's synthetic benchmark lives."""
    return (out / "data").resolve()


def variant_recipe(grid: Grid, variant: str, seed: int, out: Path) -> Any:
    """The validated recipe of one run: base, grid overrides, the variant's overrides, the seed."""
    from vssflow.registry.recipe import load_recipe

    spec = grid.variants[variant]
    folder = out / "recipes"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{variant}.yaml"
    doc = {"base": str(_base_path(grid, spec.base)), **spec.recipe, "name": f"{grid.name}-{variant}"}
    if spec.description:
        doc["description"] = spec.description
    text = f"# variant {variant!r} of ablation {grid.name!r} (written by vssflow ablate)\n" + yaml.safe_dump(
        doc, sort_keys=False)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    settings = list(grid.set)
    if grid.data is not None:
        d = grid.data
        settings += ["data.name=synthetic-av", f"data.params.root={data_root(grid, out)}",
                     f"data.params.clips={d.clips}", f"data.params.seconds={d.seconds}",
                     f"data.params.families=[{','.join(d.families)}]", f"data.params.seed={d.seed}",
                     f"data.params.size={d.size}",
                     f"data.params.workers={d.workers}"]
    settings += [*spec.set, f"train.seed={seed}"]
    try:
        return load_recipe(path, settings)
    except RecipeError as exc:
        raise RecipeError(f"variant {variant!r}: {exc}") from None


def _ensure_data(grid: Grid, out: Path) -> None:
    """Generate the synthetic benchmark once (through the `vssflow data synth` command)."""
    if grid.data is None:
        return
    root = data_root(grid, out)
    if (root / "test.jsonl").is_file() and (root / "synth.json").is_file():
        return
    d = grid.data
    cmd = [sys.executable, "-m", "vssflow", "data", "synth", "--out", str(root), "--clips", str(d.clips),
           "--seconds", str(d.seconds), "--seed", str(d.seed), "--families", ",".join(d.families), "--size", str(d.size),
           "--workers", str(d.workers), "--no-progress"]
    _say(f"synthetic benchmark: {d.clips} clips of {d.seconds:g} s in {root}")
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise VssflowError(f"generating the synthetic benchmark failed: {done.stderr.strip().splitlines()[-1:]}")


def _say(message: str) -> None:
    print(f"[ablate] {message}", flush=True)


# ---------------------------------------------------------------------------------------------------------
# one run


@dataclass
class EvalSet:
    """Held-out clips to score: references, their groups, and generation requests."""

    references: dict[str, Any]
    by_group: dict[str, list[str]]
    manifest: Path


def eval_set(grid: Grid, out: Path) -> EvalSet:
    """The first `eval.clips` clips (by id) of each group of the evaluation manifest."""
    from vssflow.evaluation import references_from_manifest

    spec = grid.eval
    if spec.manifest is not None:
        manifest = Path(spec.manifest)  # like a recipe's data paths: relative to the working directory
        if not manifest.is_file():
            raise RecipeError(f"{grid.source}: eval.manifest: {manifest} not found")
    elif grid.data is not None:
        manifest = data_root(grid, out) / "manifest.jsonl"
    else:
        raise RecipeError(f"{grid.source}: eval.manifest: name the manifest to score on (or give a data section)")
    refs = {}
    for split in spec.splits or [None]:
        refs.update(references_from_manifest(manifest, split=split))
    by_group: dict[str, list[str]] = {}
    for cid in sorted(refs):
        group = refs[cid].group
        if spec.groups is not None and group not in spec.groups:
            continue
        if len(by_group.setdefault(group, [])) < spec.clips:
            by_group[group].append(cid)
    if not by_group:
        raise RecipeError(f"{manifest}: no clips of splits {spec.splits} in groups {spec.groups} to score")
    return EvalSet(refs, by_group, manifest)


def eval_steps(total: int, every: int) -> list[int]:
    """Steps at which a run is scored: every `every` steps, and always the last."""
    points = list(range(every, total, every)) if every else []
    return [*points, total]


def _checkpoint_step(run_dir: Path) -> int:
    last = run_dir / "checkpoints" / "last"
    if not last.exists():
        return 0
    from vssflow.core.checkpoint import Checkpoint

    return int(Checkpoint(last).trainer_state().get("step", 0))


def _read_curve(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "curve.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line torn by a kill; that step is scored again
    return rows


def _train_segment(grid: Grid, recipe: Any, run_dir: Path, until: int, progress: bool) -> None:
    if grid.launcher == "torchrun":
        resolved = run_dir / "recipe.resolved.yaml"
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved.write_text(recipe.to_yaml())
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={grid.nproc}",
               "-m", "vssflow", "train", str(resolved), "--out", str(run_dir), "--resume", "auto", "--steps", str(until),
               "--no-progress"]
        if grid.device:
            cmd += ["--device", grid.device]
        done = subprocess.run(cmd)
        if done.returncode != 0:
            raise VssflowError(f"training {run_dir} under torchrun failed (exit {done.returncode}); see its output above")
        return
    from vssflow.training import train

    train(recipe, out_dir=run_dir, resume="auto", device=grid.device, max_steps=until, progress=progress)


def _score(grid: Grid, evalset: EvalSet, groups: list[str], run_dir: Path, step: int, metrics: Any) -> list[dict]:
    """Generate the held-out clips with the run's last checkpoint and score them, group by group."""
    from vssflow.core.manifest import read_manifest
    from vssflow.core.media import write_audio
    from vssflow.evaluation import evaluate
    from vssflow.generation import ClipRequest, load_pipeline

    spec = grid.eval
    pipe = load_pipeline(run_dir / "checkpoints" / "last", device=grid.device)
    takes_caption = pipe.caption_condition() is not None  # a row's caption applies only to caption models
    records = {r.id: r for r in read_manifest(evalset.manifest)}
    rows = []
    for group in groups:
        ids = evalset.by_group[group]
        folder = run_dir / "eval" / f"step-{step:07d}" / group
        requests = []
        for cid in ids:
            r = records[cid]
            requests.append(ClipRequest(r.video, r.transcript, r.speaker, r.speech, r.id,
                                        caption=r.caption if takes_caption else None))
        wavs = pipe.generate(requests, steps=spec.steps, guidance=spec.guidance, seed=spec.seed,
                             batch_size=spec.batch_size)
        generated = {}
        for req, wav in zip(requests, wavs, strict=True):
            path = write_audio(folder / "generated" / f"{req.clip_id}.wav", wav, pipe.sample_rate)
            generated[req.clip_id] = path
        result = evaluate(generated, {cid: evalset.references[cid] for cid in ids}, metrics, out=folder, ids=ids,
                          batch_size=spec.batch_size, progress=False, title=f"{run_dir.name} step {step} {group}",
                          skip_failing=True)  # a metric of one group only (WER: talking faces) skips the other
        rows += [_curve_row(step, group, name, r) for name, r in result.metrics.items()]
    return rows


SET_KEY = "(set)"  # a set-level metric (FD, KID, IS) has one value per run: pooled across seeds, not clips


def _curve_row(step: int, group: str, name: str, r: Any) -> dict[str, Any]:
    """One curve.jsonl row; a set-level metric's one value stands as the run's single 'clip'."""
    per_clip = r.per_clip if r.per_clip else {SET_KEY: r.mean}
    return {"step": step, "group": group, "metric": name, "mean": r.mean, "ci95": list(r.ci95), "n": r.n,
            "higher_is_better": r.higher_is_better, "per_clip": per_clip}


def _finished(run_dir: Path, steps: int) -> bool:
    """The run reached `steps` and was scored there (a grid whose train.steps grew continues its runs)."""
    path = run_dir / "done.json"
    if not path.is_file():
        return False
    try:
        return int(json.loads(path.read_text()).get("steps", -1)) == steps
    except ValueError:
        return False


def run_one(grid: Grid, variant: str, seed: int, out: Path, evalset: EvalSet, metrics: Any,
            progress: bool = True) -> Path:
    """Train one variant x seed to the end, scoring it at every evaluation step; resumable."""
    recipe = variant_recipe(grid, variant, seed, out)
    run_dir = out / "runs" / variant / f"seed-{seed}"
    if _finished(run_dir, recipe.train.steps):
        return run_dir
    groups = [g for g in evalset.by_group if grid.variants[variant].groups is None
              or g in grid.variants[variant].groups]
    if not groups:
        raise RecipeError(f"variant {variant!r}: groups {grid.variants[variant].groups} match no evaluation clips "
                          f"(groups present: {', '.join(evalset.by_group)})")
    total = recipe.train.steps
    started = time.perf_counter()
    scored = {row["step"] for row in _read_curve(run_dir)}
    train_s = 0.0
    for point in eval_steps(total, grid.eval.every):
        if point in scored:
            continue
        if _checkpoint_step(run_dir) < point:
            t = time.perf_counter()
            _train_segment(grid, recipe, run_dir, point, progress)
            train_s += time.perf_counter() - t
        step = _checkpoint_step(run_dir)
        if step in scored:
            continue
        rows = _score(grid, evalset, groups, run_dir, step, metrics)
        with open(run_dir / "curve.jsonl", "a") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
        scored.add(step)
        summary = ", ".join(f"{r['metric']}[{r['group']}] {r['mean']:.3f}" for r in rows)
        _say(f"{variant} seed {seed} step {step}: {summary}")
    (run_dir / "done.json").write_text(json.dumps({
        "variant": variant, "seed": seed, "steps": total, "wall_s_this_session": round(time.perf_counter() - started, 1),
        "train_s_this_session": round(train_s, 1)}, indent=2))
    return run_dir


def run_ablation(grid_path: str | Path, out: str | Path, progress: bool = True, only: list[str] | None = None,
                 report_only: bool = False, overrides: dict[str, Any] | None = None,
                 recipe_overrides: list[str] | tuple[str, ...] = (), rescore: bool = False) -> Path:
    """Run (or resume) every variant x seed of a grid, then write the results; returns index.html.

    rescore: train nothing; score the audio already generated at every evaluated step with the grid's
    metrics that a run has not been scored with yet (a metric added to eval.metrics after the runs).

    overrides: launcher / nproc / device replacing the grid's (the command line's --launcher ...).
    recipe_overrides: `--set` overrides for every variant, applied after the grid's own `set`.
    """
    grid = load_grid(grid_path)
    for key, value in (overrides or {}).items():
        setattr(grid, key, value)
    grid.set = [*grid.set, *recipe_overrides]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(grid.variants)
    if only:
        unknown = [v for v in only if v not in grid.variants]
        if unknown:
            raise RecipeError(f"--only: unknown variant {unknown[0]!r} (variants: {', '.join(names)})")
        names = [v for v in names if v in only]
    for v in names:  # every recipe validates before any training starts
        variant_recipe(grid, v, grid.seeds[0], out)
    (out / "grid.yaml").write_text(Path(grid.source).read_text())
    started = time.perf_counter()
    if not report_only:
        _ensure_data(grid, out)
        evalset = eval_set(grid, out)
        metrics = grid_metrics(grid, out, evalset)
        if rescore:
            rescore_runs(grid, out, names, evalset, metrics)
            _append_timing(out, time.perf_counter() - started)
            return write_results(grid, out)
        runs = [(v, s) for v in names for s in grid.seeds]
        if grid.order == "seeds":
            runs = [(v, s) for s in grid.seeds for v in names]
        for k, (v, seed) in enumerate(runs, start=1):
            if _finished(out / "runs" / v / f"seed-{seed}", variant_recipe(grid, v, seed, out).train.steps):
                continue
            _say(f"run {k}/{len(runs)}: variant {v!r} seed {seed}")
            run_one(grid, v, seed, out, evalset, metrics, progress)
    _append_timing(out, time.perf_counter() - started)
    return write_results(grid, out)


def grid_metrics(grid: Grid, out: Path, evalset: EvalSet) -> dict[str, Any]:
    """The grid's metrics, built once: eval.metric_params, and the fitted classifier judge when asked."""
    from vssflow.evaluation import build_metrics, fit_judges, fitted_judge_params, present_label_keys

    params = {name: dict(p) for name, p in grid.eval.metric_params.items()}
    if grid.eval.fit_judges:
        manifest = data_root(grid, out) / "manifest.jsonl" if grid.eval.manifest is None else Path(grid.eval.manifest)
        judge = fit_judges(manifest, out / "judges" / "logmel-cnn")
        for name, extra in fitted_judge_params(judge).items():
            params.setdefault(name, {}).update(extra)
    has_labels = present_label_keys(evalset.references[c].labels for ids in evalset.by_group.values() for c in ids)
    metrics, skipped = build_metrics(grid.eval.metrics, True, has_labels, params)
    for name, why in skipped.items():
        print(f"skipped metric {name}: {why}", flush=True)
    return metrics


def rescore_runs(grid: Grid, out: Path, names: list[str], evalset: EvalSet, metrics: dict[str, Any]) -> None:
    """Score saved audio (eval/step-N/GROUP/generated) with the metrics each run lacks; curve.jsonl gains
    their rows, written to a temporary file and renamed (a kill leaves the old curve)."""
    from vssflow.evaluation import evaluate

    for variant in names:
        for seed in grid.seeds:
            run_dir = out / "runs" / variant / f"seed-{seed}"
            rows = _read_curve(run_dir)
            have = {(r["step"], r["group"], r["metric"]) for r in rows}
            new_rows = []
            for folder in sorted((run_dir / "eval").glob("step-*/*/generated")):
                step, group = int(folder.parent.parent.name.removeprefix("step-")), folder.parent.name
                todo = {n: m for n, m in metrics.items() if (step, group, n) not in have}
                ids = [cid for cid in evalset.by_group.get(group, []) if (folder / f"{cid}.wav").is_file()]
                if not todo or not ids:
                    continue
                result = evaluate(folder, {cid: evalset.references[cid] for cid in ids}, todo, ids=ids,
                                  batch_size=grid.eval.batch_size, progress=False, skip_failing=True)
                new_rows += [_curve_row(step, group, name, r) for name, r in result.metrics.items()]
                _say(f"{variant} seed {seed} step {step} {group}: rescored " + ", ".join(
                    f"{n} {result.metrics[n].mean:.3f}" for n in result.metrics))
            if new_rows:
                tmp = run_dir / "curve.jsonl.tmp"
                tmp.write_text("".join(json.dumps(r) + "\n" for r in rows + new_rows))
                tmp.replace(run_dir / "curve.jsonl")


def _append_timing(out: Path, seconds: float) -> None:
    path = out / "timing.json"
    data = json.loads(path.read_text()) if path.is_file() else {"sessions": []}
    data["sessions"].append({"wall_s": round(seconds, 1), "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())})
    data["total_wall_s"] = round(sum(s["wall_s"] for s in data["sessions"]), 1)
    path.write_text(json.dumps(data, indent=2))


# ---------------------------------------------------------------------------------------------------------
# statistics across seeds and clips


def _hierarchical_ci(per_seed: list[list[float]], samples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the mean over seeds and clips: resample seeds, then clips within each seed."""
    import torch

    per_seed = [s for s in per_seed if s]
    if not per_seed:
        return (math.nan, math.nan)
    gen = torch.Generator().manual_seed(seed)
    sums, counts = [], []
    for values in per_seed:  # each seed's clips resampled `samples` times: (samples,) sums
        x = torch.tensor(values, dtype=torch.float64)
        sums.append(x[torch.randint(0, x.numel(), (samples, x.numel()), generator=gen)].sum(1))
        counts.append(float(x.numel()))
    sums_t = torch.stack(sums, 1)  # (samples, S)
    counts_t = torch.tensor(counts, dtype=torch.float64)
    picks = torch.randint(0, len(per_seed), (samples, len(per_seed)), generator=gen)  # seeds with replacement
    means = sums_t.gather(1, picks).sum(1) / counts_t[picks].sum(1)
    return (float(torch.quantile(means, 0.025)), float(torch.quantile(means, 0.975)))


@dataclass
class Cell:
    """One variant x group x metric at one step, pooled over seeds."""

    variant: str
    group: str
    metric: str
    step: int
    higher_is_better: bool
    per_seed: dict[int, dict[str, float]] = field(default_factory=dict)  # seed -> clip id -> value

    @property
    def values(self) -> list[list[float]]:
        return [list(v.values()) for _, v in sorted(self.per_seed.items())]

    @property
    def mean(self) -> float:
        flat = [x for s in self.values for x in s]
        return sum(flat) / len(flat) if flat else math.nan

    def ci(self) -> tuple[float, float]:
        return _hierarchical_ci(self.values)

    def seed_means(self) -> list[float]:
        return [sum(v) / len(v) for v in self.values if v]


def collect(grid: Grid, out: Path) -> dict[tuple[str, str, str, int], Cell]:
    """Every scored (variant, group, metric, step), with per-clip values per seed."""
    cells: dict[tuple[str, str, str, int], Cell] = {}
    for v in grid.variants:
        for seed in grid.seeds:
            for row in _read_curve(out / "runs" / v / f"seed-{seed}"):
                key = (v, row["group"], row["metric"], int(row["step"]))
                cell = cells.setdefault(key, Cell(v, row["group"], row["metric"], int(row["step"]), row["higher_is_better"]))
                cell.per_seed[seed] = {k: x for k, x in row["per_clip"].items() if x is not None}
    return cells


def final_cells(grid: Grid, cells: dict, steps: dict[str, int]) -> list[Cell]:
    """The cells at each variant's final step (its recipe's train.steps), with the seeds that reached it."""
    return [cell for (v, _, _, step), cell in cells.items() if step == steps.get(v)]


def paired_difference(a: Cell, b: Cell, samples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Mean of (a - b) in the metric's better direction over (seed, clip) pairs both scored; 95% CI."""
    sign = 1.0 if a.higher_is_better else -1.0
    per_seed = []
    for s in sorted(set(a.per_seed) & set(b.per_seed)):
        common = sorted(set(a.per_seed[s]) & set(b.per_seed[s]))
        per_seed.append([sign * (a.per_seed[s][c] - b.per_seed[s][c]) for c in common])
    flat = [x for s in per_seed for x in s]
    mean = sum(flat) / len(flat) if flat else math.nan
    lo, hi = _hierarchical_ci(per_seed, samples, seed)
    return {"advantage": mean, "ci95": (lo, hi), "pairs": len(flat),
            "verdict": ("a better" if lo > 0 else "b better" if hi < 0 else "not separated") if flat else "no data"}


# ---------------------------------------------------------------------------------------------------------
# results: csv, markdown, plots, html


def _f(x: float, digits: int = 3) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def write_results(grid: Grid, out: Path) -> Path:
    """results.csv, results.md, comparisons.csv, plots/*.png and index.html from the runs' curve.jsonl files."""
    cells = collect(grid, out)
    steps = {v: variant_recipe(grid, v, grid.seeds[0], out).train.steps for v in grid.variants}
    finals = final_cells(grid, cells, steps)
    groups = sorted({c.group for c in finals})
    metrics = list(dict.fromkeys(c.metric for c in finals))
    rows = []
    for c in sorted(finals, key=lambda c: (c.group, c.metric, list(grid.variants).index(c.variant))):
        lo, hi = c.ci()
        rows.append({"variant": c.variant, "group": c.group, "metric": c.metric, "step": c.step,
                     "seeds": len(c.per_seed), "clips": sum(len(v) for v in c.values), "mean": c.mean,
                     "ci95_lo": lo, "ci95_hi": hi, "higher_is_better": c.higher_is_better,
                     "seed_means": " ".join(_f(x, 4) for x in c.seed_means())})
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["variant"])
        writer.writeheader()
        writer.writerows(rows)
    comparisons = []
    index = {(c.variant, c.group, c.metric): c for c in finals}
    for a, b in grid.compare:
        for g in groups:
            for m in metrics:
                if (a, g, m) in index and (b, g, m) in index:
                    d = paired_difference(index[(a, g, m)], index[(b, g, m)])
                    comparisons.append({"a": a, "b": b, "group": g, "metric": m, **d})
    with open(out / "comparisons.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["a", "b", "group", "metric", "advantage_of_a", "ci95_lo", "ci95_hi", "pairs", "verdict"])
        for r in comparisons:
            writer.writerow([r["a"], r["b"], r["group"], r["metric"], r["advantage"], r["ci95"][0], r["ci95"][1],
                             r["pairs"], r["verdict"]])
    plots = _plots(grid, out, cells, finals, groups, metrics)
    md = _markdown(grid, out, rows, comparisons, plots, groups, metrics, steps)
    (out / "results.md").write_text(md)
    return _html(grid, out, md, plots)


def _best(rows: list[dict], group: str, metric: str) -> str | None:
    cands = [r for r in rows if r["group"] == group and r["metric"] == metric and math.isfinite(r["mean"])]
    if not cands:
        return None
    pick = max if cands[0]["higher_is_better"] else min
    return pick(cands, key=lambda r: r["mean"])["variant"]


def _markdown(grid: Grid, out: Path, rows: list[dict], comparisons: list[dict], plots: list[Path],
              groups: list[str], metrics: list[str], steps: dict[str, int]) -> str:
    seeds = ", ".join(str(s) for s in grid.seeds)
    lines = [f"# Ablation {grid.name}", ""]
    if grid.description:
        lines += [grid.description, ""]
    lines += [f"Seeds: {seeds}. Each cell: mean over seeds and held-out clips at the final step, with a 95% "
              "bootstrap interval (seeds resampled, then clips within each seed). **Bold**: best mean per metric "
              "and group (direction in the header).", ""]
    variants = [v for v in grid.variants if any(r["variant"] == v for r in rows)]
    for g in groups:
        present = [m for m in metrics if any(r["group"] == g and r["metric"] == m for r in rows)]
        if not present:
            continue
        lines += [f"## {g}", "", "| variant | " + " | ".join(
            f"{m} ({'↑' if next(r for r in rows if r['metric'] == m)['higher_is_better'] else '↓'})" for m in present)
            + " |", "|---" * (len(present) + 1) + "|"]
        for v in variants:
            cells = []
            for m in present:
                r = next((r for r in rows if r["variant"] == v and r["group"] == g and r["metric"] == m), None)
                if r is None:
                    cells.append("-")
                    continue
                text = f"{_f(r['mean'])} [{_f(r['ci95_lo'])}, {_f(r['ci95_hi'])}]"
                cells.append(f"**{text}**" if _best(rows, g, m) == v else text)
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
        lines.append("")
    if comparisons:
        lines += ["## Paired comparisons", "",
                  "Advantage of a over b in the metric's better direction (> 0: a is better), averaged over the "
                  "same clips generated from the same noise, with a 95% bootstrap interval over seeds and clips.", "",
                  "| a | b | group | metric | advantage of a | 95% CI | pairs | verdict |", "|---|---|---|---|---|---|---|---|"]
        for r in comparisons:
            lines.append(f"| {r['a']} | {r['b']} | {r['group']} | {r['metric']} | {_f(r['advantage'], 4)} | "
                         f"[{_f(r['ci95'][0], 4)}, {_f(r['ci95'][1], 4)}] | {r['pairs']} | {r['verdict']} |")
        lines.append("")
    lines += ["## Variants", ""] + [f"- **{v}**: {spec.description or '(base recipe)'}"
                                    for v, spec in grid.variants.items()] + [""]
    missing = [f"{v} seed {s}" for v in grid.variants for s in grid.seeds
               if not _finished(out / "runs" / v / f"seed-{s}", steps[v])]
    if missing:
        lines += ["## Not finished", "", "Runs without a final score (resume with the same command): "
                  + ", ".join(missing) + ".", ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots] + [""]
    timing = out / "timing.json"
    if timing.is_file():
        lines += [f"Wall time of the ablation command(s): {json.loads(timing.read_text())['total_wall_s']:.0f} s.", ""]
    return "\n".join(lines)


def _plots(grid: Grid, out: Path, cells: dict, finals: list[Cell], groups: list[str], metrics: list[str]) -> list[Path]:
    """A bar chart per metric (variants, 95% CI) and metric-vs-step curves; [] when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("skipped plots: matplotlib is not installed (pip install 'vssflow[ablate]')", flush=True)
        return []
    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    order = list(grid.variants)
    written = []
    for m in metrics:
        panels = [g for g in groups if any(c.metric == m and c.group == g for c in finals)]
        if not panels:
            continue
        fig, axes = plt.subplots(1, len(panels), figsize=(max(4.0, 0.9 * len(order)) * len(panels), 3.6), squeeze=False)
        for ax, g in zip(axes[0], panels, strict=True):
            cs = sorted([c for c in finals if c.metric == m and c.group == g], key=lambda c: order.index(c.variant))
            means = [c.mean for c in cs]
            cis = [c.ci() for c in cs]
            err = [[max(0.0, mu - lo) for mu, (lo, _) in zip(means, cis, strict=True)],
                   [max(0.0, hi - mu) for mu, (_, hi) in zip(means, cis, strict=True)]]
            ax.bar(range(len(cs)), means, yerr=err, capsize=4, color="#4c72b0")
            for i, c in enumerate(cs):
                ax.plot([i] * len(c.seed_means()), c.seed_means(), "o", color="#dd8452", markersize=4)
            ax.set_xticks(range(len(cs)), [c.variant for c in cs], rotation=30, ha="right", fontsize=8)
            ax.set_title(f"{m} [{g}] ({'higher' if cs[0].higher_is_better else 'lower'} is better)", fontsize=9)
        fig.tight_layout()
        path = folder / f"bar-{m}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    for m in metrics:
        panels = [g for g in groups if any(k[2] == m and k[1] == g for k in cells)]
        steps = {k[3] for k in cells if k[2] == m}
        if not panels or len(steps) < 2:
            continue
        fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
        for ax, g in zip(axes[0], panels, strict=True):
            for v in order:
                pts = sorted((k[3], c) for k, c in cells.items() if k[0] == v and k[1] == g and k[2] == m)
                if not pts:
                    continue
                xs = [s for s, _ in pts]
                ys = [c.mean for _, c in pts]
                cis = [c.ci() for _, c in pts]
                color = f"C{order.index(v) % 10}"  # one colour per variant in every panel
                ax.plot(xs, ys, marker="o", markersize=3, label=v, color=color)
                ax.fill_between(xs, [lo for lo, _ in cis], [hi for _, hi in cis], alpha=0.15, color=color)
            ax.set_xlabel("training step")
            ax.set_title(f"{m} [{g}]", fontsize=9)
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = folder / f"curve-{m}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def _html(grid: Grid, out: Path, markdown: str, plots: list[Path]) -> Path:
    """index.html: the results tables and plots, offline (relative paths, no scripts)."""
    body = []
    in_table = False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(set(c) <= {"-"} for c in cells):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("!["):
            src = line[line.index("(") + 1 : -1]
            body.append(f'<p><img src="{html.escape(src)}" alt="{html.escape(src)}"></p>')
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("- "):
            body.append(f"<li>{_inline(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    if in_table:
        body.append("</table>")
    page = ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(grid.name)}</title><style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#222}}"
            "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem}"
            "img{max-width:100%}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    path = out / "index.html"
    tmp = out / ".index.html.tmp"
    tmp.write_text(page)
    tmp.replace(path)
    return path


def _inline(text: str) -> str:
    escaped = html.escape(text)
    parts = escaped.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))

