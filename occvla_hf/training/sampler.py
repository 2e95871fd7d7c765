"""`TaskGroupedSampler`: batches that never mix tasks (planning prompts end with `<traj>`, QA prompts do not)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class TaskGroupedSampler(Sampler[int]):
    """Sample indices in runs of `batch_size` that share one task, so every batch the DataLoader cuts is single-task.

    Per epoch: indices are shuffled within each task and cut into batches, the last batch of a task is filled up with
    random indices of that task, and the batch order is shuffled. Deterministic in (`seed`, epoch), so resuming from
    a checkpoint replays the same order.

    Args:
        tasks: the task of every dataset index.
        batch_size: samples per batch (the per-device batch size).
        seed: base seed; the epoch set by `set_epoch` is added to it.
    """

    def __init__(self, tasks: Sequence[str], batch_size: int, seed: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        self.groups = {task: torch.tensor([i for i, t in enumerate(tasks) if t == task]) for task in sorted(set(tasks))}
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(math.ceil(len(indices) / self.batch_size) * self.batch_size for indices in self.groups.values())

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        batches: list[torch.Tensor] = []
        for indices in self.groups.values():
            shuffled = indices[torch.randperm(len(indices), generator=generator)]
            fill = -len(shuffled) % self.batch_size
            if fill:
                extra = torch.randint(len(shuffled), (fill,), generator=generator)
                shuffled = torch.cat([shuffled, shuffled[extra]])
            batches.extend(shuffled.view(-1, self.batch_size))
        for order in torch.randperm(len(batches), generator=generator).tolist():
            yield from batches[order].tolist()


__all__ = ["TaskGroupedSampler"]
