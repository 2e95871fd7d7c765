"""Linear probes: the targets on hand-made rows, the ridge probe on synthetic features, the feature shapes and the
report on a tiny model and the tiny sim dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import concatenate_datasets

from occvla_hf.constants import CAMERA_NAMES
from occvla_hf.data.load import load_configs
from occvla_hf.experiments.probes import (
    cars_per_camera,
    fit_scene_mask,
    lead_distance_m,
    probe_features,
    probe_report,
    ridge_probe,
)
from occvla_hf.training.joint import build_model_and_processor
from tests.conftest import TINY_MODEL_CONFIG

EMPTY_STEPS = [[] for _ in range(6)]


def box(x: float, y: float) -> list[float]:
    return [x, y, 0.8, 4.5, 1.9, 1.6, 0.0]


def row(boxes: list[list[float]], categories: list[str]) -> dict:
    """A planning row's probe columns: current boxes; two cameras, one looking forward (x), one backward (-x)."""
    # Camera axes (x right, y down, z forward) in the ego frame (x forward, y left, z up).
    forward = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    backward = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    to_ego = []
    for rotation in (forward, backward):
        matrix = np.eye(4)
        matrix[:3, :3], matrix[:3, 3] = rotation, [1.0, 0.0, 1.5]
        to_ego.append(matrix)
    k = np.array([[200.0, 0.0, 200.0], [0.0, 200.0, 112.5], [0.0, 0.0, 1.0]])  # 400 x 225 px, 90 degrees wide
    return {
        "agent_boxes": [boxes, *EMPTY_STEPS],
        "agent_categories": [categories, *EMPTY_STEPS],
        "camera_intrinsics": [k, k],
        "camera_to_keyframe_ego": to_ego,
    }


def test_lead_distance_is_the_nearest_vehicle_ahead_in_the_ego_path() -> None:
    sample = row(
        [box(12.0, 0.5), box(30.0, -1.0), box(8.0, 3.5), box(-5.0, 0.0), box(6.0, 0.2)],
        ["vehicle.car", "vehicle.truck", "vehicle.car", "vehicle.car", "human.pedestrian.adult"],
    )
    # The pedestrian at 6 m is no vehicle, the car at 8 m is in the next lane, the car at -5 m is behind.
    assert lead_distance_m(sample) == pytest.approx(12.0)
    assert lead_distance_m(row([box(8.0, 3.5), box(70.0, 0.0)], ["vehicle.car", "vehicle.car"])) is None


def test_cars_per_camera_counts_the_cars_whose_centre_projects_into_each_image() -> None:
    sample = row(
        [box(20.0, 0.0), box(20.0, 15.0), box(20.0, 25.0), box(-10.0, 2.0), box(-60.0, 0.0), box(15.0, 1.0)],
        ["vehicle.car", "vehicle.car", "vehicle.car", "vehicle.car", "vehicle.car", "vehicle.truck"],
    )
    # Forward camera (at x = 1 m, 90 degrees wide): the cars at (20, 0) and (20, 15); (20, 25) is outside the image.
    # Backward camera: (-10, 2); the car at -60 m is out of range; the truck is no car.
    assert cars_per_camera(sample).tolist() == [2, 1]


def test_ridge_probe_recovers_a_linear_target_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 20))
    groups = np.repeat(np.arange(30), 20)
    signal = x @ rng.standard_normal(20) + 0.1 * rng.standard_normal(600)
    noise = rng.standard_normal(600)
    fit = groups < 22
    good = ridge_probe(x[fit], signal[fit], x[~fit], signal[~fit], groups[fit])
    bad = ridge_probe(x[fit], noise[fit], x[~fit], noise[~fit], groups[fit])
    assert good["r2"] > 0.95 and good["num_test"] == 160
    assert bad["r2"] < 0.1
    one_scene = ridge_probe(x[fit], signal[fit], x[~fit], signal[~fit], np.zeros(int(fit.sum())))
    assert one_scene["r2"] > 0.95
    with pytest.raises(ValueError, match="x/y"):
        ridge_probe(x[fit], signal[fit][:-1], x[~fit], signal[~fit], groups[fit])
    with pytest.raises(ValueError, match="test samples"):
        ridge_probe(x[fit], signal[fit], x[:1], signal[:1], groups[fit])


def test_probes_fit_on_some_scenes_and_test_on_the_others() -> None:
    names = ["scene-2", "scene-1", "scene-1", "scene-3", "scene-4", "scene-2"]
    assert fit_scene_mask(names).tolist() == [True, True, True, True, False, True]
    assert fit_scene_mask(["a", "b", "b"]).tolist() == [True, False, False]
    with pytest.raises(ValueError, match="at least 2 scenes"):
        fit_scene_mask(["a", "a"])


def test_probe_features_and_report_on_a_tiny_model(training_data_dir: Path) -> None:
    planning = load_configs(training_data_dir, ["planning"])["planning"]
    rows = concatenate_datasets(list(planning.values()))
    torch.manual_seed(0)
    model, processor, _ = build_model_and_processor({"config": TINY_MODEL_CONFIG})
    model.eval()
    features = probe_features(model, processor, rows, batch_size=5)
    views, width = model.config.num_views, model.config.text_config.hidden_size
    assert features["traj"].shape == (len(rows), width)
    assert features["vision"].shape == features["lm_image"].shape == (len(rows), views, width)
    assert all(np.isfinite(array).all() for array in features.values())
    with torch.no_grad():  # `vision` is the projector output, read from the LM's input in the same forward
        pixels = processor.from_rows(rows[:5], task="planning", training=False)["pixel_values"]
        projected = model.model.get_image_features(pixels).reshape(5, views, -1, width).mean(dim=2)
    np.testing.assert_allclose(features["vision"][:5], projected.numpy(), rtol=1e-5, atol=1e-6)
    report = probe_report(model, processor, rows)
    assert report["num_keyframes"] == len(rows)
    lead = report["lead_distance_m"]["traj"]
    assert lead is None or lead["num_fit"] + lead["num_test"] == report["num_with_lead"]
    probes = [probe for probe in (lead, *report["cars_per_camera"].values()) if probe is not None]
    assert report["cars_per_camera"]["vision"]["num_fit"] + report["cars_per_camera"]["vision"]["num_test"] == (
        len(rows) * len(CAMERA_NAMES)
    )
    assert all(set(probe) >= {"r2", "rmse", "alpha"} for probe in probes)


def test_an_after_text_model_has_no_traj_probe(training_data_dir: Path) -> None:
    planning = load_configs(training_data_dir, ["planning"])["planning"]
    rows = concatenate_datasets(list(planning.values()))
    torch.manual_seed(0)
    model, processor, _ = build_model_and_processor(
        {"config": {**TINY_MODEL_CONFIG, "trajectory_position": "after_text"}}
    )
    features = probe_features(model.eval(), processor, rows.select(range(4)), batch_size=2)
    assert set(features) == {"vision", "lm_image"}
    report = probe_report(model, processor, rows)
    assert report["lead_distance_m"]["traj"] is None and report["cars_per_camera"]["vision"] is not None
