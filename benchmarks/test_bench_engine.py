"""CPU timings of the tiny recipes: one training step and one sampling step each (pytest-benchmark).

    .venv/bin/pytest benchmarks/test_bench_engine.py --benchmark-columns=mean,stddev,rounds
    OMP_NUM_THREADS=1 .venv/bin/pytest benchmarks/test_bench_engine.py   # steadier on a shared machine

A training step is loss + backward + AdamW step on a batch of 8 (4 s clips, conditions encoded from raw
inputs); a sampling step is one guided velocity evaluation with the conditions already encoded, i.e. one
backbone call over every guidance variant, what each ODE step costs.
"""

from __future__ import annotations

import pytest
import torch

from tests.engine.components import raw_conditions
from vssflow.registry.assemble import build

TINY = ["v2s-tiny", "visualtts-tiny", "unified-tiny"]
BATCH = 8


@pytest.mark.parametrize("name", TINY)
def test_training_step(benchmark, name):
    assembly = build(name)
    model = assembly.model.train()
    samples = assembly.spec.num_samples
    batch = {
        "wav": 0.1 * torch.randn(BATCH, samples),
        "wav_lengths": torch.full((BATCH,), samples),
        "conditions": raw_conditions(assembly, BATCH),
        "seeds": torch.arange(BATCH),
    }
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model.loss(batch)
        loss.backward()
        opt.step()
        return loss

    loss = benchmark(step)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("name", TINY)
def test_sampling_step(benchmark, name):
    assembly = build(name)
    model = assembly.model.eval()
    frames = assembly.spec.num_frames
    with torch.no_grad():
        field = model.guided_velocity(raw_conditions(assembly, BATCH), BATCH, frames)
        x = torch.randn(BATCH, frames, model.latent_channels)
        v = benchmark(lambda: field(0.5, x))
    benchmark.extra_info["guidance_variants"] = len(field.weights)
    assert v.shape == x.shape
