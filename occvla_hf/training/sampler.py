"""`TaskGroupedSampler`: batches that never mix tasks (planning prompts end with `<traj>`, QA prompts do not)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class TaskGroupedSampler(Sampler[int | tuple[int, int]]):
    """Sample indices in runs of `batch_size` that share one task, so every batch the DataLoader cuts is single-task.

    Per epoch: indices are shuffled within each task and cut into batches, the last batch of a task is filled up with
    random indices of that task, and the batch order is shuffled. Deterministic in (`seed`, epoch), so resuming from
    a checkpoint replays the same order.

    With `occupancy_only_rows` (label-scarce data, `JointDataset.occupancy_only_rows`), each planning index comes as
    `(index, occupancy-only row)`: each epoch deals the occupancy-only rows out from a fresh shuffle (and further
    shuffled passes when the planning indices outnumber them), so within an epoch none repeats before all have come;
    the labelled rows are sampled exactly as without them.

    Args:
        tasks: the task of every dataset index.
        batch_size: samples per batch (the per-device batch size).
        seed: base seed; the epoch set by `set_epoch` is added to it.
        occupancy_only_rows: occupancy-only rows to pair with the planning indices; 0 pairs none.
    """

    def __init__(self, tasks: Sequence[str], batch_size: int, seed: int = 0, occupancy_only_rows: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        if occupancy_only_rows < 0:
            raise ValueError(f"occupancy_only_rows: expected >= 0, got {occupancy_only_rows}")
        self.groups = {task: torch.tensor([i for i, t in enumerate(tasks) if t == task]) for task in sorted(set(tasks))}
        self.batch_size = batch_size
        self.seed = seed
        self.occupancy_only_rows = occupancy_only_rows
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(math.ceil(len(indices) / self.batch_size) * self.batch_size for indices in self.groups.values())

    def __iter__(self) -> Iterator[int | tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        batches: list[torch.Tensor] = []
        for indices in self.groups.values():
            shuffled = indices[torch.randperm(len(indices), generator=generator)]
            fill = -len(shuffled) % self.batch_size
            if fill:
                extra = torch.randint(len(shuffled), (fill,), generator=generator)
                shuffled = torch.cat([shuffled, shuffled[extra]])
            batches.extend(shuffled.view(-1, self.batch_size))
        order = torch.randperm(len(batches), generator=generator).tolist()
        samples = [index for batch in order for index in batches[batch].tolist()]
        planning = (
            set(self.groups["planning"].tolist()) if self.occupancy_only_rows and "planning" in self.groups else ()
        )
        if not planning:
            yield from samples
            return
        # a generator of its own, so that the labelled rows come exactly as without pairing
        partners = iter(self._occupancy_only(sum(index in planning for index in samples), self.seed + self.epoch))
        yield from ((index, next(partners)) if index in planning else index for index in samples)

    def _occupancy_only(self, count: int, seed: int) -> list[int]:
        """`count` occupancy-only rows: passes over them, each in a new shuffled order."""
        generator = torch.Generator().manual_seed(seed)
        passes = -(-count // self.occupancy_only_rows)
        rows = [torch.randperm(self.occupancy_only_rows, generator=generator) for _ in range(passes)]
        return torch.cat(rows)[:count].tolist()


__all__ = ["TaskGroupedSampler"]
