"""Training maths of core/trainer.py: AdamW parameter groups, micro-batch weighting, DDP options, guidance
warnings."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from vssflow.core.trainer import DivergenceError, Trainer, parameter_groups


class Toy(nn.Module):
    """Masked squared error of a linear map; reports how many elements its loss averages."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.norm = nn.LayerNorm(3)
        self.embed = nn.Embedding(4, 3)
        self.null = nn.Parameter(torch.zeros(3))
        self.scale = nn.Parameter(torch.ones(1, 1, 3))  # vector-like despite three dimensions

    def loss_terms(self, batch):
        x = self.norm(batch["x"]) + self.embed(batch["tok"]) + self.null * 0
        err = (self.lin(x * self.scale) - batch["y"]).pow(2).sum(-1)  # (B, L)
        count = batch["mask"].sum()
        return [SimpleNamespace(loss=(err * batch["mask"]).sum() / count, count=count)]


def settings(**changes):
    base = dict(batch_size=4, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.999), steps=10, warmup_steps=0,
                schedule="constant", ema=0.0, grad_clip=None, grad_accum=1, precision="fp32", seed=0, log_every=1,
                val_every=0, ckpt_every=0, num_workers=0)
    return SimpleNamespace(**{**base, **changes})


def batch(n: int, valid: list[int], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(n, 6)
    for i, v in enumerate(valid):
        mask[i, :v] = 1
    return {"x": torch.randn(n, 6, 3, generator=g), "y": torch.randn(n, 6, 2, generator=g),
            "tok": torch.randint(0, 4, (n, 6), generator=g), "mask": mask}


def test_weight_decay_only_on_matrices():
    model = Toy()
    decay, plain = parameter_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert [names[id(p)] for p in decay["params"]] == ["lin.weight"]
    assert sorted(names[id(p)] for p in plain["params"]) == [
        "embed.weight", "lin.bias", "norm.bias", "norm.weight", "null", "scale"]
    assert decay["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert len(parameter_groups(model, 0.0)) == 1  # no decay: one group, as runs before the groups had


def test_micro_batches_are_weighted_by_their_valid_elements_like_one_batch(tmp_path):
    """Two micro-batches of very different valid lengths give the gradient of the whole batch: the mean over
    every valid element, not the mean of the two micro-batch means."""
    b1, b2 = batch(2, [6, 6], 1), batch(2, [1, 2], 2)
    whole = {k: torch.cat([b1[k], b2[k]]) for k in b1}
    grads, losses = [], []
    for accum, batches in ((2, [b1, b2]), (1, [whole])):
        torch.manual_seed(0)
        trainer = Trainer(Toy(), settings(grad_accum=accum), list(range(8)), list, tmp_path, device="cpu",
                          progress=False)
        record = trainer.train_step(batches)
        grads.append({n: p.grad.clone() for n, p in trainer.model.named_parameters()})
        losses.append(record["loss"])
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


def test_a_non_finite_loss_is_refused_before_the_update(tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(Toy(), settings(), list(range(8)), list, tmp_path, device="cpu", progress=False)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    bad = batch(4, [6, 6, 6, 6], 3)
    bad["y"][0, 0, 0] = float("nan")
    with pytest.raises(DivergenceError, match="non-finite loss at step 1 .*the step was not applied"):
        trainer.train_step([bad])
    assert trainer.step == 0
    assert all(torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())
    with pytest.raises(DivergenceError, match="train.lr is inf"):
        Trainer(Toy(), settings(lr=float("inf")), list(range(8)), list, tmp_path, device="cpu", progress=False)


def test_ddp_finds_unused_parameters_only_when_conditions_can_be_absent():
    from vssflow.registry.recipe import load_recipe
    from vssflow.training import needs_unused_parameters

    assert not needs_unused_parameters(load_recipe("v2s-tiny"))
    assert needs_unused_parameters(load_recipe("unified-tiny"))


def test_per_condition_guidance_on_a_condition_never_dropped_alone_warns(caplog):
    from vssflow.generation import warn_unseen_guidance
    from vssflow.registry.recipe import load_recipe

    recipe = load_recipe("v2s-tiny", ["conditions.video.dropout=0"])
    with caplog.at_level("WARNING", logger="vssflow.generate"):
        assert warn_unseen_guidance(recipe, {"video": 3.0, "sync": 2.0}) == ["video"]
    assert len(caplog.records) == 1 and "never drops it on its own" in caplog.records[0].getMessage()
