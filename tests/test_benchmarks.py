"""The benchmark scripts run end to end on small settings on CPU (numbers are not checked: they are measured)."""

from __future__ import annotations

import sys

import pytest

from benchmarks import bench_closed_loop, bench_inference, bench_training


def run_main(module, argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> list[str]:
    monkeypatch.setattr(sys, "argv", [module.__name__, *argv])
    module.main()
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]


def test_bench_inference_tiny_prints_every_row(monkeypatch, capsys) -> None:
    argv = ["--tiny", "--device", "cpu", "--dtype", "fp32", "--batches", "1", "--warmup", "0", "--repeats", "1"]
    rows = run_main(bench_inference, argv, monkeypatch, capsys)
    names = [row.split(" | ")[0].strip("| ") for row in rows[1:]]
    assert names == [
        "prefill", "prefill, no <traj>",  # 1 view
        "prefill", "prefill, no <traj>", "generate 32 tok", "plan() vs text waypoints", "trajectory: head vs text",
    ]  # fmt: skip


def test_bench_training_tiny_prints_both_checkpointing_modes(monkeypatch, capsys) -> None:
    argv = ["--tiny", "--device", "cpu", "--dtype", "fp32", "--batch", "1", "--warmup", "0", "--repeats", "1"]
    rows = run_main(bench_training, argv, monkeypatch, capsys)
    modes = [row.split(" | ")[:2] for row in rows[1:]]
    assert modes == [["| off", "no"], ["| off", "yes"], ["| on", "no"], ["| on", "yes"]]


@pytest.mark.slow
def test_bench_closed_loop_prints_every_planner(monkeypatch, capsys) -> None:
    rows = run_main(bench_closed_loop, ["--types", "1"], monkeypatch, capsys)
    planners = [row.split(" | ")[0].strip("| ") for row in rows if not row.startswith(("| planner", "|---"))]
    assert planners == ["constant-velocity", "expert", "occvla-sim-small"] * 2
