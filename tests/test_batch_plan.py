"""BatchPlan: the trainer's step-derived batch order (natural proportions, task weights, duration bucketing)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from vssflow.core.batch_plan import BatchPlan


def batches(plan: BatchPlan, steps: int) -> list[list[int]]:
    return [plan.global_indices(s, m) for s in range(steps) for m in range(plan.grad_accum)]


def test_natural_proportions_each_clip_once_per_epoch_and_a_pure_function_of_the_step():
    plan = BatchPlan(40, batch_size=8, seed=3, grad_accum=2)
    first = batches(plan, 5)  # 5 steps x 8 = one epoch
    assert sorted(i for b in first for i in b) == list(range(40))
    again = BatchPlan(40, batch_size=8, seed=3, grad_accum=2)
    assert again.global_indices(3, 1) == first[7]  # asked out of order, same answer
    assert batches(plan, 10)[5:] != first  # the next epoch is another permutation
    assert plan.epochs(5, 0) == [1] * 4


def test_task_weights_set_proportions():
    weights = [1 / 90] * 90 + [1 / 10] * 10  # two tasks of 90 and 10 clips, weighted 1:1
    plan = BatchPlan(100, batch_size=10, seed=0, weights=weights)
    drawn = Counter(i >= 90 for b in batches(plan, 200) for i in b)
    assert abs(drawn[True] / sum(drawn.values()) - 0.5) < 0.03


@pytest.mark.parametrize("weighted", [False, True], ids=["natural", "weighted"])
def test_bucketing_groups_similar_durations_and_keeps_the_mix(weighted):
    durations = np.random.default_rng(0).uniform(1, 10, 80).tolist()
    weights = [1.0] * 80 if weighted else None
    plain = BatchPlan(80, batch_size=8, seed=1, grad_accum=2, weights=weights)
    bucketed = BatchPlan(80, batch_size=8, seed=1, grad_accum=2, weights=weights, durations=durations,
                         bucket_batches=5)
    spread = lambda plan: np.mean([np.ptp([durations[i] for i in b]) for b in batches(plan, 20)])  # noqa: E731
    assert spread(bucketed) < spread(plain) / 3
    lengths = [np.mean([durations[i] for i in b]) for b in batches(bucketed, 20)]
    assert np.corrcoef(lengths[:-1], lengths[1:])[0, 1] < 0.5  # batch order is shuffled, not sorted
    if not weighted:  # pools of 5 micro-batches x 4 = 20 slots: 4 pools are exactly one epoch
        first = [i for b in batches(bucketed, 10) for i in b]
        assert sorted(first) == list(range(80))
    fresh = BatchPlan(80, batch_size=8, seed=1, grad_accum=2, weights=weights, durations=durations, bucket_batches=5)
    assert fresh.global_indices(7, 1) == bucketed.global_indices(7, 1)  # resumable from any step
    assert len(bucketed.epochs(7, 1)) == 4


def test_bad_plans_are_refused():
    with pytest.raises(ValueError, match="divisible"):
        BatchPlan(10, batch_size=6, seed=0, grad_accum=4)
    with pytest.raises(ValueError, match="durations"):
        BatchPlan(10, batch_size=2, seed=0, durations=[1.0] * 9)
    with pytest.raises(ValueError, match="empty"):
        BatchPlan(0, batch_size=2, seed=0)
