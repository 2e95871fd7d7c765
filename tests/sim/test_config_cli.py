"""Settings, presets, argument errors and the `occvla-hf sim` command."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from occvla_hf.cli import main
from occvla_hf.sim import PRESETS, SimConfig, generate_dataset
from occvla_hf.sim.config import HELD_OUT_SEED, resolve_config
from occvla_hf.sim.nuscenes_tables import scene_names


def test_config_derived_sizes():
    config = SimConfig(scale=0.25, scene_duration_s=20.0)
    assert config.image_size_px == (400, 225)
    assert config.num_keyframes == 40 and config.steps_per_keyframe == 2


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="scale"):
        SimConfig(scale=2.0)
    with pytest.raises(ValueError, match="sim_step_s"):
        SimConfig(sim_step_s=0.3)
    with pytest.raises(ValueError, match="preset"):
        resolve_config("huge", None)


def test_presets_are_small_and_scale_overrides_them():
    assert PRESETS["mini"].num_scenes == 10 and PRESETS["tiny"].num_scenes == 2
    assert resolve_config("tiny", None, scale=0.05).scale == 0.05
    assert resolve_config("tiny", None).scene_duration_s == PRESETS["tiny"].config.scene_duration_s


def test_scale_presets_give_the_at_scale_data_and_disjoint_held_out_scenes():
    train, held_out = PRESETS["scale"], PRESETS["scale_heldout"]
    for preset in (train, held_out):
        width, height = preset.config.image_size_px
        assert width >= 400 and height >= 225 and preset.config.scene_duration_s == 20.0
    splits = [split for _, split in scene_names(train.version, train.num_scenes)]
    assert splits.count("train") * train.config.num_keyframes >= 12_000
    assert splits.count("val") >= 40  # the validation range: other scenes of the training seed
    assert held_out.num_scenes >= 40 and held_out.seed == HELD_OUT_SEED != train.seed
    assert replace(held_out.config, questions_per_keyframe=0) == replace(train.config, questions_per_keyframe=0)


def test_a_preset_sets_seed_and_version_unless_given(tmp_path):
    small = SimConfig(scale=0.02, scene_duration_s=1.0, lidar_azimuth_steps=64, questions_per_keyframe=1)
    summary = generate_dataset(tmp_path / "a", preset="scale_heldout", num_scenes=1, config=small, progress=False)
    info = json.loads((tmp_path / "a" / "nuscenes_qa" / "NuScenes_train_questions.json").read_text())["info"]
    assert (summary.version, info["seed"]) == ("v1.0-trainval", HELD_OUT_SEED)
    summary = generate_dataset(
        tmp_path / "b", preset="scale", num_scenes=1, config=small, seed=7, version="v1.0-mini", progress=False
    )
    info = json.loads((tmp_path / "b" / "nuscenes_qa" / "NuScenes_train_questions.json").read_text())["info"]
    assert (summary.version, info["seed"]) == ("v1.0-mini", 7)


def test_generate_dataset_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="num_scenes"):
        generate_dataset(tmp_path / "a", seed=0)
    with pytest.raises(ValueError, match="num_scenes"):
        generate_dataset(tmp_path / "b", num_scenes=11, version="v1.0-mini")
    with pytest.raises(ValueError, match="version"):
        generate_dataset(tmp_path / "c", num_scenes=1, version="v2.0")


def test_sim_command_writes_a_dataroot(tmp_path, capsys):
    out = tmp_path / "root"
    code = main(
        [
            "sim",
            "--out",
            str(out),
            "--preset",
            "tiny",
            "--scenes",
            "1",
            "--seed",
            "4",
            "--scale",
            "0.05",
            "--workers",
            "1",
        ]
    )
    assert code == 0
    assert "wrote 1 scenes" in capsys.readouterr().out
    scenes = json.loads((out / "v1.0-mini" / "scene.json").read_text())
    assert [s["name"] for s in scenes] == ["scene-0061"]
    sample_data = json.loads((out / "v1.0-mini" / "sample_data.json").read_text())
    assert {(r["width"], r["height"]) for r in sample_data if r["fileformat"] == "jpg"} == {(80, 45)}


@pytest.mark.parametrize(
    ("overrides", "error", "field"),
    [
        ({"keyframe_rate_hz": 0.0}, ValueError, "keyframe_rate_hz"),
        ({"keyframe_rate_hz": -2.0}, ValueError, "keyframe_rate_hz"),
        ({"sim_step_s": 0.0}, ValueError, "sim_step_s"),
        ({"sim_step_s": -0.25}, ValueError, "sim_step_s"),
        ({"sim_step_s": 1.0}, ValueError, "sim_step_s"),
        ({"scene_duration_s": 0.2}, ValueError, "scene_duration_s"),
        ({"scene_duration_s": 0.0}, ValueError, "scene_duration_s"),
        ({"lidar_beams": 0}, ValueError, "lidar_beams"),
        ({"lidar_azimuth_steps": 0}, ValueError, "lidar_azimuth_steps"),
        ({"lidar_mask_oversampling": 0}, ValueError, "lidar_mask_oversampling"),
        ({"lidar_max_range_m": 0.0}, ValueError, "lidar_max_range_m"),
        ({"jpeg_quality": 90.5}, TypeError, "jpeg_quality"),
        ({"jpeg_quality": True}, TypeError, "jpeg_quality"),
        ({"lidar_beams": 32.0}, TypeError, "lidar_beams"),
        ({"questions_per_keyframe": -1}, ValueError, "questions_per_keyframe"),
        ({"annotation_range_m": -5.0}, ValueError, "annotation_range_m"),
        ({"scale": float("nan")}, TypeError, "scale"),
        ({"scene_duration_s": float("inf")}, TypeError, "scene_duration_s"),
        ({"annotation_range_m": "60"}, TypeError, "annotation_range_m"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(overrides: dict, error: type, field: str):
    with pytest.raises(error, match=f"^{field}: expected"):
        SimConfig(**overrides)


def test_config_accepts_a_single_keyframe_scene_and_int_floats():
    assert SimConfig(scene_duration_s=0.5).num_keyframes == 1
    assert SimConfig(scene_duration_s=3, annotation_range_m=0).num_keyframes == 6


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"num_workers": 2.5}, TypeError, "num_workers"),
        ({"num_workers": 0}, ValueError, "num_workers"),
        ({"num_scenes": 1.0}, TypeError, "num_scenes"),
    ],
)
def test_generate_dataset_rejects_bad_run_arguments_before_creating_the_folder(
    tmp_path, kwargs: dict, error: type, field: str
):
    out = tmp_path / "root"
    with pytest.raises(error, match=f"^{field}: expected"):
        generate_dataset(out, **{"num_scenes": 1, "preset": "tiny", **kwargs}, progress=False)
    assert not out.exists()


@pytest.mark.parametrize(
    ("arguments", "field"), [(["--seed", "-1"], "seed"), (["--workers", "0"], "num_workers")], ids=["seed", "workers"]
)
def test_sim_command_rejects_bad_arguments_before_creating_the_folder(tmp_path, capsys, arguments, field):
    out = tmp_path / "root"
    assert main(["sim", "--out", str(out), "--preset", "tiny", *arguments]) == 2
    assert f"occvla-hf sim: error: {field}: expected" in capsys.readouterr().err
    assert not out.exists()
