"""`vssflow.evaluation` and `vssflow evaluate`: reading, resampling, labels, set metrics and their cache,
bootstrap intervals, metrics.json / metrics.md, skipped metrics, and the command's errors."""

from __future__ import annotations

import json
import math
import types
from pathlib import Path

import pytest
import torch

from tests.main_job.conftest import vssflow

SR = 16000


def clicks(times: list[float], seconds: float = 1.0, rate: int = SR, seed: int = 0) -> torch.Tensor:
    """Decaying tone bursts at `times` over faint noise."""
    gen = torch.Generator().manual_seed(seed)
    wav = 0.002 * torch.randn(int(seconds * rate), generator=gen)
    burst = int(0.03 * rate)
    for t in times:
        i = int(t * rate)
        wav[i : i + burst] += torch.linspace(0.8, 0.0, burst) * torch.sin(torch.arange(burst) * 2 * math.pi * 800 / rate)
    return wav


def write(path: Path, wav: torch.Tensor, rate: int = SR) -> Path:
    from vssflow.core.media import write_audio

    return write_audio(path, wav, rate)


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path, dict[str, list[float]]]:
    """Reference wavs at 16 kHz, and generated copies at 22.05 kHz stereo (same content, other format)."""
    from vssflow.core.media import resample

    times = {"a": [0.2, 0.6], "b": [0.3], "c": [0.1, 0.5, 0.8]}
    for cid, ts in times.items():
        ref = clicks(ts, seed=len(cid) + ord(cid))
        write(tmp_path / "ref" / f"{cid}.wav", ref)
        stereo = resample(ref, SR, 22050).repeat(2, 1).T.contiguous()  # (S, 2): soundfile's channel layout
        import soundfile

        (tmp_path / "gen").mkdir(exist_ok=True)
        soundfile.write(tmp_path / "gen" / f"{cid}.wav", stereo.numpy(), 22050)
    return tmp_path / "gen", tmp_path / "ref", times


def test_bootstrap_interval_is_reproducible_and_brackets_the_mean():
    from vssflow.evaluation import bootstrap_mean_ci

    values = [0.1, 0.4, 0.35, 0.8, 0.55, 0.2, 0.6]
    lo, hi = bootstrap_mean_ci(values)
    assert lo < sum(values) / len(values) < hi
    assert bootstrap_mean_ci(values) == (lo, hi)  # fixed seed: same numbers every time
    assert bootstrap_mean_ci([0.5] * 5) == (0.5, 0.5)
    wide = bootstrap_mean_ci(values[:3])
    assert hi - lo < wide[1] - wide[0] + 0.2  # more clips, no wider (loosely: few clips are noisy)
    assert all(math.isnan(x) for x in bootstrap_mean_ci([]))


def test_identical_audio_in_another_rate_and_layout_scores_as_identical(pair, tmp_path):
    from vssflow.evaluation import evaluate

    gen, ref, times = pair
    result = evaluate(gen, ref, ["mel-distance", "envelope-corr"], out=tmp_path / "out", progress=False)
    mel = result.metrics["mel-distance"]
    env = result.metrics["envelope-corr"]
    assert mel.n == 3 and set(mel.per_clip) == set(times)
    assert mel.mean < 0.2, "resampled + downmixed copy should match its reference"  # noise floor differs slightly
    assert env.mean > 0.98
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(data) == {"mel-distance", "envelope-corr"}
    entry = data["envelope-corr"]
    assert set(entry) == {"mean", "ci95", "n", "higher_is_better", "per_clip"}
    assert entry["higher_is_better"] is True and data["mel-distance"]["higher_is_better"] is False
    assert entry["ci95"][0] <= entry["mean"] <= entry["ci95"][1]
    md = (tmp_path / "out" / "metrics.md").read_text()
    assert "| envelope-corr |" in md and "95% CI" in md


def test_a_real_difference_shows_in_the_scores(pair, tmp_path):
    from vssflow.evaluation import evaluate

    gen, ref, times = pair
    noise = tmp_path / "noise"
    for cid in times:
        write(noise / f"{cid}.wav", 0.3 * torch.randn(SR, generator=torch.Generator().manual_seed(1)))
    same = evaluate(gen, ref, ["mel-distance"], progress=False).metrics["mel-distance"]
    other = evaluate(noise, ref, ["mel-distance"], progress=False).metrics["mel-distance"]
    assert same.ci95[1] < other.ci95[0]


def _manifest(tmp_path: Path, times: dict[str, list[float]]) -> Path:
    """A manifest whose rows give audio, video, transcript, speaker and a labels file."""
    from vssflow.core.media import write_video

    rows = []
    frames = torch.zeros(5, 16, 16, 3, dtype=torch.uint8).numpy()
    for cid, ts in times.items():
        clip = tmp_path / "clips"
        write(clip / f"{cid}.wav", clicks(ts, seed=len(cid) + ord(cid)))
        write_video(clip / f"{cid}.mp4", frames, 5.0)
        (clip / f"{cid}.json").write_text(json.dumps({"events": [{"time": t} for t in ts]}))
        rows.append({"id": cid, "task": "visualtts", "video": f"clips/{cid}.mp4", "audio": f"clips/{cid}.wav",
                     "transcript": "bin blue at f two now", "speaker": f"clips/{cid}.wav",
                     "labels": f"clips/{cid}.json", "meta": {"family": "visualtts"}})
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_labels_come_from_the_manifest_rows(pair, tmp_path):
    from vssflow.core.interfaces import Metric
    from vssflow.evaluation import evaluate

    gen, _, times = pair
    manifest = _manifest(tmp_path, times)
    seen: list[dict] = []

    class Recorder(Metric):
        higher_is_better = True
        needs_reference = False
        needs_labels = True
        sample_rate = 8000

        def __call__(self, generated, reference=None, labels=None, lengths=None):
            seen.extend(labels)
            assert generated.dim() == 2 and lengths is not None and int(lengths.max()) == 8000  # 1 s at 8 kHz
            return torch.tensor([float(len(lab["events"])) for lab in labels])

    result = evaluate(gen, manifest, {"events": Recorder()}, progress=False)
    assert result.metrics["events"].per_clip == {cid: float(len(ts)) for cid, ts in times.items()}
    assert {"events", "transcript", "video", "speaker_reference"} <= set(seen[0])
    assert seen[0]["transcript"] == "bin blue at f two now" and Path(seen[0]["video"]).is_file()
    onset = evaluate(gen, manifest, ["onset-f1"], progress=False).metrics["onset-f1"]
    assert onset.mean > 0.9  # the generated copies hit the labelled clicks


class MeanFeatureDistance:
    """A set metric for the tests: distance between the mean feature vectors (RMS, peak) of the two sets."""

    higher_is_better = False
    needs_reference = True
    sample_rate = 8000

    def __init__(self):
        self.calls = 0

    def features(self, wavs):
        self.calls += len(wavs)
        return torch.stack([torch.stack([w.pow(2).mean().sqrt(), w.abs().max()]) for w in wavs])

    def score(self, generated, reference):
        return float((generated.mean(0) - reference.mean(0)).norm())

    def feature_key(self):
        return f"mean-feature-distance/v1/{self.sample_rate}"


@pytest.fixture
def set_metric():
    from vssflow.core.interfaces import SetMetric

    cls = type("MeanFeatureDistanceMetric", (MeanFeatureDistance, SetMetric), {})
    return cls()


def test_set_metric_scores_sets_caches_reference_features_and_bootstraps(pair, tmp_path, set_metric):
    from vssflow.evaluation import evaluate

    gen, ref, times = pair
    cache = tmp_path / "cache"
    first = evaluate(gen, ref, {"mfd": set_metric}, out=tmp_path / "o1", cache_dir=cache, progress=False)
    r = first.metrics["mfd"]
    assert r.kind == "set" and r.n == 3 and r.mean < 0.01  # the same clips: (almost) no distance
    assert r.ci95[0] <= r.mean + 1e-9
    assert set_metric.calls == 6  # generated and reference features
    cached = list(cache.rglob("*.safetensors"))
    assert len(cached) == 3 and all("mean-feature-distance" in str(p.parent.name) for p in cached)
    data = json.loads((tmp_path / "o1" / "metrics.json").read_text())
    assert "per_clip" not in data["mfd"] and data["mfd"]["n"] == 3
    second = evaluate(gen, ref, {"mfd": set_metric}, cache_dir=cache, progress=False)
    assert set_metric.calls == 9  # only the generated side again: references came from the cache
    assert second.metrics["mfd"].mean == r.mean
    write(ref / "a.wav", clicks([0.5], seed=9))  # a changed reference file is featurised again
    evaluate(gen, ref, {"mfd": set_metric}, cache_dir=cache, progress=False)
    assert set_metric.calls == 13


def test_set_metric_separates_a_different_set(pair, tmp_path, set_metric):
    from vssflow.evaluation import evaluate

    gen, ref, times = pair
    loud = tmp_path / "loud"
    for i, cid in enumerate(times):
        write(loud / f"{cid}.wav", 0.5 * torch.randn(SR, generator=torch.Generator().manual_seed(i)))
    same = evaluate(gen, ref, {"mfd": set_metric}, cache_dir=tmp_path / "c", progress=False).metrics["mfd"]
    other = evaluate(loud, ref, {"mfd": set_metric}, cache_dir=tmp_path / "c", progress=False).metrics["mfd"]
    assert same.mean < other.ci95[0]


@pytest.fixture
def registry_with_extra_metrics():
    """The real registry plus a plugin whose metric needs a package that is not installed."""
    from vssflow.registry import get_registry, hookimpl, reset_registry

    def missing(**_):
        import vssflow_no_such_package  # noqa: F401

    plugin = types.SimpleNamespace(
        register_metrics=hookimpl(lambda register: register("needs-missing-package", missing)))
    get_registry().register_plugin(plugin, name="eval-runner-tests", distribution="tests")
    yield
    reset_registry()


def test_a_metric_whose_package_is_missing_is_skipped_with_one_line(pair, tmp_path, capsys,
                                                                    registry_with_extra_metrics):
    from vssflow.evaluation import evaluate

    gen, ref, _ = pair
    result = evaluate(gen, ref, None, progress=False)  # every registered metric that can run
    assert "needs-missing-package" in result.skipped and "mel-distance" in result.metrics
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "needs-missing-package" in ln]
    assert len(lines) == 1 and "vssflow_no_such_package" in lines[0] and "vssflow[eval]" in lines[0]


def test_default_metrics_skip_what_needs_a_reference_when_there_is_none(pair, tmp_path, capsys):
    from vssflow.evaluation import Reference, evaluate

    gen, _, times = pair
    refs = {cid: Reference(cid, None, labels={"events": [{"time": t} for t in ts]}) for cid, ts in times.items()}
    result = evaluate(gen, refs, None, progress=False)
    assert "onset-f1" in result.metrics and "mel-distance" in result.skipped
    assert "skipped metric mel-distance: needs reference audio" in capsys.readouterr().out


def test_cli_writes_metrics_and_user_errors_are_one_line(pair, tmp_path):
    gen, ref, _ = pair
    out = tmp_path / "out"
    done = vssflow("evaluate", "--generated", str(gen), "--reference", str(ref), "--metrics", "mel-distance,onset-f1",
                   "--out", str(out), "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    assert set(json.loads((out / "metrics.json").read_text())) == {"mel-distance", "onset-f1"}
    assert "metrics.json" in done.stdout
    stray = tmp_path / "stray"
    stray.mkdir()
    for p in gen.glob("*.wav"):
        (stray / p.name).write_bytes(p.read_bytes())
    (stray / "stray.wav").write_bytes((gen / "a.wav").read_bytes())  # an id the references do not have
    for args, expect in [
        (["--generated", str(stray), "--reference", str(ref)], "'stray' has no reference"),
        (["--generated", str(tmp_path / "nowhere"), "--reference", str(ref)], "generated folder not found"),
        (["--generated", str(gen), "--reference", str(ref), "--metrics", "mel-distanse"], "mel-distance"),
        (["--checkpoint", str(tmp_path)], "--checkpoint needs --manifest"),
        (["--generated", str(gen)], "exactly one of --reference"),
    ]:
        done = vssflow("evaluate", *args, "--out", str(tmp_path / "bad"), "--no-progress")
        assert done.returncode != 0
        err = done.stderr.strip().splitlines()
        assert len(err) == 1 and expect in err[0] and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "bad" / "metrics.json").exists()


def test_cli_generates_from_a_checkpoint_then_scores(micro_checkpoint, synth_root, tmp_path):
    manifest = synth_root / "manifest.jsonl"
    out = tmp_path / "scored"
    done = vssflow("evaluate", "--checkpoint", str(micro_checkpoint), "--manifest", str(manifest),
                   "--metrics", "onset-f1,mel-distance", "--out", str(out), "--steps", "2", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    ids = [json.loads(line)["id"] for line in manifest.read_text().splitlines()]
    assert sorted(p.stem for p in (out / "generated").glob("*.wav")) == sorted(ids)
    data = json.loads((out / "metrics.json").read_text())
    assert set(data["mel-distance"]["per_clip"]) == set(ids)


def test_scores_do_not_depend_on_the_batch_size(pair, tmp_path, set_metric):
    from vssflow.evaluation import evaluate

    gen, ref, times = pair
    write(gen / "a.wav", clicks(times["a"], seconds=0.7, seed=3))  # a shorter clip: padded within a batch
    metrics = {"mfd": set_metric}
    one = evaluate(gen, ref, ["mel-distance", "onset-f1", "envelope-corr"], batch_size=1, progress=False)
    many = evaluate(gen, ref, ["mel-distance", "onset-f1", "envelope-corr"], batch_size=16, progress=False)
    for name in one.metrics:
        # padding changes the mel frames at a short clip's very end by ~1e-4 relative, nothing more
        assert one.metrics[name].per_clip == pytest.approx(many.metrics[name].per_clip, rel=1e-3, abs=1e-5), name
    s1 = evaluate(gen, ref, metrics, batch_size=1, cache_dir=tmp_path / "c1", progress=False).metrics["mfd"]
    s16 = evaluate(gen, ref, metrics, batch_size=16, cache_dir=tmp_path / "c2", progress=False).metrics["mfd"]
    assert s1.mean == pytest.approx(s16.mean, abs=1e-6)
