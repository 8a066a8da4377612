"""Does a negative caption suppress the sound class it names? Measured on the synthetic benchmark.

For every held-out V2S clip and every sound class X it shows, generate twice from the same noise: with the
clip's caption and plain guidance (the null caption as the negative branch), and with the caption plus a
negative prompt naming X in the captions' own words ("one glass triangle on screen"). The evaluation
suite's classifier judge (`logmel-cnn`, fitted on the set's training audio exactly as
`vssflow evaluate --fit-judges` does) then gives X's presence, sigmoid(logit_X), in each output. Reported:
the mean presence of X both ways, their paired difference with its standard error, and how often the
negative lowered it; the same for the classes of the clip that were NOT named (the effect should be
specific).

    python examples/negative_prompt.py --checkpoint runs/caption/checkpoints/last \
        --manifest data/synth/manifest.jsonl --out runs/negative-prompt [--clips 40] [--guidance 3]
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path

import torch


def presence(judge, wav: torch.Tensor, rate: int) -> torch.Tensor:
    """Per-class presence probabilities (K,) of one waveform ((S,) or (C, S) at `rate`)."""
    from vssflow.core.media import resample

    mono = wav.float().reshape(-1, wav.shape[-1]).mean(0)
    mono = resample(mono, rate, judge.sample_rate)
    with torch.no_grad():
        return torch.sigmoid(judge.classify(mono[None])[0])


def summary(pairs: list[tuple[float, float]]) -> dict[str, float]:
    """Mean of each side, the paired difference (negative - plain) with its standard error, share lowered."""
    n = len(pairs)
    plain = sum(a for a, _ in pairs) / n
    neg = sum(b for _, b in pairs) / n
    diffs = [b - a for a, b in pairs]
    mean = sum(diffs) / n
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / max(1, n - 1) / n)
    return {"n": n, "plain": plain, "negative": neg, "difference": mean, "se": se,
            "lowered": sum(d < 0 for d in diffs) / n}


def main() -> None:
    from vssflow.evaluation import fit_judges
    from vssflow.generation import load_pipeline, requests_from_manifest
    from vssflow.plugins.datasets.synth.scenes import IMPULSIVE, SHAPES
    from vssflow.registry import create

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--manifest", required=True, help="the synthetic set's manifest.jsonl (train: judge; test: clips)")
    p.add_argument("--out", required=True)
    p.add_argument("--clips", type=int, default=40, help="held-out V2S clips to generate for")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    out = Path(args.out)
    judge_dir = fit_judges(args.manifest, out / "judge", seed=args.seed)  # what --fit-judges trains and reuses
    judge = create("judge", "logmel-cnn", path=str(judge_dir)).eval()
    classes = list(judge.labels)
    rows = [json.loads(line) for line in Path(args.manifest).read_text().splitlines() if line.strip()]
    root = Path(args.manifest).parent
    test = [r for r in rows if r["split"] == "test" and r["task"] == "v2s"][: args.clips]
    wanted = {r["id"] for r in test}
    requests = [r for r in requests_from_manifest(args.manifest) if r.clip_id in wanted]
    pipe = load_pipeline(args.checkpoint)
    plain = pipe.generate(requests, steps=args.steps, guidance=args.guidance, seed=args.seed)

    named: list[tuple[float, float]] = []
    others: list[tuple[float, float]] = []
    reference: list[float] = []
    per_class: dict[str, list[tuple[float, float]]] = {}
    for request, wav, row in zip(requests, plain, test, strict=True):
        labels = json.loads((root / row["labels"]).read_text())
        shown = [c for c in labels["classes"] if c in IMPULSIVE and c in classes]
        p_plain = presence(judge, wav, pipe.sample_rate)
        for cls in shown:
            negated = replace(request, negative_prompt=f"one {cls} {SHAPES[cls]} on screen", negative={})
            steered = pipe.generate([negated], steps=args.steps, guidance=args.guidance, seed=args.seed)[0]
            p_neg = presence(judge, steered, pipe.sample_rate)
            k = classes.index(cls)
            named.append((float(p_plain[k]), float(p_neg[k])))
            per_class.setdefault(cls, []).append(named[-1])
            for other in labels["classes"]:
                if other != cls and other in classes:
                    j = classes.index(other)
                    others.append((float(p_plain[j]), float(p_neg[j])))
        from vssflow.core.media import read_audio

        ref, rate = read_audio(root / row["audio"], judge.sample_rate)
        reference += [float(presence(judge, ref, rate)[classes.index(c)]) for c in shown]
    report = {"checkpoint": str(args.checkpoint), "clips": len(test), "judge": str(judge_dir),
              "named_class": summary(named), "other_classes_of_the_clip": summary(others) if others else None,
              "named_class_in_the_real_audio": sum(reference) / max(1, len(reference)),
              "per_class": {c: summary(v) for c, v in sorted(per_class.items())}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "negative_prompt.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
