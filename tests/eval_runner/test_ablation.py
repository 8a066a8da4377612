"""`vssflow ablate`: a two-variant micro ablation end to end (results, plots, page), resuming, the
statistics across seeds and clips, and grid errors."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from tests.main_job.conftest import vssflow

HERE = Path(__file__).resolve().parent
MICRO_GRID = HERE / "micro-grid.yaml"
GRID_DIR = HERE.parent.parent / "ablations"


@pytest.fixture(scope="module")
def micro_ablation(tmp_path_factory) -> Path:
    """The micro grid run once by the command: 2 variants x 2 seeds, 4 steps, scored at steps 2 and 4."""
    out = tmp_path_factory.mktemp("ablation") / "micro"
    done = vssflow("ablate", str(MICRO_GRID), "--out", str(out), "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_micro_ablation_writes_results_plots_and_a_page(micro_ablation):
    out = micro_ablation
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {(r["variant"], r["metric"]) for r in rows} == {
        (v, m) for v in ("video-cross", "video-concat") for m in ("onset-f1", "mel-distance")}
    for r in rows:
        assert r["step"] == "4" and r["seeds"] == "2" and r["clips"] == "6"  # 3 clips x 2 seeds
        assert float(r["ci95_lo"]) <= float(r["mean"]) <= float(r["ci95_hi"])
    md = (out / "results.md").read_text()
    assert "| video-cross |" in md and "| video-concat |" in md and md.count("**") >= 4  # a best per metric
    assert "Paired comparisons" in md and "Not finished" not in md
    for name in ("bar-onset-f1", "bar-mel-distance", "curve-onset-f1", "curve-mel-distance"):
        png = out / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"plots/{name}.png" in (out / "index.html").read_text()
    page = (out / "index.html").read_text()
    assert "<table>" in page and "http" not in page.replace("http-equiv", "")  # offline: no remote resources
    curve = [json.loads(x) for x in (out / "runs" / "video-cross" / "seed-0" / "curve.jsonl").read_text().splitlines()]
    assert sorted({row["step"] for row in curve}) == [2, 4]  # periodic evaluation during training
    assert (out / "runs" / "video-cross" / "seed-0" / "eval" / "step-0000004" / "v2s" / "metrics.json").is_file()
    recipe = (out / "runs" / "video-concat" / "seed-1" / "recipe.yaml").read_text()
    assert "channel-concat" in recipe.split("video:")[1].split("sync:")[0] and "seed: 1" in recipe


def test_a_finished_ablation_is_not_redone_and_a_killed_one_resumes(micro_ablation, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(micro_ablation, out)
    # kill simulation: the last run lost its final score and its end marker, its checkpoint is at step 2
    run = out / "runs" / "video-concat" / "seed-1"
    (run / "done.json").unlink()
    rows = [x for x in (run / "curve.jsonl").read_text().splitlines() if json.loads(x)["step"] == 2]
    (run / "curve.jsonl").write_text("\n".join(rows) + "\n")
    shutil.rmtree(run / "checkpoints")
    shutil.copytree(micro_ablation / "runs" / "video-concat" / "seed-1" / "checkpoints", run / "checkpoints")
    finished = out / "runs" / "video-cross" / "seed-0" / "checkpoints" / "last"
    stamp = {p.name: p.stat().st_mtime_ns for p in finished.iterdir()}
    done = vssflow("ablate", str(MICRO_GRID), "--out", str(out), "--only", "video-concat", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "run 2/2: variant 'video-concat' seed 1" in done.stdout and "run 1/2" not in done.stdout
    assert {p.name: p.stat().st_mtime_ns for p in finished.iterdir()} == stamp  # finished runs untouched
    steps = [json.loads(x)["step"] for x in (run / "curve.jsonl").read_text().splitlines()]
    assert sorted(set(steps)) == [2, 4] and (run / "done.json").is_file()


def test_partial_grid_reports_missing_runs(micro_ablation, tmp_path):
    out = tmp_path / "partial"
    shutil.copytree(micro_ablation, out)
    shutil.rmtree(out / "runs" / "video-concat")
    done = vssflow("ablate", str(MICRO_GRID), "--out", str(out), "--report-only")
    assert done.returncode == 0, done.stderr[-3000:]
    md = (out / "results.md").read_text()
    assert "Not finished" in md and "video-concat seed 0" in md and "| video-cross |" in md


def test_statistics_pool_seeds_and_clips_and_pair_by_clip():
    from vssflow.ablation import Cell, paired_difference

    a = Cell("a", "v2s", "onset-f1", 10, True, {0: {"x": 0.6, "y": 0.7, "z": 0.8}, 1: {"x": 0.5, "y": 0.9, "z": 0.7}})
    b = Cell("b", "v2s", "onset-f1", 10, True, {0: {"x": 0.4, "y": 0.5, "z": 0.6}, 1: {"x": 0.3, "y": 0.7, "z": 0.5}})
    assert a.mean == pytest.approx(0.7) and a.seed_means() == pytest.approx([0.7, 0.7])
    lo, hi = a.ci()
    assert lo < 0.7 < hi and a.ci() == (lo, hi)
    d = paired_difference(a, b)  # a is better by exactly 0.2 on every clip: a zero-width interval
    assert d["advantage"] == pytest.approx(0.2) and d["ci95"] == pytest.approx((0.2, 0.2))
    assert d["verdict"] == "a better" and d["pairs"] == 6
    lower = Cell("a", "v2s", "mel-distance", 10, False, {0: {"x": 1.0, "y": 2.0}})
    higher = Cell("b", "v2s", "mel-distance", 10, False, {0: {"x": 3.0, "y": 1.0}})
    mixed = paired_difference(lower, higher)  # lower is better: +2 on x, -1 on y
    assert mixed["advantage"] == pytest.approx(0.5) and mixed["verdict"] == "not separated"


def test_eval_steps_always_include_the_last():
    from vssflow.ablation import eval_steps

    assert eval_steps(300, 100) == [100, 200, 300]
    assert eval_steps(250, 100) == [100, 200, 250]
    assert eval_steps(50, 0) == [50]


GRIDS = sorted(GRID_DIR.glob("*.yaml"))


def test_both_scales_have_a_grid():
    assert {p.name for p in GRIDS} == {"cpu-synthetic.yaml", "paper-gpu.yaml"}


@pytest.mark.parametrize("grid", GRIDS, ids=lambda p: p.stem)
def test_shipped_grids_build_every_variant(grid, tmp_path):
    from vssflow.ablation import load_grid, variant_recipe

    g = load_grid(grid)
    recipes = {v: variant_recipe(g, v, g.seeds[-1], tmp_path) for v in g.variants}
    assert all(r.train.seed == g.seeds[-1] for r in recipes.values())
    routes = {v: {c: cond.aggregator.name for c, cond in r.conditions.items()} for v, r in recipes.items()}
    assert routes["final"] == {**routes["final"], "lip": "channel-concat", "transcript": "channel-concat",
                               "sync": "channel-concat", "video": "cross-attn"}
    assert all(routes["all-cross"][c] == "cross-attn" for c in ("video", "lip", "transcript", "sync"))
    assert all(routes["all-concat"][c] == "channel-concat" for c in ("video", "lip", "transcript", "sync"))
    assert routes["phonemes-cross"]["transcript"] == "cross-attn" and routes["phonemes-cross"]["lip"] == "channel-concat"
    assert routes["swapped"]["video"] == "channel-concat" and routes["swapped"]["sync"] == "cross-attn"
    assert recipes["v2s-only"].data.task_weights == {"v2s": 1.0, "visualtts": 0.0}
    assert recipes["final"].train.steps == recipes["v2s-only"].train.steps  # equal steps


@pytest.mark.parametrize(("text", "expect"), [
    ("name: g\nbase: x.yaml\nvariants: {a: {}}\ncompare: [[a, b]]\n", "compare: unknown variant 'b'"),
    ("name: g\nbase: x.yaml\nvariants: {a: {recipy: {}}}\n", "recipy"),
    ("name: g\nbase: x.yaml\nseeds: [0, 0]\nvariants: {a: {}}\n", "seeds"),
    ("name: g\nvariants: {a: {}}\n", "base"),
])
def test_grid_errors_are_one_line(tmp_path, text, expect):
    grid = tmp_path / "g.yaml"
    grid.write_text(text)
    done = vssflow("ablate", str(grid), "--out", str(tmp_path / "o"))
    err = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(err) == 1 and expect in err[0] and "Traceback" not in done.stderr, done.stderr


def test_each_training_can_run_under_torchrun(tmp_path):
    """--launcher torchrun --nproc 2: training segments run as two processes (gloo on CPU), scoring here."""
    import torch

    if not torch.distributed.is_available():
        pytest.skip("torch.distributed unavailable")
    grid = tmp_path / "grid.yaml"
    text = MICRO_GRID.read_text().replace("../main_job/micro-v2s.yaml", str(HERE.parent / "main_job" / "micro-v2s.yaml"))
    grid.write_text(text.replace("seeds: [0, 1]", "seeds: [0]"))
    out = tmp_path / "dist"
    done = vssflow("ablate", str(grid), "--out", str(out), "--only", "video-cross", "--launcher", "torchrun",
                   "--nproc", "2", "--device", "cpu", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    from vssflow.core.checkpoint import Checkpoint

    run = out / "runs" / "video-cross" / "seed-0"
    assert Checkpoint(run / "checkpoints" / "last").trainer_state()["world"] == 2
    steps = {json.loads(x)["step"] for x in (run / "curve.jsonl").read_text().splitlines()}
    assert steps == {2, 4} and (out / "results.md").is_file()


def test_raising_train_steps_continues_finished_runs(micro_ablation, tmp_path):
    out = tmp_path / "longer"
    shutil.copytree(micro_ablation, out)
    grid = tmp_path / "grid.yaml"
    text = MICRO_GRID.read_text().replace("../main_job/micro-v2s.yaml", str(HERE.parent / "main_job" / "micro-v2s.yaml"))
    grid.write_text(text.replace("train.steps=4", "train.steps=6"))
    done = vssflow("ablate", str(grid), "--out", str(out), "--only", "video-cross", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    for seed in (0, 1):
        run = out / "runs" / "video-cross" / f"seed-{seed}"
        steps = [json.loads(x)["step"] for x in (run / "curve.jsonl").read_text().splitlines()]
        assert sorted(set(steps)) == [2, 4, 6] and json.loads((run / "done.json").read_text())["steps"] == 6
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["step"] for r in rows if r["variant"] == "video-cross"} == {"6"}
    assert "video-concat seed 0" in (out / "results.md").read_text().split("Not finished")[1]  # still at 4 steps


def test_rescore_adds_a_metric_to_finished_runs_from_their_saved_audio(micro_ablation, tmp_path):
    out = tmp_path / "rescored"
    shutil.copytree(micro_ablation, out)
    grid = tmp_path / "grid.yaml"
    text = MICRO_GRID.read_text().replace("metrics: [onset-f1, mel-distance]",
                                          "metrics: [onset-f1, mel-distance, envelope-corr, 'fd[logmel-cnn]']")
    grid.write_text(text.replace("base: ../main_job/", f"base: {HERE.parent / 'main_job'}/")
                    .replace("batch_size: 4}", "batch_size: 4, fit_judges: true}"))
    checkpoints = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("model.safetensors")}
    audio = {p: p.read_bytes() for p in (out / "runs").rglob("generated/*.wav")}
    before = (out / "runs" / "video-cross" / "seed-0" / "curve.jsonl").read_text()
    done = vssflow("ablate", str(grid), "--out", str(out), "--rescore", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("model.safetensors")} == checkpoints  # no training
    assert audio and {p: p.read_bytes() for p in (out / "runs").rglob("generated/*.wav")} == audio  # nor generation
    curve = (out / "runs" / "video-cross" / "seed-0" / "curve.jsonl").read_text()
    assert curve.startswith(before)  # earlier rows kept as they were
    added = [json.loads(x) for x in curve[len(before):].splitlines()]
    assert {(r["step"], r["metric"]) for r in added} == {(s, m) for s in (2, 4) for m in ("envelope-corr", "fd[logmel-cnn]")}
    fd = next(r for r in added if r["metric"] == "fd[logmel-cnn]")
    assert list(fd["per_clip"]) == ["(set)"]  # a set metric: one value per run
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["metric"] for r in rows} == {"onset-f1", "mel-distance", "envelope-corr", "fd[logmel-cnn]"}
    assert (out / "judges" / "logmel-cnn" / "model.safetensors").is_file()
    again = vssflow("ablate", str(grid), "--out", str(out), "--rescore", "--no-progress")
    assert again.returncode == 0 and (out / "runs" / "video-cross" / "seed-0" / "curve.jsonl").read_text() == curve
