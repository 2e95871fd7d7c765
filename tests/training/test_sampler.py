"""TaskGroupedSampler: single-task batches, deterministic per seed and epoch."""

from __future__ import annotations

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
