"""The embedded model's occupancy ablation: its tables reprint the shipped model card's from the committed per-run
reports, its variants and training commands, and the `occvla-hf experiment` command that runs it."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

from occvla_hf.cli import main
from occvla_hf.experiments.occupancy_ablation import VARIANTS, ablation_tables, read_reports, train_command
from occvla_hf.pretrained import EMBEDDED_MODEL_PATH

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS = sorted((REPO_ROOT / "benchmarks" / "results" / "ablation_occupancy").glob("*.json"))


@pytest.fixture(autouse=True)
def repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)  # recipe paths are relative to the repository root


def test_tables_of_the_committed_reports_are_the_shipped_model_cards() -> None:
    tables = ablation_tables(read_reports(RESULTS))
    assert tables.startswith("Planning, ST-P3 protocol") and "| without occupancy | 6 |" in tables
    assert tables in (EMBEDDED_MODEL_PATH / "README.md").read_text()


def test_report_command_prints_the_tables(capsys: pytest.CaptureFixture) -> None:
    assert main(["experiment", "occupancy_ablation", "report", *map(str, RESULTS)]) == 0
    assert capsys.readouterr().out == ablation_tables(read_reports(RESULTS)) + "\n"


def test_only_no_occ_trains_without_occupancy_and_commands_carry_the_overrides(tmp_path: Path) -> None:
    assert [name for name, variant in VARIANTS.items() if not variant.occupancy_supervision()] == ["no_occ"]
    command = train_command(VARIANTS["occ_w5"], 2, tmp_path / "run", tmp_path / "vae", tmp_path / "data", ["--x", "1"])
    assert command[:7] == [sys.executable, "-m", "occvla_hf.cli", "train", "joint", "--config", VARIANTS["occ"].recipe]
    assert command[7:] == [
        "--model.config.occupancy_loss_weight", "5.0", "--training.seed", "2",
        "--training.output_dir", str(tmp_path / "run"), "--occupancy_vae", str(tmp_path / "vae"),
        "--data.path", str(tmp_path / "data" / "train"), "--x", "1",
    ]  # fmt: skip


def test_experiment_help_lists_the_experiments(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["experiment", "--help"])
    out = capsys.readouterr().out
    assert "occupancy_ablation" in out and "ablation_scale" in out


def test_an_evaluation_never_holds_back_the_next_runs(tmp_path: Path, monkeypatch) -> None:
    """`train_runs` evaluates on a background thread: while the first run's evaluation is still going, the second
    run ends and the third one starts (one training process at a time)."""
    import threading

    from occvla_hf.experiments import occupancy_ablation

    def fake_command(variant, seed, out_dir, *args) -> list[str]:  # a "training" that only leaves a marker
        return [sys.executable, "-c", f"open({str(out_dir) + '.started'!r}, 'w').close()"]

    monkeypatch.setattr(occupancy_ablation, "train_command", fake_command)
    third_started = threading.Event()
    evaluated = []

    def on_finished(name: str, seed: int) -> None:
        if seed == 0:  # the first run's evaluation lasts until the third run has started
            deadline = time.monotonic() + 60
            while not (tmp_path / "runs" / "occ_s2.started").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            if (tmp_path / "runs" / "occ_s2.started").exists():
                third_started.set()
        evaluated.append(seed)

    (tmp_path / "runs").mkdir()
    occupancy_ablation.train_runs(
        VARIANTS, [("occ", 0), ("occ", 1), ("occ", 2)], data_dir=tmp_path, runs_dir=tmp_path / "runs",
        vae_dir=tmp_path, out=tmp_path, parallel=1, joint_overrides=[], on_finished=on_finished,
    )  # fmt: skip
    assert third_started.is_set()
    assert evaluated == [0, 1, 2]  # every evaluation ran, one at a time, in the order the runs ended


def test_a_failed_evaluation_is_kept_and_the_other_runs_go_on(tmp_path: Path, monkeypatch) -> None:
    """Each run is evaluated as it ends (`on_finished`); one that fails leaves `<run>.error.txt` with the traceback,
    and the next run is still evaluated and reported. `plan()` is timed once every run has trained."""
    import argparse
    import json

    from occvla_hf.experiments import occupancy_ablation

    runs = tmp_path / "runs"
    for name in ("occ_s0", "no_occ_s0"):
        (runs / name).mkdir(parents=True)
        (runs / name / "config.json").write_text("{}")
        (runs / name / "trainer_state.json").write_text(json.dumps({"log_history": []}))
    l2 = {"stp3": {"l2_avg_m": 0.5}}
    baseline = {"variant": "constant_velocity", "planning_with_velocity": l2}

    events = []

    def fake_evaluate_run(model_dir: Path, *args, **kwargs) -> dict:
        events.append(("evaluate", model_dir.name))
        if model_dir.name == "occ_s0":
            raise RuntimeError("out of memory")
        return {"planning": l2, "planning_with_velocity": l2, "qa": {"overall": {"accuracy_pct": 50.0}}}

    def fake_load(model_dir: Path):
        events.append(("time plan()", model_dir.name))
        return model_dir.name, None

    timing = {"new_tokens": 8, "median_ms": 12.0}

    def fake_train_runs(variants, jobs, *, on_finished, **kwargs) -> None:
        for name, seed in jobs:
            on_finished(name, seed)

    monkeypatch.setattr(occupancy_ablation, "held_out_rows", lambda *args: None)
    monkeypatch.setattr(occupancy_ablation, "constant_velocity_report", lambda *args: baseline)
    monkeypatch.setattr(occupancy_ablation, "evaluate_run", fake_evaluate_run)
    monkeypatch.setattr(occupancy_ablation, "train_runs", fake_train_runs)
    monkeypatch.setattr(occupancy_ablation, "load_model_and_processor", fake_load)
    monkeypatch.setattr(occupancy_ablation, "plan_latency_ms", lambda models, rows, repeats: [timing] * len(models))
    args = argparse.Namespace(
        out=str(tmp_path / "out"), data=str(tmp_path), runs=str(runs), vae=str(tmp_path), variants=["occ", "no_occ"],
        seeds=[0], held_out="eval", parallel=1, joint_overrides="", latency_repeats=1, probes=False, eval_workers=0,
        eval_image_cache=None,
    )  # fmt: skip
    occupancy_ablation.run_ablation(VARIANTS, args, vae_recipe="unused.yaml")
    out = tmp_path / "out"
    assert "RuntimeError: out of memory" in (out / "occ_s0.error.txt").read_text()
    assert not (out / "occ_s0.json").exists()
    report = json.loads((out / "no_occ_s0.json").read_text())
    assert report["variant"] == "no_occ" and report["latency"] == timing
    # `plan()` is timed after every run's evaluation (none of them beside a training), only for the reported runs
    assert events == [("evaluate", "occ_s0"), ("evaluate", "no_occ_s0"), ("time plan()", "no_occ_s0")]


def test_evaluate_run_reads_cached_views_and_reports_what_the_functions_report_from_the_images(
    training_data_dir: Path, occupancy_vae_dir: Path, tmp_path: Path
) -> None:
    """Each held-out keyframe's views are resized once into an image cache that every evaluation reads (QA rows
    unjoined): the report equals the one of the evaluation functions reading every row's own images (fp32, CPU)."""
    from occvla_hf.data.keyframes import join_keyframes
    from occvla_hf.evaluation.runner import evaluate_occupancy, evaluate_planning, evaluate_qa
    from occvla_hf.experiments.occupancy_ablation import (
        PLANNING_SUBSETS,
        evaluate_run,
        held_out_occupancy_rows,
        held_out_rows,
    )
    from occvla_hf.experiments.probes import probe_report
    from occvla_hf.modeling import OccupancyVAE
    from occvla_hf.training.joint import build_model_and_processor
    from tests.conftest import TINY_MODEL_CONFIG

    torch.manual_seed(0)
    vae = OccupancyVAE.from_pretrained(occupancy_vae_dir)
    model, processor, _ = build_model_and_processor({"config": TINY_MODEL_CONFIG}, vae)
    model.set_occupancy_vae(vae)
    model_dir, data_dir = tmp_path / "model", tmp_path / "data"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    data_dir.mkdir()
    (data_dir / "eval").symlink_to(training_data_dir)
    model.eval()
    planning = held_out_rows(data_dir, "planning")
    with torch.inference_mode():
        expected = evaluate_planning(
            model,
            processor,
            planning,
            batch_size=32,
            subsets={key: select(planning)["sample_token"] for key, select in PLANNING_SUBSETS.items()},
        )
    expected = {
        "planning": expected,
        **expected.pop("subsets"),
        "qa": evaluate_qa(model, processor, join_keyframes(held_out_rows(data_dir, "qa"), planning), batch_size=64),
        "occupancy": evaluate_occupancy(model, processor, held_out_occupancy_rows(data_dir, planning)),
        "probes": probe_report(model, processor, planning),
    }
    assert expected["qa"]["overall"]["total"] > len(planning)  # several questions per keyframe
    report = evaluate_run(model_dir, data_dir, probes=True, image_cache=tmp_path / "images")
    assert {key: report[key] for key in expected} == expected
    assert (tmp_path / "images" / "index.json").is_file()  # built once, for the next runs to read


def test_plan_latency_times_the_runs_alternately_and_reports_each() -> None:
    """Stand-in models that record their calls: every timed round calls each model once, in order."""
    import argparse

    from datasets import Dataset

    from occvla_hf.experiments import occupancy_ablation

    calls: list[str] = []

    class StandIn:
        device, dtype = torch.device("cpu"), torch.float32

        def __init__(self, name: str, new_tokens: int) -> None:
            self.name, self.new_tokens = name, new_tokens

        def plan(self, input_ids, **kwargs):
            calls.append(self.name)
            tokens = kwargs.get("max_new_tokens", self.new_tokens)
            return argparse.Namespace(sequences=torch.zeros(1, input_ids.shape[1] + tokens))

    class Processor:
        def from_rows(self, rows, task, training):
            return {"input_ids": torch.zeros(1, 5, dtype=torch.long)}

    models = [(StandIn("a", 3), Processor()), (StandIn("b", 5), Processor())]
    reports = occupancy_ablation.plan_latency_ms(models, Dataset.from_dict({"x": [0]}), repeats=4)
    rounds = occupancy_ablation.LATENCY_WARMUP + 4
    assert calls == ["a", "b"] * (2 * rounds) + ["a", "b"]  # fixed tokens, as used, then the as-used token count
    assert [report["as_used_new_tokens"] for report in reports] == [3, 5]
    assert all(report["new_tokens"] == occupancy_ablation.LATENCY_NEW_TOKENS for report in reports)
    assert all(0 <= report["median_ms"] <= report["p90_ms"] for report in reports)
