"""Checkpoints: exact round trips, atomic writes, clear errors, nothing unpickled."""

from __future__ import annotations

import pickle
import random

import pytest
import torch
from torch import nn

from vssflow.core import checkpoint as ckpt
from vssflow.core.checkpoint import Checkpoint, load_model_state, save_checkpoint
from vssflow.core.errors import CheckpointError


def trained_model_and_optimizer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 4)).pow(2).mean().backward()
        opt.step()
    return model, opt


def test_round_trip_restores_weights_optimizer_and_rng(tmp_path):
    model, opt = trained_model_and_optimizer()
    random.seed(3)
    path = save_checkpoint(tmp_path / "last", model.state_dict(), {"recipe": "x"}, optimizer=opt,
                           trainer_state={"step": 3, "data": {"epoch": 1, "position": 7}}, recipe_yaml="name: x\n")
    expected_torch, expected_py = torch.rand(3), random.random()

    fresh = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2))
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    c = Checkpoint(path)
    load_model_state(fresh, c.model_state(), str(path))
    c.load_optimizer(fresh_opt)
    c.restore_rng()
    assert torch.equal(torch.rand(3), expected_torch) and random.random() == expected_py
    for a, b in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)
    # one more identical step on both gives identical weights: the optimizer moments came back
    x = torch.randn(5, 4)
    for m, o in ((model, opt), (fresh, fresh_opt)):
        o.zero_grad()
        m(x).pow(2).mean().backward()
        o.step()
    for a, b in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)
    assert c.trainer_state()["data"] == {"epoch": 1, "position": 7} and c.recipe_yaml() == "name: x\n"


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    model, opt = trained_model_and_optimizer()
    path = save_checkpoint(tmp_path / "last", model.state_dict(), {"n": 1})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    real = ckpt._save_tensors
    calls = []

    def failing(p, t):
        calls.append(p)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if killed mid-write
        real(p, t)

    monkeypatch.setattr(ckpt, "_save_tensors", failing)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "last", {k: v + 1 for k, v in model.state_dict().items()}, {"n": 2}, optimizer=opt)
    c = Checkpoint(path)
    assert c.meta["n"] == 1
    weights = c.model_state()  # the weights too, not only meta.json: the new ones (+1) never replaced them
    assert set(weights) == set(before) and all(torch.equal(weights[k], before[k]) for k in before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # no temporary left behind


def test_a_full_disk_is_one_checkpoint_error_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    model, _ = trained_model_and_optimizer()

    def full(p, t):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "_save_tensors", full)
    with pytest.raises(CheckpointError, match=r"step-000002: cannot write the checkpoint \(No space left on device\); free"):
        save_checkpoint(tmp_path / "step-000002", model.state_dict(), {})
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_files_follow_the_umask(tmp_path):
    import os
    import stat

    model, opt = trained_model_and_optimizer()
    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "c", model.state_dict(), {}, optimizer=opt)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in path.iterdir()}
    assert set(modes.values()) == {0o644}, modes


def test_meta_json_that_is_not_an_object_is_a_clear_error(tmp_path):
    model, _ = trained_model_and_optimizer()
    path = save_checkpoint(tmp_path / "c", model.state_dict(), {})
    (path / "meta.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="meta.json: expected a JSON object, got list"):
        Checkpoint(path)


def test_truncated_weights_are_a_clear_error(tmp_path):
    model, _ = trained_model_and_optimizer()
    path = save_checkpoint(tmp_path / "c", model.state_dict(), {})
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        Checkpoint(path).model_state()


class _Trap:
    def __reduce__(self):
        return (open, ("UNPICKLED_MARKER", "w"))


def test_a_pickle_posing_as_a_checkpoint_is_never_unpickled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "model.pt"
    bad.write_bytes(pickle.dumps(_Trap()))
    with pytest.raises(CheckpointError, match="never unpickles"):
        Checkpoint(bad)
    fake_dir = tmp_path / "fake"
    fake_dir.mkdir()
    (fake_dir / "model.safetensors").write_bytes(pickle.dumps(_Trap()))
    (fake_dir / "meta.json").write_text('{"format_version": 1}')
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        Checkpoint(fake_dir).model_state()
    assert not (tmp_path / "UNPICKLED_MARKER").exists()


def test_weights_of_another_model_are_rejected_by_name(tmp_path):
    model, _ = trained_model_and_optimizer()
    path = save_checkpoint(tmp_path / "c", model.state_dict(), {})
    other = nn.Sequential(nn.Linear(4, 16), nn.GELU(), nn.Linear(16, 2))
    with pytest.raises(CheckpointError, match=r"shape of 0\.weight .*another recipe"):
        load_model_state(other, Checkpoint(path).model_state(), str(path))
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        (path / "meta.json").unlink()
        Checkpoint(path)


def test_ema_holds_only_trainable_weights_and_is_overlaid_on_the_model(tmp_path):
    from vssflow.core.ema import EMA

    model, opt = trained_model_and_optimizer()
    model[0].requires_grad_(False)  # a frozen part, like a pretrained codec
    model.register_buffer("scale", torch.tensor([2.0]))
    ema = EMA(model, 0.9)  # not 0.5, where d and 1 - d coincide and swapping them would pass
    with torch.no_grad():
        for p in model[2].parameters():
            p.add_(1.0)
    ema.update(model, step=100)  # warm-up min(0.9, 101 / 110) = 0.9: shadow = 0.9 old + 0.1 (old + 1) = old + 0.1
    path = save_checkpoint(tmp_path / "last", model.state_dict(), {}, ema_state=ema.state_dict(model))
    from safetensors.torch import load_file

    assert set(load_file(str(path / "ema.safetensors"))) == {"2.weight", "2.bias"}  # frozen weights not repeated
    c = Checkpoint(path)
    averaged, raw = c.model_state(ema=True), c.model_state()
    assert set(averaged) == set(raw) == set(model.state_dict())
    assert torch.equal(averaged["0.weight"], model[0].weight) and torch.equal(averaged["scale"], model.scale)
    assert torch.allclose(averaged["2.weight"], model[2].weight - 0.9, atol=1e-6)  # a tenth of the way to the new value
    assert torch.allclose(averaged["2.bias"], model[2].bias - 0.9, atol=1e-6)
    ema.update(model, step=0)  # warm-up: d = min(0.9, 1 / 10) = 0.1, so the shadow moves 0.9 of the remaining 0.9
    assert torch.allclose(ema.shadow["2.weight"], model[2].weight - 0.09, atol=1e-6)
    save_checkpoint(tmp_path / "bad", model.state_dict(), {}, ema_state={"ghost": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="ghost"):
        Checkpoint(tmp_path / "bad").model_state(ema=True)
