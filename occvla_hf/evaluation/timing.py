"""Timing of calls on CPU or GPU: the one clock of the experiments' latency numbers and the benchmarks.

On CUDA a call is timed with CUDA events recorded on the current stream around it (the time from the start of the
call until the device finished its work, host gaps included); on CPU with `time.perf_counter`. Several calls timed
together run alternately, so that drift (clocks, host load) hits each alike: their ratios are the numbers to trust.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch


def synchronize(device: torch.device | str | None) -> None:
    """Waits until `device` (a CUDA device) finished its queued work; nothing to wait for elsewhere."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _call_ms(fn: Callable[[], object], device: torch.device) -> float:
    if device.type != "cuda":
        start = time.perf_counter()
        fn()
        return 1000.0 * (time.perf_counter() - start)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def call_times_ms(
    fns: Sequence[Callable[[], object]],
    *,
    repeats: int,
    warmup: int = 0,
    device: torch.device | str | None = None,
) -> list[list[float]]:
    """Milliseconds of each of `repeats` calls of every function in `fns`, after `warmup` untimed calls of each;
    the functions run in turn (`fns[0]`, `fns[1]`, ..., `fns[0]`, ...). `device`: where they run (None: CPU).

    Returns:
        one list of `repeats` times per function, in call order.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats, warmup: expected >= 1 and >= 0, got {repeats} and {warmup}")
    if not fns:
        raise ValueError("fns: expected at least one function to time")
    device = torch.device(device or "cpu")
    for _ in range(warmup):
        for fn in fns:
            fn()
    synchronize(device)  # the warm-up's queued work is not the first timed call's
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times, strict=True):
            bucket.append(_call_ms(fn, device))
    return times


__all__ = ["call_times_ms", "synchronize"]
