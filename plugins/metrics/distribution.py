"""Distribution and classifier metrics over a judge: FD, KID, IS (set level); KL, class accuracy (per clip).

Definitions (features are judge embeddings for FD/KID and judge logits for IS/KL/accuracy):
  FD   Frechet distance of Gaussians fitted to the two sets (Heusel et al. 2017; FAD, Kilgour et al. 2019):
       ||mu_g - mu_r||^2 + Tr(S_g + S_r - 2 (S_g S_r)^(1/2)), unbiased covariances (np.cov). The trace of
       the matrix square root is sum sqrt(eig(S_r^(1/2) S_g S_r^(1/2))), exact for PSD matrices.
  KID  unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3 (Binkowski et al. 2018),
       averaged over `subsets` random subsets of `subset_size` clips from each side (seeded).
  IS   exp(E_x KL(p(y|x) || p(y))) with p = softmax(logits), clips shuffled with a seeded RNG and split
       into `splits` parts; the mean over splits (torch-fidelity / av-benchmark's ISC, seed 2020, 10 splits).
  KL   per clip, KL(softmax(reference logits) || softmax(generated logits) + 1e-6) summed over classes:
       av-benchmark's paired `KL-PANNS-softmax` (the SpecVQGAN / Diff-Foley convention) when the judge is
       panns-cnn14. Needs the paired reference clip.
  class-accuracy  per clip, 1 when the judge's top class is one of the clip's labelled classes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from vssflow.core.interfaces import Metric, SetMetric


def frechet_distance(gen: Tensor | np.ndarray, ref: Tensor | np.ndarray) -> float:
    """FD between Gaussians fitted to two feature sets (N, D) and (M, D), N, M >= 2."""
    g, r = np.asarray(gen, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if g.ndim != 2 or r.ndim != 2 or g.shape[1] != r.shape[1] or len(g) < 2 or len(r) < 2:
        raise ValueError(f"FD needs two (N>=2, D) feature sets of one width, got {g.shape} and {r.shape}")
    mu_g, mu_r = g.mean(0), r.mean(0)
    s_g, s_r = np.atleast_2d(np.cov(g, rowvar=False)), np.atleast_2d(np.cov(r, rowvar=False))
    w, v = np.linalg.eigh(s_r)
    root_r = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root_r @ s_g @ root_r)
    tr_sqrt = float(np.sqrt(np.clip(inner, 0, None)).sum())
    diff = mu_g - mu_r
    return float(diff @ diff + np.trace(s_g) + np.trace(s_r) - 2.0 * tr_sqrt)


def mmd2_polynomial(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3 between (m, D) and (n, D)."""
    d = x.shape[1]
    kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2 * kxy.mean())


def kernel_inception_distance(gen, ref, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> float:
    """KID: the mean unbiased polynomial-kernel MMD^2 over random equal-size subsets of both sets."""
    g, r = np.asarray(gen, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if len(g) < 2 or len(r) < 2:
        raise ValueError("KID needs at least 2 clips on each side")
    m = min(subset_size, len(g), len(r))
    if m == len(g) == len(r):
        return mmd2_polynomial(g, r)  # the whole sets: no sampling
    rng = np.random.RandomState(seed)
    vals = [mmd2_polynomial(g[rng.choice(len(g), m, replace=False)], r[rng.choice(len(r), m, replace=False)])
            for _ in range(subsets)]
    return float(np.mean(vals))


def inception_score(logits, splits: int = 10, seed: int = 2020, shuffle: bool = True) -> tuple[float, float]:
    """(mean, std) over splits of exp(E KL(p(y|x) || p(y))), p = softmax(logits)."""
    x = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    n = x.shape[0]
    if shuffle:
        x = x[torch.from_numpy(np.random.RandomState(seed).permutation(n))]
    splits = max(1, min(splits, n))
    p, log_p = x.softmax(1), x.log_softmax(1)
    scores = []
    for i in range(splits):
        a, b = i * n // splits, (i + 1) * n // splits
        q = p[a:b].mean(0, keepdim=True)
        scores.append(float((p[a:b] * (log_p[a:b] - q.log())).sum(1).mean().exp()))
    return float(np.mean(scores)), float(np.std(scores))


def kl_softmax(gen_logits: Tensor, ref_logits: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-row KL(softmax(ref) || softmax(gen) + eps) (B,), av-benchmark's paired KL."""
    p = ref_logits.double().softmax(1)
    q = gen_logits.double().softmax(1) + eps
    return (p * (p.clamp_min(1e-300).log() - q.log())).sum(1).float()


_LOCAL_WEIGHTS = {
    "logmel-cnn": "a folder written by fit_classifier_judge (`vssflow evaluate --fit-judges`)",
    "panns-cnn14": "a local Cnn14 checkpoint (.pth or .safetensors)",
}


class JudgeUser:
    """Builds its judge on first use (so listing, validating and conformance stay cheap)."""

    judge_name: str
    judge_params: dict[str, Any]
    _judge: Any = None

    def _setup_judge(self, judge: str, judge_path: str | None, judge_params: dict[str, Any] | None) -> None:
        self.judge_name = judge
        self.judge_params = dict(judge_params or {})
        if judge_path is not None:
            self.judge_params["path"] = judge_path
        self._judge = None

    @property
    def judge(self):
        """The judge component (judges read their weights on first use, so building one is cheap)."""
        if self._judge is None:
            from vssflow.core.errors import PluginError
            from vssflow.registry import create

            if self.judge_name in _LOCAL_WEIGHTS and "path" not in self.judge_params:
                raise PluginError(f"judge {self.judge_name!r} needs judge_path: {_LOCAL_WEIGHTS[self.judge_name]}")
            self._judge = create("judge", self.judge_name, **self.judge_params)
        return self._judge

    @property
    def sample_rate(self) -> int:
        """The judge's rate: the evaluator resamples clips to it."""
        return self.judge.sample_rate

    def judge_key(self, what: str) -> str:
        """judge name, version, rate, weights hash and output: what the features depend on."""
        j = self.judge
        return f"{j.name}:{j.version}:{j.sample_rate}:{j.weights_hash()}:{what}"


class FrechetDistance(JudgeUser, SetMetric):
    """FD between judge embeddings of the generated and reference sets (lower is better)."""

    higher_is_better: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = True

    def __init__(self, judge: str = "aisfx", judge_path: str | None = None, judge_params: dict | None = None,
                 batch_size: int = 16):
        self._setup_judge(judge, judge_path, judge_params)
        self.batch_size = batch_size

    def features(self, wavs: list[Tensor]) -> Tensor:  # noqa: D102
        from vssflow.plugins.judges.base import run_all

        return run_all(self.judge, wavs, self.batch_size, "embed")

    def feature_key(self) -> str:  # noqa: D102
        return self.judge_key("embed")

    def score(self, generated: Tensor, reference: Tensor | None) -> float:  # noqa: D102
        if reference is None:
            raise ValueError("fd needs reference features")
        return frechet_distance(generated, reference)


class KernelDistance(FrechetDistance):
    """KID between judge embeddings (lower is better)."""

    def __init__(self, judge: str = "aisfx", judge_path: str | None = None, judge_params: dict | None = None,
                 batch_size: int = 16, subsets: int = 100, subset_size: int = 1000, seed: int = 0):
        super().__init__(judge, judge_path, judge_params, batch_size)
        self.subsets, self.subset_size, self.seed = subsets, subset_size, seed

    def score(self, generated: Tensor, reference: Tensor | None) -> float:  # noqa: D102
        if reference is None:
            raise ValueError("kid needs reference features")
        return kernel_inception_distance(generated, reference, self.subsets, self.subset_size, self.seed)


class InceptionScore(JudgeUser, SetMetric):
    """IS of the generated set from a classifier judge's logits (higher is better; no reference)."""

    higher_is_better: ClassVar[bool] = True
    needs_reference: ClassVar[bool] = False

    def __init__(self, judge: str = "logmel-cnn", judge_path: str | None = None, judge_params: dict | None = None,
                 batch_size: int = 16, splits: int = 10, seed: int = 2020):
        self._setup_judge(judge, judge_path, judge_params)
        self.batch_size, self.splits, self.seed = batch_size, splits, seed

    def features(self, wavs: list[Tensor]) -> Tensor:  # noqa: D102
        from vssflow.plugins.judges.base import run_all

        return run_all(self.judge, wavs, self.batch_size, "classify")

    def feature_key(self) -> str:  # noqa: D102
        return self.judge_key("logits")

    def score(self, generated: Tensor, reference: Tensor | None = None) -> float:  # noqa: D102
        return inception_score(generated, self.splits, self.seed)[0]


class _PairedClassifier(JudgeUser, Metric):
    def __init__(self, judge: str = "logmel-cnn", judge_path: str | None = None, judge_params: dict | None = None):
        self._setup_judge(judge, judge_path, judge_params)

    def _logits(self, wav: Tensor, lengths: Tensor | None) -> Tensor:
        return self.judge.classify(wav.float(), lengths).double()


class KLDivergence(_PairedClassifier):
    """Per-clip KL(softmax(judge(reference)) || softmax(judge(generated))) (lower is better)."""

    higher_is_better: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = True

    def __call__(self, generated, reference=None, labels=None, lengths=None) -> Tensor:  # noqa: D102
        if reference is None:
            raise ValueError("kl needs reference audio")
        ref_lengths = lengths if reference.shape[-1] == generated.shape[-1] else None
        return kl_softmax(self._logits(generated, lengths), self._logits(reference, ref_lengths))


class ClassAccuracy(_PairedClassifier):
    """Per clip: 1 if the judge's top class is among the clip's labelled classes, else 0 (higher is better).

    Reads `labels["class"]` (a class name or a list of names) or `labels["classes"]` (the synthetic set's key).
    """

    higher_is_better: ClassVar[bool] = True
    needs_reference: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = True
    label_keys: ClassVar[tuple[str, ...]] = ("class",)

    def __call__(self, generated, reference=None, labels=None, lengths=None) -> Tensor:  # noqa: D102
        if labels is None:
            raise ValueError("class-accuracy needs labels with 'class'")
        top = self._logits(generated, lengths).argmax(1).tolist()
        names = self.judge.labels
        out = []
        for b, k in enumerate(top):
            truth = labels[b].get("class", labels[b].get("classes")) if labels[b] else None
            if truth is None:
                raise ValueError("class-accuracy needs labels with 'class' for every clip")
            truth = {truth} if isinstance(truth, str) else set(truth)
            unknown = truth - set(names)
            if unknown:
                raise ValueError(f"class-accuracy: class {sorted(unknown)[0]!r} is not one of the judge's classes "
                                 f"{list(names)}; fit the judge on this benchmark's classes")
            out.append(1.0 if names[k] in truth else 0.0)
        return torch.tensor(out)

    def example_inputs(self, batch_size: int = 2, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Noise with class labels from the judge."""
        inputs = super().example_inputs(batch_size, generator)
        names = self.judge.labels
        inputs["labels"] = [{"class": names[b % len(names)]} for b in range(batch_size)]
        return inputs
