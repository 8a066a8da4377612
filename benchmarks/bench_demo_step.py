"""Where a `vssflow demo` training step goes on CPU, and what the demo's speed-ups buy, as ratios in one process.

    OMP_NUM_THREADS=1 python benchmarks/bench_demo_step.py                 # profile + variants, one thread
    python benchmarks/bench_demo_step.py --clips 16 --steps 4              # the same with torch's default threads
    python benchmarks/bench_demo_step.py --threads-table                   # + thread settings, in subprocesses
    python benchmarks/bench_demo_step.py --processes-table [--busy]        # only: one process vs one per core

The demo's own recipe (`vssflow.demo.demo_recipe`: unified-demo, batch 8, V2S + VisualTTS + mixtures) on a
small synthetic set (`--clips`, made once under `--root`). For the profile and the variants, batches are
loaded before timing and every variant runs the same batches from the same initial weights:

  profile   forward time of each component within a step (forward hooks), and the rest (backward + AdamW)
  variants  best seconds per step over interleaved rounds after every clip was seen once (the demo's steady state:
            its steps of 8 from ~200 training clips draw each clip ~30 times):
              lk-every-step   the motion encoder's Lucas-Kanade statistics recomputed at every step (before)
              lk-cached       computed once per clip (`flow_cache`, the default)
              lk-cached+bf16  the same under bf16 autocast on CPU
  loading   seconds per step with the data loader in the loop (what `vssflow demo` runs), best over interleaved
            rounds after a warm-up epoch, each variant a fresh loader:
              decoded-every-step, 1 worker   every clip's video decoded at every draw, once per video condition,
                                             in a loader process beside the step (before)
              cached, 1 worker               decoded once per clip, the frames kept in memory (`data.video_cache_mb`)
              cached, 0 workers              the same loaded in the training process (the demo's default)
            and one batch's loading alone: decoded once per video condition, once per clip, from the cache
  threads   (--threads-table) steps/s with 1 or 2 intra-op threads and OMP_WAIT_POLICY unset or PASSIVE, alone
            and beside a busy process on one core (a shared machine), each in a fresh subprocess
  processes (--processes-table) `vssflow train` of the demo recipe for --train-steps steps in one process with
            every core as threads, against one process per core (`--processes auto`, vssflow.launch): steps/s
            from each run's train_log.jsonl (warm-up included), interleaved rounds, best of each, and the
            largest difference between the two runs' logged losses; --busy: also beside a process spinning on
            one core
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def _batches(recipe: Any, n: int) -> list[dict[str, Any]]:
    from vssflow.core.trainer import Trainer
    from vssflow.registry.assemble import build
    from vssflow.training import dataset_for

    torch.manual_seed(0)
    model = build(recipe).model
    dataset = dataset_for(recipe, model)
    settings = recipe.train.model_copy(update={"num_workers": 0})
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, settings, dataset, dataset.collate, tmp, progress=False, device="cpu")
        return [b for _, _, b in trainer._batches(0, n)]


def _trainer(recipe: Any, tmp: str) -> Any:
    from vssflow.core.trainer import Trainer
    from vssflow.registry.assemble import build
    from vssflow.training import dataset_for

    torch.manual_seed(0)
    model = build(recipe).model
    dataset = dataset_for(recipe, model)
    return Trainer(model, recipe.train.model_copy(update={"num_workers": 0}), dataset, dataset.collate, tmp,
                   progress=False, device="cpu")


def _time_steps(trainer: Any, batches: list[dict[str, Any]], distinct: int) -> list[float]:
    times = []
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        trainer.train_step([batch])
        if i >= distinct:  # after every clip of the set was seen once
            times.append(time.perf_counter() - start)
    return times


def _bf16(trainer: Any) -> Any:
    """The trainer with its loss forward under bf16 autocast on the CPU (it autocasts on CUDA only)."""

    def forward(batch: dict[str, Any]) -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return trainer.wrapped(batch)

    trainer._forward = forward
    return trainer


def profile(recipe: Any, batches: list[dict[str, Any]], distinct: int) -> list[tuple[str, float]]:
    """(component, seconds per step) of the forward pass, plus the rest of the step."""
    spent: dict[str, float] = {}
    starts: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        trainer = _trainer(recipe, tmp)
        model = trainer.model
        parts = {f"encoder {n}": m for n, m in model.encoders.items()}
        parts.update({f"aggregator {n}": m for n, m in model.aggregators.items()})
        parts["backbone (DiT)"] = model.backbone
        for name, module in parts.items():
            module.register_forward_pre_hook(lambda *_, n=name: starts.__setitem__(n, time.perf_counter()))
            module.register_forward_hook(
                lambda *_, n=name: spent.__setitem__(n, spent.get(n, 0.0) + time.perf_counter() - starts[n]))
        for batch in batches[:distinct]:
            trainer.train_step([batch])
        spent.clear()
        total = 0.0
        for batch in batches[distinct:]:
            start = time.perf_counter()
            trainer.train_step([batch])
            total += time.perf_counter() - start
    steps = len(batches) - distinct
    rows = [(name, seconds / steps) for name, seconds in sorted(spent.items(), key=lambda kv: -kv[1])]
    rows.append(("rest: codec, loss, backward, AdamW, EMA", total / steps - sum(s for _, s in rows)))
    rows.append(("whole step", total / steps))
    return rows


def variants(recipe_of: Any, batches: list[dict[str, Any]], distinct: int, rounds: int) -> dict[str, float]:
    """Best per-step seconds of each variant over `rounds` interleaved rounds, the order rotated every round
    (other load only adds time; rotation keeps a variant from always running after the same one)."""
    cases = [("lk-every-step", ["conditions.sync.encoder.params.flow_cache=0"], False),
             ("lk-cached", [], False), ("lk-cached+bf16", [], True)]
    found: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {}
        for name, overrides, bf16 in cases:
            trainer = _trainer(recipe_of(overrides), f"{tmp}/{name}")
            trainers[name] = _bf16(trainer) if bf16 else trainer
            _time_steps(trainers[name], batches[:distinct], distinct)  # the warm-up epoch: every clip seen once
        for r in range(rounds):
            for name, _, _ in cases[r % len(cases):] + cases[: r % len(cases)]:
                found[name] += _time_steps(trainers[name], batches[distinct:], 0)
    return {name: min(times) for name, times in found.items()}


def motion_stats(recipe: Any, batches: list[dict[str, Any]], rounds: int) -> tuple[float, float]:
    """Best seconds for one batch's Lucas-Kanade statistics: computed, and served from the per-clip cache."""
    from vssflow.plugins.encoders.layers import MotionStatsCache, lucas_kanade_motion, luma
    from vssflow.registry.assemble import build

    encoder = build(recipe).model.encoders["sync"]
    cond = batches[0]["conditions"]["sync"]
    mask = encoder.output_mask(cond["x"], cond["mask"])
    y = luma(cond["x"]) * mask[:, :, None, None, None].to(cond["x"].dtype)
    grid, window = encoder.flow_grid, encoder.flow_window
    cache = MotionStatsCache(4096)
    cache(y, mask, grid, window)
    computed, served = [], []
    for _ in range(rounds * 3):
        start = time.perf_counter()
        lucas_kanade_motion(y, mask, grid, window)
        computed.append(time.perf_counter() - start)
        start = time.perf_counter()
        cache(y, mask, grid, window)
        served.append(time.perf_counter() - start)
    return min(computed), min(served)


def _loader_trainer(recipe: Any, tmp: str, workers: int) -> Any:
    from vssflow.core.trainer import Trainer
    from vssflow.registry.assemble import build
    from vssflow.training import dataset_for

    torch.manual_seed(0)
    model = build(recipe).model
    dataset = dataset_for(recipe, model)
    return Trainer(model, recipe.train.model_copy(update={"num_workers": workers}), dataset, dataset.collate, tmp,
                   progress=False, device="cpu")


def loading(recipe_of: Any, distinct: int, steps: int, rounds: int) -> dict[str, float]:
    """Best seconds per step, data loader included, of each loading variant (interleaved rounds; every round
    a fresh loader that first draws every clip once, so a cache starts empty as in a run)."""
    from vssflow.core import video_cache

    one_pass = video_cache.decode_video
    cases = [("decoded-every-step, 1 worker", 0, 1), ("cached, 1 worker", 4096, 1), ("cached, 0 workers", 4096, 0)]
    found: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name, cache_mb, workers in cases[r % len(cases):] + cases[: r % len(cases)]:
                recipe = recipe_of([f"data.video_cache_mb={cache_mb}", f"train.num_workers={workers}"])
                trainer = _loader_trainer(recipe, f"{tmp}/{r}-{workers}-{cache_mb}", workers)
                if not cache_mb:  # before: one decoding pass per video condition (the loader process forks after this)
                    video_cache.decode_video = _per_condition(one_pass)
                try:
                    start = None
                    for i, (_, _, batch) in enumerate(trainer._batches(0, distinct + steps)):
                        if i == distinct:
                            start = time.perf_counter()
                        trainer.train_step([batch])
                    found[name].append((time.perf_counter() - start) / steps)
                finally:
                    video_cache.decode_video = one_pass
    return {name: min(times) for name, times in found.items()}


def _per_condition(decode: Any) -> Any:
    """`decode_video` as it was: one decoding pass per request (video condition)."""
    return lambda path, requests: [decode(path, [r])[0] for r in requests]


def batch_loading(recipe: Any, rounds: int) -> dict[str, float]:
    """Best seconds to load and collate one batch: video decoded per condition (before), per clip, from the cache."""
    from vssflow.core import video_cache
    from vssflow.registry.assemble import build
    from vssflow.training import dataset_for

    dataset = dataset_for(recipe, build(recipe).model)
    keys = list(range(recipe.train.batch_size))
    plain, cached = dataset.configure(video_cache_mb=0), dataset.configure(video_cache_mb=4096)
    cached.collate([cached[k] for k in keys])  # fills the cache
    one_pass = video_cache.decode_video
    cases = (("decoded per condition", plain, _per_condition(one_pass)), ("decoded once per clip", plain, one_pass),
             ("from the cache", cached, one_pass))
    found: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(rounds * 3):
        for name, ds, decode in cases:
            video_cache.decode_video = decode
            try:
                start = time.perf_counter()
                ds.collate([ds[k] for k in keys])
                found[name].append(time.perf_counter() - start)
            finally:
                video_cache.decode_video = one_pass
    return {name: min(times) for name, times in found.items()}


def _busy() -> subprocess.Popen:
    """A process spinning on one core: the other work of a shared machine."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def threads_table(args: argparse.Namespace) -> list[tuple[str, str, str, float]]:
    rows = []
    for loaded in (False, True):
        for threads in (1, 2):
            for policy in ("", "PASSIVE"):
                env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
                env.pop("OMP_WAIT_POLICY", None)
                if policy:
                    env["OMP_WAIT_POLICY"] = policy
                busy = _busy() if loaded else None
                try:
                    done = subprocess.run([sys.executable, __file__, "--one", "--clips", str(args.clips),
                                           "--steps", str(args.steps), "--root", str(args.root)],
                                          env=env, capture_output=True, text=True, check=True)
                finally:
                    if busy is not None:
                        busy.kill()
                        busy.wait()
                rows.append(("busy core" if loaded else "alone", str(threads), policy or "(unset)",
                             json.loads(done.stdout.strip().splitlines()[-1])["step_s"]))
    return rows


def processes_table(args: argparse.Namespace, recipe: Any) -> list[tuple[str, float, list[float]]]:
    """(setting, best steps/s, logged losses) of `vssflow train` in one process and in one per core; with
    --busy also beside a process spinning on one core (a shared machine)."""
    cases = [("1 process, every core as threads", "1", False), ("one process per core (--processes auto)", "auto", False)]
    if args.busy:
        cases += [(f"{name}, beside a busy core", processes, True) for name, processes, _ in cases]
    found: dict[str, tuple[float, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recipe.yaml"
        path.write_text(recipe.to_yaml())
        for r in range(args.rounds):
            for i, (name, processes, loaded) in enumerate(cases[r % len(cases):] + cases[: r % len(cases)]):
                out = Path(tmp) / f"{r}-{i}"
                # as `vssflow demo` runs: torch's default threads, idle OpenMP threads sleeping
                env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
                env.pop("OMP_NUM_THREADS", None)
                busy = _busy() if loaded else None
                try:
                    subprocess.run([sys.executable, "-m", "vssflow", "train", str(path), "--out", str(out),
                                    "--no-progress", "--device", "cpu", "--processes", processes,
                                    "--set", f"train.steps={args.train_steps}", "--set", "train.ckpt_every=0",
                                    "--set", "train.log_every=25"],
                                   check=True, capture_output=True, text=True, env=env)
                finally:
                    if busy is not None:
                        busy.kill()
                        busy.wait()
                rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
                rows = [row for row in rows if "steps_per_s" in row]
                best = max(found.get(name, (0.0, []))[0], rows[-1]["steps_per_s"])
                found[name] = (best, [row["loss"] for row in rows])
    return [(name, *found[name]) for name, _, _ in cases]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=24, help="synthetic clips (default 24)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps after the warm-up epoch (default 6)")
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "vssflow-bench-demo")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the variants (default 3)")
    parser.add_argument("--threads-table", action="store_true", help="also time thread settings (subprocesses)")
    parser.add_argument("--processes-table", action="store_true",
                        help="only time training in one process against one per core (subprocesses)")
    parser.add_argument("--train-steps", type=int, default=100, help="steps of each --processes-table run")
    parser.add_argument("--busy", action="store_true", help="--processes-table also beside a busy core")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # one timing, for the table
    args = parser.parse_args()

    from vssflow.demo import demo_recipe

    def recipe_of(overrides: list[str]) -> Any:
        return demo_recipe(args.root / f"clips-{args.clips}", clips=args.clips, overrides=overrides)

    recipe = recipe_of([])
    if args.processes_table:
        table = processes_table(args, recipe)
        ref = table[0][1]
        print(f"torch {torch.__version__}, {os.cpu_count()} cores, recipe {recipe.name}, batch {recipe.train.batch_size}, "
              f"{args.clips} clips\n\n| `vssflow train`, {args.train_steps} steps | steps/s | time vs one process |\n"
              "| --- | --- | --- |")
        for name, speed, _ in table:
            print(f"| {name} | {speed:.2f} | {ref / speed:.2f}x |")
        gap = max(abs(a - b) for a, b in zip(table[0][2], table[1][2], strict=True))
        print(f"largest difference between the two runs' logged losses: {gap:.2e}")
        return
    distinct = -(-args.clips // recipe.train.batch_size)  # steps until every clip was drawn about once
    distinct *= 2
    batches = _batches(recipe, distinct + args.steps)
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            times = _time_steps(_trainer(recipe, tmp), batches, distinct)
        print(json.dumps({"step_s": min(times)}))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s), "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, recipe {recipe.name}, batch "
          f"{recipe.train.batch_size}, {args.clips} clips, {args.steps} timed steps after {distinct} warm-up steps\n")
    rows = profile(recipe, batches, distinct)
    whole = rows[-1][1]
    print("| part of a training step (forward unless said) | ms per step | share |\n| --- | --- | --- |")
    for name, seconds in rows:
        print(f"| {name} | {seconds * 1e3:.1f} | {seconds / whole:.0%} |")
    computed, served = motion_stats(recipe, batches, args.rounds)
    print(f"\nLucas-Kanade statistics of one batch (sync encoder): computed {computed * 1e3:.1f} ms, from the "
          f"per-clip cache {served * 1e3:.1f} ms ({served / computed:.2f}x)")
    found = variants(recipe_of, batches, distinct, args.rounds)
    base = found["lk-every-step"]
    print("\n| variant | ms per step | time vs lk-every-step |\n| --- | --- | --- |")
    for name, seconds in found.items():
        print(f"| {name} | {seconds * 1e3:.1f} | {seconds / base:.2f}x |")
    loads = batch_loading(recipe, args.rounds)
    base = loads["decoded per condition"]
    print("\n| loading one batch of 8 | ms | time vs decoded per condition |\n| --- | --- | --- |")
    for name, seconds in loads.items():
        print(f"| {name} | {seconds * 1e3:.1f} | {seconds / base:.2f}x |")
    steps = loading(recipe_of, distinct, args.steps, args.rounds)
    base = steps["decoded-every-step, 1 worker"]
    print("\n| step with the data loader | ms per step | time vs decoded-every-step, 1 worker |\n| --- | --- | --- |")
    for name, seconds in steps.items():
        print(f"| {name} | {seconds * 1e3:.1f} | {seconds / base:.2f}x |")
    if args.threads_table:
        table = threads_table(args)
        ref = next(s for load, t, p, s in table if load == "alone" and t == "1" and p == "(unset)")
        print("\n| machine | threads | OMP_WAIT_POLICY | ms per step | time vs 1 thread alone |\n| --- | --- | --- | --- | --- |")
        for load, threads, policy, seconds in table:
            print(f"| {load} | {threads} | {policy} | {seconds * 1e3:.1f} | {seconds / ref:.2f}x |")


if __name__ == "__main__":
    main()
