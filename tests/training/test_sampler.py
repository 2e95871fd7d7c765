"""TaskGroupedSampler: single-task batches, deterministic per seed and epoch."""

from __future__ import annotations

import pytest

from occvla_hf.training.sampler import TaskGroupedSampler


def test_task_grouped_sampler_cuts_single_task_batches_deterministically():
    tasks = ["planning"] * 7 + ["qa"] * 5
    sampler = TaskGroupedSampler(tasks, batch_size=3, seed=4)
    order = list(sampler)
    assert len(order) == len(sampler) == 9 + 6  # each task filled up to a multiple of the batch size
    batches = [order[k : k + 3] for k in range(0, len(order), 3)]
    assert all(len({tasks[i] for i in batch}) == 1 for batch in batches)
    assert set(order) == set(range(12))
    assert list(sampler) == order
    sampler.set_epoch(1)
    assert list(sampler) != order


def test_task_grouped_sampler_pairs_each_planning_index_with_an_occupancy_only_row():
    tasks = ["planning"] * 4 + ["qa"] * 3
    paired = TaskGroupedSampler(tasks, batch_size=2, seed=1, occupancy_only_rows=3)
    plain = TaskGroupedSampler(tasks, batch_size=2, seed=1)
    for epoch in range(3):
        paired.set_epoch(epoch)
        plain.set_epoch(epoch)
        order = list(paired)
        # the labelled rows come exactly as without pairing, planning indices with a partner row
        assert [sample[0] if isinstance(sample, tuple) else sample for sample in order] == list(plain)
        partners = [sample[1] for sample in order if isinstance(sample, tuple)]
        assert all(isinstance(sample, tuple) == (tasks[sample if isinstance(sample, int) else sample[0]] == "planning")
                   for sample in order)  # fmt: skip
        assert len(partners) == 4 and sorted(partners[:3]) == [0, 1, 2]  # a whole pass over them, then the next
    assert len(paired) == len(plain) == 4 + 4
    with pytest.raises(ValueError, match="occupancy_only_rows: expected >= 0, got -1"):
        TaskGroupedSampler(tasks, batch_size=2, occupancy_only_rows=-1)
