"""Forward FLOPs and parameter count of the paper-size model (recipes/vssflow-paper.yaml), built on the
meta device, so it runs anywhere in a few seconds.

    .venv/bin/python benchmarks/paper_flops.py [--recipe PATH] [--batch 1] [--set key=value ...]

FLOPs are counted by torch.utils.flop_counter (a multiply-add = 2 FLOPs) for one backbone forward over a
full window, with the conditions of a visual-TTS clip (every condition present); a guided ODE step
evaluates the backbone once per guidance variant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent


def _inputs(model, batch: int) -> dict:
    """Meta-device raw features for every `precomputed`/token condition of the recipe."""
    spec, conditions = model.spec, {}
    for name, encoder in model.encoders.items():
        contract = encoder.contract
        if contract.modality == "transcript":
            ids = torch.ones(batch, 40, dtype=torch.long, device="cpu")
            conditions[name] = {"x": ids, "mask": ids > 0, "span": torch.tensor([[0.5, 9.5]] * batch)}
            continue
        length = spec.condition_frames(encoder.fps) if encoder.fps else 1
        conditions[name] = {"x": torch.zeros(batch, length, encoder.dim, device="cpu")}
    return conditions


def main(argv: list[str] | None = None) -> int:
    """Print the parameter counts and a FLOPs table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "vssflow-paper.yaml"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    from vssflow.registry.assemble import build, count_parameters

    counts = count_parameters(args.recipe, args.overrides)
    assembly = build(args.recipe, device="meta", overrides=args.overrides)
    model, spec = assembly.model, assembly.spec
    b, frames = args.batch, spec.num_frames

    # conditions are real (CPU) inputs to the frozen/cheap encoders; aggregation and backbone are counted
    encoders_on_cpu = {n: e for n, e in model.encoders.items() if all(p.device.type != "meta" for p in e.parameters())}
    conditions = {n: c for n, c in _inputs(model, b).items() if n in encoders_on_cpu}
    with torch.no_grad():
        encoded = {}
        for name, entry in conditions.items():
            cond = model.encode_conditions({name: entry}, b)[name]
            cond.condition.features = cond.condition.features.to("meta")
            cond.condition.mask = None if cond.condition.mask is None else cond.condition.mask.to("meta")
            cond.present = cond.present.to("meta")
            encoded[name] = cond
    # outside no_grad: the module tracker of FlopCounterMode wants autograd metadata (free on meta tensors)
    with FlopCounterMode(display=False) as agg_counter:
        conditioning = model.aggregate(encoded, b, frames, device=torch.device("meta"))
    x = torch.zeros(b, frames, model.latent_channels, device="meta")
    t = torch.full((b,), 0.5, device="meta")
    with FlopCounterMode(display=False) as counter:
        model.velocity(x, t, conditioning)
    variants = len(model.sampler.guidance_plan(model.names))

    backbone_flops = counter.get_total_flops()
    per_module = counter.get_flop_counts()
    print(f"recipe                      {assembly.recipe.name} ({args.recipe})")
    print(f"window                      {spec.duration_s:g} s -> {frames} latent frames x {model.latent_channels} channels")
    print(f"trainable parameters        {counts['trainable']:,} ({counts['trainable'] / 1e6:.1f} M)")
    print(f"frozen parameters           {counts['frozen']:,} ({counts['frozen'] / 1e6:.1f} M; codec, vocoder, extractors)")
    for part, n in counts["by_part"].items():
        if n:
            print(f"  {part:<26}{n / 1e6:10.2f} M")
    print(f"backbone forward            {backbone_flops / 1e9:10.1f} GFLOPs per batch of {b}")
    blocks = {k: v for k, v in per_module.items() if k.count(".") == 2 and ".blocks." in k}
    if blocks:
        first = next(iter(blocks))
        for op, n in sorted(blocks[first].items(), key=lambda kv: -kv[1]):
            print(f"  one block {str(op):<20}{n / 1e9:10.2f} GFLOPs")
    print(f"condition aggregation       {agg_counter.get_total_flops() / 1e9:10.2f} GFLOPs (once per sample)")
    print(f"guided ODE step             {variants * backbone_flops / 1e9:10.1f} GFLOPs ({variants} variants)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
