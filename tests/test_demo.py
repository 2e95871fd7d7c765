"""The embedded model and `occvla-hf demo`: it loads, runs end to end on CPU, writes a PNG, and plans better than a
constant-velocity extrapolation of the ego status on the demo's held-out keyframes (full 3 s future, valid ego
velocity)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from occvla_hf.cli import build_parser
from occvla_hf.constants import NUM_WAYPOINTS
from occvla_hf.demo import DEFAULT_DEMO_SEED, DemoResult, run_demo
from occvla_hf.evaluation.baselines import constant_velocity_trajectories
from occvla_hf.modeling import OccVLAForPlanning
from occvla_hf.pretrained import EMBEDDED_MODEL_PATH
from occvla_hf.processing import OccVLAProcessor


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    return run_demo(tmp_path_factory.mktemp("demo"), seed=DEFAULT_DEMO_SEED, print_fn=None)


def test_embedded_model_loads_with_its_processor() -> None:
    model = OccVLAForPlanning.from_pretrained(EMBEDDED_MODEL_PATH)
    processor = OccVLAProcessor.from_pretrained(EMBEDDED_MODEL_PATH)
    assert model.config.traj_token_id == processor.traj_token_id
    assert model.config.num_views == processor.num_views == 6
    assert (EMBEDDED_MODEL_PATH / "README.md").is_file()


def test_demo_writes_a_png_with_cameras_and_bev(demo: DemoResult) -> None:
    with Image.open(demo.png_path) as image:
        image.verify()
    with Image.open(demo.png_path) as image:
        width, height = image.size
        assert image.format == "PNG"
    assert width > 2 * height  # six cameras (2 x 3) and the BEV side by side


def test_demo_plans_and_answers(demo: DemoResult) -> None:
    assert demo.trajectory.shape == demo.gt_trajectory.shape == (NUM_WAYPOINTS, 2)
    assert np.isfinite(demo.trajectory).all()
    assert demo.meta_action
    assert len(demo.questions) == len(demo.answers) == len(demo.gt_answers) == 2


def test_demo_plans_several_keyframes_with_velocity(demo: DemoResult) -> None:
    assert len(demo.gt_trajectories) == len(demo.pred_trajectories) == len(demo.ego_status) >= 30
    model_l2_m = float(np.linalg.norm(demo.pred_trajectories - demo.gt_trajectories, axis=-1).mean())
    baseline = constant_velocity_trajectories(demo.ego_status)
    baseline_l2_m = float(np.linalg.norm(baseline - demo.gt_trajectories, axis=-1).mean())
    assert (demo.mean_l2_m, demo.baseline_mean_l2_m) == pytest.approx((model_l2_m, baseline_l2_m))


def test_demo_beats_constant_velocity_baseline(demo: DemoResult) -> None:
    baseline = constant_velocity_trajectories(demo.ego_status)
    baseline_l2_m = float(np.linalg.norm(baseline - demo.gt_trajectories, axis=-1).mean())
    assert demo.mean_l2_m < baseline_l2_m


def test_demo_command_is_registered() -> None:
    args = build_parser().parse_args(["demo", "--out", "somewhere", "--seed", "3"])
    assert (args.out, args.seed) == ("somewhere", 3)
