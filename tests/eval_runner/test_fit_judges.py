"""`vssflow evaluate --fit-judges`: a classifier judge trained on the benchmark's reference audio makes class
accuracy, KL, IS and an in-domain FD meaningful offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf
import torch

from tests.main_job.conftest import vssflow


@pytest.fixture(scope="module")
def labelled_set(tmp_path_factory) -> Path:
    """24 two-second V2S clips: several sound classes, labels with `classes`."""
    from vssflow.plugins.datasets.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("classes")
    generate(root, SynthConfig(clips=24, seconds=2.0, families=("v2s",), size=32))
    return root


def _score(root: Path, generated: Path, out: Path, *extra: str) -> dict:
    done = vssflow("evaluate", "--generated", str(generated), "--manifest", str(root / "manifest.jsonl"),
                   "--fit-judges", "--metrics", "class-accuracy,kl,fd[logmel-cnn]", "--out", str(out),
                   "--no-progress", *extra)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((out / "metrics.json").read_text())


def test_fitted_judge_scores_real_audio_as_its_classes_and_noise_as_far_away(labelled_set, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    for wav in (labelled_set / "clips").glob("*.wav"):
        shutil.copy(wav, real / wav.name)
    judges = tmp_path / "judge"
    same = _score(labelled_set, real, tmp_path / "same", "--judges-dir", str(judges))
    assert (judges / "model.safetensors").is_file() and (judges / "judge.json").is_file()
    assert same["class-accuracy"]["mean"] >= 0.9 and same["class-accuracy"]["higher_is_better"]
    assert abs(same["fd[logmel-cnn]"]["mean"]) < 1e-3  # a set against itself
    lo, hi = same["fd[logmel-cnn]"]["ci95"]
    assert lo <= 1e-3 and hi < 1e-2  # clips drawn together on both sides: the interval holds the estimate
    assert "per_clip" not in same["fd[logmel-cnn]"] or not same["fd[logmel-cnn]"]["per_clip"]

    noise = tmp_path / "noise"
    noise.mkdir()
    g = torch.Generator().manual_seed(0)
    for wav in real.glob("*.wav"):
        sf.write(noise / wav.name, (0.1 * torch.randn(32000, generator=g)).numpy(), 16000)
    far = _score(labelled_set, noise, tmp_path / "noise-out", "--judges-dir", str(judges))  # the same judge
    assert far["fd[logmel-cnn]"]["mean"] > 10 * max(same["fd[logmel-cnn]"]["mean"], 1e-3)
    assert far["kl"]["mean"] > same["kl"]["mean"] + 0.1
    assert far["class-accuracy"]["mean"] < same["class-accuracy"]["mean"]


def test_metric_params_and_missing_judge_weights_are_one_line(labelled_set, tmp_path):
    done = vssflow("evaluate", "--generated", str(labelled_set / "clips"), "--manifest",
                   str(labelled_set / "manifest.jsonl"), "--metric-param", "fd-judge", "--out", str(tmp_path / "o"))
    assert done.returncode != 0 and "METRIC.KEY=VALUE" in done.stderr and "Traceback" not in done.stderr
    done = vssflow("evaluate", "--generated", str(labelled_set / "clips"), "--manifest",
                   str(labelled_set / "manifest.jsonl"), "--metrics", "class-accuracy,onset-f1",
                   "--out", str(tmp_path / "o2"), "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "skipped metric class-accuracy" in done.stdout and "judge_path" in done.stdout
