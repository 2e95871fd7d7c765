"""Closed-loop runs: the expert and constant velocity on the standard set, determinism, failing planners, the
observation against the dataset, the OccVLA adapter and the `eval closed-loop` command."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from occvla_hf.cli import main
from occvla_hf.constants import CAMERA_NAMES, NUM_WAYPOINTS
from occvla_hf.data.load import load_split
from occvla_hf.evaluation.closed_loop import (
    ConstantVelocityPlanner,
    ExpertPlanner,
    OccVLAPlanner,
    closed_loop_report,
    observe,
    run_closed_loop,
    write_episode_gif,
)
from occvla_hf.modeling import OccVLAForPlanning
from occvla_hf.pretrained import EMBEDDED_MODEL_PATH
from occvla_hf.processing import OccVLAProcessor
from occvla_hf.sim import PRESETS, SimConfig
from occvla_hf.sim.closed_loop import SCENARIO_TYPES, ClosedLoopWorld, Scenario, logged_scene, standard_scenarios
from occvla_hf.sim.closed_loop.scenarios import WARMUP_S
from occvla_hf.sim.nuscenes_tables import scene_names, token
from occvla_hf.sim.scene import scene_setup
from tests.conftest import SIM_VERSION

SMALL = SimConfig(scale=0.05)  # planners that read no image: keep the worlds cheap


def _report(planner, scenarios, **kwargs) -> str:
    results = run_closed_loop(planner, scenarios, sim_config=SMALL, progress=False, **kwargs)
    report = closed_loop_report(
        results, planner=planner.name, reactive=kwargs.get("reactive", True), seed=0, scenarios="all", sim_config=SMALL
    )
    return json.dumps(report, indent=2)


@pytest.mark.slow
@pytest.mark.parametrize("scenario_type", SCENARIO_TYPES)
def test_expert_drives_the_standard_set_without_infraction(scenario_type):
    for reactive in (True, False):
        results = run_closed_loop(
            ExpertPlanner(),
            standard_scenarios(types=(scenario_type,)),
            reactive=reactive,
            sim_config=SMALL,
            progress=False,
        )
        for result in results:
            metrics = result.metrics
            assert result.status == "completed" and result.record.termination == "time limit"
            assert metrics.infractions == [] and metrics.success, (result.scenario.name, reactive)
            assert metrics.pdms >= 0.95, (result.scenario.name, reactive, metrics)


@pytest.mark.slow
@pytest.mark.parametrize("reactive", [True, False])
def test_constant_velocity_collides_in_the_lead_vehicle_brake_scenarios(reactive):
    scenarios = standard_scenarios(types=("lead_vehicle_brakes",))
    results = run_closed_loop(ConstantVelocityPlanner(), scenarios, reactive=reactive, sim_config=SMALL, progress=False)
    for result in results:
        assert result.metrics.nc == 0.0 and result.metrics.pdms == 0.0, result.scenario.name
        assert "collision_vehicle" in {i.kind for i in result.metrics.infractions}, result.scenario.name
        assert result.metrics.driving_score <= 0.6


def test_same_seed_gives_a_byte_identical_report_of_the_same_shape_for_every_planner():
    scenarios = [Scenario("red_light", 1), Scenario("lead_vehicle_brakes", 3)]
    expert = _report(ExpertPlanner(), scenarios)
    assert expert == _report(ExpertPlanner(), scenarios)
    constant = _report(ConstantVelocityPlanner(), scenarios)
    assert constant == _report(ConstantVelocityPlanner(), scenarios, batch_size=2)  # lockstep batches change nothing

    def keys(value):
        if isinstance(value, dict):
            return {k: keys(v) for k, v in value.items() if k not in ("infractions", "collisions")}
        return type(value).__name__ if not isinstance(value, list) else [keys(v) for v in value]

    assert keys(json.loads(expert)) == keys(json.loads(constant))
    report = json.loads(constant)
    assert report["summary"]["infractions"]["red_light"] == 1  # constant velocity runs the red light
    assert json.loads(expert)["summary"]["pdms"] == 1.0


class _FaultyPlanner:
    """Constant velocity, except on three scenarios: NaN waypoints, a wrong shape, an exception."""

    name = "faulty"
    needs_images = False

    def plan(self, observations):
        plans = ConstantVelocityPlanner().plan(observations)
        for k, obs in enumerate(observations):
            if obs.scenario.endswith("_00"):
                plans[k, 3] = np.nan
            if obs.scenario.endswith("_02"):
                raise RuntimeError("planner crashed")
        if any(obs.scenario.endswith("_01") for obs in observations):
            return plans[:, :4]
        return plans


def test_bad_planner_output_fails_that_scenario_and_the_others_go_on(tmp_path: Path):
    scenarios = standard_scenarios(types=("free_driving",), per_type=4)
    results = run_closed_loop(
        _FaultyPlanner(), scenarios, sim_config=SMALL, batch_size=4, keep_frames=True, progress=False
    )
    failures = {r.scenario.name: r.failure for r in results}
    assert "NaN" in failures["free_driving_00"]
    assert "shape" in failures["free_driving_01"]
    assert "RuntimeError: planner crashed" in failures["free_driving_02"]
    assert failures["free_driving_03"] is None and results[3].metrics is not None
    assert [r.status for r in results] == ["failed", "failed", "failed", "completed"]
    report = closed_loop_report(results, planner="faulty", reactive=True, seed=0, scenarios="free_driving")
    assert report["summary"]["num_failed"] == 3 and report["summary"]["num_scenarios"] == 4
    assert report["summary"]["pdms"] == pytest.approx(results[3].metrics.pdms / 4, abs=1e-6)  # failed runs count 0
    assert report["results"][0]["metrics"] is None and "NaN" in report["results"][0]["failure"]
    assert report["results"][0]["termination"] == "planner failure"
    with Image.open(write_episode_gif(results[0], tmp_path / "failed.gif")) as gif:  # the run up to the failure
        assert gif.n_frames == 1


def test_observation_at_the_logged_pose_is_the_dataset_row(training_data_dir: Path):
    """The takeover keyframe of scene 0 of the `tiny` preset (seed 0): same six images, same ego status."""
    config = PRESETS["tiny"].config
    world_state = scene_setup(np.random.SeedSequence([0, 0]), config)
    world = ClosedLoopWorld(logged_scene(Scenario("free_driving", 0), config, *world_state))
    obs = observe(world, with_images=True)
    keyframe = round(WARMUP_S * config.keyframe_rate_hz)
    name, split = scene_names(SIM_VERSION, PRESETS["tiny"].num_scenes)[0]
    rows = load_split(training_data_dir, "planning", split)
    row = rows[rows["sample_token"].index(token(0, name, "sample", keyframe))]
    for camera, image, stored in zip(CAMERA_NAMES, obs.images, row["images"]):
        np.testing.assert_array_equal(image, np.asarray(stored.convert("RGB")), err_msg=camera)
    np.testing.assert_array_equal(obs.ego_status_valid, row["ego_status_valid"])
    np.testing.assert_allclose(obs.ego_status, row["ego_status"], atol=1e-4)
    np.testing.assert_array_equal(obs.past_trajectory_mask, row["past_trajectory_mask"])
    np.testing.assert_allclose(obs.past_trajectory, row["past_trajectory"], atol=1e-3)
    assert obs.past_trajectory_mask.any()
    assert obs.ego_status_valid[:5].all() and not obs.ego_status_valid[5]  # no CAN bus: no steering


def test_occvla_adapter_drives_from_the_rendered_cameras():
    torch.manual_seed(0)
    model = OccVLAForPlanning.from_pretrained(EMBEDDED_MODEL_PATH, dtype=torch.float32).eval()
    planner = OccVLAPlanner(model, OccVLAProcessor.from_pretrained(EMBEDDED_MODEL_PATH))
    scene = logged_scene(Scenario("free_driving", 0), SimConfig(scale=0.1), *scene_setup(3, SimConfig(scale=0.1)))
    world = ClosedLoopWorld(scene)
    for _ in range(2):
        obs = observe(world, with_images=True)
        plans = planner.plan([obs, obs])
        assert plans.shape == (2, NUM_WAYPOINTS, 2) and np.isfinite(plans).all()
        np.testing.assert_allclose(plans[0], plans[1], atol=1e-4)
        world.drive(plans[0])
    assert world.step_index == scene.start_step + 4


def test_occvla_adapter_feeds_the_ego_history_to_a_model_that_reads_it():
    """A model with `ego_history_steps=2` plans from the observation's past positions (the trajectory changes with
    them), where it would otherwise fail for a missing `ego_history`."""
    from occvla_hf.training.joint import build_model_and_processor
    from tests.conftest import TINY_MODEL_CONFIG

    torch.manual_seed(0)
    model, processor, _ = build_model_and_processor({"config": {**TINY_MODEL_CONFIG, "ego_history_steps": 2}})
    with torch.no_grad():  # a head that reads its inputs, ego history included (a new head outputs a constant)
        for layer in model.trajectory_head.mlp:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.normal_(std=0.5)
    planner = OccVLAPlanner(model.eval(), processor)
    config = SimConfig(scale=0.05)
    world = ClosedLoopWorld(logged_scene(Scenario("free_driving", 0), config, *scene_setup(3, config)))
    obs = observe(world, with_images=True)
    assert obs.past_trajectory_mask[-2:].all()  # the 2 steps the model reads (the scene started 1 s ago)
    moved = dataclasses.replace(obs, past_trajectory=obs.past_trajectory + 1.0)
    plans = planner.plan([obs, moved])
    assert plans.shape == (2, NUM_WAYPOINTS, 2) and np.isfinite(plans).all()
    assert not np.allclose(plans[0], plans[1])


def test_cli_drives_a_scenario_and_writes_the_report_and_a_gif(tmp_path: Path, capsys):
    out = tmp_path / "closed"
    argv = ["eval", "closed-loop", "--planner", "constant-velocity", "--scenarios", "red_light", "--per-type", "1"]
    assert main([*argv, "--non-reactive", "--out", str(out)]) == 0
    report = json.loads((out / "closed_loop_constant-velocity_non-reactive.json").read_text())
    assert report["agents"] == "non-reactive" and [r["scenario"] for r in report["results"]] == ["red_light_00"]
    assert "red_light" in capsys.readouterr().out
    with Image.open(out / "videos" / "constant-velocity_non-reactive" / "red_light_00.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == report["results"][0]["ticks"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--planner", "expert", "--scenarios", "rush_hour"], "--scenarios"),
        (["--planner", "model"], "--model"),
        (["--planner", "expert", "--model", "some/checkpoint"], "--model"),
        (["--planner", "expert", "--per-type", "0"], "--per-type"),
        (["--planner", "expert", "--batch-size", "0"], "--batch-size"),
    ],
)
def test_cli_rejects_bad_arguments_with_a_clear_error(argv, message, tmp_path: Path):
    with pytest.raises(SystemExit, match=message):
        main(["eval", "closed-loop", *argv, "--out", str(tmp_path)])
