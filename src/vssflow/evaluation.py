"""Scoring generated audio: per-clip and set-level metrics, bootstrap confidence intervals, metrics.json/md.

    from vssflow.evaluation import evaluate, references_from_manifest
    result = evaluate("runs/x/generated", references_from_manifest("data/synth/test.jsonl"), out="runs/x/eval")
    result.metrics["onset-f1"].mean, result.metrics["onset-f1"].ci95

The generated side is a folder of `<id>.wav` (any rate, any channel count) or waveforms in memory; the
reference side is a folder of `<id>.wav` or a manifest whose rows give audio, video, transcript and labels.
Every waveform is read at each metric's own `sample_rate`, mono. Per-clip metrics (`Metric`) give one
number per clip; the reported mean is over clips and its 95% interval is a percentile bootstrap over clips.
Set-level metrics (`SetMetric`: FD, KID, IS) give one number per set; their interval resamples the feature
rows of each side. Reference-side set features are cached as safetensors under `cache_dir`, keyed by the
metric's `feature_key()` and the clip id (and invalidated when the reference file changes).

`vssflow evaluate` (cli/evaluate.py), `vssflow ablate` and `vssflow demo` all score through `evaluate`.

Under torchrun the batches are dealt out (batch k to rank k mod world, `vssflow.core.sharding`): each rank
scores its own clips and computes their set features, and rank 0 gathers them in batch order, so the
result equals a one-process run's; the other ranks return None.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vssflow.core.errors import VssflowError
from vssflow.core.sharding import Shard, process_group

log = logging.getLogger("vssflow.evaluate")

BOOTSTRAP_SAMPLES = 1000
SET_BOOTSTRAP_SAMPLES = 200  # set scores (FD with a matrix square root) cost more than a mean
BOOTSTRAP_SEED = 0


class EvaluationError(VssflowError):
    """A problem with the inputs of an evaluation (missing files, ids that do not match, unknown metric)."""


@dataclass
class Reference:
    """The reference side of one clip: its audio (window within the file), labels and what generated it."""

    clip_id: str
    audio: Path | None = None
    start: float = 0.0
    end: float | None = None
    labels: dict[str, Any] = field(default_factory=dict)
    group: str = ""  # family or task, for per-group summaries

    def read(self, sample_rate: int) -> Tensor:
        """The reference waveform (S,) at `sample_rate`, mono."""
        from vssflow.core.media import read_audio

        if self.audio is None:
            raise EvaluationError(f"clip {self.clip_id!r}: no reference audio")
        wav, _ = read_audio(self.audio, sample_rate, mono=True, start=self.start, end=self.end)
        return wav


def references_from_manifest(path: str | Path, split: str | None = None) -> dict[str, Reference]:
    """Reference clips of a manifest: audio window, labels file + transcript, video and speaker paths."""
    from vssflow.core.manifest import read_manifest

    refs = {}
    for rec in read_manifest(path, split=split):
        labels: dict[str, Any] = {}
        if rec.labels is not None:
            try:
                labels.update(json.loads(Path(rec.labels).read_text()))
            except (OSError, ValueError) as exc:
                raise EvaluationError(f"{rec.where}: labels {rec.labels}: unreadable ({exc})") from None
        if rec.transcript:
            labels["transcript"] = rec.transcript
        if rec.video is not None:
            labels["video"] = str(rec.video)
        if rec.speaker is not None:
            labels["speaker_reference"] = str(rec.speaker)
        if rec.speech is not None:
            labels.setdefault("speech", list(rec.speech))
        group = str((rec.meta or {}).get("family") or rec.task)
        refs[rec.id] = Reference(rec.id, rec.audio_path, rec.start, rec.end, labels, group)
    return refs


def references_from_dir(folder: str | Path) -> dict[str, Reference]:
    """Reference clips from a folder of `<id>.wav` (no labels)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: reference folder not found")
    return {p.stem: Reference(p.stem, p) for p in sorted(folder.glob("*.wav"))}


def generated_from_dir(folder: str | Path) -> dict[str, Path]:
    """`<id>.wav` files of a folder of generated audio."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: generated folder not found")
    found = {p.stem: p for p in sorted(folder.glob("*.wav"))}
    if not found:
        raise EvaluationError(f"{folder}: no <id>.wav files; point --generated at the folder `vssflow generate` wrote")
    return found


# ---------------------------------------------------------------------------------------------------------
# statistics


def bootstrap_mean_ci(values: Sequence[float], samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED,
                      ) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of `values` (resampling clips with replacement)."""
    x = torch.as_tensor(list(values), dtype=torch.float64)
    if x.numel() == 0:
        return (math.nan, math.nan)
    if x.numel() == 1:
        return (float(x[0]), float(x[0]))
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, x.numel(), (samples, x.numel()), generator=gen)
    means = x[idx].mean(dim=1)
    return (float(torch.quantile(means, 0.025)), float(torch.quantile(means, 0.975)))


def bootstrap_set_ci(score: Callable[[Tensor, Tensor | None], float], generated: Tensor, reference: Tensor | None,
                     samples: int = SET_BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED, paired: bool = False,
                     ) -> tuple[float, float]:
    """95% percentile-bootstrap interval of a set score over clips.

    paired (row i of both sides is the same clip): the same clips are drawn on both sides, so two identical
    sets score exactly as they do unresampled (FD 0); otherwise each side's rows are resampled on their own.
    """
    paired = paired and reference is not None and reference.shape[0] == generated.shape[0]
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(samples):
        idx = torch.randint(0, generated.shape[0], (generated.shape[0],), generator=gen)
        g = generated[idx]
        if reference is None:
            r = None
        elif paired:
            r = reference[idx]
        else:
            r = reference[torch.randint(0, reference.shape[0], (reference.shape[0],), generator=gen)]
        value = float(score(g, r))
        if math.isfinite(value):
            values.append(value)
    if not values:
        return (math.nan, math.nan)
    v = torch.tensor(values, dtype=torch.float64)
    return (float(torch.quantile(v, 0.025)), float(torch.quantile(v, 0.975)))


# ---------------------------------------------------------------------------------------------------------
# metrics


@dataclass
class MetricResult:
    """One metric over a set of clips. `per_clip` is empty for set-level metrics."""

    mean: float
    ci95: tuple[float, float]
    n: int
    higher_is_better: bool
    per_clip: dict[str, float] = field(default_factory=dict)
    kind: str = "clip"  # "clip" or "set"

    def to_dict(self) -> dict[str, Any]:
        """The metrics.json entry."""
        out: dict[str, Any] = {"mean": _num(self.mean), "ci95": [_num(self.ci95[0]), _num(self.ci95[1])],
                               "n": self.n, "higher_is_better": self.higher_is_better}
        if self.kind == "clip":
            out["per_clip"] = {k: _num(v) for k, v in self.per_clip.items()}
        return out


@dataclass
class EvaluationResult:
    """Metric name -> result, plus the metrics that were skipped and why."""

    metrics: dict[str, MetricResult]
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """metrics.json: {metric: {mean, ci95, n, higher_is_better, per_clip}}."""
        return {name: r.to_dict() for name, r in self.metrics.items()}


def _num(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _is_set_metric(obj: Any) -> bool:
    from vssflow.core.interfaces import SetMetric

    return isinstance(obj, SetMetric)


def _availability(name: str, params: Mapping[str, Any] | None = None) -> str | None:
    """None when the metric can be built here, else why not (one line naming the missing package and extra).

    Built-in metrics answer through `vssflow.plugins.metrics.available(name) -> (ok, why)`; a third-party
    metric is probed by building it (a missing package then surfaces as the factory's error).
    """
    from vssflow.plugins.metrics import available

    try:
        ok, why = available(name, dict(params or {}))
    except Exception as exc:  # an availability probe must not stop an evaluation
        return f"{type(exc).__name__}: {exc}"
    return None if ok else why


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and its chain of causes."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def present_label_keys(labels: Iterable[Mapping[str, Any] | None]) -> set[str]:
    """Every label key that some clip carries."""
    return {key for row in labels if row for key, value in row.items() if value not in (None, "", [])}


def _missing_labels(metric: Any, has_labels: bool | set[str], has_reference: bool) -> str | None:
    """Why a metric that needs labels cannot run on these clips (its first `label_keys` entry is the one it
    cannot do without: events, class, transcript, video), or None."""
    if not getattr(metric, "needs_labels", False):
        return None
    if has_reference and getattr(metric, "reference_replaces_labels", False):
        return None
    if isinstance(has_labels, bool):
        return None if has_labels else "needs labels (pass --manifest with labels)"
    keys = tuple(getattr(metric, "label_keys", ()))
    if not keys:
        return None if has_labels else "needs labels (pass --manifest with labels)"
    alternatives = {keys[0], keys[0] + "es", keys[0] + "s"}  # class / classes, event / events
    if alternatives & has_labels:
        return None
    return f"needs labels with {keys[0]!r} (a manifest whose rows give it)"


def parse_metric_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """`name` or `name[judge]` (FD over another judge, say) -> (registered metric name, params)."""
    spec = spec.strip()
    if spec.endswith("]") and "[" in spec:
        base, judge = spec[:-1].split("[", 1)
        if not base or not judge:
            raise EvaluationError(f"--metrics {spec!r}: write NAME or NAME[JUDGE], e.g. fd[logmel-cnn]")
        return base, {"judge": judge}
    return spec, {}


def build_metrics(names: Sequence[str] | None, has_reference: bool, has_labels: bool | set[str],
                  params: Mapping[str, Mapping[str, Any]] | None = None,
                  ) -> tuple[dict[str, Any], dict[str, str]]:
    """Construct the metrics to run: `names`, or every registered metric whose inputs exist here.

    A name may carry its judge (`fd[logmel-cnn]`); `params` maps a name (as written, or the registered
    name) to more constructor params (`{"kl": {"judge_path": "judges/logmel-cnn"}}`). Returns (name ->
    metric object, name -> reason skipped). Unknown names are an EvaluationError; a metric whose optional
    package or local weights are missing, or that needs reference audio or labels the data lacks, is skipped.
    """
    from vssflow.core.errors import ComponentNotFoundError, RecipeError
    from vssflow.registry import create, list_components

    explicit = names is not None
    if names is None:
        names = [spec.name for spec in list_components("metric")]
    params = params or {}
    metrics: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name in names:
        base, kwargs = parse_metric_spec(name)
        kwargs = {**kwargs, **params.get(base, {}), **(params.get(name, {}) if name != base else {})}
        reason = _availability(base, kwargs)
        if reason is None:
            try:
                metric = create("metric", base, **kwargs)
            except ComponentNotFoundError as exc:
                raise EvaluationError(f"--metrics: {exc}") from None
            except RecipeError as exc:  # a required param (a local checkpoint path, say) has no default
                if explicit:
                    raise EvaluationError(f"--metrics {name}: {exc}") from None
                reason = f"needs params the defaults lack ({exc})"
            except Exception as exc:  # noqa: BLE001 - the registry wraps a factory's failure in one line
                missing = next((e for e in _causes(exc) if isinstance(e, ImportError)), None)
                if missing is None:
                    raise
                reason = f"needs the {missing.name or 'optional'} package (pip install 'vssflow[eval]')"
        if reason is not None:
            skipped[name] = reason
            continue
        if metric.needs_reference and not has_reference:
            skipped[name] = "needs reference audio (pass --reference DIR or a manifest with audio)"
        elif (why := _missing_labels(metric, has_labels, has_reference)) is not None:
            skipped[name] = why
        else:
            metrics[name] = metric
    if explicit and not metrics:
        raise EvaluationError("none of the metrics asked for can run here: "
                              + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    return metrics, skipped


def fit_judges(references: str | Path | Mapping[str, Reference], out_dir: str | Path, *, epochs: int = 30,
               seed: int = 0) -> Path:
    """Train the `logmel-cnn` classifier judge on reference audio and its class labels; returns its folder.

    A manifest's `train` split is used when it has one (else every clip). Classes come from each clip's
    labels `class` (a name or a list) or `classes` (the synthetic benchmark's key). An existing judge in
    `out_dir` is reused, so reruns score with the same judge.
    """
    from vssflow.plugins.judges import fit_classifier_judge

    out_dir = Path(out_dir)
    if (out_dir / "judge.json").is_file() and (out_dir / "model.safetensors").is_file():
        return out_dir
    if isinstance(references, (str, Path)):
        path = Path(references)
        if not (path.suffix == ".jsonl" and path.is_file()):
            raise EvaluationError(f"--fit-judges needs a manifest with class labels, got {path}")
        refs = references_from_manifest(path, split="train") or references_from_manifest(path)
    else:
        refs = dict(references)
    wavs, classes = [], []
    for ref in refs.values():
        truth = ref.labels.get("class", ref.labels.get("classes")) if ref.labels else None
        if ref.audio is None or not truth:
            continue
        wavs.append(ref.read(16000))
        classes.append(truth)
    names = {c for truth in classes for c in ([truth] if isinstance(truth, str) else truth)}
    if len(names) < 2:
        raise EvaluationError("--fit-judges needs reference audio labelled with at least two classes "
                              f"(labels 'class' or 'classes'); found {len(wavs)} labelled clips, classes {sorted(names)}")
    fit_classifier_judge(wavs, classes, out_dir, epochs=epochs, seed=seed)
    return out_dir


FITTED_JUDGE_METRICS = ("class-accuracy", "kl", "is", "fd[logmel-cnn]")


def list_metric_names() -> list[str]:
    """Every registered metric's name."""
    from vssflow.registry import list_components

    return [spec.name for spec in list_components("metric")]


def fitted_judge_params(judge_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Params that point the classifier-judge metrics at a fitted judge folder."""
    path = str(judge_dir)
    return {"class-accuracy": {"judge_path": path}, "kl": {"judge_path": path}, "is": {"judge_path": path},
            "fd[logmel-cnn]": {"judge_path": path}}


# ---------------------------------------------------------------------------------------------------------
# waveform access


class _Waves:
    """The clips of one batch, each read once per sample rate (generated: path or in-memory (wav, rate))."""

    def __init__(self, generated: Mapping[str, Any], references: Mapping[str, Reference]):
        self.generated = generated
        self.references = references
        self._cache: dict[tuple[str, str, int], Tensor] = {}

    def clear(self) -> None:
        """Forget the batch's waveforms (memory stays one batch, whatever the set's size)."""
        self._cache.clear()

    def gen(self, clip_id: str, rate: int) -> Tensor:
        key = ("gen", clip_id, rate)
        if key not in self._cache:
            item = self.generated[clip_id]
            if isinstance(item, (str, Path)):
                from vssflow.core.media import read_audio

                wav, _ = read_audio(item, rate, mono=True)
            else:
                wav, src_rate = item
                wav = torch.as_tensor(wav, dtype=torch.float32)
                if wav.dim() > 1:
                    wav = wav.mean(0)
                if src_rate != rate:
                    from vssflow.core.media import resample

                    wav = resample(wav, src_rate, rate)
            self._cache[key] = wav
        return self._cache[key]

    def ref(self, clip_id: str, rate: int) -> Tensor | None:
        ref = self.references.get(clip_id)
        if ref is None or ref.audio is None:
            return None
        key = ("ref", clip_id, rate)
        if key not in self._cache:
            self._cache[key] = ref.read(rate)
        return self._cache[key]


def _pad(wavs: list[Tensor]) -> tuple[Tensor, Tensor]:
    lengths = torch.tensor([w.shape[-1] for w in wavs])
    out = torch.zeros(len(wavs), int(lengths.max()))
    for i, w in enumerate(wavs):
        out[i, : w.shape[-1]] = w
    return out, lengths


def _score_batch(metric: Any, part: list[str], waves: _Waves) -> dict[str, float]:
    """One per-clip metric on one batch of clips: {id: value} (non-finite values left out)."""
    rate = int(metric.sample_rate)
    gens, refs, labels = [], [], []
    for cid in part:
        g = waves.gen(cid, rate)
        r = waves.ref(cid, rate)
        if r is not None:  # score the common span: a generated clip may be a few samples longer or shorter
            n = min(g.shape[-1], r.shape[-1])
            g, r = g[:n], r[:n]
        gens.append(g)
        refs.append(r)
        ref = waves.references.get(cid)
        labels.append(dict(ref.labels) if ref is not None else {})
    keep = [i for i, r in enumerate(refs) if r is not None or not metric.needs_reference]
    if not keep:
        return {}
    gen_b, lengths = _pad([gens[i] for i in keep])
    ref_b = _pad([refs[i] for i in keep])[0] if all(refs[i] is not None for i in keep) else None
    values = metric(gen_b, ref_b, labels=[labels[i] for i in keep], lengths=lengths)
    return {part[i]: float(v) for i, v in zip(keep, values.reshape(-1).tolist(), strict=True) if math.isfinite(v)}


# ---------------------------------------------------------------------------------------------------------
# set-level features and their cache


def _safe(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:80]
    return f"{slug}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def default_cache_dir() -> Path:
    """Where reference-side set features are cached: $VSSFLOW_CACHE/eval-features or ~/.cache/vssflow/..."""
    root = os.environ.get("VSSFLOW_CACHE") or Path.home() / ".cache" / "vssflow"
    return Path(root) / "eval-features"


class _FeatureCache:
    """Reference-side features of one set metric: one safetensors file per clip under its feature_key().

    A file records the reference it came from (resolved path, size, mtime, window); a changed reference
    is featurised again. Files are written atomically, so a killed evaluation leaves no torn rows.
    """

    def __init__(self, metric: Any, root: Path | None):
        self.key = metric.feature_key()
        self.folder = (root or default_cache_dir()) / _safe(self.key)

    @staticmethod
    def stamp(ref: Reference) -> str:
        stat = Path(ref.audio).stat()
        return f"{Path(ref.audio).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{ref.start}|{ref.end}"

    def _path(self, clip_id: str) -> Path:
        return self.folder / f"{_safe(clip_id)}.safetensors"

    def get(self, ref: Reference) -> Tensor | None:
        from safetensors import safe_open

        path = self._path(ref.clip_id)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), "pt") as fh:
                if (fh.metadata() or {}).get("source") != self.stamp(ref):
                    return None
                return fh.get_tensor("features")
        except Exception:  # a foreign or unreadable file is recomputed
            return None

    def put(self, ref: Reference, row: Tensor) -> None:
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(ref.clip_id)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        save_file({"features": row.contiguous()}, str(tmp),
                  metadata={"source": self.stamp(ref), "clip_id": ref.clip_id, "feature_key": self.key})
        tmp.replace(path)


class _SetState:
    """A set metric's feature rows, gathered batch by batch."""

    def __init__(self, metric: Any, cache_dir: Path | None):
        self.metric = metric
        self.cache = _FeatureCache(metric, cache_dir) if metric.needs_reference else None
        self.generated: list[Tensor] = []
        self.reference_blocks: list[list[Tensor]] = []  # the reference rows of each batch, in batch order
        self.paired = True  # row i of both sides is one clip while every generated clip has its reference

    def add(self, part: list[str], waves: _Waves) -> None:
        rate = int(self.metric.sample_rate)
        self.generated.append(self.metric.features([waves.gen(cid, rate) for cid in part]).detach().float().cpu())
        if self.cache is None:
            self.reference_blocks.append([])
            return
        rows: dict[str, Tensor] = {}
        missing = []
        for cid in part:
            ref = waves.references.get(cid)
            if ref is None or ref.audio is None:
                continue
            row = self.cache.get(ref)
            if row is None:
                missing.append(cid)
            else:
                rows[cid] = row
        if missing:
            feats = self.metric.features([waves.ref(cid, rate) for cid in missing]).detach().float().cpu()
            for cid, row in zip(missing, feats, strict=True):
                rows[cid] = row
                self.cache.put(waves.references[cid], row)
        block = [rows[cid] for cid in part if cid in rows]
        self.reference_blocks.append(block)
        self.paired = self.paired and all(cid in rows for cid in part)

    def result(self, name: str, n: int) -> MetricResult:
        generated = torch.cat(self.generated)
        reference = None
        if self.cache is not None:
            rows = [row for block in self.reference_blocks for row in block]
            if not rows:
                raise EvaluationError(f"{name}: no reference audio for any clip")
            reference = torch.stack(rows)
        value = float(self.metric.score(generated, reference))
        ci = bootstrap_set_ci(self.metric.score, generated, reference, paired=self.paired)
        return MetricResult(value, ci, n, bool(self.metric.higher_is_better), kind="set")


def _gather_shards(shard: Any, built: Mapping[str, Any], per_clip: dict[str, dict[str, float]],
                   sets: dict[str, _SetState], skipped: dict[str, str]) -> bool:
    """Bring every rank's scores to rank 0 (in place); True on rank 0.

    Per-clip values are merged by clip id; set features are put back in batch order (batch k came from rank
    k mod world, and each rank kept its batches in order), so rank 0 holds exactly the rows one process
    would. A metric that one rank had to skip is skipped for all, as one process skips it at its first
    failing batch. The objects go through the job's own gloo group, nothing is read from a file."""
    import torch.distributed as dist

    mine = {
        "per_clip": per_clip,
        "sets": {n: (st.generated, st.reference_blocks, st.paired) for n, st in sets.items()},
        "skipped": skipped,
    }
    with process_group(shard):
        parts: list[Any] = [None] * shard.world if shard.is_main else []
        dist.gather_object(mine, parts if shard.is_main else None, dst=0)
    if not shard.is_main:
        return False
    for part in parts:
        for name, reason in part["skipped"].items():
            skipped.setdefault(name, reason)
    for name in list(per_clip):
        for part in parts[1:]:
            per_clip[name].update(part["per_clip"].get(name, {}))
    for name, state in sets.items():
        if name in skipped:
            continue
        ranked = [part["sets"][name] for part in parts]
        generated, reference, paired = [], [], True
        for k in range(sum(len(g) for g, _, _ in ranked)):  # batch k: the (k // world)-th of rank k % world
            g, r, p = ranked[k % shard.world]
            generated.append(g[k // shard.world])
            reference.append(r[k // shard.world])
            paired = paired and p
        state.generated, state.reference_blocks, state.paired = generated, reference, paired
    return True


# ---------------------------------------------------------------------------------------------------------
# the evaluation


def evaluate(
    generated: str | Path | Mapping[str, Any],
    references: str | Path | Mapping[str, Reference] | None,
    metrics: Sequence[str] | Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    ids: Sequence[str] | None = None,
    batch_size: int = 16,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    title: str = "Evaluation",
    metric_params: Mapping[str, Mapping[str, Any]] | None = None,
    skip_failing: bool = False,
) -> EvaluationResult | None:
    """Score generated clips against references; write OUT/metrics.json and OUT/metrics.md when `out` is given.

    generated: a folder of `<id>.wav`, or {id: path} / {id: (wav tensor, sample_rate)}.
    references: a folder of `<id>.wav`, a manifest (.jsonl), {id: Reference}, or None (reference-free metrics).
    metrics: names, or {name: metric object} already built; None = every registered metric that can run.
    ids: score only these clips (default: every generated clip).
    skip_failing: a metric that cannot score these clips (WER on clips without a transcript) is skipped with
    one line even when named; by default only metrics chosen by default are skipped so, and named ones fail.
    Clips are read `batch_size` at a time and every metric scores that batch, so memory stays one batch.
    Under torchrun every rank scores its batches and rank 0 returns the whole result (and writes `out`); the
    other ranks return None.
    """
    from tqdm import tqdm

    gen = generated_from_dir(generated) if isinstance(generated, (str, Path)) else dict(generated)
    if references is None:
        refs: dict[str, Reference] = {}
    elif isinstance(references, (str, Path)):
        path = Path(references)
        if path.is_dir():
            refs = references_from_dir(path)
        elif path.suffix == ".jsonl" and path.is_file():
            refs = references_from_manifest(path)
        else:
            raise EvaluationError(f"{path}: reference must be a folder of <id>.wav or a .jsonl manifest")
    else:
        refs = dict(references)
    chosen = list(ids) if ids is not None else sorted(gen)
    missing_gen = [cid for cid in chosen if cid not in gen]
    if missing_gen:
        raise EvaluationError(f"no generated audio for clip {missing_gen[0]!r} ({len(missing_gen)} missing)")
    if refs:
        unmatched = [cid for cid in chosen if cid not in refs]
        if unmatched:
            raise EvaluationError(
                f"generated clip {unmatched[0]!r} has no reference ({len(unmatched)} of {len(chosen)} unmatched); "
                "the generated files must be named <id>.wav with the reference's ids")
    if not chosen:
        raise EvaluationError("no clips to evaluate")
    if batch_size < 1:
        raise EvaluationError(f"batch size must be >= 1, got {batch_size}")
    has_reference = bool(refs) and all(refs[cid].audio is not None for cid in chosen)
    has_labels = present_label_keys(refs[cid].labels for cid in chosen) if refs else set()
    explicit = metrics is not None and not skip_failing
    if isinstance(metrics, Mapping):
        built, skipped = dict(metrics), {}
    else:
        built, skipped = build_metrics(list(metrics) if metrics is not None else None, has_reference, has_labels,
                                       metric_params)
    shard = Shard.from_env()
    for name, reason in skipped.items():
        if shard.is_main:
            print(f"skipped metric {name}: {reason}", flush=True)
    waves = _Waves(gen, refs)
    cache = Path(cache_dir) if cache_dir is not None else None
    per_clip: dict[str, dict[str, float]] = {n: {} for n, m in built.items() if not _is_set_metric(m)}
    sets = {n: _SetState(m, cache) for n, m in built.items() if _is_set_metric(m)}
    batches = shard.take([chosen[s : s + batch_size] for s in range(0, len(chosen), batch_size)])
    with tqdm(total=sum(map(len, batches)), disable=not progress, desc="evaluate", unit="clip",
              dynamic_ncols=True) as bar:
        for part in batches:
            for name, metric in list(built.items()):
                try:
                    if name in sets:
                        sets[name].add(part, waves)
                    else:
                        per_clip[name].update(_score_batch(metric, part, waves))
                except (VssflowError, ValueError, RuntimeError) as exc:
                    why = f"failed on clips {part[0]}..{part[-1]}: {' '.join(str(exc).split())}"
                    if explicit:  # asked for by name: the user must hear why it cannot score these clips
                        raise EvaluationError(f"metric {name}: {why}") from None
                    skipped[name] = why  # a default metric that does not apply here (speech metrics on sound)
                    print(f"skipped metric {name}: {why}", flush=True)
                    del built[name]
                    sets.pop(name, None)
                    per_clip.pop(name, None)
            waves.clear()
            bar.update(len(part))
    if shard.sharded:
        if not _gather_shards(shard, built, per_clip, sets, skipped):
            return None
        for name in skipped:
            built.pop(name, None)
    results: dict[str, MetricResult] = {}
    for name, metric in built.items():
        if name in sets:
            results[name] = sets[name].result(name, len(chosen))
            continue
        scores = {cid: per_clip[name][cid] for cid in chosen if cid in per_clip[name]}
        values = list(scores.values())
        mean = sum(values) / len(values) if values else math.nan
        results[name] = MetricResult(mean, bootstrap_mean_ci(values), len(values), bool(metric.higher_is_better),
                                     scores)
    result = EvaluationResult(results, skipped)
    if out is not None:
        write_metrics(out, result, title=title)
    return result


def write_metrics(out: str | Path, result: EvaluationResult, title: str = "Evaluation") -> tuple[Path, Path]:
    """OUT/metrics.json and OUT/metrics.md (written atomically)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "metrics.json", out / "metrics.md"
    tmp = out / ".metrics.json.tmp"
    tmp.write_text(json.dumps(result.to_dict(), indent=2))
    tmp.replace(json_path)
    lines = [f"# {title}", "", "| metric | mean | 95% CI | n | better |", "|---|---|---|---|---|"]
    for name, r in result.metrics.items():
        kind = " (set)" if r.kind == "set" else ""
        lines.append(f"| {name}{kind} | {_fmt(r.mean)} | [{_fmt(r.ci95[0])}, {_fmt(r.ci95[1])}] | {r.n} | "
                     f"{'higher' if r.higher_is_better else 'lower'} |")
    if result.skipped:
        lines += ["", "Skipped:", ""] + [f"- {name}: {why}" for name, why in result.skipped.items()]
    lines += ["", "Per-clip metrics: mean over clips, 95% percentile bootstrap over clips "
              f"({BOOTSTRAP_SAMPLES} resamples, seed {BOOTSTRAP_SEED}). Set metrics: 95% bootstrap over the "
              f"feature rows of each side ({SET_BOOTSTRAP_SAMPLES} resamples).", ""]
    tmp = out / ".metrics.md.tmp"
    tmp.write_text("\n".join(lines))
    tmp.replace(md_path)
    return json_path, md_path


def _fmt(x: float) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.4g}"


def generate_and_evaluate(
    checkpoint: str | Path,
    manifest: str | Path,
    out: str | Path,
    metrics: Sequence[str] | None = None,
    *,
    ids: Sequence[str] | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    batch_size: int = 8,
    device: str | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    metric_params: Mapping[str, Mapping[str, Any]] | None = None,
    adapters: Sequence[tuple[str | Path, float]] = (),
) -> EvaluationResult | None:
    """Generate every clip of `manifest` (or `ids`) with a checkpoint (and adapters [(path, scale)]) into
    OUT/generated, then score it.

    Under torchrun each rank generates its blocks of `batch_size` clips (the batches of one process, so the
    audio is the same), then the ranks score the whole set sharded in the same blocks (`evaluate`); rank 0
    returns the result, the other ranks None."""
    from vssflow.core.media import write_audio
    from vssflow.core.sharding import Shard, barrier, process_group, rank_device
    from vssflow.generation import load_pipeline, requests_from_manifest

    requests = requests_from_manifest(manifest)
    if ids is not None:
        wanted = set(ids)
        requests = [r for r in requests if r.clip_id in wanted]
    shard = Shard.from_env()
    pipe = load_pipeline(checkpoint, device=rank_device(device, shard), adapters=adapters)
    with process_group(shard):
        mine = shard.take(requests, batch_size)
        wavs = pipe.generate(mine, steps=steps, guidance=guidance, seed=seed, batch_size=batch_size,
                             progress=progress and shard.is_main)
        gen_dir = Path(out) / "generated"
        for request, wav in zip(mine, wavs, strict=True):
            write_audio(gen_dir / f"{request.clip_id}.wav", wav, pipe.sample_rate)
        barrier(shard)  # every rank's clips are written before any is scored
        return evaluate(gen_dir, manifest, metrics, out=out, ids=[r.clip_id for r in requests],
                        batch_size=batch_size, cache_dir=cache_dir, progress=progress and shard.is_main,
                        metric_params=metric_params)
