"""The flow convention, time sampling, the timestep shift, and the masked loss."""

from __future__ import annotations

import math

import pytest
import torch

from vssflow.core.flow import FlowMatching, masked_mse, shift_time, sway_time


def test_path_runs_from_noise_at_0_to_data_at_1_with_velocity_x1_minus_x0():
    x0, x1 = torch.randn(3, 5, 2), torch.randn(3, 5, 2)
    flow = FlowMatching()
    assert torch.equal(flow.interpolate(x0, x1, torch.zeros(3)), x0)
    assert torch.equal(flow.interpolate(x0, x1, torch.ones(3)), x1)
    t, h = torch.full((3,), 0.3), 1e-3
    finite_diff = (flow.interpolate(x0, x1, t + h) - flow.interpolate(x0, x1, t - h)) / (2 * h)
    torch.testing.assert_close(finite_diff, flow.target(x0, x1), atol=1e-3, rtol=1e-3)


def test_uniform_and_logit_normal_time_sampling():
    g = torch.Generator().manual_seed(0)
    t = FlowMatching("uniform").sample_time(50_000, generator=g)
    assert 0 <= t.min() and t.max() <= 1 and abs(t.mean() - 0.5) < 0.01
    t = FlowMatching("logit-normal", t_mean=0.5, t_std=0.8).sample_time(50_000, generator=g)
    logit = torch.log(t / (1 - t))
    assert abs(logit.mean() - 0.5) < 0.02 and abs(logit.std() - 0.8) < 0.02


def test_shift_above_one_moves_time_towards_noise_as_diffusers_sigma_shift():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    shifted = shift_time(t, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1
    assert (shifted[1:-1] < t[1:-1]).all()  # closer to t = 0, the noise end
    sigma = 1 - t  # diffusers / SD3: sigma' = s sigma / (1 + (s - 1) sigma)
    torch.testing.assert_close(1 - shifted, 3 * sigma / (1 + 2 * sigma))
    g = torch.Generator().manual_seed(1)
    assert FlowMatching(t_shift=3.0).sample_time(20_000, generator=g).mean() < 0.4


def test_sway_keeps_endpoints_and_negative_coef_packs_steps_near_noise():
    t = torch.linspace(0, 1, 9, dtype=torch.float64)
    swayed = sway_time(t, -1.0)
    assert swayed[0] == 0 and math.isclose(float(swayed[-1]), 1.0)
    assert (swayed.diff() > 0).all() and swayed.diff()[0] < t.diff()[0]


def test_masked_loss_ignores_padding_and_unmasked_loss_counts_it():
    pred, target = torch.randn(2, 6, 3), torch.randn(2, 6, 3)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    loss, per_sample = masked_mse(pred, target, mask)
    garbage = pred.clone()
    garbage[0, 4:] = 1e3
    loss2, per_sample2 = masked_mse(garbage, target, mask)
    assert torch.equal(loss, loss2) and torch.equal(per_sample, per_sample2)
    expected = ((pred - target) ** 2)[mask].mean()
    torch.testing.assert_close(loss, expected)
    assert masked_mse(garbage, target, None)[0] > 100


@pytest.mark.parametrize("loss_mask", [True, False])
def test_flow_loss_is_zero_for_the_true_velocity_and_follows_loss_mask(loss_mask):
    flow = FlowMatching(loss_mask=loss_mask)
    x1 = torch.randn(2, 5, 3)
    x0 = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1] * 5], dtype=torch.bool)
    exact = flow.loss(lambda t, x: x1 - x0, x1, mask, x0=x0)
    assert exact.loss == 0
    off_in_padding = flow.loss(lambda t, x: (x1 - x0) + (~mask)[..., None].float(), x1, mask, x0=x0)
    assert (off_in_padding.loss == 0) == loss_mask
