"""`vssflow demo`: the whole path on this machine, from nothing but the install.

1. generate a small synthetic audio-visual set (V2S scenes, talking faces, mixtures);
2. train the tiny unified recipe on it (resumes if a previous demo was interrupted);
3. generate audio for held-out clips of each family, with every condition and with none;
4. score both against the references and labels (registered `metric` plugins) and write an offline
   report (metrics table, spectrograms, audio players, the generated videos).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("vssflow.demo")

# Sized to finish in minutes on two CPU cores; `--set` and `--steps/--clips` change them. The ~200 training
# clips are drawn about 32 times each: their decoded video stays in memory (about 1.1 MB a clip), and the
# clips load in the training process (a loader process would compete with it for the two cores). 800 steps
# keep every row of the table clearly better (700 left mixtures' onset F1 at two standard errors; docs/scale.md).
DEMO_CLIPS = 240
DEMO_STEPS = 800
DEMO_OVERRIDES = (
    "train.batch_size=8",
    "train.lr=1.0e-3",
    "train.warmup_steps=50",
    "train.ema=0.995",
    "train.ckpt_every=100",
    "train.log_every=25",
    "train.val_every=0",
    "train.num_workers=0",
    "data.video_cache_mb=512",
)
HELD_OUT_PER_FAMILY = 16
METRICS = ("onset-f1", "mel-distance", "envelope-corr")


def paired_row(family: str, metric: str, higher_is_better: bool, cond: list[float], uncond: list[float]) -> dict[str, Any]:
    """One row of the report: means, the paired difference with its standard error, and per-clip wins.

    Both runs start from the same noise per clip, so the per-clip differences are paired. "clearly
    better" asks that the mean difference favours the conditioned run by more than two standard errors.
    """
    n = len(cond)
    diffs = [(c - u) if higher_is_better else (u - c) for c, u in zip(cond, uncond, strict=True)]  # > 0: cond wins
    mean = sum(diffs) / n
    se = (sum((d - mean) ** 2 for d in diffs) / (n - 1)) ** 0.5 / n**0.5 if n > 1 else float("nan")
    return {
        "family": family, "metric": metric, "better": "higher" if higher_is_better else "lower",
        "conditioned": sum(cond) / n, "no conditions": sum(uncond) / n,
        "advantage (± s.e.)": f"{mean:+.3f} ± {se:.3f}", "clips better": f"{sum(d > 0 for d in diffs)}/{n}",
        "clearly better": bool(n > 1 and mean > 2 * se), "clips": n,
    }


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def _labels(record: Any) -> dict[str, Any]:
    return json.loads(Path(record.labels).read_text()) if record.labels else {}


def demo_recipe(data_root: str | Path, recipe: str = "unified-demo", clips: int | None = None,
                steps: int | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """The demo's resolved recipe: `recipe` on a synthetic set of `clips` clips in `data_root`."""
    from vssflow.registry.recipe import load_recipe

    base = load_recipe(recipe, components=False)
    settings = [
        "data.name=synthetic-av",
        f"data.params.root={data_root}",
        f"data.params.clips={clips or DEMO_CLIPS}",
        f"data.params.seconds={base.audio.duration_s}",
        "data.params.families=[v2s,visualtts,mix]",
        "data.params.workers=2",
        f"train.steps={steps or DEMO_STEPS}",
        *DEMO_OVERRIDES,
        *overrides,
    ]
    return load_recipe(recipe, settings)


def run_demo(
    out: str | Path = "runs/demo",
    recipe: str = "unified-demo",
    clips: int | None = None,
    steps: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    device: str | None = None,
    processes: int | str = "auto",
) -> Path:
    """Run the demo; returns the path of report.html.

    processes: training processes on a CPU (vssflow.launch; "auto": one per core, up to 4); 1 trains in this
    process. Each process takes its share of every batch, so the run follows the same trajectory.
    """
    from vssflow.core.media import read_audio, write_audio
    from vssflow.generation import ClipRequest
    from vssflow.registry import create
    from vssflow.report import ClipEntry, spectrogram_png, write_report

    started = time.perf_counter()
    out = Path(out)
    resolved = demo_recipe(out / "data", recipe, clips, steps, overrides)
    run_dir = out / "run"
    last = run_dir / "checkpoints" / "last"

    _say(f"1/4 synthetic data: {resolved.data.params['clips']} clips of {resolved.audio.duration_s:g} s "
         f"(V2S scenes, talking faces, mixtures) in {out / 'data'}")
    t = time.perf_counter()
    chosen = held_out_clips(resolved)
    _say(f"    ready in {time.perf_counter() - t:.0f} s")

    _say(f"2/4 training recipe {resolved.name!r} for {resolved.train.steps} steps on {device or 'the default device'}")
    done = False
    if last.exists():
        from vssflow.core.checkpoint import Checkpoint

        done = Checkpoint(last).trainer_state().get("step", 0) >= resolved.train.steps
    made = train_and_generate(resolved, run_dir, not done, chosen, device, processes)
    conditioned, unconditioned, sr = made["conditioned"], made["unconditioned"], made["sample_rate"]
    train_s, gen_s = made["train_s"], made["generation_s"]
    audio_s = sum(w.numel() for w in conditioned) / sr

    _say("4/4 scoring and writing the report")
    from vssflow.evaluation import Reference, evaluate

    metrics = {name: create("metric", name, sample_rate=sr) for name in METRICS}
    refs = {rec.id: Reference(rec.id, rec.audio_path, rec.start, rec.end, _labels(rec),
                              (rec.meta or {}).get("family", rec.task)) for rec in chosen}
    ref_wavs = {cid: ref.read(sr) for cid, ref in refs.items()}
    scored = {
        "conditioned": evaluate({r.id: (w, sr) for r, w in zip(chosen, conditioned, strict=True)}, refs, metrics,
                                progress=False),
        "unconditioned": evaluate({r.id: (w, sr) for r, w in zip(chosen, unconditioned, strict=True)}, refs, metrics,
                                  progress=False),
    }
    # the real audio scored against its labels alone: the ceiling a model can reach (labelled events only)
    labelled = [cid for cid, ref in refs.items() if ref.labels.get("events")]
    label_metrics = {n: m for n, m in metrics.items() if not m.needs_reference}
    real = evaluate({cid: (ref_wavs[cid], sr) for cid in labelled},
                    {cid: Reference(cid, None, labels=refs[cid].labels) for cid in labelled},
                    label_metrics, ids=labelled, progress=False) if labelled and label_metrics else None
    per_family: dict[str, dict[str, dict[str, list[float]]]] = {}
    entries = []
    media_dir = out / "media"
    for rec, wav_c, wav_u in zip(chosen, conditioned, unconditioned, strict=True):
        family = refs[rec.id].group
        ref = ref_wavs[rec.id]
        n = min(ref.shape[-1], wav_c.shape[-1])
        ref, wav_c, wav_u = ref[:n], wav_c[:n], wav_u[:n]
        scores: dict[str, float] = {}
        for name in metrics:
            c = scored["conditioned"].metrics[name].per_clip.get(rec.id)
            u = scored["unconditioned"].metrics[name].per_clip.get(rec.id)
            if c is None or u is None:
                continue
            bucket = per_family.setdefault(family, {}).setdefault(
                name, {"conditioned": [], "unconditioned": [], "real": []})
            bucket["conditioned"].append(c)
            bucket["unconditioned"].append(u)
            if real is not None and name in real.metrics and rec.id in real.metrics[name].per_clip:
                bucket["real"].append(real.metrics[name].per_clip[rec.id])
            scores[f"{name} (cond)"] = c
            scores[f"{name} (none)"] = u
        stem = media_dir / rec.id
        files = {
            "reference": write_audio(f"{stem}-reference.wav", ref, sr),
            "conditioned": write_audio(f"{stem}-conditioned.wav", wav_c, sr),
            "no conditions": write_audio(f"{stem}-unconditioned.wav", wav_u, sr),
        }
        from vssflow.generation import write_outputs

        mp4 = write_outputs(media_dir, ClipRequest(rec.video, clip_id=f"{rec.id}-generated"), wav_c, sr)[1]
        media = {}
        for label, wav_path in files.items():
            data, _ = read_audio(wav_path, sr)
            png = spectrogram_png(data.numpy(), sr, wav_path.with_suffix(".png"))
            media[f"{label} spectrogram"] = str(png.relative_to(out))
            media[f"{label} audio"] = str(wav_path.relative_to(out))
        media["generated video"] = str(mp4.relative_to(out))
        caption = f"transcript: {rec.transcript!r}" if rec.transcript else "no transcript"
        entries.append(ClipEntry(rec.id, family, caption, media, scores))

    table = []
    for family in sorted(per_family):
        for name in METRICS:
            if name not in per_family[family]:
                continue
            vals = per_family[family][name]
            row = paired_row(family, name, metrics[name].higher_is_better, vals["conditioned"], vals["unconditioned"])
            row["real audio"] = sum(vals["real"]) / len(vals["real"]) if vals["real"] else "-"
            table.append(row)
    summary = {
        "recipe": resolved.name,
        "training steps": resolved.train.steps,
        "training time (s)": round(train_s, 1),
        "generation real-time factor (s compute / s audio)": round(gen_s / max(audio_s, 1e-9), 3),
        "sampler": f"{resolved.sampler.name} {resolved.sampler.params}",
        "total time (s)": round(time.perf_counter() - started, 1),
        "checkpoint": str(last),
    }
    notes = [
        "Each held-out clip is generated twice from the same noise: with every condition, and with every "
        "condition replaced by its learned null embedding (classifier-free 'unconditional').",
        "onset-f1 compares onsets detected in the audio with the labelled on-screen impact times (±0.1 s), or "
        "with the onsets of the clip's real audio where nothing is labelled (speech); mel-distance and "
        "envelope-corr compare with the clip's real audio. Scores come from vssflow.evaluation (as in "
        "`vssflow evaluate`).",
        "real audio: the clip's own recording scored the same way (only for metrics against labels; "
        "the ceiling a model can reach).",
        "advantage is the mean per-clip difference in the metric's better direction with its standard error; "
        "'clearly better' means it exceeds two standard errors.",
    ]
    report = write_report(out, "vssflow demo", summary, table, entries, notes)
    for row in table:
        _say(f"    {row['family']:<10} {row['metric']:<14} conditioned {row['conditioned']:.3f}   "
             f"no conditions {row['no conditions']:.3f}   ({row['better']} is better; advantage "
             f"{row['advantage (± s.e.)']}, better on {row['clips better']} clips"
             + (f"; real audio {row['real audio']:.3f})" if isinstance(row["real audio"], float) else ")"))
    _say(f"done in {time.perf_counter() - started:.0f} s")
    return report


def held_out_clips(resolved: Any) -> list[Any]:
    """The demo's held-out records (made with the data set if it is missing): the first HELD_OUT_PER_FAMILY
    of each family from the test split, then the validation split (the demo does not validate)."""
    from vssflow.registry.assemble import build
    from vssflow.training import dataset_for

    probe_model = build(resolved).model
    records = [rec for split in ("test", "val") for rec in dataset_for(resolved, probe_model, split=split).records]
    by_family: dict[str, list[Any]] = {}
    for rec in records:
        family = (rec.meta or {}).get("family", rec.task)
        if len(by_family.setdefault(family, [])) < HELD_OUT_PER_FAMILY:
            by_family[family].append(rec)
    return [rec for fam in sorted(by_family) for rec in by_family[fam]]


def train_and_generate(resolved: Any, run_dir: Path, needs_training: bool, chosen: list[Any],
                       device: str | None = None, processes: int | str = "auto") -> dict[str, Any]:
    """Steps 2 and 3: train (unless done), then generate every chosen clip with all conditions and with none.

    On a CPU with processes > 1 (or "auto" on several cores) both are split across local processes
    (vssflow.launch): training as data parallel, generation clip by clip. Returns the waveforms in the order
    of `chosen`, the training seconds, the generation compute seconds (summed over processes) and the rate.
    """
    from vssflow.training import local_processes

    n, threads = local_processes(resolved, processes, device) if processes != 1 else (1, 0)
    work = (resolved, run_dir, needs_training, chosen)
    if n > 1:
        from vssflow.launch import run_processes

        _say(f"    in {n} processes of {threads} thread(s) each, every one on its share of each batch")
        parts = run_processes(_train_and_generate, work, {"device": "cpu"}, processes=n, threads=threads,
                              after_crash="run the demo again: it continues from its newest checkpoint")
    else:
        parts = [_train_and_generate(*work, device=device)]
    conditioned: list[Any] = [None] * len(chosen)
    unconditioned: list[Any] = [None] * len(chosen)
    for part in parts:
        for i, wav_c, wav_u in zip(part["clips"], part["conditioned"], part["unconditioned"], strict=True):
            conditioned[i], unconditioned[i] = wav_c, wav_u
    return {"conditioned": conditioned, "unconditioned": unconditioned, "train_s": parts[0]["train_s"],
            "generation_s": sum(part["generation_s"] for part in parts), "sample_rate": parts[0]["sample_rate"]}


def _train_and_generate(resolved: Any, run_dir: Path, needs_training: bool, chosen: list[Any],
                        device: str | None = None) -> dict[str, Any]:
    """This process's part of steps 2 and 3: train (every process on its share of each batch, or alone), then
    generate its share of the held-out clips with every condition and with none. Noise is seeded per clip, so
    a clip's audio does not depend on which process made it."""
    from vssflow.core.trainer import DistInfo
    from vssflow.generation import ClipRequest, load_pipeline
    from vssflow.training import train

    where = DistInfo.from_env()
    last = run_dir / "checkpoints" / "last"
    t = time.perf_counter()
    if needs_training:
        train(resolved, out_dir=run_dir, resume=last.exists(), device=device)
    train_s = time.perf_counter() - t
    if where.is_main:
        _say(f"    trained in {train_s:.0f} s; checkpoint {last}")
        _say("3/4 generating held-out clips with all conditions, and with all conditions dropped")
    pipe = load_pipeline(last, device=device)
    mine = list(range(where.rank, len(chosen), where.world))
    takes_caption = pipe.caption_condition() is not None
    requests = [ClipRequest(r.video, r.transcript, r.speaker, r.speech, r.id, caption=r.caption if takes_caption else None)
                for r in (chosen[i] for i in mine)]
    t = time.perf_counter()
    conditioned = pipe.generate(requests, seed=1234)
    generation_s = time.perf_counter() - t
    # with every condition dropped both guidance branches are the same null-conditioned velocity, so
    # guidance 1 gives the same field (up to rounding) at half the backbone calls
    unconditioned = pipe.generate(requests, seed=1234, conditioned=False, guidance=1.0)
    return {"clips": mine, "conditioned": conditioned, "unconditioned": unconditioned, "train_s": train_s,
            "generation_s": generation_s, "sample_rate": pipe.sample_rate}
