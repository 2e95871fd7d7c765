"""The shared timer: how many calls it makes, in which order, and what it returns (not how long they take)."""

from __future__ import annotations

import pytest

from occvla_hf.evaluation.timing import call_times_ms


def test_functions_run_in_turn_after_the_warm_up_and_each_gets_its_times() -> None:
    calls: list[str] = []
    times = call_times_ms([lambda: calls.append("a"), lambda: calls.append("b")], repeats=3, warmup=2)
    assert calls == ["a", "b"] * 5
    assert [len(bucket) for bucket in times] == [3, 3]
    assert all(ms >= 0.0 for bucket in times for ms in bucket)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="repeats"):
        call_times_ms([lambda: None], repeats=0)
    with pytest.raises(ValueError, match="fns"):
        call_times_ms([], repeats=1)
