"""`vssflow evaluate --generated DIR (--reference DIR | --manifest M.jsonl) --out OUT` (or `--checkpoint DIR
--manifest M.jsonl`: generate, then score): OUT/metrics.json and OUT/metrics.md."""

from __future__ import annotations

import argparse
from typing import Any

from vssflow.cli.generate import add_adapter_arguments
from vssflow.cli.processes import add_option


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the `evaluate` subcommand."""
    p = sub.add_parser("evaluate", help="score generated audio against references: metrics.json with 95%% CIs")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--generated", metavar="DIR", help="folder of generated <id>.wav files")
    what.add_argument("--checkpoint", metavar="DIR", help="generate the --manifest clips with this checkpoint first")
    p.add_argument("--reference", metavar="DIR", help="folder of reference <id>.wav files (same ids)")
    p.add_argument("--manifest", metavar="M.jsonl", help="manifest of the reference clips (audio, video, transcript, labels)")
    p.add_argument("--metrics", help="comma-separated metric names (default: every registered metric that can run)")
    p.add_argument("--metric-param", dest="metric_params", action="append", default=[], metavar="METRIC.KEY=VALUE",
                   help="a metric's constructor param, e.g. fd-panns.checkpoint=cnn14.pth (repeatable)")
    p.add_argument("--fit-judges", action="store_true",
                   help="train the logmel-cnn classifier judge on the manifest's reference audio and class labels "
                        "(its train split when it has one), then score class-accuracy, kl, is and fd[logmel-cnn] with it")
    p.add_argument("--judges-dir", metavar="DIR",
                   help="where --fit-judges writes (or finds) the judge (default OUT/judges/logmel-cnn)")
    p.add_argument("--out", required=True, help="output folder for metrics.json and metrics.md")
    p.add_argument("--batch-size", type=int, default=16, help="clips per metric call (default 16)")
    p.add_argument("--cache-dir", help="reference feature cache for set metrics (default ~/.cache/vssflow/eval-features)")
    p.add_argument("--steps", type=int, help="with --checkpoint: sampling steps (default: the recipe's)")
    p.add_argument("--guidance", type=float, help="with --checkpoint: classifier-free guidance scale")
    p.add_argument("--seed", type=int, default=0, help="with --checkpoint: generation seed")
    p.add_argument("--device", default=None, help="with --checkpoint: cpu, cuda, ...")
    add_option(p, "its share of the clips")
    add_adapter_arguments(p, "with --checkpoint: ")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_metric_params(items: list[str]) -> dict[str, dict]:
    """`METRIC.KEY=VALUE` strings (VALUE read as YAML) -> {metric: {key: value}}."""
    import yaml

    from vssflow.evaluation import EvaluationError

    params: dict[str, dict] = {}
    for item in items:
        head, sep, value = item.partition("=")
        metric, dot, key = head.rpartition(".")
        if not sep or not dot or not metric or not key:
            raise EvaluationError(f"--metric-param {item!r}: write METRIC.KEY=VALUE, e.g. fd.judge=logmel-cnn")
        params.setdefault(metric, {})[key] = yaml.safe_load(value)
    return params


def _adapters(args: argparse.Namespace) -> list[tuple[str, float]]:
    from vssflow.adapters import parse_adapters

    return parse_adapters(args.adapters, args.adapter_scales)


def run(args: argparse.Namespace) -> int:
    """Score, print the summary table, say where metrics.json is."""
    from vssflow.cli.processes import run_split

    split = run_split(args, run)
    if split is not None:
        return split
    from vssflow.evaluation import EvaluationError

    if args.batch_size < 1:
        raise EvaluationError(f"--batch-size must be >= 1, got {args.batch_size}")
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    params = parse_metric_params(args.metric_params)
    from vssflow.core.sharding import Shard, process_group

    shard = Shard.from_env()
    with process_group(shard):  # under torchrun: one group for the judge barrier and the scores' gather
        return _score(args, metrics, params, shard)


def _score(args: argparse.Namespace, metrics: list[str] | None, params: dict, shard: Any) -> int:
    from pathlib import Path

    from vssflow.core.sharding import barrier
    from vssflow.evaluation import EvaluationError, evaluate, generate_and_evaluate

    if args.fit_judges:  # under torchrun: rank 0 fits, every rank scores with it
        from vssflow.evaluation import (
            FITTED_JUDGE_METRICS,
            fit_judges,
            fitted_judge_params,
            list_metric_names,
        )

        if not args.manifest:
            raise EvaluationError("--fit-judges needs --manifest (reference audio with class labels)")
        judge_dir = Path(args.judges_dir or Path(args.out) / "judges" / "logmel-cnn")
        if shard.is_main:
            judge_dir = fit_judges(args.manifest, judge_dir)
            print(f"classifier judge: {judge_dir}")
        barrier(shard)  # the judge is written before any rank reads it
        for name, extra in fitted_judge_params(judge_dir).items():
            params.setdefault(name, {}).update(extra)
        if metrics is None:
            metrics = list_metric_names() + [m for m in FITTED_JUDGE_METRICS if "[" in m]
    if args.checkpoint:
        if not args.manifest:
            raise EvaluationError("--checkpoint needs --manifest (the clips to generate and their references)")
        if args.reference:
            raise EvaluationError("--checkpoint takes its references from --manifest; drop --reference")
        result = generate_and_evaluate(args.checkpoint, args.manifest, args.out, metrics, steps=args.steps,
                                       guidance=args.guidance, seed=args.seed, batch_size=args.batch_size,
                                       device=args.device, cache_dir=args.cache_dir, progress=not args.no_progress,
                                       metric_params=params, adapters=_adapters(args))
        if result is None:  # another rank than 0 under torchrun: its clips are written and scored, rank 0 reports
            return 0
    else:
        if args.adapters:
            raise EvaluationError("--adapter goes with --checkpoint (generate, then score); --generated is scored as is")
        if bool(args.reference) == bool(args.manifest):
            raise EvaluationError("give exactly one of --reference DIR or --manifest M.jsonl")
        result = evaluate(args.generated, args.reference or args.manifest, metrics, out=args.out,
                          batch_size=args.batch_size, cache_dir=args.cache_dir,
                          progress=not args.no_progress and shard.is_main, metric_params=params)
        if result is None:  # another rank than 0 under torchrun: its clips are scored, rank 0 reports
            return 0
    for name, r in result.metrics.items():
        print(f"{name:<24} {r.mean:10.4f}  95% CI [{r.ci95[0]:.4f}, {r.ci95[1]:.4f}]  n={r.n}  "
              f"({'higher' if r.higher_is_better else 'lower'} is better)")
    print(f"metrics: {Path(args.out) / 'metrics.json'}")
    return 0
