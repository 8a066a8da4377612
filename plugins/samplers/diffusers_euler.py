"""`diffusers-flow-euler`: diffusers' FlowMatchEulerDiscreteScheduler driven in vssflow's convention.

diffusers counts noise levels sigma = 1 - t and steps x <- x + (sigma_next - sigma) * out, so the model
output it wants is out = -v = x0 - x1. The schedule is always given as explicit `sigmas` (our own grid,
already shifted and swayed) to a scheduler built with shift=1, so diffusers applies no second shift
(diffusers issue #13243).
"""

from __future__ import annotations

from torch import Tensor

from vssflow.core.sampling import FixedStepSampler, ODEFn, SampleResult

from .params import FixedStepParams


class DiffusersFlowEulerSampler(FixedStepSampler):
    """Euler steps taken by diffusers' FlowMatchEulerDiscreteScheduler; equals `euler` step for step."""

    params_model = FixedStepParams

    def scheduler(self):
        """A scheduler set to this sampler's grid."""
        from diffusers import FlowMatchEulerDiscreteScheduler  # heavy: only when sampling

        grid = self.times()
        sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
        sched.set_timesteps(sigmas=(1.0 - grid[:-1]).tolist())  # terminal sigma 0 (t = 1) is appended
        sched.set_begin_index(0)
        return sched

    def sample(self, fn: ODEFn, x0: Tensor, trajectory: bool = False) -> SampleResult:
        """One scheduler step per grid interval."""
        sched = self.scheduler()
        x, path = x0, [] if trajectory else None
        for i, timestep in enumerate(sched.timesteps):
            t = 1.0 - float(sched.sigmas[i])
            out = -fn(t, x)  # diffusers' output: x0 - x1
            x = sched.step(out, timestep, x).prev_sample
            if path is not None:
                path.append(x)
        return SampleResult(x, len(sched.timesteps), 1.0 - sched.sigmas.double(), path)
