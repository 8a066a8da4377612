"""FD, KID, IS and KL: hand-computable cases, and the classifier judge trained by `fit_classifier_judge`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vssflow.plugins.metrics.distribution import (
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    kl_softmax,
    mmd2_polynomial,
)
from vssflow.registry import create

from .conftest import knocks, tone


def test_fd_of_identical_sets_is_zero_and_a_shift_costs_its_squared_norm():
    x = np.random.RandomState(0).randn(200, 6) @ np.random.RandomState(1).randn(6, 6)
    assert abs(frechet_distance(x, x)) < 1e-8
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0, 1.0])
    assert frechet_distance(x + shift, x) == pytest.approx(float(shift @ shift), abs=1e-6)


def test_fd_matches_the_scipy_matrix_square_root_definition():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.RandomState(3)
    a, b = rng.randn(50, 5), 1.5 * rng.randn(60, 5) + 0.3
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy_linalg.sqrtm(s_a @ s_b).real
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a + s_b - 2 * root)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


def test_kid_hand_computed_case_and_ranking():
    # k(a, b) = (a b + 1)^3 in 1-D: xx = k(0,1) = 1, yy = 1, xy = (1 + 1 + 1 + 8) / 4 -> 2 - 5.5 = -3.5
    x = np.array([[0.0], [1.0]])
    assert mmd2_polynomial(x, x) == pytest.approx(-3.5)
    rng = np.random.RandomState(0)
    a, b, c = rng.randn(300, 4), rng.randn(300, 4), rng.randn(300, 4) + 1.0
    same = kernel_inception_distance(a, b, subsets=20, subset_size=100)
    assert abs(same) < 0.05 < kernel_inception_distance(a, c, subsets=20, subset_size=100)
    assert kernel_inception_distance(a, c, subsets=20, subset_size=100) == kernel_inception_distance(
        a, c, subsets=20, subset_size=100)


def test_inception_score_counts_confident_distinct_classes():
    logits = 50.0 * torch.eye(4).repeat(5, 1)  # 20 confident clips spread evenly over 4 classes
    assert inception_score(logits, splits=1)[0] == pytest.approx(4.0, rel=1e-6)
    assert inception_score(torch.zeros(10, 4), splits=1)[0] == pytest.approx(1.0)
    assert inception_score(logits, splits=10)[0] == inception_score(logits, splits=10)[0]  # seeded shuffle


def test_kl_is_zero_for_identical_posteriors_and_hand_computable():
    logits = torch.randn(3, 5)
    assert kl_softmax(logits, logits).abs().max() < 1e-5
    ref, gen = torch.log(torch.tensor([[0.5, 0.5]])), torch.log(torch.tensor([[0.9, 0.1]]))
    expected = 0.5 * np.log(0.5 / (0.9 + 1e-6)) + 0.5 * np.log(0.5 / (0.1 + 1e-6))
    assert float(kl_softmax(gen, ref)[0]) == pytest.approx(expected, rel=1e-5)


def _classes(n_per_class: int, seed: int = 0):
    """Three sound classes: low tones, high tones, knocks (varied per clip)."""
    rng = np.random.RandomState(seed)
    wavs, labels = [], []
    for i in range(n_per_class):
        wavs.append(tone(1.0, 110 + 30 * rng.rand(), seed=i))
        labels.append("low")
        wavs.append(tone(1.0, 700 + 150 * rng.rand(), seed=i))
        labels.append("high")
        wavs.append(knocks(1.0, sorted(rng.uniform(0, 0.8, 3).tolist()), 1500 + 500 * rng.rand(), seed=i))
        labels.append("knock")
    return wavs, labels


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    wavs, labels = _classes(6)
    out = tmp_path_factory.mktemp("judge") / "logmel-cnn"
    from vssflow.plugins.judges import fit_classifier_judge

    summary = fit_classifier_judge(wavs, labels, out, epochs=12, batch_size=6, crop_s=0.8,
                                   channels=(8, 16, 32), seed=0)
    return out, summary


def test_fit_classifier_judge_saves_safetensors_and_json_and_learns_the_classes(fitted):
    out, summary = fitted
    assert (out / "model.safetensors").is_file()
    meta = json.loads((out / "judge.json").read_text())
    assert meta["classes"] == ["high", "knock", "low"] and meta["format"] == "vssflow-judge/logmel-cnn"
    judge = create("judge", "logmel-cnn", path=str(out))
    wavs, labels = _classes(3, seed=7)  # clips it never saw
    acc = create("metric", "class-accuracy", judge_path=str(out))
    batch = torch.stack(wavs)
    scores = acc(batch, labels=[{"class": c} for c in labels])
    assert scores.mean() == 1.0, summary["history"][-3:]
    assert judge.embed(batch).shape == (9, 32)


def test_fitting_is_reproducible(fitted, tmp_path):
    out, _ = fitted
    from vssflow.plugins.judges import fit_classifier_judge

    wavs, labels = _classes(6)
    fit_classifier_judge(wavs, labels, tmp_path / "again", epochs=12, batch_size=6, crop_s=0.8,
                         channels=(8, 16, 32), seed=0)
    a = create("judge", "logmel-cnn", path=str(out)).weights_hash()
    b = create("judge", "logmel-cnn", path=str(tmp_path / "again")).weights_hash()
    assert a == b


def test_classifier_metrics_over_the_fitted_judge(fitted):
    out, _ = fitted
    wavs, labels = _classes(4, seed=11)
    kl = create("metric", "kl", judge_path=str(out))
    batch = torch.stack(wavs)
    assert kl(batch, batch).abs().max() < 1e-5
    swapped = torch.stack(wavs[1:] + wavs[:1])  # every clip against one of another class
    assert kl(swapped, batch).min() > 0.5
    is_metric = create("metric", "is", judge_path=str(out), splits=1)
    feats = is_metric.features(wavs)
    one_class = is_metric.features([w for w, c in zip(wavs, labels, strict=True) if c == "low"])
    # three balanced classes, told apart: IS between 1 and 3, and above a single-class set's
    assert 1.0 <= is_metric.score(one_class, None) < is_metric.score(feats, None) <= 3.0 + 1e-6


def test_fd_with_the_fitted_judge_ranks_a_different_class_further(fitted):
    out, _ = fitted
    wavs, labels = _classes(8, seed=5)
    fd = create("metric", "fd", judge="logmel-cnn", judge_path=str(out))
    low = [w for w, c in zip(wavs, labels, strict=True) if c == "low"]
    knock = [w for w, c in zip(wavs, labels, strict=True) if c == "knock"]
    a, b, k = fd.features(low[:4]), fd.features(low[4:]), fd.features(knock[:4])
    assert fd.score(a, b) < fd.score(a, k)
    assert "logmel-cnn:1:16000:" in fd.feature_key()
    assert torch.equal(fd.features(low[:4]), a)  # same inputs, same features


def test_class_accuracy_rejects_classes_the_judge_does_not_know(fitted):
    out, _ = fitted
    acc = create("metric", "class-accuracy", judge_path=str(out))
    with pytest.raises(ValueError, match="not one of the judge's classes"):
        acc(tone(0.5, 200).unsqueeze(0), labels=[{"class": "violin"}])


def test_a_classifier_metric_without_its_judge_weights_says_how_to_get_them():
    from vssflow.core.errors import PluginError

    with pytest.raises(PluginError, match="needs judge_path: a folder written by fit_classifier_judge"):
        create("metric", "is").features([tone(0.5, 200)])


def test_feature_keys_change_with_the_judge_weights(fitted, tmp_path):
    from vssflow.plugins.judges.classifier import write_untrained

    out, _ = fitted
    write_untrained(tmp_path / "untrained", ["high", "knock", "low"], channels=(8, 16, 32))
    trained = create("metric", "fd", judge="logmel-cnn", judge_path=str(out)).feature_key()
    untrained = create("metric", "fd", judge="logmel-cnn", judge_path=str(tmp_path / "untrained")).feature_key()
    assert trained.split(":")[3] != untrained.split(":")[3]  # name:version:rate:weights-hash:output
    assert create("metric", "is", judge_path=str(out)).feature_key().endswith(":logits")
