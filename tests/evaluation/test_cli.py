"""`occvla-hf eval` and `occvla-hf plan` on a sim mini dataset with a tiny trained checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from occvla_hf.cli import main
from occvla_hf.constants import OCC_CLASS_COLORS_RGB, OCC_CLASS_NAMES
from occvla_hf.data.load import load_split
from occvla_hf.evaluation.runner import evaluate_constant_velocity
from occvla_hf.modeling import OccVLAForPlanning
from occvla_hf.processing import OccVLAProcessor
from occvla_hf.training.joint import train_joint
from tests.conftest import TINY_MODEL_CONFIG


@pytest.fixture(scope="module")
def checkpoint(training_data_dir: Path, occupancy_vae_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 5-step stage-2 run of the tiny model: model, processor and VAE in one folder."""
    recipe = {
        "stage": "joint",
        "model": {"config": TINY_MODEL_CONFIG},
        "occupancy_vae": str(occupancy_vae_dir),
        "data": {"path": str(training_data_dir), "source": "sim", "train_split": "mini_train"},
        "training": {
            "output_dir": str(tmp_path_factory.mktemp("eval_ckpt")),
            "max_steps": 5,
            "per_device_train_batch_size": 4,
            "save_strategy": "no",
            "report_to": "none",
            "use_cpu": True,
            "disable_tqdm": True,
        },
    }
    return train_joint(recipe).output_dir


@pytest.mark.parametrize("task", ["planning", "qa", "occupancy"])
def test_eval_cli_writes_a_well_formed_report(task, checkpoint, training_data_dir, tmp_path, capsys) -> None:
    report_path = tmp_path / f"{task}.json"
    argv = ["eval", task, "--model", str(checkpoint), "--data", str(training_data_dir), "--split", "mini_val"]
    assert main([*argv, "--batch-size", "3", "--report", str(report_path)]) == 0
    workers_path = tmp_path / f"{task}_workers.json"
    assert main([*argv, "--batch-size", "3", "--num-workers", "2", "--report", str(workers_path)]) == 0
    # loader processes prepare the batches; the metrics are the same
    assert json.loads(workers_path.read_text())["metrics"] == json.loads(report_path.read_text())["metrics"]
    report = json.loads(report_path.read_text())
    assert report["task"] == task and report["split"] == "mini_val" and report["num_rows"] > 0
    metrics = report["metrics"]
    printed = capsys.readouterr().out
    if task == "planning":
        # The tiny preset's scenes have 6 keyframes: no sample has a 3 s future, so UniAD's 3 s value is None.
        assert metrics["uniad"]["l2_3s_m"] is None and metrics["stp3"]["l2_3s_m"] >= 0
        for protocol in ("stp3", "uniad"):
            row = metrics[protocol]
            assert row["l2_1s_m"] >= 0 and row["l2_2s_m"] >= 0
            assert 0 <= row["collision_1s_pct"] <= 100 and 0 <= row["collision_2s_pct"] <= 100
        assert 0 <= metrics["meta_action_accuracy_pct"] <= 100
        assert "ST-P3 protocol" in printed and "UniAD protocol" in printed and "Collision (%)" in printed
    elif task == "qa":
        assert metrics["num_questions"] == report["num_rows"]
        assert 0 <= metrics["overall"]["accuracy_pct"] <= 100
        assert set(metrics["by_type"]) == {"exist", "count", "object", "status", "comparison"}
    else:
        assert metrics["num_samples"] == report["num_rows"]
        assert 0 <= metrics["camera_miou"] <= 1 and 0 <= metrics["iou"] <= 1


def test_eval_defaults_to_the_validation_split_and_writes_the_report_here(
    checkpoint, training_data_dir, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "planning", "--model", str(checkpoint), "--data", str(training_data_dir)]) == 0
    report = json.loads((tmp_path / "eval_planning_mini_val.json").read_text())
    assert report["split"] == "mini_val" and not list(checkpoint.glob("eval_*.json"))
    baseline = report["baselines"]["constant velocity"]
    assert baseline["num_samples"] == report["metrics"]["num_samples"]  # the same keyframes as the model
    assert baseline == evaluate_constant_velocity(load_split(training_data_dir, "planning", "mini_val"))
    stp3_table = capsys.readouterr().out.split("UniAD protocol")[0]
    cells = f"{baseline['stp3']['l2_1s_m']:6.2f} {baseline['stp3']['l2_2s_m']:6.2f}"
    assert any(line.startswith("constant velocity") and cells in line for line in stp3_table.splitlines())


def test_eval_is_deterministic(checkpoint, training_data_dir, tmp_path) -> None:
    reports = []
    for run in range(2):
        path = tmp_path / f"run{run}.json"
        main(
            [
                "eval",
                "planning",
                "--model",
                str(checkpoint),
                "--data",
                str(training_data_dir),
                "--split",
                "mini_val",
                "--report",
                str(path),
            ]
        )
        reports.append(json.loads(path.read_text())["metrics"])
    assert reports[0] == reports[1]


def test_no_ego_status_flag_refuses_a_model_trained_with_it(checkpoint, training_data_dir) -> None:
    with pytest.raises(SystemExit, match="ego status"):
        main(
            [
                "eval",
                "planning",
                "--model",
                str(checkpoint),
                "--data",
                str(training_data_dir),
                "--split",
                "mini_val",
                "--no-ego-status",
            ]
        )


def test_plan_cli_draws_bev_and_cameras(checkpoint, training_data_dir, tmp_path, capsys) -> None:
    argv = ["plan", "--model", str(checkpoint), "--data", str(training_data_dir), "--split", "mini_val"]
    pixels = {}
    for layer in (None, "gt", "pred"):
        out = tmp_path / f"plan_{layer}.png"
        assert main([*argv, "--sample", "0", "--out", str(out), *(["--occupancy", layer] if layer else [])]) == 0
        for path in (out, tmp_path / f"plan_{layer}_cameras.png"):
            with Image.open(path) as image:
                assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 300
        with Image.open(out) as image:
            pixels[layer] = np.asarray(image.convert("RGB"))
        printed = capsys.readouterr().out
        assert "meta-action:" in printed and "mean L2" in printed
    road = np.array(OCC_CLASS_COLORS_RGB[OCC_CLASS_NAMES.index("driveable_surface")], dtype=np.uint8)
    assert (pixels["gt"] == road).all(axis=-1).sum() > (pixels[None] == road).all(axis=-1).sum() + 1000
    assert not np.array_equal(pixels["pred"], pixels[None])  # the predicted grid is drawn under the view


def test_plan_cli_refuses_predicted_occupancy_without_the_occupancy_modules(
    checkpoint, training_data_dir, tmp_path, capsys
) -> None:
    export = tmp_path / "export"
    OccVLAForPlanning.from_pretrained(checkpoint).without_occupancy_modules().save_pretrained(export)
    OccVLAProcessor.from_pretrained(checkpoint).save_pretrained(export)
    argv = ["plan", "--model", str(export), "--data", str(training_data_dir), "--split", "mini_val", "--sample", "0"]
    assert main([*argv, "--out", str(tmp_path / "plan.png"), "--occupancy", "pred"]) == 2
    assert "predicted occupancy needs the occupancy head and the frozen VAE" in capsys.readouterr().err
    assert not (tmp_path / "plan.png").exists()


def test_planning_subsets_score_the_same_plans_as_their_rows_alone(checkpoint, training_data_dir) -> None:
    """`evaluate_planning(subsets=...)` plans every row once; each subset's report equals the report of planning
    only that subset's rows (one row per batch, so that the two runs compute every plan alike)."""
    from occvla_hf.evaluation.runner import evaluate_planning, load_model_and_processor

    model, processor = load_model_and_processor(checkpoint, device="cpu")
    rows = load_split(training_data_dir, "planning", "mini_val")
    odd = rows.select(range(1, len(rows), 2))
    report = evaluate_planning(model, processor, rows, batch_size=1, subsets={"odd": odd["sample_token"]})
    assert report.pop("subsets") == {"odd": evaluate_planning(model, processor, odd, batch_size=1)}
    assert report == evaluate_planning(model, processor, rows, batch_size=1)  # the full report is unchanged
