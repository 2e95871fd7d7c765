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
        batches: list[tuple[str, torch.Tensor]] = []
        for task, indices in self.groups.items():
            shuffled = indices[torch.randperm(len(indices), generator=generator)]
            fill = -len(shuffled) % self.batch_size
            if fill:
                extra = torch.randint(len(shuffled), (fill,), generator=generator)
                shuffled = torch.cat([shuffled, shuffled[extra]])
            batches.extend((task, batch) for batch in shuffled.view(-1, self.batch_size))
        # a generator of its own, so that the labelled rows come exactly as without pairing
        partners = self._occupancy_only(self.seed + self.epoch) if self.occupancy_only_rows else None
        for order in torch.randperm(len(batches), generator=generator).tolist():
            task, batch = batches[order]
            if partners is not None and task == "planning":
                yield from zip(batch.tolist(), partners)
            else:
                yield from batch.tolist()

    def _occupancy_only(self, seed: int) -> Iterator[int]:
        """Occupancy-only rows without end: passes over them, each in a new shuffled order."""
        generator = torch.Generator().manual_seed(seed)
        while True:
            yield from torch.randperm(self.occupancy_only_rows, generator=generator).tolist()


__all__ = ["TaskGroupedSampler"]
